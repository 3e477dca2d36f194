"""Turn division by a float constant into multiplication by its reciprocal: ``Div(x, c) -> Mul(x, 1/c)``.

``x / c`` and ``x * (1/c)`` differ by at most one float32 rounding of ``1/c``, far below any int8 step, and Mul
has integer kernels (ORT QLinearMul, TFLite MUL) while Div has none. It matters in attention blocks, where
``scores / sqrt(d)`` would otherwise stay float and keep the Softmax after it float too.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase


class _DivByConstant(RewriteRuleClassBase):
    def pattern(self, op, x, divisor):
        return op.Div(x, divisor)

    def check(self, context, x, divisor) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        value = divisor.const_value
        # Div's inputs share one type, so a float32 divisor means a float32 x (whose type may not be annotated)
        if value is None or divisor.dtype != ir.DataType.FLOAT:
            return result.fail("divisor is not a float32 constant")
        if not np.all(np.isfinite(value.numpy())) or np.any(value.numpy() == 0):
            return result.fail("divisor has zeros or non-finite values")
        return result

    def rewrite(self, op, x, divisor):
        # One reciprocal per divisor: exporters and onnx-simplifier share one scalar initializer among many Divs,
        # and a second initializer of the same name would be left unregistered (an invalid graph).
        reciprocal = (np.float32(1.0) / divisor.const_value.numpy()).astype(np.float32)
        return op.Mul(x, shared_initializer(op, divisor.graph, f"{divisor.name}_reciprocal", reciprocal))


def shared_initializer(op, graph: ir.Graph | None, name: str, array: np.ndarray) -> ir.Value:
    """The initializer NAME of GRAPH if a rewrite made it already, else a new one holding ARRAY."""
    if graph is not None and name in graph.initializers:
        return graph.initializers[name]
    return op.initializer(ir.tensor(array), name=name)


class DivToMulPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = rewriter.RewriteRuleSet([_DivByConstant().rule()]).apply_to_model(model)
        return ir.passes.PassResult(model, modified=bool(count))
