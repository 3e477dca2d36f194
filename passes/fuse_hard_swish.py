"""Turn the hard-swish decompositions exporters write into ONNX ``HardSwish`` (opset 14).

    HardSwish(x) = x * max(0, min(1, x / 6 + 1/2)) = x * relu6(x + 3) / 6

Exporters write it three ways, each rewritten only when its constants are exactly these (a Mul by the float32
nearest 1/6 is preprocessing's form of the Div by 6, passes/div_to_mul.py):

    x * HardSigmoid(x, alpha=1/6, beta=0.5)           (torch before opset 14, Keras)  HardSwish by definition
    x * Clip(x + 3, 0, 6) / 6, or * (1/6)            (PaddlePaddle: p2o "hardswish")
    x * (Clip(x + 3, 0, 6) / 6), or * (1/6)

in any operand order of the Mul and Add nodes. The rewrite is exact in real arithmetic; in float32 the two forms
round differently by at most a few ulp, far below an int8 step. One HardSwish is one TFLite HARD_SWISH instead
of three or four quantized ops, each with its own rounding. The Clip's bounds may be inputs or (opset < 11)
attributes. A model whose opset is below 14 has no HardSwish and is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase

from edgeq.quantization.plan import activation_bounds

SIXTH = np.float32(1.0 / 6.0)
OPSET = 14


def scalar_constant(value: ir.Value | None) -> float | None:
    """The value of a one-element float constant, else None."""
    array = None if value is None or value.const_value is None else value.const_value.numpy()
    return (
        float(array.reshape(-1)[0])
        if array is not None and array.size == 1 and array.dtype.kind == "f"
        else None
    )


class _FromHardSigmoid(RewriteRuleClassBase):
    def pattern(self, op, x):
        return op.Mul(x, op.HardSigmoid(x, _allow_other_attributes=True, _outputs=["gate"]))

    def check(self, context, x, gate) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        attributes = gate.producer().attributes
        alpha, beta = attributes.get_float("alpha", 0.2), attributes.get_float("beta", 0.5)
        if np.float32(alpha) != SIXTH or np.float32(beta) != np.float32(0.5):
            return result.fail(f"HardSigmoid(alpha={alpha}, beta={beta}) is not HardSwish's")
        return result

    def rewrite(self, op, x, gate):
        return op.HardSwish(x)


class _FromClip(RewriteRuleClassBase):
    """x * Clip(x + 3, 0, 6) scaled by 1/6 after the product (OUTER) or before it, by a Div or a Mul."""

    def __init__(self, outer: bool, divide: bool):
        super().__init__(f"HardSwish{'Outer' if outer else 'Inner'}{'Div' if divide else 'Mul'}")
        self.outer, self.divide = outer, divide

    def _scaled(self, op, v, sixth):
        return op.Div(v, sixth) if self.divide else op.Mul(v, sixth)

    def pattern(self, op, x, three, sixth):
        clipped = op.Clip(
            op.Add(x, three), _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["clipped"]
        )
        if self.outer:
            return self._scaled(op, op.Mul(x, clipped), sixth)
        return op.Mul(x, self._scaled(op, clipped, sixth))

    def check(self, context, x, three, sixth, clipped) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        expected = 6.0 if self.divide else float(SIXTH)
        if scalar_constant(three) != 3.0 or scalar_constant(sixth) != expected:
            return result.fail("constants other than 3 and 6 (1/6)")
        if activation_bounds(clipped.producer()) != (0.0, 6.0):
            return result.fail("the Clip is not Clip(0, 6)")
        return result

    def rewrite(self, op, x, three, sixth, clipped):
        return op.HardSwish(x)


def hard_swish_rules() -> rewriter.RewriteRuleSet:
    rules = [_FromHardSigmoid.rule()]
    rules += [_FromClip.rule(outer, divide) for outer in (True, False) for divide in (True, False)]
    return rewriter.RewriteRuleSet(rules, commute=True)


def apply_from_opset(model: ir.Model, rules: rewriter.RewriteRuleSet, opset: int) -> ir.passes.PassResult:
    """RULES applied to MODEL if its default opset has the op they write (OPSET on), else nothing."""
    if model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)) < opset:
        return ir.passes.PassResult(model, modified=False)
    return ir.passes.PassResult(model, modified=bool(rules.apply_to_model(model)))


class FuseHardSwishPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return apply_from_opset(model, hard_swish_rules(), OPSET)
