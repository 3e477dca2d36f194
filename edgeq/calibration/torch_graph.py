"""Evaluate a preprocessed float ONNX model in PyTorch, differentiably.

Data-free calibration (edgeq.calibration.synthetic) optimizes the model's *input* by gradient descent, which onnxruntime
cannot do. ``TorchGraph`` runs the graph node by node with torch functions, so autograd reaches the input:
the ops that edgeq's models contain after preprocessing (Conv with groups, pads, strides and dilations; Gemm,
MatMul; Relu, Clip, Sigmoid, HardSwish, Softmax; Add, Mul, Sub, Div; GlobalAveragePool, AveragePool,
MaxPool; Flatten, Reshape, Concat, Transpose, Pad; nearest Resize). Any other op is one EdgeqError naming it.

The semantics are ONNX's, not torch's, where they differ:
* pads are [begin..., end...] and may be asymmetric: they are applied with ``F.pad`` before the kernel
  (zeros for Conv and AveragePool, -inf for MaxPool);
* AveragePool's divisor counts the padding only with ``count_include_pad=1`` and never counts the positions
  that ``ceil_mode`` adds past the end: the window sums are divided by the window sums of a mask that is 1 on
  every position that counts;
* Resize maps output index i to an input coordinate by ``coordinate_transformation_mode`` and rounds it by
  ``nearest_mode``, then gathers: exact for every mode, not just torch's ``F.interpolate`` conventions;
* Div of integer tensors truncates, like C.
Torch needs nothing else: batch size follows the input, as in onnxruntime.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from edgeq.errors import DataError, UnsupportedError


def _attr(node: ir.Node, name: str, default=None):
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.value


def _torch_pads(onnx_pads: Sequence[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] over the last k axes -> F.pad's [b_k, e_k, ..., b_1, e_1]."""
    rank = len(onnx_pads) // 2
    pads = []
    for axis in reversed(range(rank)):
        pads += [int(onnx_pads[axis]), int(onnx_pads[rank + axis])]
    return pads


def _spatial_pads(node: ir.Node, x: torch.Tensor, kernel: Sequence[int], strides, dilations) -> list[int]:
    """The explicit ONNX pads of a Conv/pool, resolving auto_pad."""
    spatial = x.shape[2:]
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return list(_attr(node, "pads", [0] * 2 * len(spatial)))
    if auto_pad == "VALID":
        return [0] * 2 * len(spatial)
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _conv(node, x, w, b=None):
    rank = x.dim() - 2
    kernel = w.shape[2:]
    strides = list(_attr(node, "strides", [1] * rank))
    dilations = list(_attr(node, "dilations", [1] * rank))
    pads = _spatial_pads(node, x, kernel, strides, dilations)
    if pads[:rank] == pads[rank:]:  # symmetric: the convolution pads without copying its input
        padding = pads[:rank]
    else:
        x, padding = F.pad(x, _torch_pads(pads)), 0
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return conv(x, w, b, stride=strides, padding=padding, dilation=dilations, groups=_attr(node, "group", 1))


def _pool_geometry(node, x):
    rank = x.dim() - 2
    kernel = list(_attr(node, "kernel_shape"))
    strides = list(_attr(node, "strides", [1] * rank))
    dilations = list(_attr(node, "dilations", [1] * rank))
    return rank, kernel, strides, dilations, _torch_pads(_spatial_pads(node, x, kernel, strides, dilations))


def _drop_windows_in_end_padding(node, y, x, kernel, strides, dilations):
    """With ceil_mode, ONNX drops a last window that would start inside the end padding; after explicit
    padding torch cannot tell padding from input, so it keeps it."""
    if not _attr(node, "ceil_mode", 0):
        return y
    rank = x.dim() - 2
    pads = _spatial_pads(node, x, kernel, strides, dilations)
    for axis in range(rank):
        begin, size, stride = pads[axis], x.shape[2 + axis], strides[axis]
        count = y.shape[2 + axis]
        if (count - 1) * stride >= size + begin:
            y = y.narrow(2 + axis, 0, count - 1)
    return y


