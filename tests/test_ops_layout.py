"""Reshape, Flatten, Squeeze, Unsqueeze and Transpose in any layout: exact, and a TRANSPOSE only where data moves;
DepthToSpace, SpaceToDepth, Expand and Tile: their kernels bit-exact in LiteRT BUILTIN_REF and TFLite Micro, and
lowered from ONNX.

Each model scales its input (so the data movement is quantized), optionally transposes it (so the op reads a
tensor in another layout than the default one), applies the op and ends in a graph output, a Conv (which needs
NHWC) or a fully-connected layer. check_against_onnxruntime requires the three integer runtimes to agree exactly
and ONNX Runtime's QDQ model to be within 1 LSB; the tables also pin the TFLite operators each case lowers to.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper
from test_target_tflite import SETTINGS, _model, _quantize, check_against_onnxruntime
from tflite_cases import act_scales, activation, check, constant, seeds, single_op, zero_points

from edgeq.errors import EdgeqError
from edgeq.io.session import session
from edgeq.reference.executor import run
from edgeq.reference.interface import float_outputs, model_inputs, tensor_perm
from edgeq.targets.integer_onnx import integer_only_model
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.tflite_format.flatbuffer import read, write


def assert_integer_only_matches(lowered, feeds: dict[str, np.ndarray]) -> None:
    """The integer-only ONNX model of LOWERED computes the reference's output integers (FEEDS: ONNX layout)."""
    graph = lowered.graph
    model = integer_only_model(graph, input_layouts=lowered.input_layouts, output_layouts=lowered.output_layouts,
                               integer_outputs=True)  # fmt: skip
    out = graph.outputs[0]
    got = session(model).run([f"{graph.tensors[out].name}_integers"], feeds)[0]
    expected = run(read(write(graph)), model_inputs(graph, feeds))[0]
    np.testing.assert_array_equal(got.transpose(tensor_perm(graph, out)), expected)


def _ops(proto, inputs) -> list[str]:
    return [op.opcode for op in lower(_quantize(proto, np.random.default_rng(0), inputs)).graph.operators]


