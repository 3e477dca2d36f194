"""Dynamic input dimensions are fixed from the calibration data or --input-shape, so that the shape arithmetic
exporters write folds away; the report says what was fixed and from where."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import make_convnet
from onnx import TensorProto, helper

import edgeq
from edgeq.errors import DataError, RecipeError
from edgeq.io.session import session

torch = pytest.importorskip("torch")


class _PadSameConv(torch.nn.Module):
    """TF "same" padding computed at run time from the input's size, as TF-ported torch models write it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        ih, iw = x.size()[-2:]
        ph = max((math.ceil(ih / 2) - 1) * 2 + 3 - ih, 0)
        pw = max((math.ceil(iw / 2) - 1) * 2 + 3 - iw, 0)
        x = torch.nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return torch.relu(self.conv(x))


@pytest.fixture(scope="module")
def pad_same(tmp_path_factory):
    path = tmp_path_factory.mktemp("pad_same") / "pad_same.onnx"
    torch.manual_seed(0)
    with pytest.warns(torch.jit.TracerWarning):  # the traced sizes: what makes the exported graph dynamic
        torch.onnx.export(
            _PadSameConv().eval(), (torch.randn(1, 3, 15, 16),), str(path), dynamo=False, opset_version=17,
            input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N"}},
        )  # fmt: skip
    assert {"Shape", "Pad"} <= {n.op_type for n in onnx.load(path).graph.node}
    return path


def _close_to_float(float_path, qdq: onnx.ModelProto, x: np.ndarray) -> None:
    expected = session(onnx.load(float_path)).run(None, {"x": x})[0]
    got = np.concatenate([session(qdq).run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("size", [(15, 16), (20, 21)])
def test_run_time_same_padding_folds_with_the_shape_of_the_calibration_data(pad_same, size):
    x = np.random.default_rng(0).normal(size=(6, 3, *size)).astype(np.float32)
    result = edgeq.quantize(pad_same, x)
    ops = {n.op_type for n in result.model.graph.node}
    assert not ops & {"Shape", "Gather", "Concat", "Cast", "ConstantOfShape"}, ops
    record = result.report["stages"]["preprocess"]["fixed_input_shapes"]["x"]
    assert record["shape"] == [1, 3, *size]  # the batch too: the graph computed from the shape
    assert record["from"].startswith("the calibration data; batch 1")
    dims = [d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *size]
    _close_to_float(pad_same, result.model, x)


def test_given_input_shape_wins_and_must_fit_the_data_and_the_model(pad_same):
    x = np.random.default_rng(1).normal(size=(4, 3, 15, 16)).astype(np.float32)
    result = edgeq.quantize(pad_same, x, input_shapes={"x": [1, 3, 15, 16]})
    assert result.report["stages"]["preprocess"]["fixed_input_shapes"] == {
        "x": {"shape": [1, 3, 15, 16], "from": "--input-shape"}
    }
    unnamed = edgeq.quantize(pad_same, x, input_shapes={"": [1, 3, 15, 16]})
    assert unnamed.report["stages"]["preprocess"]["fixed_input_shapes"]["x"]["shape"] == [1, 3, 15, 16]
    with pytest.raises(DataError, match=r"input 'x' has samples of shape \[3, 15, 16\], --input-shape fixes"):
        edgeq.quantize(pad_same, x, input_shapes={"x": [1, 3, 32, 32]})
    with pytest.raises(RecipeError, match=r"does not fit the model's input \[\?, 3, \?, \?\]"):
        edgeq.quantize(pad_same, x, input_shapes={"x": [1, 4, 15, 16]})
    with pytest.raises(RecipeError, match="the model has no input 'image' \\(inputs: x\\)"):
        edgeq.quantize(pad_same, x, input_shapes={"image": [1, 3, 15, 16]})
    with pytest.raises(RecipeError, match="must be positive integers"):
        edgeq.quantize(pad_same, x, input_shapes={"x": [1, 3, 0, 16]})


def test_a_graph_without_shape_arithmetic_keeps_its_dynamic_batch():
    x = np.random.default_rng(2).normal(size=(8, 3, 8, 8)).astype(np.float32)
    result = edgeq.quantize(make_convnet(), x)
    assert "fixed_input_shapes" not in result.report["stages"]["preprocess"]
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_an_unnamed_shape_needs_a_one_input_model():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("a", "b")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    data = {n: np.ones((2, 4), np.float32) for n in ("a", "b")}
    with pytest.raises(RecipeError, match="the model has 2 inputs; name one: a, b"):
        edgeq.quantize(model, data, input_shapes={"": [1, 4]})


def test_evaluation_data_must_have_the_fixed_shape(pad_same, tmp_path):
    rng = np.random.default_rng(3)
    calib = rng.normal(size=(4, 3, 15, 16)).astype(np.float32)
    evaluation = rng.normal(size=(2, 3, 20, 20)).astype(np.float32)
    with pytest.raises(DataError, match=r"evaluation data: input 'x' has samples of shape \[3, 20, 20\]"):
        edgeq.convert(pad_same, calib, outdir=tmp_path / "out", targets=["onnxruntime"], eval_data=evaluation)


def test_cli_prints_what_it_fixed_and_refuses_a_malformed_shape(pad_same, tmp_path):
    from test_cli import assert_one_line_error
    from test_cli import edgeq as cli

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(4).normal(size=(4, 3, 15, 16)).astype(np.float32))
    out = tmp_path / "q.onnx"
    result = cli("quantize", pad_same, "-o", out, "--calib", calib, "--input-shape", "x=1,3,15,16", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "input x: shape fixed to [1, 3, 15, 16] from --input-shape" in result.stdout
    bad = cli("quantize", pad_same, "-o", tmp_path / "b.onnx", "--calib", calib, "--input-shape", "x=1,3,a")
    assert_one_line_error(bad, r"--input-shape 'x=1,3,a': expected NAME=1,3,320,320")
    assert not (tmp_path / "b.onnx").exists()
