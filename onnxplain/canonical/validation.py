"""What a model file must satisfy before anything is allocated for it or computed with it.

:func:`check_text` (every name is valid UTF-8), :func:`check_types` (every declared tensor has a data type
ONNX defines), :func:`check_sizes` (dimensions, external data ranges, and the declared size of all weights
against the memory available — before external data is read) and :func:`check_data` (every tensor holds
the data its dimensions declare, and no floating-point weight is NaN or ±Inf). Each failure is a one-line
:class:`~onnxplain.errors.ModelError` naming the tensor.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import ModelError

HINT = "the file is damaged or cut short: export or download it again"
_FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
_FLOATS = {TensorProto.FLOAT: "<f4", TensorProto.DOUBLE: "<f8", TensorProto.FLOAT16: "<f2"}
_KNOWN_TYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}


# ---- text -----------------------------------------------------------------------------------------------
def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return rep if rep is not None else fd.label == fd.LABEL_REPEATED


def _invalid_text(msg, where: str):
    """The path of the first string field under ``msg`` that is not valid UTF-8 (protobuf hands such a
    field over as bytes instead of str), None when every one is valid."""
    for fd in msg.DESCRIPTOR.fields:
        if fd.type == fd.TYPE_STRING:
            values = getattr(msg, fd.name)
            for i, v in enumerate(values if _repeated(fd) else [values]):
                if not isinstance(v, str):
                    return f"{where}.{fd.name}" + (f"[{i}]" if _repeated(fd) else "")
        elif fd.type == fd.TYPE_MESSAGE:
            if _repeated(fd):
                subs = enumerate(getattr(msg, fd.name))
            else:
                subs = [(None, getattr(msg, fd.name))] if msg.HasField(fd.name) else []
            for i, sub in subs:
                bad = _invalid_text(sub, f"{where}.{fd.name}" + ("" if i is None else f"[{i}]"))
                if bad:
                    return bad
    return None


def check_text(model: onnx.ModelProto, where: str) -> None:
    """Every string of the model (names, op types, attributes, metadata) is valid UTF-8."""
    bad = _invalid_text(model, "model")
    if bad:
        raise ModelError(f"{where}: {bad} is not valid UTF-8 text; {HINT}")


def _value_infos(graph):
    """(role, ValueInfoProto) of the inputs, outputs and value_info of ``graph`` and its subgraphs."""
    for role in ("input", "output", "value_info"):
        for vi in getattr(graph, role):
            yield role, vi
    for node in graph.node:
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _value_infos(g)


def check_types(model: onnx.ModelProto, where: str) -> None:
    """Every tensor the graph declares has a data type ONNX defines (inputs and outputs one at all)."""
    for role, vi in _value_infos(model.graph):
        if not vi.type.HasField("tensor_type"):
            continue
        et = vi.type.tensor_type.elem_type
        if et not in _KNOWN_TYPES and (et != TensorProto.UNDEFINED or role != "value_info"):
            what = "no data type" if et == TensorProto.UNDEFINED else f"data type {et}, which ONNX does not define"
            raise ModelError(f"{where}: graph {role} '{vi.name}' has {what}; {HINT}")


# ---- the tensors --------------------------------------------------------------------------------------
def _node_tensors(nodes):
    for node in nodes:
        who = f"node '{node.name or (node.output[0] if node.output else node.op_type)}' ({node.op_type})"
        for a in node.attribute:
            label = f"the value of {who}" if node.op_type == "Constant" else f"attribute '{a.name}' of {who}"
            if a.HasField("t"):
                yield label, a.t
            for t in a.tensors:
                yield label, t
            if a.HasField("g"):
                yield from graph_tensors(a.g)
            for g in a.graphs:
                yield from graph_tensors(g)


def graph_tensors(graph):
    """(label, TensorProto) of every initializer and tensor attribute of ``graph`` and its subgraphs."""
    for t in graph.initializer:
        yield f"initializer '{t.name}'", t
    for s in graph.sparse_initializer:
        yield f"sparse initializer '{s.values.name}'", s.values
        yield f"indices of sparse initializer '{s.values.name}'", s.indices
    yield from _node_tensors(graph.node)


def model_tensors(model: onnx.ModelProto):
    yield from graph_tensors(model.graph)
    for f in model.functions:
        yield from _node_tensors(f.node)


def is_external(t) -> bool:
    return t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL


def _elements(t, label: str, where: str) -> int:
    """The number of values ``t`` declares; a ModelError for a negative dim or a data type ONNX does not
    know."""
    if t.data_type not in _KNOWN_TYPES:
        raise ModelError(f"{where}: {label} has data type {t.data_type}, which ONNX does not define; {HINT}")
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelError(f"{where}: {label} has a negative dimension (dims {list(t.dims)}); {HINT}")
        n *= d
    return n


def _itemsize(data_type) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except (KeyError, ValueError, TypeError):
        return 4  # an unknown type: the checker names it; count it like float32 meanwhile


def _nbytes(t, n: int) -> int:
    """Bytes of ``n`` values of the tensor's type (exact integers: dims may claim absurd sizes)."""
    return (n + 1) // 2 if t.data_type in _FOUR_BIT else n * _itemsize(t.data_type)


def _count(n: int) -> str:
    return f"{n:,}" if n < 10 ** 18 else f"about 10^{len(str(n)) - 1}"


