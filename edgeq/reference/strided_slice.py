"""STRIDED_SLICE (reference_ops::StridedSlice, strided_slice_logic.h): out = in[start_a:stop_a:stride_a, ...].

begin, end and strides are the int32 inputs 1-3, one entry per axis. Per axis a of size n (StartForAxis,
StopForAxis): an index below 0 counts from the end (+ n); then it is clamped to [0, n] when the stride is
positive, to [-1, n - 1] when it is negative (the stop -1 is "before the first element"); bit a of begin_mask
(end_mask) takes the whole extent instead: start 0 (n - 1 backwards), stop n (-1 backwards); bit a of
shrink_axis_mask keeps the one element at start and drops the axis. The stored values are copied (one encoding in
and out). ellipsis_mask, new_axis_mask and offset, which edgeq never writes, are refused. Several samples
stacked on the batch axis are sliced one by one.

Any element type: int16 is copied like int8 (op_version.cc gives int16 version 1 up to rank 4).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError

OPCODES = ("STRIDED_SLICE",)


def axis_range(size: int, start: int, stop: int, stride: int, begin_masked: bool, end_masked: bool) -> range:
    """The indices TFLite visits along one axis of SIZE (StartForAxis / StopForAxis, then the loop)."""
    lo, hi = (0, size) if stride > 0 else (-1, size - 1)
    start = min(max(start + size if start < 0 else start, lo), hi)
    stop = min(max(stop + size if stop < 0 else stop, lo), hi)
    if begin_masked:
        start = 0 if stride > 0 else size - 1
    if end_masked:
        stop = size if stride > 0 else -1
    return range(start, stop, stride)


def index_ranges(shape, begin, end, strides, options) -> tuple[list[range], list[int]]:
    """One range of indices per axis of SHAPE, and the axes that shrink_axis_mask drops."""
    for unsupported_option in ("EllipsisMask", "NewAxisMask", "Offset"):
        if options.get(unsupported_option):
            raise UnsupportedError(f"STRIDED_SLICE with {unsupported_option} is not supported")
    if not len(begin) == len(end) == len(strides) == len(shape):
        raise UnsupportedError("STRIDED_SLICE needs one begin, end and stride per input axis")
    shrink = options.get("ShrinkAxisMask", 0)
    ranges = []
    for axis, size in enumerate(shape):
        if strides[axis] == 0:
            raise UnsupportedError("STRIDED_SLICE with a zero stride")
        if shrink >> axis & 1:
            start = int(begin[axis]) + size if begin[axis] < 0 else int(begin[axis])
            ranges.append(range(start, start + 1))
            continue
        bits = (options.get("BeginMask", 0) >> axis & 1, options.get("EndMask", 0) >> axis & 1)
        ranges.append(axis_range(size, int(begin[axis]), int(end[axis]), int(strides[axis]), *bits))
    return ranges, [axis for axis in range(len(shape)) if shrink >> axis & 1]


def evaluate(graph, op, inputs):
    x = inputs[0]
    begin, end, strides = (np.asarray(a).reshape(-1) for a in inputs[1:4])
    shape = graph.tensors[op.inputs[0]].shape
    ranges, dropped = index_ranges(shape, begin, end, strides, op.options)
    per_sample = x.reshape((x.shape[0] // shape[0],) + shape)
    sliced = per_sample[np.ix_(range(per_sample.shape[0]), *ranges)]
    kept = sliced.reshape(sliced.shape[:1] + tuple(len(r) for a, r in enumerate(ranges) if a not in dropped))
    return [kept.reshape((-1,) + kept.shape[2:])]
