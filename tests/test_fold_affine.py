"""passes.affine_chain and passes.fold_affine: every rewrite on a graph with its pattern, the float function
unchanged (onnxruntime before/after), and what must not fold left alone; the corpus models' unfolded and
standalone BatchNorms gone."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import pytest
from conftest import CORPUS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnxscript import rewriter
from onnxscript.rewriter.rules.common import no_op_cast_rule

import edgeq
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.passes.fold_affine import FoldAffinePass
from edgeq.passes.fold_batchnorm import batchnorm_statistics
from edgeq.passes.preprocess import preprocess, preprocess_pipeline

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(nodes, inputs: dict, outputs: list[str], inits: dict, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, dtype, shape) for k, shape in inputs.items()],
        [helper.make_tensor_value_info(k, dtype, None) for k in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)  # shaped outputs, as exporters write them


def _fold(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = ir.serde.deserialize_model(proto)
    FoldAffinePass()(model)
    common_passes.RemoveUnusedNodesPass()(model)
    folded = to_proto(model)
    onnx.checker.check_model(folded, full_check=True)
    return folded


def _outputs(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort_session(proto, optimization="disabled").run(None, feeds)


def _assert_same_function(before: onnx.ModelProto, after: onnx.ModelProto, seed: int = 0, rtol=1e-5) -> None:
    rng = np.random.default_rng(seed)
    feeds = {
        i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in before.graph.input
    }
    for a, b in zip(_outputs(before, feeds), _outputs(after, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())


def _ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def _chain(kinds: str, x: str, consts: dict, array: np.ndarray, out: str, rng) -> list:
    """Nodes applying the comma-separated KINDS (Sub/Mul/Add) to X, constants shaped like ARRAY."""
    nodes, current = [], x
    for index, kind in enumerate(kinds.split(",")):
        name, result = f"c{index}", out if index == len(kinds.split(",")) - 1 else f"t{index}"
        consts[name] = (array * rng.uniform(0.5, 2.0, array.shape)).astype(np.float32)
        nodes.append(helper.make_node(kind, [current, name], [result]))
        current = result
    return nodes


# Linear ops: op type, input shape, weights, attributes, per-output-channel constant shapes, a shape that is not.
LAYERS = {
    "conv": (
        "Conv",
        [2, 4, 6, 6],
        (6, 4, 3, 3),
        {"pads": [1, 1, 1, 1]},
        [(1, 6, 1, 1), (6, 1, 1)],
        (1, 1, 1, 6),
    ),
    "grouped-conv": ("Conv", [2, 4, 6, 6], (6, 2, 3, 3), {"group": 2}, [(6, 1, 1)], (4, 1)),
    "conv1d": ("Conv", [2, 4, 7], (5, 4, 3), {}, [(5, 1), (1, 5, 1)], (5,)),
    "conv-transpose": ("ConvTranspose", [2, 4, 5, 5], (4, 3, 2, 2), {"group": 2}, [(6, 1, 1)], (6,)),
    "gemm": ("Gemm", [3, 5], (5, 4), {"alpha": 0.5, "beta": 2.0}, [(4,), (1, 4)], (3, 1)),
    "gemm-transB": ("Gemm", [3, 5], (4, 5), {"transB": 1}, [(4,)], (3, 1)),
    "matmul": ("MatMul", [2, 3, 5], (5, 4), {}, [(4,), (1, 1, 4)], (3, 1)),
    "matmul-2d": ("MatMul", [3, 5], (5, 4), {}, [(1, 4)], (3, 4)),
}


@SETTINGS
@given(
    layer=st.sampled_from(sorted(LAYERS)),
    chain=st.sampled_from(["Sub", "Mul", "Add", "Sub,Mul,Add", "Mul,Add,Mul", "Add,Add,Mul,Mul"]),
    layout=st.sampled_from(["channel", "scalar", "other"]),
    seed=st.integers(0, 2**16),
)
def test_a_chain_after_a_linear_op_folds_into_it_exactly_when_per_output_channel(layer, chain, layout, seed):
    op_type, x_shape, w_shape, attributes, channel_shapes, other_shape = LAYERS[layer]
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(size=w_shape).astype(np.float32)}
    inputs = ["x", "w"]
    if op_type in ("Conv", "Gemm") and layer != "gemm-transB":
        channels = w_shape[0] if op_type == "Conv" else w_shape[1]
        inits["b"] = rng.normal(size=channels).astype(np.float32)
        inputs.append("b")
    shape = {"channel": channel_shapes[seed % len(channel_shapes)], "scalar": (), "other": other_shape}[
        layout
    ]
    nodes = [helper.make_node(op_type, inputs, ["z"], **attributes)]
    nodes += _chain(chain, "z", inits, rng.normal(size=shape) + 1.5, "y", rng)
    proto = _model(nodes, {"x": x_shape}, ["y"], inits)
    folded = _fold(proto)
    _assert_same_function(proto, folded, seed)
    if layout == "other":
        assert len(folded.graph.node) > 1, _ops(folded)
    else:
        shifted = (
            "Add" in chain or "Sub" in chain
        )  # MatMul has no bias: Gemm for a rank-2 x, else an Add stays
        expected = {"matmul-2d": ["Gemm"], "matmul": ["MatMul", "Add"]}.get(layer) if shifted else None
        assert _ops(folded) == (expected or [op_type])


def _keras_dense_batchnorm(dense: str) -> onnx.ModelProto:
    """Keras 3 (torch backend): Dense as MatMul + Add (or Gemm, after onnxruntime's basic optimizations), then
    BatchNorm unfolded as Sub(mean) / Mul(scale) / Add(beta) on [N, C], then Relu."""
    rng = np.random.default_rng(1)
    inits = {
        "w": rng.normal(size=(16, 8)).astype(np.float32),
        "b": rng.normal(size=8).astype(np.float32),
        "mean": rng.normal(size=(1, 8)).astype(np.float32),
        "scale": rng.uniform(0.01, 3, size=(1, 8)).astype(np.float32),
        "beta": rng.normal(size=(1, 8)).astype(np.float32),
    }
    if dense == "MatMul":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["d"])]
    else:
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["d"])]
    nodes += [
        helper.make_node("Sub", ["d", "mean"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["n"]),
        helper.make_node("Add", ["n", "beta"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    return _model(nodes, {"x": [2, 16]}, ["y"], inits)


@pytest.mark.parametrize("dense", ["MatMul", "Gemm"])
def test_keras_unfolded_batchnorm_after_a_dense_layer_becomes_one_gemm(dense):
    proto = _keras_dense_batchnorm(dense)
    folded = _fold(proto)
    assert _ops(folded) == ["Gemm", "Relu"]
    _assert_same_function(proto, folded)


def test_nhwc_batchnorm_behind_a_transpose_folds_into_the_conv():
    """The NHWC Keras form: Conv, Transpose to NHWC, BatchNorm as Sub/Mul/Add on [1, 1, 1, C], Relu."""
    rng = np.random.default_rng(2)
    inits = {
        "w": rng.normal(size=(5, 3, 1, 3)).astype(np.float32),
        "mean": rng.normal(size=(1, 1, 1, 5)).astype(np.float32),
        "scale": rng.uniform(0.1, 2, size=(1, 1, 1, 5)).astype(np.float32),
        "beta": rng.normal(size=(1, 1, 1, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Sub", ["t", "mean"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["n"]),
        helper.make_node("Add", ["beta", "n"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    proto = _model(nodes, {"x": [1, 3, 7, 9]}, ["y"], inits)
    folded = _fold(proto)
    assert _ops(folded) == ["Conv", "Transpose", "Relu"]
    _assert_same_function(proto, folded)


def _normalized_input(conv_pads: list[int], chain: str, rank: int = 4, nhwc: bool = False) -> onnx.ModelProto:
    """Input normalization at the model's start ((x - mean) * (1/std), per input channel), then a Conv/Gemm."""
    rng = np.random.default_rng(3)
    per_channel = (1, 3, 1, 1) if rank == 4 else (3,)
    if nhwc:
        per_channel = (1, 1, 1, 3)
    inits = {"w": rng.normal(size=(4, 3, 3, 3) if rank == 4 else (3, 4)).astype(np.float32)}
    x_shape = [1, 6, 6, 3] if nhwc else [1, 3, 6, 6] if rank == 4 else [2, 3]
    nodes = _chain(chain, "x", inits, rng.uniform(0.2, 1.0, per_channel), "norm", rng)
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["norm"], ["norm_nchw"], perm=[0, 3, 1, 2]))
    data = "norm_nchw" if nhwc else "norm"
    if rank == 4:
        nodes.append(helper.make_node("Conv", [data, "w"], ["y"], pads=conv_pads))
    else:
        nodes.append(helper.make_node("Gemm", [data, "w"], ["y"]))
    return _model(nodes, {"x": x_shape}, ["y"], inits)


