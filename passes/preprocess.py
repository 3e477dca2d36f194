"""The preprocessing pipeline: make a float model canonical before calibration and quantization.

In order:
0. dynamic input dimensions fixed from the recipe's input shapes or the calibration samples
   (passes.fix_input_shapes; the batch axis only if the graph reads it, in a second round), and the opset raised
   to 21 for int16 activations (passes.raise_opset: QuantizeLinear takes int16 from opset 21);
1. constants as initializers (weights stored as Constant nodes become initializers) and initializers
   removed from the graph inputs (old exporters list them there, which makes them overridable and so
   not constant);
2. onnxruntime's basic graph optimizations as a folding step (passes.runtime_folding: whole-graph constant and
   shape folding, no-op Casts, transpose cancellation), then onnxscript's constant folder (it evaluates shape
   arithmetic even with symbolic dims);
3. Identity/Dropout removal, and Casts of integers to float (attention masks) moved to where the integers enter
   (passes.integer_casts);
4. BatchNorm folding into Conv/ConvTranspose/Gemm, keeping the BN statistics (passes.fold_batchnorm),
   division by constants turned into multiplication (passes.div_to_mul), the minus-infinity constant of additive
   attention masks bounded to -10^4 (passes.bound_attention_mask: exact in float, quantizable), hard-swish,
   exact-GELU and layer-norm decompositions fused into HardSwish, Gelu and LayerNormalization (passes.fuse_hard_swish,
   fuse_gelu, fuse_layer_norm: before affine folding, which would otherwise fold their constant Adds and Muls away), and the remaining affine chains (unfolded
   BatchNorms, input normalization, standalone BatchNorms) folded into a neighbouring Conv/Gemm or made one
   depthwise Conv (passes.fold_affine), and products with a constant matrix and a bias made one Gemm
   (passes.matmul_bias_to_gemm);
5. dead-node removal, shape inference (types and shapes of every intermediate tensor, needed to expose
   them during calibration), unique names for every node and value (so --exclude and reports can name
   them), topological order.

Unlike onnxruntime's ``quant_pre_process`` this works with symbolic dimensions and in-memory models, because
every step runs on onnx_ir in memory (no symbolic shape inference script, no temporary files).
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxscript.optimizer

from edgeq.passes import integer_casts  # Casts of integers to float moved to where the integers enter
from edgeq.passes.bound_attention_mask import BoundAttentionMaskPass
from edgeq.passes.div_to_mul import DivToMulPass
from edgeq.passes.fix_input_shapes import FixInputShapesPass, FixInputShapesResult
from edgeq.passes.fold_affine import FoldAffinePass
from edgeq.passes.fold_batchnorm import FoldBatchNormPass
from edgeq.passes.fuse_gelu import FuseGeluPass
from edgeq.passes.fuse_hard_swish import FuseHardSwishPass
from edgeq.passes.fuse_layer_norm import FuseLayerNormPass
from edgeq.passes.matmul_bias_to_gemm import MatMulBiasToGemmPass
from edgeq.passes.raise_opset import INT16_QDQ_OPSET, RaiseOpsetPass
from edgeq.passes.remove_noops import RemoveNoOpsPass
from edgeq.passes.runtime_folding import RuntimeFoldingPass
from edgeq.passes.stage import failing_cause


class FoldConstantsPass(ir.passes.InPlacePass):
    """Evaluate every node whose inputs are all constants (onnxscript's constant folder)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = onnxscript.optimizer.fold_constants(model)
        return ir.passes.PassResult(model, modified=result.modified)


def preprocess_pipeline() -> ir.passes.PassManager:
    return ir.passes.PassManager(
        [
            common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
            common_passes.RemoveInitializersFromInputsPass(),
            RuntimeFoldingPass(),
            FoldConstantsPass(),
            RemoveNoOpsPass(),
            integer_casts.CastIntegersFirstPass(),
            FoldBatchNormPass(),
            DivToMulPass(),
            BoundAttentionMaskPass(),
            FuseHardSwishPass(),
            FuseGeluPass(),
            FuseLayerNormPass(),
            FoldAffinePass(),
            MatMulBiasToGemmPass(),
            common_passes.RemoveUnusedNodesPass(),
            common_passes.ShapeInferencePass(check_type=False, strict_mode=False),
            common_passes.NameFixPass(),
            common_passes.TopologicalSortPass(),
        ]
    )


def _reads_batch_size(model: ir.Model) -> bool:
    """Whether the graph still computes from a shape while an input's first axis is symbolic."""
    symbolic = any(
        v.shape is not None and v.shape.rank() and not isinstance(v.shape[0], int) for v in model.graph.inputs
    )
    return symbolic and any(node.op_type in ("Shape", "Size") for node in model.graph)


class PreprocessPass(ir.passes.InPlacePass):
    """Input shapes fixed (passes.fix_input_shapes), then the pipeline above; once more with the batch axis fixed
    to 1 if the graph still reads it."""

    def __init__(self, input_shapes: dict[str, list[int]] | None = None, sample_shapes=None, int16: bool = False):
        super().__init__()
        self.input_shapes, self.sample_shapes, self.int16 = input_shapes, sample_shapes, int16

    def call(self, model: ir.Model) -> FixInputShapesResult:
        fixed = FixInputShapesPass(self.input_shapes, self.sample_shapes)(model).fixed
        if self.int16:
            RaiseOpsetPass(INT16_QDQ_OPSET, "int16 activations")(model)
        preprocess_pipeline()(model)
        if _reads_batch_size(model):
            for name, record in FixInputShapesPass(batch=True)(model).fixed.items():
                if name in fixed:
                    record["from"] = f"{fixed[name]['from']}; {record['from']}"
                fixed[name] = record
            preprocess_pipeline()(model)
        return FixInputShapesResult(model, True, fixed)


def preprocess(model: ir.Model, input_shapes=None, sample_shapes=None) -> ir.Model:
    """Run the preprocessing on MODEL in place and return it; a failing step raises its own exception."""
    try:
        return PreprocessPass(input_shapes, sample_shapes)(model).model
    except ir.passes.PassError as exc:
        raise failing_cause(exc) from None
