"""Fold the graph with onnxruntime's basic graph optimizations, where a node-at-a-time folder stops short.

onnxscript's constant folder evaluates one node at a time from constants. What exporters write needs more: a
Cast to the type its input already has (Keras 3 on torch writes one per layer), shape arithmetic whose Shape
reads a tensor only a whole-graph inference types, and Transpose pairs around every layer of an NHWC model.
onnxruntime's level-1 ("basic") optimizations do exactly that, and only semantics-preserving rewrites within the
ONNX domain: constant folding with whole-graph shape inference, removal of no-op Cast, Identity, Dropout, Slice,
Expand and Unsqueeze nodes and of Add 0 / Mul 1, common-subexpression elimination, MatMul+Add -> Gemm, Conv+Add
and Conv+Mul folding, and the transpose optimizer, which pushes Transposes through layout-agnostic ops until pairs
cancel. Measured on the third-party corpus (node counts after edgeq's preprocessing without / with this step):
the Keras autoencoder 93 -> 46 (37 no-op Casts gone, Dense layers as Gemm), the NHWC wake-word model 63 -> 29
(Transposes 16 -> 2), the sentence encoder with fixed input shapes 229 -> 127 (28 Shape chains folded).

Disabled: ConvBNFusion, because passes.fold_batchnorm folds BatchNorm itself and keeps its statistics for bias
correction. The model's graph becomes onnxruntime's serialization of the graph it would run; the model itself
(opsets, metadata) is kept, and opset imports onnxruntime adds for domains no node uses are not.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from edgeq.io.session import session

DISABLED = ("ConvBNFusion",)


class RuntimeFoldingPass(ir.passes.InPlacePass):
    """In place: the model keeps its identity (callers hold it), its graph becomes onnxruntime's folded graph."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        with tempfile.TemporaryDirectory(prefix="edgeq-fold-") as folder:
            path = Path(folder) / "folded.onnx"
            session(
                model,
                optimization="basic",
                optimized_model_path=path,
                disabled_optimizers=DISABLED,
                what="the float model",
            )
            folded = ir.serde.deserialize_model(onnx.load(path))
        model.graph = folded.graph
        used = {node.domain for node in model.graph.all_nodes()}
        for domain, version in folded.opset_imports.items():
            if domain in used:
                model.opset_imports.setdefault(domain, version)
        return ir.passes.PassResult(model, modified=True)