@pytest.mark.parametrize(
    "pads, chain, expected",
    [
        ([0, 0, 0, 0], "Sub,Mul", ["Conv"]),
        ([0, 0, 0, 0], "Add", ["Conv"]),
        ([1, 1, 1, 1], "Mul", ["Conv"]),  # a scale folds whatever the padding
        # the shift must not: padding would see the shifted input's zero; the chain becomes one depthwise Conv
        ([1, 1, 1, 1], "Sub,Mul", ["Conv", "Conv"]),
        ([1, 1, 1, 1], "Mul,Add", ["Conv", "Conv"]),
    ],
)
def test_input_normalization_folds_into_the_following_conv_where_exact(pads, chain, expected):
    proto = _normalized_input(pads, chain)
    folded = _fold(proto)
    _assert_same_function(proto, folded)
    assert _ops(folded) == expected
    if len(expected) == 2:  # the second Conv kept its weights: nothing folded into it
        assert folded.graph.node[1].input[1] == "w"


def test_input_normalization_folds_into_a_following_gemm_and_through_an_nhwc_transpose():
    for proto, expected in [
        (_normalized_input([0, 0, 0, 0], "Sub,Mul", rank=2), ["Gemm"]),
        (_normalized_input([0, 0, 0, 0], "Sub,Mul", nhwc=True), ["Transpose", "Conv"]),
    ]:
        folded = _fold(proto)
        assert _ops(folded) == expected
        _assert_same_function(proto, folded)


