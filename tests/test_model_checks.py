"""Models onnx's checker accepts but edgeq cannot honestly quantize (edgeq/io/model_checks.py): every command
refuses them in one line naming the file and the culprit, exit 2, and writes nothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import REPO
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_one_line_error, edgeq

CALIB = REPO / "models" / "digits_calib.npz"


def _conv_model(weight: np.ndarray, *, inputs=True, outputs=True, extra=(), domains=()) -> onnx.ModelProto:
    """x [1, 1, 8, 8] -> Conv(w) -> y, with EXTRA nodes after it."""
    nodes = [helper.make_node("Conv", ["input", "w"], ["y"], pads=[1, 1, 1, 1]), *extra]
    graph = helper.make_graph(
        nodes,
        "checks",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])] if inputs else [],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [1, 4, 8, 8])] if outputs else [],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


GOOD_WEIGHT = np.random.default_rng(0).normal(0, 0.3, (4, 1, 3, 3))


def _with(values, at=(0, 0, 1, 1)):
    weight = GOOD_WEIGHT.copy()
    weight[at] = values
    return weight


CASES = {
    "no-inputs": (
        lambda: _conv_model(GOOD_WEIGHT, inputs=False),
        r"(the graph has no inputs|is not a valid ONNX model)",
    ),
    "no-outputs": (lambda: _conv_model(GOOD_WEIGHT, outputs=False), r": the graph has no outputs$"),
    "custom-domain": (
        lambda: _conv_model(
            GOOD_WEIGHT, extra=[helper.make_node("Fancy", ["y"], ["z"], domain="com.example", name="fancy")],
            domains=["com.example"],
        ),
        r": node 'fancy' \(Fancy\) is of domain 'com.example', which neither ONNX nor ONNX Runtime defines$",
    ),
    "nan-weight": (lambda: _conv_model(_with(np.nan)), r": tensor 'w' holds NaN values$"),
    "inf-weight": (lambda: _conv_model(_with(np.inf)), r": weight 'w' holds infinite values$"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_refuses_a_model_edgeq_cannot_trust(tmp_path, case):
    build, message = CASES[case]
    model = tmp_path / f"{case}.onnx"
    onnx.save(build(), model)
    before = model.read_bytes()
    for command in (
        ["quantize", model, "-o", tmp_path / "q.onnx", "--calib", CALIB],
        ["convert", model, "--target", "all", "--calib", CALIB, "-o", tmp_path / "out"],
        ["profile", model, "--runs", "1"],
    ):
        result = edgeq(*command)
        assert_one_line_error(result, str(model).replace(".", r"\.") + ".*" if case == "no-inputs" else message)
        assert str(model) in result.stderr
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]  # nothing written


def test_an_infinite_constant_that_is_not_a_weight_is_accepted(tmp_path):
    """An attention mask's -inf is legitimate: preprocessing bounds it (passes/bound_attention_mask.py)."""
    mask = helper.make_node(
        "Constant", [], ["mask"], value=numpy_helper.from_array(np.array(-np.inf, np.float32), "mask_value")
    )
    maximum = helper.make_node("Max", ["y", "mask"], ["z"])
    model = tmp_path / "mask.onnx"
    onnx.save(_conv_model(GOOD_WEIGHT, extra=[mask, maximum]), model)
    result = edgeq("quantize", model, "-o", tmp_path / "q.onnx", "--calib", CALIB, "--no-progress")
    assert result.returncode == 0, result.stderr


def test_a_conversion_that_fails_late_leaves_nothing_new_in_the_output_folder(tmp_path):
    """The onnxruntime target writes its artifact before the tflite target refuses --io uint8 for int16
    activations: the failed conversion removes what it wrote (and the folder it created), never what was there."""
    digits = REPO / "models" / "digits_cnn.onnx"
    args = ["convert", digits, "--target", "all", "--activation-type", "int16", "--io", "uint8", "--calib", CALIB]
    result = edgeq(*args, "-o", tmp_path / "new")
    assert_one_line_error(result, "--io uint8 is for models with 8-bit activations")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "old" / "notes.txt"
    kept.parent.mkdir()
    kept.write_text("mine")
    result = edgeq(*args, "-o", tmp_path / "old")
    assert result.returncode == 2 and [p.name for p in kept.parent.iterdir()] == ["notes.txt"]
    assert kept.read_text() == "mine"
