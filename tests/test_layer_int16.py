"""Per-layer int16 activations (``--layer PATTERN=int16``) in an 8-bit model: which tensors are int16 in the QDQ
model and the report, the requantizing QUANTIZE at each boundary of the .tflite, bit-exact with the integer
reference in LiteRT's reference kernels and TFLite Micro, and the nodes TFLite has no 16x8 kernel for refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hostile import DIGITS, DIGITS_CALIB, DIGITS_TEST
from onnx import TensorProto, helper

import edgeq
from edgeq.errors import RecipeError, UnsupportedError
from edgeq.quantization.recipe import Recipe, parse_layer
from edgeq.tflite_format.reader import read_file

TARGETS = ["onnxruntime", "tflite", "tflm"]


def _qdq_types(path) -> dict[str, int]:
    """Tensor quantized by each QuantizeLinear of the ONNX model at PATH -> its zero point's TensorProto type."""
    model = onnx.load(path)
    zero_points = {init.name: init.data_type for init in model.graph.initializer}
    return {
        node.input[0]: zero_points[node.input[2]]
        for node in model.graph.node
        if node.op_type == "QuantizeLinear"
    }


def _exact(report: dict) -> None:
    verification = report["verification"]
    assert verification["bit_exact"], verification
    assert {run for run in verification["exact"]} == {"LiteRT reference kernels", "TFLite Micro"}
    for run in verification["exact"].values():
        assert all(output["mismatches"] == 0 for output in run.values()), verification


def test_one_int16_layer_inside_an_int8_model(tmp_path):
    """The pointwise conv int16: its input is requantized int8 -> int16, its output int16 -> int8 for the Add."""
    result = edgeq.convert(
        str(DIGITS), str(DIGITS_CALIB), outdir=tmp_path, targets=TARGETS, eval_data=str(DIGITS_TEST),
        layers={"node_Conv_2": "int16"},
    )  # fmt: skip
    reports = result.report["targets"]
    conv_input, conv_output = (
        "/depthwise/depthwise.2/Clip_output_0",
        "/pointwise/pointwise.1/BatchNormalization_output_0",
    )
    for name in ("onnxruntime", "tflite"):
        assert reports[name]["layer_precisions"] == {"node_Conv_2": "int16"}
        assert reports[name]["int16_tensors"] == [f"{conv_input}_int16", conv_output]
    # ONNX Runtime (uint8 picked here): opset 21, int16 pairs on exactly the conv's input copy and output
    qdq = tmp_path / "digits_cnn.qdq.onnx"
    assert max(o.version for o in onnx.load(qdq).opset_import if o.domain in ("", "ai.onnx")) >= 21
    types = _qdq_types(qdq)
    assert {t for t, dtype in types.items() if dtype == TensorProto.INT16} == {
        conv_input,
        f"{conv_output}_float",
    }
    # the Add's 8-bit copy of the conv's output is of the type of the depthwise conv's own output
    assert types[conv_output] == types[f"{conv_input}_float"] != TensorProto.INT16
    assert reports["onnxruntime"]["validation"]["outputs"]["logits"]["sqnr_db"] > 25
    # the .tflite: 16x8 CONV_2D between two QUANTIZE ops, everything else int8
    lowered = {row["node"]: row["lowered"] for row in reports["tflite"]["coverage"]["per_node"]}
    assert {node for node, how in lowered.items() if how == "int16"} == {"node_Conv_2"}
    graph = read_file(tmp_path / "digits_cnn.tflite")
    quantizes = [op for op in graph.operators if op.opcode == "QUANTIZE"]
    directions = {
        (graph.tensors[op.inputs[0]].dtype.name, graph.tensors[op.outputs[0]].dtype.name) for op in quantizes
    }
    assert directions == {("int8", "int16"), ("int16", "int8")}
    for name in ("tflite", "tflm"):
        _exact(reports[name])