def test_a_scale_folds_into_a_following_matmul_but_a_shift_stays():
    rng = np.random.default_rng(4)
    inits = {"w": rng.normal(size=(3, 4)).astype(np.float32)}
    nodes = _chain("Mul,Add", "x", inits, rng.uniform(0.5, 1, (3,)), "n", rng)
    proto = _model([*nodes, helper.make_node("MatMul", ["n", "w"], ["y"])], {"x": [2, 5, 3]}, ["y"], inits)
    folded = _fold(proto)
    assert _ops(folded) == ["Mul", "Add", "MatMul"]  # no fold of x * s + t = (x + t/s) * s: no op fewer
    _assert_same_function(proto, folded)
    scale_first = _model(
        [nodes[0], helper.make_node("MatMul", ["t0", "w"], ["y"])], {"x": [2, 5, 3]}, ["y"], inits
    )
    assert _ops(_fold(scale_first)) == ["MatMul"]


def test_a_scale_folds_into_a_following_depthwise_conv_per_input_channel():
    rng = np.random.default_rng(9)
    inits = {
        "w": rng.normal(size=(6, 1, 3, 3)).astype(np.float32),
        "b": rng.normal(size=6).astype(np.float32),
    }
    nodes = _chain("Mul", "x", inits, rng.uniform(0.2, 2, (6, 1, 1)), "n", rng)
    nodes.append(helper.make_node("Conv", ["n", "w", "b"], ["y"], group=6, pads=[1, 1, 1, 1]))
    proto = _model(nodes, {"x": [1, 6, 5, 5]}, ["y"], inits)
    folded = _fold(proto)
    _assert_same_function(proto, folded)
    assert _ops(folded) == ["Conv"]


