"""The one module that talks to onnxruntime.

Chooses the execution provider (CUDA only when it really loads, else CPU, without onnxruntime's error
spam on CPU-only machines) and runs many inputs in batches through a :class:`Session`; whoever needs a
session owns it (the Explainer's runner, the pattern collector), so nothing is serialised or hashed per call.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import onnx
import onnxruntime as ort

from .errors import OnnxplainError

DEVICES = ("auto", "cpu", "cuda")


def _quiet_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when the CUDA execution provider is installed *and* its libraries load."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    if os.environ.get("ONNXPLAIN_DISABLE_CUDA"):
        return False
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    ort.set_default_logger_severity(4)  # a failed provider load logs an error; we only want the answer
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        s = ort.InferenceSession(m.SerializeToString(), so,
                                 providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        return "CUDAExecutionProvider" in s.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(3)


@functools.lru_cache(maxsize=1)
def max_opset() -> int:
    """The newest default-domain opset this onnxruntime loads (probed once, newest first)."""
    from onnx import TensorProto, defs, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    for opset in range(defs.onnx_opset_version(), 13, -1):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        try:
            ort.InferenceSession(m.SerializeToString(), _quiet_options(), providers=["CPUExecutionProvider"])
            return opset
        except Exception:
            continue
    return 17


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (onnxruntime's messages run over many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def providers_for(device: str = "auto") -> list:
    if device not in DEVICES:
        raise OnnxplainError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if cuda_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise OnnxplainError("device 'cuda' requested but onnxruntime cannot load CUDA here "
                             "(install onnxruntime-gpu with CUDA 13 and cuDNN 9, or use --device cpu)")
    return ["CPUExecutionProvider"]


class Session:
    """An onnxruntime session over one model, running inputs in batches."""

    def __init__(self, model: onnx.ModelProto | bytes, device: str = "auto"):
        data = model if isinstance(model, bytes) else model.SerializeToString()
        self.providers = providers_for(device)
        try:
            self._sess = ort.InferenceSession(data, _quiet_options(), providers=self.providers)
        except Exception as exc:
            msg = first_line(exc)
            raise OnnxplainError(f"onnxruntime cannot load the model: {msg}") from None
        self.provider = self._sess.get_providers()[0]
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]

    @property
    def device(self) -> str:
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    def run(self, feeds: dict, outputs=None) -> list:
        return self._sess.run(outputs, feeds)

    def run_batched(self, batched: dict, constant: dict | None = None, *, batch_size: int = 32,
                    outputs=None, progress=None) -> list:
        """Run with the arrays of ``batched`` split along axis 0 into chunks; concatenate outputs."""
        n = len(next(iter(batched.values())))
        outs = None
        for start in range(0, n, max(1, batch_size)):
            feeds = {k: v[start:start + batch_size] for k, v in batched.items()}
            feeds.update(constant or {})
            res = self._sess.run(outputs, feeds)
            outs = [[r] for r in res] if outs is None else [o + [r] for o, r in zip(outs, res)]
            if progress is not None:
                progress(min(batch_size, n - start))
        if outs is None:
            return []
        return [np.concatenate(o, axis=0) for o in outs]


def run_cpu(model: onnx.ModelProto, feeds: list[dict]) -> list[list[np.ndarray]]:
    """Run a small helper ``model`` once per feed dict on the CPU provider (quiet, uncached): the outputs
    of each run. An :class:`OnnxplainError` when onnxruntime cannot load or run it."""
    try:
        sess = ort.InferenceSession(model.SerializeToString(), _quiet_options(), providers=["CPUExecutionProvider"])
        return [sess.run(None, feed) for feed in feeds]
    except Exception as exc:
        msg = first_line(exc)
        raise OnnxplainError(f"onnxruntime cannot run the helper model '{model.graph.name}': {msg}") from None
