"""Turn the layer-norm decomposition older exporters write into ONNX ``LayerNormalization`` (opset 17 on).

    y = scale * (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) + bias      (over the last axis)

torch.onnx below opset 17 writes it as ReduceMean, Sub, Pow (or Mul), ReduceMean, Add(eps), Sqrt, Div (or
Reciprocal and Mul), Mul(scale), Add(bias). As one node it is what ONNX Runtime runs as one float kernel and the
TFLite lowering makes one float island (targets/tflite/lower/normalization.py); op by op, edgeq would quantize each
intermediate (an int8 Pow and Sqrt of a variance), and the ONNX Runtime placement would not see a transformer
(edgeq.quantization.placement). The rules are onnxscript's own (its rewriter's layer-norm fusion), which read
ReduceMean's axes as an input, as from opset 18; a BERT-style export below that usually has an Erf and so has
been converted to opset 20 by passes.fuse_gelu already. A graph below opset 17 keeps the decomposition.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules.fusion._layer_norm import layer_normalization_ruleset

from edgeq.passes.fuse_hard_swish import apply_from_opset

OPSET = 17


class FuseLayerNormPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return apply_from_opset(model, layer_normalization_ruleset, OPSET)
