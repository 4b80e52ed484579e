"""The rule table: one rule per op type."""
import pytest

from onnxplain.rules import GRADIENT, gradient_rule


def test_registering_an_op_twice_is_an_error():
    op = "OnnxplainTestOnlyOp"
    assert op not in GRADIENT

    def first(ctx, node, gouts):
        return [gouts[0]]

    def second(ctx, node, gouts):
        return [gouts[0]]

    try:
        gradient_rule(op)(first)
        with pytest.raises(RuntimeError, match=f"{op} registered twice"):
            gradient_rule(op)(second)
        assert GRADIENT[op] is first  # the first registration stays
    finally:
        GRADIENT.pop(op, None)


def test_a_builtin_rule_cannot_be_overridden():
    """Re-registering a built-in op is refused (so no module silently overrides another's rule)."""
    with pytest.raises(RuntimeError, match="Relu registered twice"):
        gradient_rule("Relu")(lambda ctx, node, gouts: [gouts[0]])
    assert GRADIENT["Relu"].__module__ == "onnxplain.rules.elementwise"
