"""Turn a product with a constant matrix and its bias, ``MatMul(x, W) + b``, into one ``Gemm(x, W, b)``.

torch exports ``nn.Linear`` on a [batch, tokens, channels] tensor as MatMul and Add (the bias often first). As
two nodes, a quantized model for ONNX Runtime either quantizes the product's output before the bias is added
(one more rounding, in a transformer on the residual stream) or leaves the Add float after a float-output
product, a pattern that onnxruntime 1.32's own MatMul+Add fusion fails on when the weight is dequantized ("Attempt
to replace the existing tensor" at load). Gemm takes the bias as an int32 input of its integer kernel (QGemm) and
the TFLite lowering makes it one FULLY_CONNECTED with bias. Exact: Gemm computes x W + b.

A Gemm multiplies matrices, so a rank-r input (r > 2, static shape [d1, ..., K]) is reshaped to [-1, K] and the
result back to [d1, ..., N]: the same pattern onnxruntime's basic optimizations write (edgeq's front end runs
them first, passes.runtime_folding, and they leave some of these pairs, e.g. the query, key and value products,
unfused). Applied when W is a constant [K, N] matrix, b a constant of N values (any leading 1 dimensions), and
the product has no other reader.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase

from edgeq.passes.div_to_mul import shared_initializer


class _MatMulBias(RewriteRuleClassBase):
    def pattern(self, op, x, weight, bias):
        return op.Add(op.MatMul(x, weight, _outputs=["product"]), bias)

    def check(self, context, x, weight, bias, product) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        w, b = weight.const_value, bias.const_value
        if w is None or b is None or len(w.shape) != 2 or w.dtype != ir.DataType.FLOAT:
            return result.fail("not a product with a constant float matrix and a constant bias")
        if b.size != w.shape[1] or any(d != 1 for d in b.shape[:-1]):
            return result.fail("the bias is not one value per output column")
        if x.shape is None or not all(isinstance(d, int) for d in x.shape) or len(x.shape) < 2:
            return result.fail("the input's shape is not static")
        if len(product.uses()) != 1 or product.is_graph_output():
            return result.fail("the product has other readers")
        return result

    def rewrite(self, op, x, weight, bias, product):
        k, n = weight.const_value.shape
        flat_bias = op.initializer(ir.tensor(bias.const_value.numpy().reshape(n)), name=f"{bias.name}_gemm")
        if len(x.shape) == 2:
            return op.Gemm(x, weight, flat_bias)
        # one per input: the query, key and value products read one tensor (passes.div_to_mul.shared_initializer)
        rows = op.Reshape(x, shared_initializer(op, x.graph, f"{x.name}_rows", np.array([-1, k], np.int64)))
        out_shape = np.array([*x.shape[:-1], n], np.int64)
        return op.Reshape(
            op.Gemm(rows, weight, flat_bias),
            op.initializer(ir.tensor(out_shape), name=f"{product.name}_shape"),
        )


class MatMulBiasToGemmPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rules = rewriter.RewriteRuleSet([_MatMulBias().rule()], commute=True)
        return ir.passes.PassResult(model, modified=bool(rules.apply_to_model(model)))