def _max_pool(node, x):
    if len(node.outputs) > 1 and node.outputs[1].name:
        raise UnsupportedError(f"node {node.name}: MaxPool's Indices output is not supported in torch evaluation")
    rank, kernel, strides, dilations, pads = _pool_geometry(node, x)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
    ceil_mode = bool(_attr(node, "ceil_mode", 0))
    y = pool(F.pad(x, pads, value=-math.inf), kernel, strides, dilation=dilations, ceil_mode=ceil_mode)
    return _drop_windows_in_end_padding(node, y, x, kernel, strides, dilations)


def _average_pool(node, x):
    rank, kernel, strides, dilations, pads = _pool_geometry(node, x)
    if any(d != 1 for d in dilations):
        raise UnsupportedError(f"node {node.name}: dilated AveragePool is not supported in torch evaluation")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    ceil_mode = bool(_attr(node, "ceil_mode", 0))
    counted = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    counted = F.pad(counted, pads, value=float(_attr(node, "count_include_pad", 0)))
    sums = pool(F.pad(x, pads), kernel, strides, ceil_mode=ceil_mode)
    y = sums / pool(counted, kernel, strides, ceil_mode=ceil_mode)
    return _drop_windows_in_end_padding(node, y, x, kernel, strides, dilations)


def _gemm(node, a, b, c=None):
    if _attr(node, "transA", 0):
        a = a.t()
    if _attr(node, "transB", 0):
        b = b.t()
    y = _attr(node, "alpha", 1.0) * (a @ b)
    return y if c is None else y + _attr(node, "beta", 1.0) * c


def _clip(node, x, low=None, high=None):
    if low is not None and high is not None and low.dim() == 0 and high.dim() == 0:
        # Relu6 and friends: hardtanh's backward is one fused kernel, clamp's with tensor bounds is not.
        return F.hardtanh(x, float(low), float(high))
    return torch.clamp(x, low, high)


