"""The preprocessing pipeline: make a float model canonical before calibration and quantization.

In order:
1. constants as initializers (weights stored as Constant nodes become initializers) and initializers
   removed from the graph inputs (old exporters list them there, which makes them overridable and so
   not constant);
2. constant folding (onnxscript's optimizer: it evaluates shape arithmetic even with symbolic dims);
3. Identity/Dropout removal;
4. BatchNorm folding into Conv/ConvTranspose/Gemm, keeping the BN statistics (passes.fold_batchnorm),
   division by constants turned into multiplication (passes.div_to_mul), and the remaining affine chains
   (unfolded BatchNorms, input normalization, standalone BatchNorms) folded into a neighbouring Conv/Gemm or
   made one depthwise Conv (passes.fold_affine);
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

from edgeq.passes.div_to_mul import DivToMulPass
from edgeq.passes.fold_affine import FoldAffinePass
from edgeq.passes.fold_batchnorm import FoldBatchNormPass
from edgeq.passes.remove_noops import RemoveNoOpsPass


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
            FoldConstantsPass(),
            RemoveNoOpsPass(),
            FoldBatchNormPass(),
            DivToMulPass(),
            FoldAffinePass(),
            common_passes.RemoveUnusedNodesPass(),
            common_passes.ShapeInferencePass(check_type=False, strict_mode=False),
            common_passes.NameFixPass(),
            common_passes.TopologicalSortPass(),
        ]
    )


def preprocess(model: ir.Model) -> ir.Model:
    """Run the preprocessing pipeline on MODEL in place and return it."""
    return preprocess_pipeline()(model).model
