"""Pass: ``auto_pad=SAME_UPPER/SAME_LOWER/VALID`` on Conv and pooling nodes becomes explicit ``pads``
where they are static (known spatial size, or stride 1, where SAME pads do not depend on the size);
dynamic cases keep their auto_pad. The padding is the same, so the model's output is unchanged."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ...rules.geometry import same_pads

WINDOW_OPS = ("Conv", "MaxPool", "AveragePool", "LpPool")


def explicit_pads(graph: gs.Graph) -> None:
    """auto_pad=SAME_*/VALID → explicit pads where the spatial size (or stride 1) makes them static."""
    for node in graph.nodes:
        mode = node.attrs.get("auto_pad", "NOTSET")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if node.op not in WINDOW_OPS or mode in ("NOTSET", ""):
            continue
        x = node.inputs[0]
        if node.op == "Conv":
            kernel = list(node.attrs.get("kernel_shape") or node.inputs[1].shape[2:])
        else:
            kernel = list(node.attrs["kernel_shape"])
        nd = len(kernel)
        strides = list(node.attrs.get("strides", [1] * nd))
        dil = list(node.attrs.get("dilations", [1] * nd))
        if mode == "VALID":
            pads = [0] * (2 * nd)
        else:
            spatial = list(x.shape[2:]) if x.shape is not None else [None] * nd
            pads = same_pads(mode, spatial, kernel, strides, dil)
            if pads is None:
                continue
        node.attrs["auto_pad"] = "NOTSET"
        node.attrs["pads"] = pads
