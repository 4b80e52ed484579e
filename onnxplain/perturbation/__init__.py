"""Perturbation methods that need only the forward model: :mod:`.occlusion` and :mod:`.rise`; what stands
in for removed input lives in :mod:`.replacement`."""
from .occlusion import Occlusion, occlusion_windows
from .replacement import axis_roles, blur
from .rise import Rise, RiseMasks

__all__ = ["Occlusion", "Rise", "RiseMasks", "occlusion_windows", "blur", "axis_roles"]
