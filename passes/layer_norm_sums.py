"""Residual sums before a layer norm as ``Sum``, not ``Add``: ``LayerNorm(Add(a, b))`` becomes ``LayerNorm(Sum(a, b))``.

ONNX Runtime's optimizer (SkipLayerNormFusion, at its extended level) fuses an Add that feeds a
LayerNormalization into one SkipLayerNormalization, wherever it can prove the shapes match, and its CPU kernel of
that op is the slower choice: on paraphrase-MiniLM-L3 ([1, 64, 384], onnxruntime 1.32, 1 thread, AVX-512 Xeon)
each SkipLayerNormalization took 180-190 us where the unfused LayerNormalization took 26 us and the Add about 15 us.
A model with symbolic shapes escapes most of the fusion; edgeq's preprocessed models have static shapes, so every
residual sum was fused, and the dynamic MiniLM-L3 artifact ran 4.1 ms instead of 3.2 ms.

``Sum(a, b)`` is ``Add(a, b)`` elementwise, with the same broadcasting and the same float32 result, and the fusion
matches Add only. The ONNX Runtime target applies it to its artifacts (and `edgeq quantize` to a dynamically
quantized model, ONNX Runtime's only); ``undo`` restores the Adds for readers of the interchange form (the
TFLite lowering behind `edgeq verify`).
"""

from __future__ import annotations

import onnx_ir as ir


def sums_before_layer_norms(model: ir.Model) -> int:
    """Turn each two-input Add whose only reader is a LayerNormalization into a Sum, in place; the number."""
    count = 0
    for node in model.graph:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        add = node.inputs[0].producer()
        if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
            continue
        if len(add.outputs[0].uses()) == 1 and not add.outputs[0].is_graph_output():
            add.op_type = "Sum"
            count += 1
    return count


def undo(model: ir.Model) -> int:
    """Back to the interchange form: each Sum that feeds a LayerNormalization an Add again, in place."""
    count = 0
    for node in model.graph:
        if node.op_type == "LayerNormalization" and (source := node.inputs[0].producer()) is not None:
            if source.op_type == "Sum" and len(source.inputs) == 2:
                source.op_type = "Add"
                count += 1
    return count
