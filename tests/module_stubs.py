"""Stub modules for the peer tests: zennit, pytorch-grad-cam and lxt import torchvision (and grad-cam
matplotlib) at package import, for names these tests never use; PyPI's torchvision for torch 2.13 is a CUDA
build that fails to import beside the CPU torch. :func:`stub_modules` puts empty modules in
``sys.modules`` while the peer imports, and takes them out again afterwards (the peer keeps its own
references), so that nothing else sees them."""
from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types


@contextlib.contextmanager
def stub_modules(modules: dict):
    """``modules``: {dotted name: {attribute: value}}; each parent module gets its child modules as
    attributes. Yields {name: module}."""
    stubs = {}
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        for key, value in attrs.items():
            setattr(mod, key, value)
        stubs[name] = mod
    for name, mod in stubs.items():
        parent, _, child = name.rpartition(".")
        if parent in stubs:
            setattr(stubs[parent], child, mod)
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        yield stubs
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
