"""The ONNX Runtime artifact pads integers, not dequantized floats (targets/onnxruntime/integer_pads.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from edgeq.data import ArrayData, input_specs
from edgeq.io.onnx_model import clone_model, model_bytes
from edgeq.io.session import session
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.executor import run_all_semantics
from edgeq.reference.interface import model_inputs
from edgeq.targets.onnxruntime import integer_pads
from edgeq.targets.onnxruntime.fusion import fusion_report
from edgeq.targets.tflite.lower import lower


def _padding_model(spatial_mode: str) -> onnx.ModelProto:
    """Conv -> Pad of channels (constant 0) -> Conv -> Pad of rows and columns (SPATIAL_MODE) -> Conv."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, shape).astype(np.float32) for shape in ((4, 3, 1, 1), (6, 8, 1, 1), (2, 6, 3, 3))]
    pads = {
        "channel_pads": np.array([0, 0, 0, 0, 0, 4, 0, 0], np.int64),
        "spatial_pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w0"], ["a"], name="conv0"),
            helper.make_node("Pad", ["a", "channel_pads"], ["b"], name="channel_pad"),
            helper.make_node("Conv", ["b", "w1"], ["c"], name="conv1"),
            helper.make_node("Pad", ["c", "spatial_pads"], ["d"], name="spatial_pad", mode=spatial_mode),
            helper.make_node("Conv", ["d", "w2"], ["y"], name="conv2"),
        ],
        "pads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [onnx.numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
        + [onnx.numpy_helper.from_array(v, k) for k, v in pads.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _qdq(spatial_mode: str) -> tuple[ir.Model, np.ndarray]:
    model = ir.from_proto(_padding_model(spatial_mode))
    x = np.random.default_rng(1).normal(0, 1, (32, 3, 6, 6)).astype(np.float32)
    calibrated = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"x": x}, input_specs(model), "data"))
    return Pipeline(Recipe()).quantize(calibrated, "uint8").model, x[:8]


@pytest.mark.parametrize("spatial_mode", ["constant", "reflect", "edge"])
def test_pads_move_onto_the_integers_and_compute_the_same(spatial_mode, tmp_path):
    model, x = _qdq(spatial_mode)
    modes = [n.attributes.get_string("mode", "constant") for n in model.graph if n.op_type == "Pad"]
    # preprocessing folds a constant Pad of rows and columns into the next Conv's pads
    assert modes == (["constant"] if spatial_mode == "constant" else ["constant", spatial_mode])
    rewritten = clone_model(model)
    assert integer_pads.pad_integers(rewritten) == len(modes)
    before, after = tmp_path / "before.onnx", tmp_path / "after.onnx"
    before.write_bytes(model_bytes(model))
    after.write_bytes(model_bytes(rewritten))
    assert fusion_report(before).sandwiches == {"Pad": len(modes)}
    assert fusion_report(after).sandwiches == {}
    assert all(n.inputs[0].dtype == ir.DataType.UINT8 for n in rewritten.graph if n.op_type == "Pad")
    for exact in (True, False):
        np.testing.assert_array_equal(
            session(after, exact_int8=exact).run(None, {"x": x})[0],
            session(before, exact_int8=exact).run(None, {"x": x})[0],
        )


def test_undo_gives_the_lowering_the_graph_it_gave_before():
    model, x = _qdq("constant")  # the TFLite lowering pads in constant mode only
    rewritten = clone_model(model)
    assert integer_pads.pad_integers(rewritten) == 1
    assert integer_pads.undo(rewritten) == 1
    original, restored = lower(clone_model(model)).graph, lower(rewritten).graph
    assert [op.opcode for op in restored.operators] == [op.opcode for op in original.operators]
    inputs = model_inputs(original, {"x": x[:1]})
    expected, got = run_all_semantics(original, inputs), run_all_semantics(restored, inputs)
    for semantics in expected:
        for a, b in zip(expected[semantics], got[semantics], strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_nonzero_pad_value_stays_in_float():
    model, _ = _qdq("reflect")
    rewritten = clone_model(model)
    pad = next(n for n in rewritten.graph if n.op_type == "Pad")
    value = ir.Value(name="one", const_value=ir.tensor(np.array(1.0, np.float32)))
    rewritten.graph.register_initializer(value)
    pad.resize_inputs(3)
    pad.replace_input_with(2, value)
    assert integer_pads.pad_integers(rewritten) == 1  # only the reflect Pad