def fmt_bytes(n) -> str:
    n = int(n)
    if n >= 10 ** 18:
        return f"about 10^{len(str(n)) - 1} bytes"
    for unit, size in (("PB", 10 ** 15), ("TB", 10 ** 12), ("GB", 10 ** 9), ("MB", 10 ** 6), ("KB", 10 ** 3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable of /proc/meminfo (else the free pages), lowered
    to the room left under a cgroup memory limit; None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                room = int(limit) - int(f.read().strip())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def _external_info(t) -> dict:
    return {e.key: e.value for e in t.external_data}


def _check_external_range(t, label: str, need: int, base: str, where: str) -> None:
    """The bytes ``offset .. offset + length`` of the tensor's external data file exist and are ``need``."""
    info = _external_info(t)
    loc = info.get("location", "")
    try:
        offset, length = int(info.get("offset", 0)), (int(info["length"]) if "length" in info else None)
    except ValueError:
        raise ModelError(f"{where}: external data of {label} has an offset or length that is not a number; "
                         f"{HINT}") from None
    size = os.path.getsize(os.path.join(base, loc))
    if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
        end = f"..{offset + length}" if length is not None else ""
        raise ModelError(f"{where}: external data of {label} lies at bytes {offset}{end} of '{loc}', past "
                         f"its end ({size} bytes); {HINT}")
    held = length if length is not None else size - offset
    if (length is not None and held != need) or held < need:
        raise ModelError(f"{where}: {label} declares dims {list(t.dims)} ({fmt_bytes(need)}) but its external "
                         f"data in '{loc}' has {fmt_bytes(held)}; {HINT}")


def check_sizes(model: onnx.ModelProto, where: str, base: str | None = None, available=None) -> None:
    """Before any external data is read: dimensions are ≥ 0, external data lies inside its file (``base``:
    the model's folder) and has the declared size, and the weights fit in the memory available."""
    avail = available_memory() if available is None else available
    total, largest, external = 0, (0, "", None), []
    for held in (False, True):  # with the bytes in-memory tensors hold only when the dims alone are too large
        total, largest, external = 0, (0, "", None), []
        for label, t in model_tensors(model):
            need = _nbytes(t, _elements(t, label, where))
            if is_external(t):
                external.append((label, t, need))
            elif held:  # already in memory: it cannot need more than it holds (check_data names a mismatch)
                need = min(need, t.ByteSize())  # ByteSize serialises the tensor: 0.8 s for a VGG-16
            total += need
            if need > largest[0]:
                largest = (need, label, list(t.dims))
        if avail is None or total <= avail:
            break
    if avail is not None and total > avail:
        raise ModelError(f"{where} declares {fmt_bytes(total)} of weights, more than the {fmt_bytes(avail)} of "
                         f"memory available (the largest: {largest[1]}, dims {largest[2]}, "
                         f"{fmt_bytes(largest[0])}); refusing to load it")
    for label, t, need in external if base is not None else []:
        _check_external_range(t, label, need, base, where)


# ---- the data ---------------------------------------------------------------------------------------------
def _held_bytes(t, raw) -> int | None:
    """Bytes of data the tensor holds (typed fields converted at the item size), None for strings."""
    if raw is not None:
        return len(raw)
    if t.data_type == TensorProto.STRING:
        return None
    try:
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
    except (KeyError, ValueError, TypeError):
        return None
    values = len(getattr(t, field))
    if t.data_type in _FOUR_BIT:
        return values  # two 4-bit values packed per int32_data entry, as in raw data
    if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        return values * _itemsize(t.data_type) // 2  # real and imaginary parts are separate values
    return values * _itemsize(t.data_type)


def _nonfinite(t, raw) -> tuple:
    """(NaN count, ±Inf count) of a floating-point tensor ((0, 0) for other types)."""
    dt = t.data_type
    if dt == TensorProto.BFLOAT16:  # float32 with the low 16 bits cut off
        bits = np.frombuffer(raw, "<u2", count=len(raw) // 2) if raw is not None else \
            np.asarray(t.int32_data, np.uint16)
        arr = (bits.astype(np.uint32) << 16).view(np.float32)
    elif dt not in _FLOATS:
        return 0, 0
    elif raw is not None:
        arr = np.frombuffer(raw, _FLOATS[dt], count=len(raw) // np.dtype(_FLOATS[dt]).itemsize)
    elif dt == TensorProto.FLOAT16:
        arr = np.asarray(t.int32_data, np.uint16).view(np.float16)
    else:
        arr = np.asarray(t.float_data if dt == TensorProto.FLOAT else t.double_data)
    if np.isfinite(arr).all():  # one pass for the usual case
        return 0, 0
    return int(np.count_nonzero(np.isnan(arr))), int(np.count_nonzero(np.isinf(arr)))


def check_data(model: onnx.ModelProto, where: str) -> None:
    """Every tensor holds exactly the data its dims declare; no floating-point tensor holds NaN, and none
    with more than one value holds ±Inf (a single ±Inf is a bound or a fill value, e.g. of Clip)."""
    for label, t in model_tensors(model):
        if is_external(t):
            continue  # a ModelProto given without its external data: load_model refuses it
        n = _elements(t, label, where)
        raw = t.raw_data if t.HasField("raw_data") else None
        held, need = _held_bytes(t, raw), _nbytes(t, n)
        if t.data_type == TensorProto.STRING:
            held, need = len(t.string_data), n
        if held is not None and held != need:
            what = "values" if t.data_type == TensorProto.STRING else "bytes"
            raise ModelError(f"{where}: {label} declares dims {list(t.dims)} ({_count(n)} elements) but holds "
                             f"{held:,} {what} of data instead of {_count(need)}; {HINT}")
        nan, inf = _nonfinite(t, raw)
        if nan or (inf and n > 1):  # a single ±Inf is a bound or a fill value (Clip, masks), not a weight
            what = " and ".join(f"{k:,} {w}" for k, w in ((nan, "NaN"), (inf, "infinite")) if k)
            raise ModelError(f"{where}: {label} contains {what} value(s); a model with non-finite weights "
                             "cannot be explained: fix or retrain it")
