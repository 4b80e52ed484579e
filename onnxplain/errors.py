"""Exceptions raised by onnxplain.

Every error a *user* can cause (bad file, unknown method, op without a rule, wrong image) is an
:class:`OnnxplainError`; the CLI prints its message on one line and exits non-zero. Anything else is a bug.
"""


class OnnxplainError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class ModelError(OnnxplainError):
    """The model file cannot be read, validated or canonicalised."""


class UnsupportedOpError(OnnxplainError):
    """The backward pass meets ops for which the chosen method has no rule."""

    def __init__(self, method, nodes):
        self.method = method
        self.nodes = list(nodes)  # [(op_type, node_name)]
        ops = sorted({op for op, _ in self.nodes})
        names = ", ".join(f"{op} ({name})" for op, name in self.nodes[:5])
        more = f" and {len(self.nodes) - 5} more" if len(self.nodes) > 5 else ""
        super().__init__(
            f"method '{method}' has no rule for op(s) {', '.join(ops)}: nodes {names}{more}; "
            "use a method that needs no rules (e.g. 'occlusion'), or fall back to it automatically "
            "(fallback=True in Python)")


class ImageError(OnnxplainError):
    """An image cannot be loaded or does not fit the model's input."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (onnx's and onnxruntime's run over many lines), for
    one-line errors; the exception's type name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
