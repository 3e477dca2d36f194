"""PRelu as a Mul and a Max: ``PRelu(x, a)`` becomes ``Max(x, Mul(x, a))`` where every slope a <= 1 (``Min`` where
every a >= 1).

ONNX Runtime 1.32's CPU PRelu broadcasts a per-channel slope with its generic element-by-element loop: on a
[1, 32, 46, 46] tensor (MTCNN ONet's first layer, 1 thread, AMD EPYC) PRelu took 426 us where Mul and Max
together took 68 us, and a model's PRelus then cost more than its int8 convolutions save (ONet ran at 0.91x fp32).
No QDQ rule of its optimizer fuses PRelu, so in a quantized model it runs in float between a DequantizeLinear and a
QuantizeLinear either way.

The two forms compute the same float32 numbers. For a <= 1: where x >= 0, a*x <= x, so the Max is x; where x < 0,
a*x >= x, so the Max is a*x: PRelu's two branches, and a*x is the product PRelu itself rounds. For a >= 1 the
inequalities turn round and Min picks the same values. A slope with values on both sides of 1 keeps its PRelu.
The ONNX Runtime target applies it to its artifacts (and `edgeq quantize` to its model, ONNX Runtime's); ``undo``
restores the PRelu for readers of the interchange form (the TFLite lowering behind `edgeq verify`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase

from edgeq.quantization.plan import constant_array
from edgeq.quantization.qparams import dequantized_constant


def _slope_values(slope: ir.Value) -> np.ndarray | None:
    """The slope's float values if it is a constant or the DequantizeLinear of constants, else None."""
    if (values := constant_array(slope)) is not None:
        return values.astype(np.float32)
    producer = slope.producer()
    return dequantized_constant(producer) if producer is not None and producer.op_type == "DequantizeLinear" else None


def _bound(slope: ir.Value) -> str | None:
    """"Max" if every slope value is at most 1, "Min" if every one is at least 1, else None."""
    values = _slope_values(slope)
    if values is None or values.size == 0:
        return None
    if (values <= 1).all():
        return "Max"
    return "Min" if (values >= 1).all() else None


class _PReluAsMax(RewriteRuleClassBase):
    def pattern(self, op, x, slope):
        return op.PRelu(x, slope)

    def check(self, context, x, slope) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        return result if _bound(slope) else result.fail("a slope not constant, or with values on both sides of 1")

    def rewrite(self, op, x, slope):
        scaled = op.Mul(x, slope)
        return op.Max(x, scaled) if _bound(slope) == "Max" else op.Min(x, scaled)


class _MaxAsPRelu(RewriteRuleClassBase):
    """The inverse, for readers of the interchange form."""

    def __init__(self, bound: str):
        super().__init__(name=f"{bound}AsPRelu")
        self.bound = bound

    def pattern(self, op, x, slope):
        return getattr(op, self.bound)(x, op.Mul(x, slope))

    def check(self, context, x, slope) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        return result if _bound(slope) == self.bound else result.fail(f"not PRelu's {self.bound} form")

    def rewrite(self, op, x, slope):
        return op.PRelu(x, slope)


def prelus_as_max(model: ir.Model) -> int:
    """Rewrite MODEL's PRelus with a constant slope on one side of 1, in place; the number rewritten."""
    return rewriter.RewriteRuleSet([_PReluAsMax.rule()]).apply_to_model(model)


def undo(model: ir.Model) -> int:
    """Back to the interchange form: each ``Max(x, Mul(x, a))`` with a <= 1 (``Min``, a >= 1) a PRelu, in place."""
    rules = [_MaxAsPRelu.rule("Max"), _MaxAsPRelu.rule("Min")]
    return rewriter.RewriteRuleSet(rules).apply_to_model(model)