def _div(node, a, b):
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _flatten(node, x):
    axis = _attr(node, "axis", 1) % max(1, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(node, x, shape):
    dims = [int(d) for d in shape.tolist()]
    if not _attr(node, "allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _softmax(node, x, *, opset: int):
    axis = _attr(node, "axis", -1 if opset >= 13 else 1) % x.dim()
    if opset >= 13:
        return torch.softmax(x, axis)
    # Before opset 13 Softmax normalizes over all axes from AXIS on, as one flattened axis.
    return torch.softmax(x.reshape(*x.shape[:axis], -1), -1).reshape(x.shape)


def _transpose(node, x):
    return x.permute(list(_attr(node, "perm", range(x.dim() - 1, -1, -1))))


def _pad(node, x, pads, value=None, axes=None):
    mode = _attr(node, "mode", "constant")
    pads = [int(p) for p in pads.tolist()]
    axes = list(range(x.dim())) if axes is None else [int(a) % x.dim() for a in axes.tolist()]
    full = [0] * (2 * x.dim())
    for i, axis in enumerate(axes):
        full[axis], full[x.dim() + axis] = pads[i], pads[len(axes) + i]
    # F.pad takes the trailing axes only: drop the leading axes that are not padded.
    first = next((a for a in range(x.dim()) if full[a] or full[x.dim() + a]), x.dim())
    torch_pads = _torch_pads(full[first : x.dim()] + full[x.dim() + first :])
    if mode == "constant":
        return F.pad(x, torch_pads, value=0.0 if value is None else float(value))
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate"}[mode])


def _resize_source_index(node, out_size: int, in_size: int, scale: float) -> torch.Tensor:
    """For each output position along one axis, the input position nearest Resize picks."""
    mode = _attr(node, "coordinate_transformation_mode", "half_pixel")
    i = torch.arange(out_size, dtype=torch.float64)
    if mode == "half_pixel":
        coordinate = (i + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        coordinate = (i + 0.5) / scale - 0.5 if out_size > 1 else torch.zeros_like(i)
    elif mode == "asymmetric":
        coordinate = i / scale
    elif mode == "tf_half_pixel_for_nn":
        coordinate = (i + 0.5) / scale
    elif mode == "align_corners":
        coordinate = i * (in_size - 1) / (out_size - 1) if out_size > 1 else torch.zeros_like(i)
    else:
        raise UnsupportedError(f"node {node.name}: Resize coordinate_transformation_mode {mode!r} is not supported")
    rounding = _attr(node, "nearest_mode", "round_prefer_floor")
    rounded = {
        "round_prefer_floor": lambda c: torch.ceil(c - 0.5),
        "round_prefer_ceil": lambda c: torch.floor(c + 0.5),
        "floor": torch.floor,
        "ceil": torch.ceil,
    }[rounding](coordinate)
    return rounded.clamp(0, in_size - 1).long()


def _resize(node, x, roi=None, scales=None, sizes=None):
    if _attr(node, "mode", "nearest") != "nearest":
        raise UnsupportedError(f"node {node.name}: only nearest Resize is supported in torch evaluation")
    if _attr(node, "axes") is not None or _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedError(f"node {node.name}: Resize with axes or keep_aspect_ratio_policy is not supported")
    if sizes is not None and sizes.numel():
        out_sizes = [int(s) for s in sizes.tolist()]
        factors = [o / i for o, i in zip(out_sizes, x.shape, strict=True)]
    else:
        factors = [float(s) for s in scales.tolist()]
        out_sizes = [math.floor(i * f) for i, f in zip(x.shape, factors, strict=True)]
    for axis, (in_size, out_size, factor) in enumerate(zip(x.shape, out_sizes, factors, strict=True)):
        if out_size != in_size or factor != 1.0:
            x = x.index_select(axis, _resize_source_index(node, out_size, in_size, factor))
    return x


_ELEMENTWISE = {
    "Relu": lambda node, x: torch.relu(x),
    "Sigmoid": lambda node, x: torch.sigmoid(x),
    "HardSwish": lambda node, x: F.hardswish(x),
    "Add": lambda node, a, b: a + b,
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "MatMul": lambda node, a, b: torch.matmul(a, b),
    "GlobalAveragePool": lambda node, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "Concat": lambda node, *xs: torch.cat(xs, dim=_attr(node, "axis")),
}
_OPS = {
    **_ELEMENTWISE,
    "Conv": _conv,
    "Gemm": _gemm,
    "Clip": _clip,
    "Div": _div,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Pad": _pad,
    "Resize": _resize,
}
SUPPORTED_OPS = tuple(sorted([*_OPS, "Softmax"]))  # Softmax's semantics depend on the opset: bound per model


class TorchGraph:
    """A float ``ir.Model`` as a sequence of torch calls; gradients flow from any value back to the inputs.

    The initializers become constant tensors once (shared with the model's arrays where possible). ``run``
    takes the graph inputs as tensors and returns the requested values, stopping after the last node needed.
    """

    def __init__(self, model: ir.Model):
        graph = model.graph
        unsupported = sorted(
            {n.op_type for n in graph if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS}
        )
        if unsupported:
            raise UnsupportedError(
                f"torch evaluation does not support op(s) {', '.join(unsupported)} "
                f"(it supports {', '.join(SUPPORTED_OPS)})"
            )
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        self.ops = {**_OPS, "Softmax": functools.partial(_softmax, opset=opset)}
        self.nodes = list(graph)
        self.input_names = [v.name for v in graph.inputs if not v.is_initializer()]
        self.output_names = [v.name for v in graph.outputs]
        self.constants = {
            name: torch.from_numpy(np.array(value.const_value.numpy()))
            for name, value in graph.initializers.items()
            if value.const_value is not None
        }

    def run(
        self, feeds: Mapping[str, torch.Tensor], outputs: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The values named OUTPUTS (default: the graph outputs) for the graph inputs FEEDS."""
        wanted = list(self.output_names if outputs is None else outputs)
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise DataError(f"torch evaluation: missing input(s) {', '.join(missing)}")
        values: dict[str, torch.Tensor] = {**self.constants, **feeds}
        pending = {name for name in wanted if name not in values}
        for node in self.nodes:
            if not pending:
                break
            args = [values[v.name] if v is not None and v.name else None for v in node.inputs]
            while args and args[-1] is None:  # trailing optional inputs left out
                args.pop()
            values[node.outputs[0].name] = self.ops[node.op_type](node, *args)
            pending.discard(node.outputs[0].name)
        unknown = [name for name in wanted if name not in values]
        if unknown:
            raise DataError(f"torch evaluation: the model has no value(s) {', '.join(unknown)}")
        return {name: values[name] for name in wanted}
