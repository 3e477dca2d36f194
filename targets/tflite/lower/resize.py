"""ONNX Resize of the spatial axes (2-D, NCHW) -> RESIZE_BILINEAR or RESIZE_NEAREST_NEIGHBOR.

The output size is the int32 constant [H_out, W_out]; input and output share one encoding (the kernels interpolate
or copy stored values: edgeq/reference/resize_bilinear.py, resize_nearest_neighbor.py). TFLite has two flags,
AlignCorners and HalfPixelCenters, which match ONNX coordinate transformation modes as follows:

    linear:  asymmetric (F, F), align_corners (T, F), half_pixel (F, T), pytorch_half_pixel (F, T) for sizes > 1
    nearest: TFLite's source index is floor(x * s) (asymmetric), round_half_away(x * s) (align corners) or
             floor((x + 0.5) * s), which is ONNX's half_pixel rounded half up, or tf_half_pixel_for_nn floored:
             (asymmetric, floor) (F, F), (align_corners, round_prefer_ceil) (T, F),
             (half_pixel, round_prefer_ceil) (F, T), (tf_half_pixel_for_nn, floor) (F, T)

Every other combination (and cubic mode) has no exact TFLite equivalent and is refused.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, register
from edgeq.targets.tflite.lower.context import TO_NHWC, LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _version(graph: Graph, op: Operator) -> int:
    first = graph.tensors[op.inputs[0]]
    if first.dtype == np.int16:
        return 4
    nearest_aligned = op.opcode == "RESIZE_NEAREST_NEIGHBOR" and op.options.get("AlignCorners")
    if op.options.get("HalfPixelCenters") or nearest_aligned:
        return 3
    return 2 if first.dtype == np.int8 else 1


def _output_shape(graph: Graph, op: Operator):
    x = graph.tensors[op.inputs[0]]
    size = graph.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if size is None or size.shape != (2,) or len(x.shape) != 4:
        return None
    return (x.shape[0], int(size[0]), int(size[1]), x.shape[3])


def _resize_builtin(
    opcode: str, options: str, resolver: str, kernel: str, int16: bool = False, micro_int16: bool = True
) -> Builtin:
    """INT16: the int16 form is bit-exact with the KERNEL module in both runtimes (TFLite Micro runs it), or in
    LiteRT BUILTIN_REF only without MICRO_INT16 (TFLite Micro has no int16 kernel)."""
    int16_verified = (
        BIT_EXACT.format(kernel)
        if micro_int16
        else f"bit-exact with LiteRT BUILTIN_REF only (reference kernel edgeq/reference/{kernel}); TFLite Micro "
        f"has no int16 {opcode}"
    )
    return register(
        Builtin(
            opcode,
            options=options,
            micro_resolver=resolver,
            kind="data_movement",
            version=_version,
            output_shape=_output_shape,
            required_inputs=2,
            parameter_input=1,
            same_encoding=True,
            verified={"int8": BIT_EXACT.format(kernel) + "; ONNX Runtime QDQ within 1 LSB"}
            | ({"int16": int16_verified} if int16 else {}),
            micro_types=("int8", "int16", "float32") if int16 and micro_int16 else ("int8", "float32"),
        )
    )


RESIZE_BILINEAR = _resize_builtin(
    "RESIZE_BILINEAR", "ResizeBilinearOptions", "AddResizeBilinear", "resize_bilinear.py", int16=True, micro_int16=False
)
RESIZE_NEAREST_NEIGHBOR = _resize_builtin(
    "RESIZE_NEAREST_NEIGHBOR",
    "ResizeNearestNeighborOptions",
    "AddResizeNearestNeighbor",
    "resize_nearest_neighbor.py",
    int16=True,
)

_LINEAR = {
    "asymmetric": (False, False),
    "align_corners": (True, False),
    "half_pixel": (False, True),
}
_NEAREST = {
    ("asymmetric", "floor"): (False, False),
    ("align_corners", "round_prefer_ceil"): (True, False),
    ("half_pixel", "round_prefer_ceil"): (False, True),
    ("tf_half_pixel_for_nn", "floor"): (False, True),
}


@lowers("Resize")
def resize(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    if len(x_value.shape) != 4:
        raise unsupported(node, "only 2-D (NCHW) Resize is lowered", "attribute")
    mode = node.attributes.get_string("mode", "nearest")
    transform = node.attributes.get_string("coordinate_transformation_mode", "half_pixel")
    nearest_mode = node.attributes.get_string("nearest_mode", "round_prefer_floor")
    in_shape = static_shape(x_value.shape)
    out_shape = [in_shape[0], *static_shape(node.outputs[0].shape)[1:]]
    if out_shape[:2] != in_shape[:2]:
        raise unsupported(node, "Resize may only change the spatial axes", "attribute")
    flags = None  # (AlignCorners, HalfPixelCenters)
    if mode == "linear":
        flags = _LINEAR.get(transform)
        if transform == "pytorch_half_pixel" and min(out_shape[2:]) > 1:
            flags = (False, True)
    elif mode == "nearest":
        flags = _NEAREST.get((transform, nearest_mode))
    if flags is None:
        raise unsupported(
            node,
            f"mode={mode} coordinate_transformation_mode={transform} nearest_mode={nearest_mode} "
            "has no exact TFLite equivalent",
            "attribute",
        )
    out, _ = ctx.output(node, out_shape, TO_NHWC)
    ctx.check_shared(node, act.index, out)
    size = ctx.tensor(f"{node.name}_size", (2,), np.int32, data=np.array(out_shape[2:], np.int32))
    builtin = RESIZE_BILINEAR if mode == "linear" else RESIZE_NEAREST_NEIGHBOR
    ctx.add_op(builtin, [act.index, size], [out], {"AlignCorners": flags[0], "HalfPixelCenters": flags[1]})
