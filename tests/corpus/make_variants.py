"""Deployment variants of float models in the corpus: int8 QDQ and QOperator (onnxruntime.quantization,
static, calibrated on the model's own inputs; dynamic), and fp16 (onnxconverter-common, with fp16 and with
fp32 inputs/outputs). Runs inside the corpus environment. Reference logits of a variant are onnxruntime's
output on the variant itself (a quantized model's decision is its own).

    python make_variants.py MODELDIR
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

BASES = ["torch_legacy_lenet_digits", "torch_legacy_resnet", "torch_legacy_mobilenet_v2", "torch_legacy_vgg",
         "keras_cnn", "torch_dynamo_resnet", "torch_legacy_mlp_tabular"]


class Reader(CalibrationDataReader):
    def __init__(self, name, x):
        rng = np.random.default_rng(0)
        self.rows = [{name: (x[i % len(x)][None] + 0.05 * rng.standard_normal(x.shape[1:])).astype(np.float32)}
                     for i in range(16)]

    def get_next(self):
        return self.rows.pop() if self.rows else None


def meta(path, base, what):
    with open(os.path.join(os.path.dirname(path), base + ".json")) as f:
        info = json.load(f)
    info["exporter"] += f" + {what}"
    info["variant_of"] = base
    return info


def save_ref(path, x, info):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    xx = x.astype(np.float16) if "float16" in inp.type else x
    outs = sess.run(None, {inp.name: xx})
    np.savez(path[:-5] + ".npz", x=x, output=np.asarray(outs[-1] if len(outs) > 1 else outs[0], np.float32))
    with open(path[:-5] + ".json", "w") as f:
        json.dump(info, f)


def main(d):
    made = 0
    for base in BASES:
        src = os.path.join(d, base + ".onnx")
        if not os.path.exists(src):
            continue
        x = np.load(os.path.join(d, base + ".npz"))["x"]
        name = onnx.load(src, load_external_data=False).graph.input[0].name
        jobs = [("int8_qdq", lambda out: quantize_static(src, out, Reader(name, x), quant_format=QuantFormat.QDQ,
                                                         per_channel=True, activation_type=QuantType.QInt8,
                                                         weight_type=QuantType.QInt8)),
                ("uint8_qoperator", lambda out: quantize_static(src, out, Reader(name, x),
                                                                quant_format=QuantFormat.QOperator)),
                ("int8_dynamic", lambda out: quantize_dynamic(src, out, weight_type=QuantType.QInt8)),
                ("fp16", lambda out: _fp16(src, out, keep_io=False)),
                ("fp16_io32", lambda out: _fp16(src, out, keep_io=True))]
        for tag, make in jobs:
            out = os.path.join(d, f"{base}__{tag}.onnx")
            try:
                make(out)
                save_ref(out, x, meta(out, base, tag))
                made += 1
            except Exception as exc:
                print(f"variants: {base} {tag}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                for p in (out, out[:-5] + ".npz", out[:-5] + ".json"):
                    if os.path.exists(p):
                        os.remove(p)
    print(f"variants: {made} made")


def _fp16(src, out, keep_io):
    from onnxconverter_common import float16

    m = float16.convert_float_to_float16(onnx.load(src), keep_io_types=keep_io)
    onnx.save(m, out)


if __name__ == "__main__":
    main(sys.argv[1])
