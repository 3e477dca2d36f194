"""ONNX DepthToSpace -> DEPTH_TO_SPACE, SpaceToDepth -> SPACE_TO_DEPTH (NHWC, block size b), values copied.

    DepthToSpace DCR  y[n, c, h*b + i, w*b + j] = x[n, (i*b + j)*C_out + c, h, w]     TFLite's DEPTH_TO_SPACE
    DepthToSpace CRD  y[n, c, h*b + i, w*b + j] = x[n, c*b*b + i*b + j, h, w]
    SpaceToDepth      y[n, (i*b + j)*C + c, h, w] = x[n, c, h*b + i, w*b + j]          TFLite's SPACE_TO_DEPTH

CRD reads the channels in another order: they are first reordered exactly, as data movement of the NHWC tensor
(RESHAPE to [N, H*W, C_out, b*b], TRANSPOSE to [N, H*W, b*b, C_out], RESHAPE back), then DEPTH_TO_SPACE. The
input is moved to NHWC if it is in another layout; the output is NHWC and carries the input's encoding.

int16 activations are refused: neither LiteRT nor TFLite Micro has an int16 DEPTH_TO_SPACE or SPACE_TO_DEPTH.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import by_input_type
from edgeq.targets.tflite.lower.context import TO_NHWC, Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import TRANSPOSE, copying_builtin, relayout, reshape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _output_shape(graph: Graph, op: Operator):
    n, h, w, c = graph.tensors[op.inputs[0]].shape
    b = int(op.options.get("BlockSize", 0))
    if op.opcode == "DEPTH_TO_SPACE":
        return (n, h * b, w * b, c // (b * b)) if b > 0 and c % (b * b) == 0 else f"block size {b} for {c} channels"
    return (n, h // b, w // b, c * b * b) if b > 0 and h % b == 0 and w % b == 0 else f"block size {b} for {h}x{w}"


# op_version.cc gives int8 DEPTH_TO_SPACE version 2, but LiteRT 2.3's BUILTIN_REF resolver registers only version 1
# (its kernel takes int8 at any version; measured): version 1 loads everywhere.
DEPTH_TO_SPACE = copying_builtin(
    "DEPTH_TO_SPACE", "DepthToSpaceOptions", "AddDepthToSpace", "depth_to_space.py",
    version=by_input_type(int8=1), output_shape=_output_shape,
)  # fmt: skip
SPACE_TO_DEPTH = copying_builtin(
    "SPACE_TO_DEPTH", "SpaceToDepthOptions", "AddSpaceToDepth", "depth_to_space.py",
    version=by_input_type(int8=2), output_shape=_output_shape,
)  # fmt: skip


def _crd_to_dcr(ctx: LoweringContext, act: Activation, nhwc, block: int, name: str) -> Activation:
    """The NHWC tensor ACT with its channels c*b*b + k moved to k*C_out + c."""
    n, h, w, c = nhwc
    dtype, encoding = ctx.graph.tensors[act.index].dtype, ctx.encoding_of(act.index)
    grouped = ctx.tensor(f"{name}_crd", (n, h * w, c // block**2, block**2), dtype, encoding)
    reshape(ctx, act.index, grouped, ctx.graph.tensors[grouped].shape, f"{name}_crd")
    swapped = ctx.tensor(f"{name}_dcr", (n, h * w, block**2, c // block**2), dtype, encoding)
    perm = ctx.tensor(f"{name}_dcr_perm", (4,), np.int32, data=np.array([0, 1, 3, 2], np.int32))
    ctx.add_op(TRANSPOSE, [grouped, perm], [swapped])
    reordered = ctx.tensor(f"{name}_dcr_nhwc", tuple(nhwc), dtype, encoding)
    reshape(ctx, swapped, reordered, tuple(nhwc), f"{name}_dcr_nhwc")
    return Activation(reordered, TO_NHWC)


@lowers("DepthToSpace", "SpaceToDepth")
def depth_space(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    if not ctx.float and ctx.integer == np.int16:
        raise unsupported(node, "no int16 kernel in LiteRT or TFLite Micro", "dtype")
    in_shape = static_shape(x_value.shape)  # 4-D: ONNX defines these ops on NCHW only
    act = relayout(ctx, ctx.activation(x_value, node), in_shape, TO_NHWC, f"{node.name}_nhwc")
    block = node.attributes.get_int("blocksize")
    builtin = DEPTH_TO_SPACE if node.op_type == "DepthToSpace" else SPACE_TO_DEPTH
    if builtin is DEPTH_TO_SPACE and node.attributes.get_string("mode", "DCR") == "CRD":
        act = _crd_to_dcr(ctx, act, [in_shape[p] for p in TO_NHWC], block, node.name)
    out, _ = ctx.output(node, static_shape(node.outputs[0].shape), TO_NHWC)
    ctx.check_shared(node, act.index, out)
    ctx.add_op(builtin, [act.index], [out], {"BlockSize": block})