def test_int16_at_the_model_edges_and_through_shared_encodings(tmp_path):
    """The first conv int16 makes the input int16; an int16 pool, Flatten and Gemm read an int8 conv's output
    (one requantized copy, the encoding their group shares) and make the output int16."""
    layers = {"node_Conv_0": "int16", "/pool/.*": "int16", "/Flatten": "int16", "Gemm": "int16"}
    result = edgeq.convert(
        str(DIGITS), str(DIGITS_CALIB), outdir=tmp_path, targets=["tflite", "tflm"], layers=layers
    )
    report = result.report["targets"]["tflite"]
    assert report["layer_precisions"] == {
        "node_Conv_0": "int16", "/pool/GlobalAveragePool": "int16", "/Flatten": "int16", "/classifier/Gemm": "int16"
    }  # fmt: skip
    assert [i["dtype"] for i in report["inputs"]] == ["int16"] and [
        o["dtype"] for o in report["outputs"]
    ] == ["int16"]
    assert "/down/down.2/Relu_output_0_int16" in report["int16_tensors"]
    for name in ("tflite", "tflm"):
        _exact(result.report["targets"][name])


def _conv_then(op: str, tmp_path, shape, **attributes) -> tuple[str, str]:
    """A float model x -> Conv -> OP (named "tail") and calibration data for it; their paths."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, [8, 4, 3, 3], rng.normal(0, 0.3, (8, 4, 3, 3)).ravel()
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(op, ["c"], ["y"], name="tail", **attributes),
    ]
    graph = helper.make_graph(
        nodes, "conv_then", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path, calib = tmp_path / f"{op}.onnx", tmp_path / f"{op}_calib.npz"
    onnx.save(model, path)
    np.savez(calib, x=rng.normal(0, 1, (8, 4, 6, 6)).astype(np.float32))
    return str(path), str(calib)


@pytest.mark.parametrize(
    ("op", "shape", "attributes", "message"),
    [
        (
            "HardSwish",
            [1, 8, 6, 6],
            {},
            "it has no int16 kernel, and edgeq's reference has no bit-exact float32 HARD_SWISH for an island",
        ),
        ("DepthToSpace", [1, 2, 12, 12], {"blocksize": 2}, "no int16 kernel in LiteRT or TFLite Micro"),
    ],
)
def test_int16_layer_without_a_16x8_kernel_is_refused_in_one_line(tmp_path, op, shape, attributes, message):
    model, calib = _conv_then(op, tmp_path, shape, **attributes)
    with pytest.raises(UnsupportedError) as refused:
        edgeq.convert(model, calib, outdir=tmp_path / "out", targets=["tflite"], layers={op: "int16"})
    line = str(refused.value)  # names the node as preprocessing left it (`edgeq inspect` lists those names)
    assert line.startswith(f"unsupported: {op} at ") and message in line and "\n" not in line


def test_recipe_takes_int16_layers_but_not_in_dynamic_mode():
    assert parse_layer("conv_12=int16") == ("conv_12", "int16")
    assert Recipe(layers={"Conv": "int16"}).validate().int16_layers
    assert not Recipe(activation_type="int16", layers={"Conv": "int16"}).validate().int16_layers
    with pytest.raises(
        RecipeError, match="mode dynamic quantizes activations to uint8 at run time, not layers 'Conv'"
    ):
        Recipe(mode="dynamic", layers={"Conv": "int16"}).validate()


def test_a_constant_read_by_int16_and_8_bit_nodes_is_refused(tmp_path):
    """A constant operand has one type (no requantized copy): the table must give its readers one precision."""
    model, calib = _conv_then("Relu", tmp_path, [1, 8, 6, 6])
    proto = onnx.load(model)
    proto.graph.initializer.append(
        helper.make_tensor("k", TensorProto.FLOAT, [1, 8, 6, 6], np.linspace(-1, 1, 288))
    )
    proto.graph.node.extend(
        [
            helper.make_node("Add", ["y", "k"], ["a"], name="add_a"),
            helper.make_node("Sigmoid", ["a"], ["s"], name="sigmoid"),
            helper.make_node("Add", ["s", "k"], ["b"], name="add_b"),
        ]
    )
    proto.graph.output[0].name = "b"
    onnx.save(proto, model)
    with pytest.raises(
        RecipeError, match="layers int16: constant k is read by int16 node add_a and 8-bit node add_b"
    ):
        edgeq.quantize(model, calib, layers={"add_a": "int16"})
