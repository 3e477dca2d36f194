"""Remove nodes that compute nothing at inference: Identity, and Dropout in inference mode.

``Dropout(x, ratio, training_mode=False)`` is ``x``; ``Identity(x)`` is ``x``. onnxscript's rewriter rules
turn inference-mode Dropouts into Identities, and onnx_ir's IdentityEliminationPass removes them (keeping
graph output names). Removing them matters for quantization: a Q/DQ pair on either side of a no-op would
split a Conv from its activation and block the runtimes' fused kernels.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.rewriter.rules.common import dropout_inference_rule, dropout_zero_rule


class RemoveNoOpsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = rewriter.RewriteRuleSet([dropout_inference_rule, dropout_zero_rule]).apply_to_model(model)
        result = common_passes.IdentityEliminationPass()(model)
        return ir.passes.PassResult(model, modified=bool(count) or result.modified)
