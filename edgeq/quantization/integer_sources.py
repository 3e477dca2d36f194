"""Where integer data becomes float activations: embedding lookups and Casts of integers to float.

Both are quantized although they read no float activation: the output gets a Q/DQ pair with its own calibrated
encoding.

* An embedding lookup, Gather(table, ids) of rows of a constant float table by integer ids (token, position,
  segment): the table is stored as integers behind a DequantizeLinear, one scale per row (axis 0; symmetric,
  narrow range, like layer weights: ``scale_v = max_j |table[v, j]| / 127``, ``q = clamp(round(table / scale_v))``),
  so that every row keeps 8 bits of resolution whatever the range of the other rows (rare tokens' rows are often
  much larger). Each looked-up row is then DQ -> Q'd to the output's encoding; the TFLite lowering precomputes
  that (targets/tflite/lower/gather.py). With per-tensor weights the table gets one scale.
* Cast(x, to=FLOAT) of an integer tensor (an attention mask; passes.integer_casts moves such Casts to where the
  integers enter): the TFLite graph casts int32 to float32 and quantizes (targets/tflite/lower/integers.py).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.quantization.qparams import quantize_weights, weight_scales

FLOAT_TABLES = {ir.DataType.FLOAT}


def is_embedding(node: ir.Node) -> bool:
    """NODE gathers rows (axis 0) of a constant float32 table with integer indices."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    table, ids = node.inputs
    return (
        table is not None
        and table.const_value is not None
        and table.dtype in FLOAT_TABLES
        and ids is not None
        and ids.dtype is not None
        and ids.dtype.is_integer()
        and node.attributes.get_int("axis", 0) % max(len(table.shape), 1) == 0
    )


def is_integer_cast(node: ir.Node) -> bool:
    """NODE casts an integer tensor to float32."""
    if (
        node.op_type != "Cast"
        or node.domain not in ("", "ai.onnx")
        or not node.inputs
        or node.inputs[0] is None
    ):
        return False
    source = node.inputs[0].dtype
    return (
        node.attributes.get_int("to", 0) == ir.DataType.FLOAT and source is not None and source.is_integer()
    )


def is_integer_source(node: ir.Node) -> bool:
    """NODE makes float activations from integers: an embedding lookup or a Cast of integers."""
    return is_embedding(node) or is_integer_cast(node)


def quantize_table(
    table: np.ndarray, *, bits: int = 8, per_row: bool = True
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(integers, scales, axis) of TABLE: one symmetric scale per row (axis 0), or one scalar for the table."""
    axis = 0 if per_row else None
    scales = weight_scales(table, axis, bits)
    return quantize_weights(table, scales, axis, bits), scales if per_row else scales[0], axis
