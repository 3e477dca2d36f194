"""Turn the exact-erf GELU decomposition torch exports write into ONNX ``Gelu`` (opset 20).

    Gelu(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))

torch.onnx writes ``x * (1 + Erf(x / sqrt(2))) * 0.5`` (BERT-style models: sentence-transformers, MiniLM); after
preprocessing the Div may be a Mul by 1/sqrt(2) (passes/div_to_mul.py). Rewritten, in any operand order of the
Mul and Add nodes, when the constants are exactly float32(sqrt 2) (or float32(1/sqrt 2)), 1 and 0.5, as

    Mul(Mul(x, Add(Erf(x / sqrt 2), 1)), 0.5)      Mul(Mul(x, 0.5), Add(Erf(x / sqrt 2), 1))
    Mul(x, Mul(Add(Erf(x / sqrt 2), 1), 0.5))

Exact in real arithmetic (float32 evaluation differs by a few ulp). One Gelu is one TFLite GELU (a table of the
exact function) instead of an Erf, which TFLite cannot run in int8, between quantized Mul and Add nodes. ONNX Gelu
exists from opset 20 only, and BERT-style exports are mostly opset 14-17: a model below 20 that has an Erf is first
converted to opset 20 with onnx's version converter (exact by design: each adapter rewrites an op into its new
form, e.g. ReduceMean's axes attribute into an input); a model the converter cannot take is left as it is.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase

from edgeq.passes.fuse_hard_swish import apply_from_opset, scalar_constant
from edgeq.passes.raise_opset import convert_up, default_opset

SQRT_2 = float(np.float32(math.sqrt(2.0)))
SQRT_HALF = float(np.float32(math.sqrt(0.5)))
OPSET = 20


class _Gelu(RewriteRuleClassBase):
    """One arrangement: where the 0.5 multiplies (SHAPE) and whether x / sqrt(2) is a Div or a Mul (DIVIDE)."""

    def __init__(self, shape: str, divide: bool):
        super().__init__(f"Gelu{shape.title()}{'Div' if divide else 'Mul'}")
        self.shape, self.divide = shape, divide

    def pattern(self, op, x, root, one, half):
        scaled = op.Div(x, root) if self.divide else op.Mul(x, root)
        phi2 = op.Add(op.Erf(scaled), one)  # 2 Phi(x)
        if self.shape == "outer":
            return op.Mul(op.Mul(x, phi2), half)
        if self.shape == "first":
            return op.Mul(op.Mul(x, half), phi2)
        return op.Mul(x, op.Mul(phi2, half))

    def check(self, context, x, root, one, half) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        if (
            scalar_constant(root) != (SQRT_2 if self.divide else SQRT_HALF)
            or scalar_constant(one) != 1.0
            or scalar_constant(half) != 0.5
        ):
            return result.fail("constants other than sqrt(2), 1 and 0.5")
        return result

    def rewrite(self, op, x, root, one, half):
        return op.Gelu(x)


def gelu_rules() -> rewriter.RewriteRuleSet:
    rules = [_Gelu.rule(shape, divide) for shape in ("outer", "first", "inner") for divide in (True, False)]
    return rewriter.RewriteRuleSet(rules, commute=True)


class FuseGeluPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        erf = any(node.op_type == "Erf" for node in model.graph)
        if default_opset(model) < OPSET and erf and convert_up(model, OPSET) is None:
            gelu_rules().apply_to_model(model)
            return ir.passes.PassResult(model, modified=True)
        return apply_from_opset(model, gelu_rules(), OPSET)
