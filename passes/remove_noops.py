"""Remove nodes that compute nothing at inference: Identity, and Dropout in inference mode.

``Dropout(x, ratio, training_mode=False)`` is ``x``; ``Identity(x)`` is ``x``. onnxscript's rewriter rules
turn inference-mode Dropouts into Identities, and onnx_ir's IdentityEliminationPass removes them (keeping
graph output names; an Identity from one graph output to another stays, since both outputs must exist). Removing them matters for quantization: a Q/DQ pair on either side of a no-op would
split a Conv from its activation and block the runtimes' fused kernels.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.rewriter.rules.common import dropout_inference_rule, dropout_zero_rule


class KeepOutputsIdentityElimination(common_passes.IdentityEliminationPass):
    """onnx_ir's IdentityEliminationPass, but an Identity from one graph output to another stays: removing it
    would make both outputs one value (onnx_ir 1.1 then lists it twice under the second name, and the first
    output is gone)."""

    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:
        source = node.inputs[0] if node.op_type == "Identity" and node.inputs else None
        if source is not None and source.is_graph_output() and node.outputs[0].is_graph_output():
            return False
        return super()._try_eliminate_identity_node(node)


class RemoveNoOpsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = rewriter.RewriteRuleSet([dropout_inference_rule, dropout_zero_rule]).apply_to_model(model)
        result = KeepOutputsIdentityElimination()(model)
        return ir.passes.PassResult(model, modified=bool(count) or result.modified)