def _case(shape, steps, tail=None, seed=0):
    """x * x (a quantized op that preprocessing cannot fold away, as it would a constant scale), then STEPS (op
    type, attributes or an int64 operand), then TAIL ("conv": a 1x1 Conv, "fc": Gemm)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Mul", ["x", "x"], ["t0"])]
    inits = []
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
        count = draw(st.integers(1, 4 - rank))
        axes = sorted(draw(st.lists(st.integers(1, rank + count - 1), min_size=count, max_size=count, unique=True)))
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


# ------------------------------------------------------------------ DepthToSpace, SpaceToDepth, Expand, Tile


@SETTINGS
@given(
    st.sampled_from(["DEPTH_TO_SPACE", "SPACE_TO_DEPTH"]),
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(2, 3),
    act_scales,
    zero_points,
    seeds,
)
def test_depth_to_space_and_space_to_depth_kernels(opcode, n, h, w, c, block, scale, zp, seed):
    if opcode == "DEPTH_TO_SPACE":
        shapes = (n, h, w, c * block * block), (n, h * block, w * block, c)
    else:
        shapes = (n, h * block, w * block, c), (n, h, w, c * block * block)
    model = single_op(opcode, [activation("x", shapes[0], scale, zp)], [activation("y", shapes[1], scale, zp)],
                      {"BlockSize": block})  # fmt: skip
    check(model, np.random.default_rng(seed))


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=5), act_scales, zero_points, seeds)
def test_broadcast_to_kernel(axes, scale, zp, seed):
    """Each axis of the input is 1 (broadcast to its size) or its size; int8 (version 3)."""
    out_shape = tuple(size for size, _ in axes)
    in_shape = tuple(1 if broadcast else size for size, broadcast in axes)
    model = single_op(
        "BROADCAST_TO",
        [activation("x", in_shape, scale, zp), constant("shape", np.array(out_shape, np.int32))],
        [activation("y", out_shape, scale, zp)],
    )
    check(model, np.random.default_rng(seed))


def _single(shape, node, inits=(), opset=13):
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), node]
    return _model(nodes, [("x", shape)], "y", [("k", np.array(1.5, np.float32)), *inits], opset=opset)


@pytest.mark.parametrize(
    ("shape", "op", "attrs", "operand", "expected"),
    [
        ((1, 8, 3, 2), "DepthToSpace", {"blocksize": 2}, None, {"DEPTH_TO_SPACE": 1}),
        ((1, 18, 2, 3), "DepthToSpace", {"blocksize": 3, "mode": "DCR"}, None, {"DEPTH_TO_SPACE": 1}),
        # CRD reads the channels in another order: reordered exactly first
        ((1, 12, 2, 3), "DepthToSpace", {"blocksize": 2, "mode": "CRD"}, None,
         {"DEPTH_TO_SPACE": 1, "RESHAPE": 2, "TRANSPOSE": 1}),
        ((1, 2, 4, 6), "SpaceToDepth", {"blocksize": 2}, None, {"SPACE_TO_DEPTH": 1}),
        # an SE-style broadcast of [N, C, 1, 1]: one BROADCAST_TO on the NHWC tensor
        ((1, 3, 1, 1), "Expand", {}, [1, 3, 4, 5], {"BROADCAST_TO": 1}),
        ((1, 3, 1, 5), "Expand", {}, [4, 1], {"BROADCAST_TO": 1}),
        ((1, 3, 2, 5), "Expand", {}, [1, 3, 2, 5], {}),  # repeats nothing: no operator
        ((1, 4, 6), "Expand", {}, [1, 1, 6], {}),
        ((1, 3, 2, 5), "Tile", {}, [1, 2, 3, 1], {"BROADCAST_TO": 1, "RESHAPE": 2}),
        ((1, 3, 2, 5), "Tile", {}, [1, 1, 1, 2], {"BROADCAST_TO": 1, "RESHAPE": 2}),
        ((1, 3, 1, 5), "Tile", {}, [1, 1, 4, 1], {"BROADCAST_TO": 1}),
        ((1, 4, 3), "Tile", {}, [1, 2, 2], {"BROADCAST_TO": 1, "RESHAPE": 2}),
    ],
)  # fmt: skip
def test_depth_space_expand_and_tile_from_onnx(shape, op, attrs, operand, expected):
    inputs = [("x", list(shape))]
    if operand is None:
        proto = _single(shape, helper.make_node(op, ["m"], ["y"], **attrs))
    else:
        proto = _single(shape, helper.make_node(op, ["m", "p"], ["y"]), [("p", np.array(operand, np.int64))])
    assert lower(_quantize(proto, np.random.default_rng(0), inputs)).ops == {"MUL": 1, **expected}
    check_against_onnxruntime(proto, inputs, start=("m",) if expected else ())  # else "m" is the output


def test_tile_of_every_axis_beyond_tflite_micro_rank_is_refused():
    inputs = [("x", [1, 2, 3, 4])]
    proto = _single([1, 2, 3, 4], helper.make_node("Tile", ["m", "p"], ["y"]), [("p", np.array([1, 2, 2, 2], np.int64))])
    qdq = _quantize(proto, np.random.default_rng(0), inputs)
    with pytest.raises(EdgeqError, match=r"^unsupported: Tile at node_1: 7 axes; TFLite Micro's BROADCAST_TO takes at most 5$"):
        lower(qdq)


def test_depth_to_space_of_a_tensor_in_onnx_nhwc_order():
    """After a Transpose that leaves the tensor as ONNX NHWC (for a Reshape that never comes), DepthToSpace gets it
    back in NHWC: the op that needs the default layout moves it."""
    inputs = [("x", [1, 8, 3, 2])]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t"], ["u"], perm=[0, 3, 1, 2]),
        helper.make_node("DepthToSpace", ["u"], ["y"], blocksize=2),
    ]
    proto = _model(nodes, inputs, "y", [("k", np.array(1.5, np.float32))], opset=13)
    assert lower(_quantize(proto, np.random.default_rng(0), inputs)).ops == {"MUL": 1, "DEPTH_TO_SPACE": 1}
    check_against_onnxruntime(proto, inputs, start=("m",))


def test_integer_only_onnx_moves_data_like_the_reference():
    """DepthToSpace (CRD), SpaceToDepth, Slice, Expand, Tile, a reshape across layouts, through the integer-only
    model, on several samples at once."""
    inputs = [("x", ["N", 12, 2, 3])]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("DepthToSpace", ["m"], ["d"], blocksize=2, mode="CRD"),  # [N, 3, 4, 6]
        helper.make_node("SpaceToDepth", ["d"], ["s"], blocksize=2),  # [N, 12, 2, 3]
        helper.make_node("Slice", ["s", "zero", "one", "two"], ["r"]),  # [N, 12, 1, 3]
        helper.make_node("Expand", ["r", "shape"], ["e"]),  # [N, 12, 2, 3]
        helper.make_node("Tile", ["e", "repeats"], ["t"]),  # [N, 12, 4, 3]
        helper.make_node("Reshape", ["t", "flat"], ["y"]),  # [N, 12, 12]
    ]
    ints = {"zero": [0], "one": [1], "two": [2], "shape": [1, 1, 2, 1], "repeats": [1, 1, 2, 1], "flat": [-1, 12, 12]}
    inits = [("k", np.array(1.5, np.float32))] + [(n, np.array(v, np.int64)) for n, v in ints.items()]
    proto = _model(nodes, inputs, "y", inits, opset=13)
    qdq = _quantize(proto, np.random.default_rng(0), inputs)
    x = np.random.default_rng(1).normal(0, 1, (3, 12, 2, 3)).astype(np.float32)
    assert_integer_only_matches(lower(qdq), {"x": x})
    # the same graph at float precision (float32 tensors, the dequantized constant): the float model's values
    floats = lower(qdq, precision="float")
    graph = floats.graph
    got = float_outputs(graph, run_litert(write(graph), model_inputs(graph, {"x": x[:1]})))[0]
    np.testing.assert_allclose(got, session(proto).run(None, {"x": x[:1]})[0], rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------- refusals


def _quantized_node(shape, node, inits=()):
    inputs = [("x", list(shape))]
    qdq = _quantize(_single(shape, node, inits), np.random.default_rng(0), inputs)
    return qdq, next(n for n in qdq.graph if n.op_type == node.op_type)


def test_a_data_movement_between_different_encodings_is_refused():
    qdq, transpose = _quantized_node([1, 3, 4, 5], helper.make_node("Transpose", ["m"], ["y"], perm=[0, 1, 3, 2]))
    q_node = next(user for user, _ in transpose.outputs[0].uses())
    q_node.replace_input_with(1, ir.Value(name="other_scale", const_value=ir.tensor(np.array(0.123, np.float32))))
    with pytest.raises(
        EdgeqError,
        match=r"^unsupported: Transpose at node_1: input and output encodings differ; TFLite requires them equal$",
    ):
        lower(qdq)


def test_a_reshape_whose_sizes_are_only_known_at_run_time_is_refused():
    """[N, 3] flattened from axis 0 is [1, 3N]: with N unknown the sizes cannot be matched."""
    qdq, _ = _quantized_node(["N", 3], helper.make_node("Flatten", ["m"], ["y"], axis=0))
    with pytest.raises(EdgeqError, match=r"^unsupported: Flatten at node_1: reshape of \[1, 3\] to \[1, 1\]: "):
        lower(qdq)


def test_an_expand_to_a_higher_rank_is_refused():
    qdq, _ = _quantized_node([1, 4, 6], helper.make_node("Expand", ["m", "p"], ["y"]), [("p", np.array([2, 1, 4, 6], np.int64))])
    with pytest.raises(EdgeqError, match=r"^unsupported: Expand at node_1: an Expand from rank 3 to 4$"):
        lower(qdq)


def test_tile_repeats_that_are_not_constants_are_refused():
    qdq, tile = _quantized_node([1, 4], helper.make_node("Tile", ["m", "p"], ["y"]), [("p", np.array([1, 2], np.int64))])
    tile.replace_input_with(1, ir.Value(name="computed_repeats"))
    with pytest.raises(EdgeqError, match=r"^unsupported: Tile at node_1: repeats that are not a constant$"):
        lower(qdq)


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        # the Slice keeps the layout the Transpose left (ONNX NHWC); the Conv reads that as NCHW and needs it NHWC
        ("conv", {"MUL": 1, "TRANSPOSE": 1, "STRIDED_SLICE": 1, "CONV_2D": 1}),
        # read by a Transpose back and a Conv: nothing moves
        ("transpose_conv", {"MUL": 1, "STRIDED_SLICE": 1, "CONV_2D": 1}),
    ],
)
def test_ops_that_keep_a_layout_pass_their_readers_needs_back(tail, expected):
    inputs = [("x", [1, 3, 4, 4])]
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Slice", ["t", "starts", "ends", "axes"], ["s"]),
    ]
    if tail == "transpose_conv":
        nodes.append(helper.make_node("Transpose", ["s"], ["u"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("Conv", ["u" if tail == "transpose_conv" else "s", "w"], ["y"]))
    inits = [("k", np.array(1.5, np.float32)), ("starts", np.array([0], np.int64)), ("ends", np.array([3], np.int64)),
             ("axes", np.array([1], np.int64)), ("w", rng.normal(0, 0.5, (2, 3, 1, 1)).astype(np.float32))]  # fmt: skip
    proto = _model(nodes, inputs, "y", inits, opset=13)
    assert lower(_quantize(proto, np.random.default_rng(0), inputs)).ops == expected
    check_against_onnxruntime(proto, inputs, start=("m",))