def test_batchnorm_statistics_kept_by_fold_batchnorm_follow_the_affine_op_folded_after_them():
    """PP-OCRv4: Conv, BatchNormalization (folded, its gamma/beta kept for bias correction), then a learnable
    affine block x * s + t: the kept statistics must describe the new output, gamma * s and beta * s + t."""
    rng = np.random.default_rng(10)
    inits = {
        "w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "gamma": rng.uniform(0.5, 2, 4).astype(np.float32),
        "beta": rng.normal(size=4).astype(np.float32),
        "mean": rng.normal(size=4).astype(np.float32),
        "var": rng.uniform(0.5, 2, 4).astype(np.float32),
        "s": np.array([0.7], np.float32),
        "t": np.array([0.2], np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
        helper.make_node("Mul", ["n", "s"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["y"]),
    ]
    proto = _model(nodes, {"x": [1, 3, 5, 5]}, ["y"], inits)
    model = preprocess(ir.serde.deserialize_model(proto))
    (conv,) = model.graph
    gamma, beta = batchnorm_statistics(conv)
    np.testing.assert_allclose(gamma, inits["gamma"] * 0.7, rtol=1e-6)
    np.testing.assert_allclose(beta, inits["beta"] * 0.7 + 0.2, rtol=1e-6)
    _assert_same_function(proto, to_proto(model))


def _standalone_batchnorm(rank: int, then: str = "Relu") -> onnx.ModelProto:
    """BatchNormalization after an Add of two inputs (nothing to fold into), then THEN."""
    rng = np.random.default_rng(5)
    c = 6
    inits = {
        "gamma": rng.uniform(0.05, 3, c).astype(np.float32),
        "beta": rng.normal(size=c).astype(np.float32),
        "mean": rng.normal(size=c).astype(np.float32),
        "var": rng.uniform(0.1, 4, c).astype(np.float32),
        "w": rng.normal(size=(4, c, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("BatchNormalization", ["s", "gamma", "beta", "mean", "var"], ["n"], epsilon=1e-3),
        helper.make_node(then, ["n", "w"] if then == "Conv" else ["n"], ["y"]),
    ]
    shape = [2, c, 5, 4][:rank]
    return _model(nodes, {"a": shape, "b": shape}, ["y"], inits)


@pytest.mark.parametrize("rank, expected", [(4, ["Add", "Conv", "Relu"]), (3, ["Add", "Conv", "Relu"])])
def test_a_standalone_batchnorm_becomes_one_depthwise_conv(rank, expected):
    proto = _standalone_batchnorm(rank)
    folded = _fold(proto)
    assert _ops(folded) == expected
    _assert_same_function(proto, folded)
    conv = folded.graph.node[1]
    attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert attributes["group"] == 6 and attributes["kernel_shape"] == [1] * (rank - 2)


def test_a_rank2_batchnorm_stays_mul_add_and_one_before_a_conv_folds_into_it():
    proto = _standalone_batchnorm(2)
    folded = _fold(proto)
    assert _ops(folded) == ["Add", "Mul", "Add", "Relu"]
    _assert_same_function(proto, folded)
    proto = _standalone_batchnorm(4, then="Conv")
    folded = _fold(proto)
    assert _ops(folded) == ["Add", "Conv"]
    _assert_same_function(proto, folded)


def test_per_channel_mul_or_add_alone_becomes_depthwise_but_scalars_stay():
    rng = np.random.default_rng(6)
    inits = {"s": rng.uniform(0.1, 2, (4, 1, 1)).astype(np.float32), "k": np.array(0.5, np.float32)}
    for op_type in ("Mul", "Add"):
        for constant, expected in [("s", ["Relu", "Conv", "Relu"]), ("k", ["Relu", op_type, "Relu"])]:
            nodes = [
                helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node(op_type, [constant, "r"], ["m"]),
                helper.make_node("Relu", ["m"], ["y"]),
            ]
            proto = _model(nodes, {"x": [1, 4, 3, 3]}, ["y"], inits)
            folded = _fold(proto)
            assert _ops(folded) == expected
            _assert_same_function(proto, folded)


def test_a_linear_output_read_elsewhere_a_tied_weight_and_a_graph_output_are_left_intact():
    rng = np.random.default_rng(7)
    inits = {
        "w": rng.normal(size=(4, 4)).astype(np.float32),
        "s": rng.uniform(0.5, 2, (4,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["z1"]),
        helper.make_node("Mul", ["z1", "s"], ["y1"]),  # z1 is also a graph output: no fold
        helper.make_node("Gemm", ["x", "w"], ["z2"]),  # w is tied to the next Gemm, which folds
        helper.make_node("Mul", ["z2", "s"], ["y2"]),
        helper.make_node("Gemm", ["x", "w"], ["z3"]),
        helper.make_node("Mul", ["z3", "s"], ["y3"]),
        helper.make_node("Relu", ["z3"], ["y4"]),  # z3 has a second reader: no fold
    ]
    proto = _model(nodes, {"x": [3, 4]}, ["y1", "z1", "y2", "y3", "y4"], inits)
    folded = _fold(proto)
    assert _ops(folded) == ["Gemm", "Mul", "Gemm", "Gemm", "Mul", "Relu"]
    assert [n.input[1] for n in folded.graph.node if n.op_type == "Gemm"][0::2] == ["w", "w"]
    _assert_same_function(proto, folded)


def test_one_scalar_initializer_shared_by_many_nodes_gives_each_its_own_constant():
    """onnx-simplifier shares one scalar initializer among all its readers: every rewrite must register its
    new constant under a new name (the Div-by-constant rewrite once overwrote a shared reciprocal)."""
    rng = np.random.default_rng(8)
    inits = {f"w{i}": rng.normal(size=(3, 3, 1, 1)).astype(np.float32) for i in range(3)}
    inits["k"] = np.array(0.75, np.float32)
    nodes = []
    for i in range(3):
        nodes += [
            helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"]),
            helper.make_node("Sub", [f"c{i}", "k"], [f"s{i}"]),
            helper.make_node("Mul", [f"s{i}", "k"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"]),
            helper.make_node("Sub", [f"r{i}", "k"], [f"y{i}"]),  # not foldable: stays an Add of -k
        ]
    proto = _model(nodes, {"x": [1, 3, 4, 4]}, ["y0", "y1", "y2"], inits)
    folded = _fold(proto)
    assert _ops(folded) == ["Conv", "Relu", "Add"] * 3
    names = [n.input[1] for n in folded.graph.node if n.op_type == "Add"]
    assert len(set(names)) == 3
    _assert_same_function(proto, folded)
    through_pipeline = to_proto(preprocess(ir.serde.deserialize_model(proto)))
    _assert_same_function(proto, through_pipeline)


def _scalar_affine_before_a_padded_conv() -> onnx.ModelProto:
    """PP-OCRv4's learnable affine block after an activation: x * s + t by scalars, then a padded Conv."""
    rng = np.random.default_rng(12)
    inits = {"s": np.array(0.7, np.float32), "t": np.array(0.3, np.float32)}
    inits["w"] = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mul", ["r", "s"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["a"]),
        helper.make_node("Conv", ["a", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, {"x": [1, 3, 5, 5]}, ["y"], inits)


@pytest.mark.parametrize(
    "build",
    [
        lambda: _standalone_batchnorm(4),
        lambda: _keras_dense_batchnorm("MatMul"),
        lambda: _normalized_input([1, 1, 1, 1], "Sub,Mul"),
        _scalar_affine_before_a_padded_conv,
    ],
    ids=["standalone-batchnorm", "keras-dense", "padded-input-normalization", "scalar-affine"],
)
def test_folded_models_quantize_with_every_affine_op_inside_a_conv_or_gemm(build):
    """The folded constants' names never collide with the Q/DQ constants quantization adds later (a depthwise
    weight once took the name of its input's activation scale)."""
    proto = build()
    rng = np.random.default_rng(11)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    calib = {k: rng.normal(size=(16, *shape[1:])).astype(np.float32) for k, shape in shapes.items()}
    qdq = edgeq.quantize(proto, calib).model
    assert not {"Sub", "Mul", "BatchNormalization"} & set(_ops(qdq))
    feeds = {k: v[: shapes[k][0]] for k, v in calib.items()}
    (reference,), (quantized,) = _outputs(proto, feeds), _outputs(qdq, feeds)
    assert 10 * np.log10((reference**2).sum() / ((reference - quantized) ** 2).sum()) > 25


def test_integer_chains_and_training_mode_batchnorms_are_untouched():
    inits = {"k": np.array([2], np.int64), "j": np.array([3], np.int64)}
    nodes = [helper.make_node("Mul", ["i", "k"], ["m"]), helper.make_node("Add", ["m", "j"], ["y"])]
    assert _ops(_fold(_model(nodes, {"i": [4]}, ["y"], inits, dtype=TensorProto.INT64))) == ["Mul", "Add"]
    inits = {k: np.ones(3, np.float32) for k in ("gamma", "beta", "mean", "var")}
    statistics = ["x", "gamma", "beta", "mean", "var"]
    nodes = [helper.make_node("BatchNormalization", statistics, ["y", "m", "v"], training_mode=1)]
    assert _ops(_fold(_model(nodes, {"x": [2, 3, 4]}, ["y", "m", "v"], inits))) == ["BatchNormalization"]


# The corpus: ONNX files by other exporters (../shared/corpus, with MANIFEST.md and case.json).
CORPUS_CASES = {  # op counts after preprocessing (Sub, Mul, Add, BatchNormalization)
    "mlperf_ad01_autoencoder": (0, 0, 0, 0),
    "mlperf_streaming_wakeword": (0, 0, 0, 0),
    "ppocr_v4_det": (0, 34, 35, 0),
}


def _without_noop_casts(model: ir.Model) -> ir.Model:
    """Keras 3's torch backend writes Casts to the type a tensor already has (the lead's preprocessing removes
    them; here so that the affine chains are adjacent)."""
    common_passes.ShapeInferencePass(check_type=False, strict_mode=False)(model)
    rewriter.RewriteRuleSet([no_op_cast_rule]).apply_to_model(model)
    common_passes.IdentityEliminationPass()(model)
    return model


def _counts(model: ir.Model | onnx.ModelProto) -> tuple[int, ...]:
    ops = [n.op_type for n in (model.graph.node if isinstance(model, onnx.ModelProto) else model.graph)]
    return tuple(ops.count(t) for t in ("Sub", "Mul", "Add", "BatchNormalization"))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CORPUS_CASES))
def test_corpus_affine_chains_fold_and_the_outputs_stay(case):
    folder = CORPUS / case
    if not folder.is_dir():
        pytest.skip(f"the corpus is not at {CORPUS} (set EDGEQ_CORPUS to its folder)")
    source = onnx.load(folder / "model.onnx")
    model = _without_noop_casts(ir.serde.deserialize_model(source))
    without = ir.passes.PassManager(
        [p for p in preprocess_pipeline().passes if not isinstance(p, FoldAffinePass)]
    )
    unfolded = to_proto(without(ir.serde.deserialize_model(to_proto(model))).model)
    folded = to_proto(preprocess(model))
    assert _counts(folded) == CORPUS_CASES[case], (_counts(source), _counts(unfolded), _counts(folded))
    assert sum(_counts(folded)) < sum(_counts(unfolded))
    samples = dict(np.load(folder / "eval.npz"))
    reference, candidate = ort_session(source), ort_session(folded)
    for index in range(2):
        feeds = {k: v[index : index + 1] for k, v in samples.items()}
        for a, b in zip(reference.run(None, feeds), candidate.run(None, feeds), strict=True):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), case
