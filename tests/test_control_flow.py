"""Compute inside If/Loop/Scan bodies is refused in one line before anything else; an If that folding resolves
is not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeq
from edgeq.errors import UnsupportedError


def _branch(name: str, scale: float) -> onnx.GraphProto:
    k = numpy_helper.from_array(np.full((4, 4), scale, np.float32), f"{name}_w")
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_y"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4])],
        [k],
    )


def _if_model(condition_is_input: bool) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    inits = []
    if condition_is_input:
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    else:
        inits.append(numpy_helper.from_array(np.array(True), "c"))
    node = helper.make_node(
        "If", ["c"], ["y"], name="choose", then_branch=_branch("a", 0.5), else_branch=_branch("b", 2.0)
    )
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compute_in_an_if_on_a_run_time_condition_is_refused_before_the_data_is_read():
    with pytest.raises(
        UnsupportedError, match=r"^unsupported: If at choose: its bodies compute \(MatMul\)"
    ) as info:
        edgeq.quantize(_if_model(True), {"x": np.ones((2, 3), np.float32)})  # wrong data: not the complaint
    assert info.value.code == "control-flow" and info.value.node == "choose"


def test_an_if_on_a_constant_condition_folds_to_its_branch():
    x = np.random.default_rng(0).normal(size=(8, 1, 4)).astype(np.float32)[:, 0]
    result = edgeq.quantize(_if_model(False), x)
    assert "If" not in {n.op_type for n in result.model.graph.node}
    assert result.report["quantized_nodes"] == {"MatMul": 1}
