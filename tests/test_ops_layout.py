"""Reshape, Flatten, Squeeze, Unsqueeze and Transpose in any layout: exact, and a TRANSPOSE only where data moves.

Each model scales its input (so the data movement is quantized), optionally transposes it (so the op reads a
tensor in another layout than the default one), applies the op and ends in a graph output, a Conv (which needs
NHWC) or a fully-connected layer. check_against_onnxruntime requires the three integer runtimes to agree exactly
and ONNX Runtime's QDQ model to be within 1 LSB; the tables also pin the TFLite operators each case lowers to.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_target_tflite import SETTINGS, _model, _quantize, check_against_onnxruntime

from edgeq.targets.tflite.lower import lower


def _ops(proto, inputs) -> list[str]:
    return [op.opcode for op in lower(_quantize(proto, np.random.default_rng(0), inputs)).graph.operators]


def _case(shape, steps, tail=None, seed=0):
    """x * 1.5, then STEPS (op type, attributes or an int64 operand), then TAIL ("conv": a 1x1 Conv, "fc": Gemm)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Mul", ["x", "k"], ["t0"])]
    inits = [("k", np.array(1.5, np.float32))]
    for n, (op, arg) in enumerate(steps):
        if isinstance(arg, dict):
            nodes.append(helper.make_node(op, [f"t{n}"], [f"t{n + 1}"], **arg))
        else:
            inits.append((f"arg{n}", np.array(arg, np.int64)))
            nodes.append(helper.make_node(op, [f"t{n}", f"arg{n}"], [f"t{n + 1}"]))
    last = f"t{len(steps)}"
    if tail == "conv":
        inits.append(("w", rng.normal(0, 0.5, (3, _channels(shape, steps), 1, 1)).astype(np.float32)))
        nodes.append(helper.make_node("Conv", [last, "w"], ["y"]))
    elif tail == "fc":
        inits.append(("w", rng.normal(0, 0.5, (int(np.prod(shape[1:])), 3)).astype(np.float32)))
        nodes.append(helper.make_node("Gemm", [last, "w"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    return _model(nodes, [("x", shape)], "y", inits, opset=13)


def _channels(shape, steps) -> int:
    import onnx

    proto = _case(shape, steps)
    inferred = onnx.shape_inference.infer_shapes(proto)
    out = next(v for v in inferred.graph.value_info if v.name == f"t{len(steps)}")
    return out.type.tensor_type.shape.dim[1].dim_value


CASES = {
    # NCHW [1, C, H, W] is NHWC in TFLite; flattening it for a graph output moves data, for an FC it does not
    "flatten_out": ((1, 3, 4, 5), [("Flatten", {})], None, ["MUL", "TRANSPOSE", "RESHAPE"]),
    "flatten_fc": ((1, 3, 4, 5), [("Flatten", {})], "fc", ["MUL", "RESHAPE", "FULLY_CONNECTED"]),
    "flatten_1x1": ((1, 6, 1, 1), [("Flatten", {})], None, ["MUL", "RESHAPE"]),
    "squeeze_1x1": ((1, 6, 1, 1), [("Squeeze", [2, 3])], None, ["MUL", "RESHAPE"]),
    # [1, C, H, W] -> [1, C, H*W]: one RESHAPE gives [1, H*W, C]; a Transpose(0, 2, 1) after it is then free
    "merge_hw_then_transpose": (
        (1, 3, 4, 5),
        [("Reshape", [1, 3, 20]), ("Transpose", {"perm": [0, 2, 1]})],
        None,
        ["MUL", "RESHAPE"],
    ),
    # rank 2 -> 4 for a Conv: [1, C] is [1, 1, 1, C] NHWC already
    "unsqueeze_2_to_4_conv": ((1, 6), [("Unsqueeze", [2, 3])], "conv", ["MUL", "RESHAPE", "CONV_2D"]),
    # rank 3 -> 4 for a Conv ([1, C, L] -> [1, C, 1, L], a Conv1D as Conv2D): C and L swap places
    "unsqueeze_3_to_4_conv": (
        (1, 4, 7),
        [("Unsqueeze", [2])],
        "conv",
        ["MUL", "RESHAPE", "TRANSPOSE", "CONV_2D"],
    ),
    # rank 4 -> 3 of a [1, C, 1, W] map: [1, 1, W, C] in TFLite, one RESHAPE to [1, W, C], read as ONNX's [1, C, W]
    # by a Transpose(0, 2, 1), which is then free
    "squeeze_4_to_3_transpose": (
        (1, 4, 1, 7),
        [("Squeeze", [2]), ("Transpose", {"perm": [0, 2, 1]})],
        None,
        ["MUL", "RESHAPE"],
    ),
    # a Transpose to ONNX NHWC ending the model: nothing moves, the output stays as ONNX
    "transpose_to_nhwc_out": ((1, 3, 4, 5), [("Transpose", {"perm": [0, 2, 3, 1]})], None, ["MUL"]),
    # a pair that cancels: nothing at all
    "transpose_pair_conv": (
        (1, 3, 4, 5),
        [("Transpose", {"perm": [0, 2, 3, 1]}), ("Transpose", {"perm": [0, 3, 1, 2]})],
        "conv",
        ["MUL", "CONV_2D"],
    ),
    # H <-> W before a Conv: data moves
    "transpose_hw_conv": ((1, 3, 4, 5), [("Transpose", {"perm": [0, 1, 3, 2]})], "conv", ["MUL", "TRANSPOSE", "CONV_2D"]),
    # a tensor in ONNX NHWC order flattened: RESHAPE reads it in order
    "nhwc_flatten": ((1, 3, 4, 5), [("Transpose", {"perm": [0, 2, 3, 1]}), ("Flatten", {})], None, ["MUL", "RESHAPE"]),
    "nhwc_squeeze_3_unsqueeze_conv": (
        (1, 1, 4, 5),
        [("Transpose", {"perm": [0, 2, 3, 1]}), ("Squeeze", [3]), ("Unsqueeze", [1])],
        "conv",
        ["MUL", "RESHAPE", "RESHAPE", "CONV_2D"],
    ),
    "rank3_transposes": (
        (1, 3, 4),
        [("Transpose", {"perm": [0, 2, 1]}), ("Reshape", [1, 2, 6]), ("Transpose", {"perm": [0, 2, 1]})],
        None,
        ["MUL", "TRANSPOSE", "RESHAPE", "TRANSPOSE"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_movement_case(name):
    shape, steps, tail, expected = CASES[name]
    proto = _case(shape, steps, tail)
    inputs = [("x", list(shape))]
    assert _ops(proto, inputs) == expected
    check_against_onnxruntime(proto, inputs, start=("t0",) if tail else ())


def _perm(draw, rank) -> list[int]:
    return [0, *draw(st.permutations(range(1, rank)))]


@st.composite
def _chains(draw):
    """A rank-2..4 input, an optional Transpose, one reshape-like op, an optional Transpose, an optional Conv."""
    rank = draw(st.integers(2, 4))
    shape = [1, *draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=rank - 1, max_size=rank - 1))]
    steps = []
    if draw(st.booleans()):
        perm = _perm(draw, rank)
        steps.append(("Transpose", {"perm": perm}))
        shape_now = [shape[p] for p in perm]
    else:
        shape_now = list(shape)
    kind = draw(st.sampled_from(["Flatten", "Reshape", "Squeeze", "Unsqueeze"]))
    if kind == "Flatten":
        steps.append(("Flatten", {"axis": draw(st.integers(1, rank - 1))}))
        shape_now = [int(np.prod(shape_now[: steps[-1][1]["axis"]])), int(np.prod(shape_now[steps[-1][1]["axis"] :]))]
    elif kind == "Squeeze":
        units = [a for a, d in enumerate(shape_now) if d == 1 and a > 0]
        if units:
            axes = draw(st.lists(st.sampled_from(units), min_size=1, unique=True))
            steps.append(("Squeeze", sorted(axes)))
            shape_now = [d for a, d in enumerate(shape_now) if a not in axes]
    elif kind == "Unsqueeze" and rank < 4:
        axes = sorted(draw(st.lists(st.integers(1, 3), min_size=1, max_size=4 - rank, unique=True)))
        steps.append(("Unsqueeze", axes))
        for axis in axes:
            shape_now.insert(axis, 1)
    else:
        size = int(np.prod(shape_now[1:]))
        factors = [f for f in (1, 2, 3, 4, 6) if size % f == 0]
        first = draw(st.sampled_from(factors))
        target = [1, first, size // first]
        if draw(st.booleans()):
            target = [1, first, 1, size // first]
        steps.append(("Reshape", target))
        shape_now = target
    if len(shape_now) > 1 and draw(st.booleans()):
        steps.append(("Transpose", {"perm": _perm(draw, len(shape_now))}))
        shape_now = [shape_now[p] for p in steps[-1][1]["perm"]]
    tail = "conv" if len(shape_now) == 4 and draw(st.booleans()) else None
    return shape, steps, tail


@SETTINGS
@given(chain=_chains(), seed=st.integers(0, 1000))
def test_reshapes_and_transposes_in_any_layout(chain, seed):
    shape, steps, tail = chain
    proto = _case(shape, steps, tail, seed)
    check_against_onnxruntime(proto, [("x", shape)], seed, start=("t0",) if tail else ())
