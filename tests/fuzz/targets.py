"""Fuzz targets: what onnxplain must answer for *any* bytes given as a model file or an image file.

A target returns normally or raises :class:`onnxplain.OnnxplainError` (a one-line user error); any other
exception is a bug. ``check_model`` reads the bytes as ``model.onnx`` beside a fixed external-data file
``weights.bin`` and canonicalises it; ``check_image`` loads the bytes as an image, as-is and resized.

Run as a script under atheris (``python tests/fuzz/targets.py model|image [libFuzzer args]``); the
harness ``tests/fuzz/run.py`` does that. Imported without atheris, the targets replay stored inputs
(``tests/test_robustness.py``).
"""
from __future__ import annotations

import os
import sys
import tempfile

WEIGHTS = bytes(range(256)) * 16  # weights.bin: 4096 bytes that external data in the corpus points into
IMAGE_PIXELS = 1 << 20  # Pillow's pixel budget while fuzzing: bombs are refused just the same, but fast
_DIR: list = []


def _workdir() -> str:
    if not _DIR:
        _DIR.append(tempfile.mkdtemp(prefix="onnxplain-fuzz-"))
        with open(os.path.join(_DIR[0], "weights.bin"), "wb") as f:
            f.write(WEIGHTS)
    return _DIR[0]


def _write(name: str, data: bytes) -> str:
    path = os.path.join(_workdir(), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_model(data: bytes) -> None:
    """Load and canonicalise ``data`` as a model file."""
    from onnxplain import OnnxplainError, canonicalize

    path = _write("model.onnx", data)
    try:
        canonicalize(path)
    except OnnxplainError:
        pass


def check_image(data: bytes) -> None:
    """Load ``data`` as an image file at its own size and resized to 8×8, in RGB and grayscale."""
    from PIL import Image

    from onnxplain import OnnxplainError
    from onnxplain.images import load_images

    Image.MAX_IMAGE_PIXELS = IMAGE_PIXELS
    path = _write("image", data)
    for kwargs in ({}, {"size": (8, 8), "channels": 1}):
        try:
            load_images([path], **kwargs)
        except OnnxplainError:
            pass


TARGETS = {"model": (check_model, ["onnxplain", "onnx_graphsurgeon"]), "image": (check_image, ["onnxplain", "PIL"])}


def main(argv) -> None:
    import atheris

    target, include = TARGETS[argv[1]]
    with atheris.instrument_imports(include=include):
        import onnx_graphsurgeon  # noqa: F401
        import PIL.Image

        import onnxplain.canonical  # noqa: F401
        import onnxplain.images  # noqa: F401
        import onnxplain.runtime  # noqa: F401

        PIL.Image.init()  # Pillow imports its format plugins on first use: now, to instrument them
    atheris.Setup([argv[0]] + argv[2:], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
