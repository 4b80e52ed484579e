"""The one module that talks to onnxruntime.

Chooses the execution provider (CUDA only when it really loads, else CPU, without onnxruntime's error
spam on CPU-only machines; CUDA with the options of :func:`cuda_provider_options` and device-resident
values) and runs many inputs in batches through a :class:`Session`; whoever needs a session owns it (the
Explainer's runner, the pattern collector), so nothing is serialised or hashed per call.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import re

import numpy as np
import onnx
import onnxruntime as ort

from .errors import OnnxplainError, first_line

DEVICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def _libc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_heap() -> None:
    """Collect garbage cycles (onnx-graphsurgeon graphs are cycles of nodes and tensors that hold protobuf
    weights) and hand the C heap's free memory back to the system (glibc's ``malloc_trim``; elsewhere
    only the collection).

    Loading, canonicalising and serialising a model frees several protobuf copies of its weights, which
    glibc keeps in the process (its mmap threshold rises with every large free, so later large blocks come
    from the heap and stay resident): canonicalising a ResNet-50 (98 MB of weights) left 473 MiB resident,
    184 MiB after this; resident memory is what the activations of a large batch come on top of."""
    gc.collect()
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def _quiet_options() -> ort.SessionOptions:
    """Session options of every onnxplain session: quiet, all graph optimisations, and no memory pattern —
    onnxruntime's pattern (one block planned per input shape after the first run) keeps the first run's
    blocks in the arena beside it: an explainer at batch 32 on a ResNet-50 grew by 1.3 GB on its second
    run with it, not at all without, at the same speed (benchmarks/bench_api.py, memory).

    ``ONNXPLAIN_CPU_LAYOUT=nchw`` trades speed for memory: without ``ORT_ENABLE_ALL``'s layout pass
    (onnxruntime's blocked NCHWc convolutions on the CPU) a backward pass that reads an activation in
    both a convolution and an element-wise product no longer keeps it twice (blocked and plain):
    lrp.epsilon_plus_flat on a ResNet-50 at batch 32 peaked at 4200-4550 MiB with the layout pass, 3395 MiB
    without, and ran 9 % slower; gradient gains nothing (1534 MiB against 1437-1595) and runs 24 % slower,
    the forward alone peaks higher (893 MiB against 758). The other memory options measured there: no CPU
    arena (``enable_cpu_mem_arena``) grew the second run by 370 MiB (glibc keeps the freed blocks);
    ``ExecutionOrder.PRIORITY_BASED`` changed nothing (see ``graph.schedule_early``).

    No spinning: each onnxruntime session has its own intra-op thread pool, whose threads by default keep
    spinning for a while after a run ends. The next run of *another* session (an explainer after the model's
    forward, the methods of ``explain -m a -m b``, ``evaluate``'s forward passes and explainers) then shares
    the cores with them: on 2 cores a ResNet-18 gradient explainer at batch 1 took 74-83 ms right after a
    forward of another session and 42-45 ms right after its own run; without spinning 45-54 ms in either
    order, and runs of one session in a row were as fast without as with it (forward 17.6-18.1 against
    19.8-20.8 ms, explainer 46-48 against 45-50 ms). ``ONNXPLAIN_ORT_SPINNING=1`` turns it back on."""
    so = ort.SessionOptions()
    if os.environ.get("ONNXPLAIN_ORT_SPINNING", "").strip() != "1":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if os.environ.get("ONNXPLAIN_CPU_LAYOUT", "").strip().lower() == "nchw":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.enable_mem_pattern = False
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


def run_error(exc: BaseException) -> str:
    """onnxruntime's message of a failed run on one line, without its status prefix."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Please fix either")]
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", "; ".join(lines)) or type(exc).__name__
    return text if len(text) <= 400 else text[:400] + " …"


def _quiet_run() -> ort.RunOptions:
    ro = ort.RunOptions()
    ro.log_severity_level = 4  # the error comes back as the exception; no log line on stderr besides
    return ro


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


ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")


def cuda_provider_options() -> dict:
    """Options of onnxruntime's CUDA execution provider for onnxplain's sessions.

    ``cudnn_conv_algo_search``: ``HEURISTIC`` by default — cuDNN's heuristics pick each convolution's
    algorithm at once. ``EXHAUSTIVE`` (onnxruntime's own default) times every algorithm of every
    convolution the first time it sees an input shape; an explainer graph has three to five times the
    model's convolutions (forward, modified forward, adjoints) and meets several shapes (the last, smaller
    chunk of a batch, IG's step chunks), so the search costs seconds per new shape for a few percent per
    run. Long runs on one shape can ask for it: ``ONNXPLAIN_CUDNN_ALGO_SEARCH=EXHAUSTIVE``. The largest
    cuDNN workspace is allowed (faster algorithms) and the arena grows only by what is asked
    (``kSameAsRequested``), so explainer graphs, whose activations live until the backward pass reads
    them, do not double the arena."""
    search = os.environ.get("ONNXPLAIN_CUDNN_ALGO_SEARCH", "HEURISTIC").strip().upper()
    if search not in ALGO_SEARCH:
        raise OnnxplainError(f"ONNXPLAIN_CUDNN_ALGO_SEARCH must be one of {', '.join(ALGO_SEARCH)}, not '{search}'")
    return {"cudnn_conv_algo_search": search, "cudnn_conv_use_max_workspace": "1",
            "do_copy_in_default_stream": "1", "arena_extend_strategy": "kSameAsRequested"}


def _with_options(providers: list) -> list:
    return [(p, cuda_provider_options()) if p == "CUDAExecutionProvider" else p for p in providers]


class Session:
    """An onnxruntime session over one model, running inputs in batches.

    On the CUDA provider every run goes through device-resident values (``device_values=None``: only
    there): the inputs are copied to the device once as OrtValues, the outputs stay where the graph made
    them until one copy back, with no per-output staging (``run_with_ort_values``, onnxruntime's OrtValue
    flavour of IO binding: its IOBinding object cannot bind an input that has a default value — an
    explainer's optional ``target`` —, which onnxruntime keeps as an "overridable initializer"). On the
    CPU onnxruntime reads the numpy inputs in place already, so the plain ``run`` is as fast (the
    explain() overhead in benchmarks/bench_api.py is measured that way)."""

    def __init__(self, model: onnx.ModelProto | bytes, device: str = "auto", device_values: bool | None = None,
                 initializers: dict | None = None):
        """``initializers``: {name: array} of initializers the model declares with external data (see
        ``explainer_graph.build_explainer(external=)``): onnxruntime takes the arrays as they are — no
        protobuf copy of the weights is built, serialised or parsed; the session keeps them alive."""
        data = model if isinstance(model, bytes) else model.SerializeToString()
        self.providers = providers_for(device)
        so = _quiet_options()
        if initializers:
            self._initializers = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for v in initializers.values()]
            so.add_external_initializers(list(initializers), self._initializers)
        try:
            self._sess = ort.InferenceSession(data, so, providers=_with_options(self.providers))
        except Exception as exc:
            msg = first_line(exc)
            raise OnnxplainError(f"onnxruntime cannot load the model: {msg}") from None
        self.provider = self._sess.get_providers()[0]
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        cuda = self.provider == "CUDAExecutionProvider"
        self.device_values = cuda if device_values is None else bool(device_values)
        self._run_options = _quiet_run()

    @property
    def device(self) -> str:
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    def run(self, feeds: dict, outputs=None) -> list:
        """One run; an :class:`OnnxplainError` with onnxruntime's message (on one line) when it fails."""
        try:
            if self.device_values:
                return self._run_values(feeds, outputs)
            return self._sess.run(outputs, feeds, self._run_options)
        except Exception as exc:  # a kernel failing on the model's weights, inputs of the wrong shape, ...
            raise OnnxplainError(f"onnxruntime cannot run the model: {run_error(exc)}") from None

    def _run_values(self, feeds: dict, outputs) -> list:
        """The run on OrtValues on the session's device: inputs copied there once, outputs copied back once."""
        dev = self.device
        values = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), dev, 0) for k, v in feeds.items()}
        res = self._sess.run_with_ort_values(list(outputs or self.output_names), values, self._run_options)
        return [r.numpy() for r in res]

    def run_batched(self, batched: dict, constant: dict | None = None, *, batch_size: int = 32,
                    outputs=None, progress=None) -> list:
        """Run with the arrays of ``batched`` split along axis 0 into chunks; outputs joined along axis 0.

        One chunk returns onnxruntime's arrays as they are; several fill one preallocated array per output
        (no list of chunks, no concatenation copy)."""
        n = len(next(iter(batched.values())))
        step = max(1, int(batch_size))
        if n == 0:
            return []
        if n <= step:
            res = self.run({**batched, **(constant or {})}, outputs)
            if progress is not None:
                progress(n)
            return res
        outs = None
        for start in range(0, n, step):
            rows = min(step, n - start)
            feeds = {k: v[start:start + rows] for k, v in batched.items()}
            feeds.update(constant or {})
            res = self.run(feeds, outputs)
            if outs is None:
                outs = [np.empty((n,) + r.shape[1:], r.dtype) if r.ndim and len(r) == rows else [] for r in res]
            for i, r in enumerate(res):
                o = outs[i]
                if not isinstance(o, list) and (r.ndim == 0 or len(r) != rows or r.shape[1:] != o.shape[1:]):
                    o = outs[i] = [o[:start]]  # not a per-row output after all: join as given
                if isinstance(o, list):
                    o.append(r)
                else:
                    o[start:start + rows] = r
            if progress is not None:
                progress(rows)
        return [np.concatenate(o, axis=0) if isinstance(o, list) else o for o in outs]


def run_cpu(model: onnx.ModelProto, feeds: list[dict], initializers: dict | None = None) -> list[list[np.ndarray]]:
    """Run a small helper ``model`` once per feed dict on the CPU provider (quiet, uncached): the outputs
    of each run. An :class:`OnnxplainError` when onnxruntime cannot load or run it. ``initializers``: as
    for :class:`Session`."""
    try:
        so = _quiet_options()
        if initializers:
            values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for v in initializers.values()]
            so.add_external_initializers(list(initializers), values)
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [sess.run(None, feed) for feed in feeds]
    except Exception as exc:
        msg = first_line(exc)
        raise OnnxplainError(f"onnxruntime cannot run the helper model '{model.graph.name}': {msg}") from None
