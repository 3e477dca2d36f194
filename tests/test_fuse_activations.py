"""passes/fuse_hard_swish.py and passes/fuse_gelu.py: each decomposition exporters write becomes one HardSwish or
Gelu node in preprocessing, computing what the decomposition computes (onnxruntime, float32, to a few ulp); inexact
constants, a shared intermediate value or an opset without the op leave the graph as it is."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.passes.preprocess import preprocess


def _model(nodes, constants, opset, outputs=("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "fuse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[
            numpy_helper.from_array(np.asarray(value, np.float32), name) for name, value in constants.items()
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 9
    return proto


def _op_types_after_preprocess(proto: onnx.ModelProto) -> list[str]:
    """The preprocessed graph's op types, after checking that it computes what PROTO computes."""
    model = preprocess(ir.serde.deserialize_model(proto))
    x = (np.random.default_rng(0).normal(0, 3, (2, 3, 4, 5))).astype(np.float32)
    x.flat[:7] = [-3, 3, 0, -6, 6, -1e-3, 40]
    want = ort_session(proto).run(None, {"x": x})
    got = ort_session(to_proto(model)).run(None, {"x": x})
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    return [node.op_type for node in model.graph]


def _paddle_hard_swish(outer: bool, divide: bool, add_first: bool = True) -> tuple[list, dict]:
    """x * Clip(x + 3, 0, 6) / 6 as PaddlePaddle's exporter writes it, in one of its arrangements."""
    scale, sixth = ("Div", 6.0) if divide else ("Mul", np.float32(1 / 6))
    nodes = [
        helper.make_node("Add", ["x", "three"] if add_first else ["three", "x"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
    ]
    if outer:
        nodes += [helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node(scale, ["m", "sixth"], ["y"])]
    else:
        nodes += [helper.make_node(scale, ["c", "sixth"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    return nodes, {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": sixth}


@pytest.mark.parametrize("outer", [True, False])
@pytest.mark.parametrize("divide", [True, False])
def test_paddle_hard_swish_becomes_one_node(outer, divide):
    nodes, constants = _paddle_hard_swish(outer, divide, add_first=outer)
    assert _op_types_after_preprocess(_model(nodes, constants, 17)) == ["HardSwish"]


def test_x_times_hard_sigmoid_becomes_hard_swish_only_with_its_parameters():
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h", "x"], ["y"]),
    ]
    assert _op_types_after_preprocess(_model(nodes, {}, 14)) == ["HardSwish"]
    nodes[0] = helper.make_node("HardSigmoid", ["x"], ["h"])  # ONNX's defaults: alpha 0.2
    assert _op_types_after_preprocess(_model(nodes, {}, 14)) == ["HardSigmoid", "Mul"]


@pytest.mark.parametrize("change", ["three", "six", "sixth"])
def test_inexact_constants_are_left_alone(change):
    nodes, constants = _paddle_hard_swish(outer=True, divide=change != "sixth")
    constants[change] = constants[change] * 1.001
    assert "HardSwish" not in _op_types_after_preprocess(_model(nodes, constants, 17))


def test_a_shared_intermediate_and_a_low_opset_are_left_alone():
    nodes, constants = _paddle_hard_swish(outer=True, divide=True)
    assert "HardSwish" not in _op_types_after_preprocess(_model(nodes, constants, 17, outputs=("y", "c")))
    assert "HardSwish" not in _op_types_after_preprocess(
        _model(nodes, constants, 13)
    )  # HardSwish is opset 14


def _torch_gelu(shape: str, divide: bool) -> tuple[list, dict]:
    """x * 0.5 * (1 + Erf(x / sqrt 2)) as torch.onnx writes it (SHAPE: where the 0.5 multiplies)."""
    root = np.float32(math.sqrt(2)) if divide else np.float32(math.sqrt(0.5))
    nodes = [
        helper.make_node("Div" if divide else "Mul", ["x", "root"], ["s"]),
        helper.make_node("Erf", ["s"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["p"]),
    ]
    if shape == "outer":
        nodes += [helper.make_node("Mul", ["x", "p"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    elif shape == "first":
        nodes += [helper.make_node("Mul", ["half", "x"], ["m"]), helper.make_node("Mul", ["m", "p"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["p", "half"], ["m"]), helper.make_node("Mul", ["x", "m"], ["y"])]
    return nodes, {"root": root, "one": 1.0, "half": 0.5}


@pytest.mark.parametrize("shape", ["outer", "first", "inner"])
@pytest.mark.parametrize("divide", [True, False])
def test_torch_gelu_becomes_one_node_from_opset_20(shape, divide):
    nodes, constants = _torch_gelu(shape, divide)
    assert _op_types_after_preprocess(_model(nodes, constants, 20)) == ["Gelu"]


def test_gelu_below_opset_20_is_fused_after_converting_the_model_up():
    """BERT-style exports are opset 14-17: the model is converted to opset 20 (exactly), then fused."""
    nodes, constants = _torch_gelu("outer", True)
    nodes.append(helper.make_node("ReduceMean", ["y"], ["r"], axes=[1]))  # an op whose form changed in opset 18
    proto = _model(nodes, constants, 14, outputs=("r",))
    model = preprocess(ir.serde.deserialize_model(proto))
    assert [n.op_type for n in model.graph] == ["Gelu", "ReduceMean"] and model.opset_imports[""] == 20
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    want = ort_session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(ort_session(to_proto(model)).run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


def test_gelu_with_inexact_constants_is_left_alone():
    nodes, constants = _torch_gelu("outer", True)
    constants["root"] = np.float32(1.414)
    assert "Erf" in _op_types_after_preprocess(_model(nodes, constants, 20))
