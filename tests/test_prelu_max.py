"""passes/prelu_max.py: PRelu written as ``Max(x, Mul(x, a))`` (``Min`` for slopes >= 1) gives ONNX Runtime the same
outputs without its slow broadcasting PRelu kernel; ``undo`` restores the PRelu; the ONNX Runtime target's artifact
uses the form and still verifies against the integer reference."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper
from ops_cases import onnx_model

import edgeq
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session
from edgeq.passes import prelu_max

SHAPE = [1, 3, 6, 7]


def _prelu(slope: np.ndarray, *, quantized: bool = False) -> ir.Model:
    """Conv then PRelu with SLOPE, given as a float constant or (QUANTIZED) as DequantizeLinear of int8 values."""
    rng = np.random.default_rng(0)
    inits = [("w", rng.normal(0, 0.5, (3, 3, 1, 1)).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"])]
    if quantized:
        scale = np.float32(np.abs(slope).max() / 127)
        inits += [("slope_q", np.round(slope / scale).astype(np.int8)), ("slope_s", scale), ("slope_z", np.int8(0))]
        nodes.append(helper.make_node("DequantizeLinear", ["slope_q", "slope_s", "slope_z"], ["slope"]))
    else:
        inits.append(("slope", slope))
    nodes.append(helper.make_node("PRelu", ["c", "slope"], ["y"]))
    return ir.from_proto(onnx_model(nodes, [("x", SHAPE)], [("y", TensorProto.FLOAT, SHAPE)], inits, 17))


def _outputs(model: ir.Model, x: np.ndarray) -> np.ndarray:
    return session(to_proto(model)).run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("slope", "bound"),
    [
        (np.array([0.1, -0.2, 1.0], np.float32).reshape(3, 1, 1), "Max"),  # MTCNN's per-channel slopes, one of 1
        (np.array([0.25], np.float32), "Max"),
        (np.array([1.5, 2.0, 1.0], np.float32).reshape(3, 1, 1), "Min"),
    ],
)
@pytest.mark.parametrize("quantized", [False, True])
def test_same_outputs_as_prelu_and_undo_restores_it(slope, bound, quantized):
    x = np.random.default_rng(1).normal(0, 3, SHAPE).astype(np.float32)
    x[0, 0, 0, :3] = 0.0  # PRelu's branch point
    model = _prelu(slope, quantized=quantized)
    want = _outputs(model, x)
    assert prelu_max.prelus_as_max(model) == 1
    assert [n.op_type for n in model.graph if n.op_type != "DequantizeLinear"] == ["Conv", "Mul", bound]
    np.testing.assert_array_equal(_outputs(model, x), want)
    assert prelu_max.undo(model) == 1
    assert [n.op_type for n in model.graph if n.op_type != "DequantizeLinear"] == ["Conv", "PRelu"]
    np.testing.assert_array_equal(_outputs(model, x), want)


def test_slopes_on_both_sides_of_one_keep_the_prelu():
    model = _prelu(np.array([0.5, 1.5, 0.1], np.float32).reshape(3, 1, 1))
    assert prelu_max.prelus_as_max(model) == 0
    assert [n.op_type for n in model.graph] == ["Conv", "PRelu"]


def test_a_max_that_is_no_prelu_is_left_alone():
    """undo only turns back what it can read as a PRelu: Max(x, x * a) with every a <= 1."""
    nodes = [helper.make_node("Mul", ["x", "a"], ["t"]), helper.make_node("Max", ["x", "t"], ["y"])]
    inits = [("a", np.array([0.5, 1.5, 0.1], np.float32).reshape(3, 1, 1))]
    model = ir.from_proto(onnx_model(nodes, [("x", SHAPE)], [("y", TensorProto.FLOAT, SHAPE)], inits, 17))
    assert prelu_max.undo(model) == 0


def test_the_onnxruntime_artifact_has_no_prelu_and_verifies(tmp_path):
    model = tmp_path / "prelu.onnx"
    model.write_bytes(to_proto(_prelu(np.array([0.1, -0.2, 0.3], np.float32).reshape(3, 1, 1))).SerializeToString())
    calib = {"x": np.random.default_rng(2).normal(0, 1, [16, *SHAPE[1:]]).astype(np.float32)}
    result = edgeq.convert(model, calib, outdir=tmp_path / "out", targets=["onnxruntime"])
    assert result.report["targets"]["onnxruntime"]["fusion"]["op_counts"].get("PRelu") is None
    artifact = tmp_path / "out" / "prelu.qdq.onnx"
    assert "PRelu" not in {n.op_type for n in ir.load(artifact).graph}
    verified = edgeq.verify([artifact], calib, samples=4)
    assert verified.within_1_lsb_per_op, verified.report
