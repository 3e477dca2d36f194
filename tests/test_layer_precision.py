"""Per-layer precision (the recipe's ``layers`` table, ``--layer``): refused tables, which node gets which weight
bits or stays float in the QDQ model and the report, and the integer targets with a mixed table."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hostile import DIGITS, DIGITS_CALIB, DIGITS_TEST, Sandbox

import edgeq
from edgeq.errors import RecipeError
from edgeq.quantization.layer_precision import LayerPrecisions, layer_precisions
from edgeq.quantization.plan import Exclusions
from edgeq.quantization.recipe import Recipe, load_recipe
from edgeq.tflite_format.reader import read_file

# Nodes of the digits CNN's preprocessed graph (`edgeq inspect` lists them): a 3x3 conv, a depthwise conv, a
# pointwise conv, a strided conv and the classifier Gemm.
MIXED = {"node_Conv_1": "float", "node_Conv_2": "int4", "/classifier/.*": "int4", "Conv": "int8"}


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ({"node_Conv_2": "int2"}, "layers key 'node_Conv_2': precision must be one of float, int8, int4, int16, not 'int2'"),
        ({"node_Conv_2": 4}, "layers key 'node_Conv_2': precision must be one of float, int8, int4, int16, not 4"),
        ({"": "float"}, "layers has an empty key ''"),
        (["node_Conv_2"], "layers must be a table of node patterns and precisions"),
    ],
)
def test_bad_tables_are_refused_naming_the_key(layers, message):
    with pytest.raises(RecipeError, match="^" + message.replace("(", r"\(")) as error:
        Recipe(layers=layers).validate()
    assert "\n" not in str(error.value)


def test_dynamic_mode_refuses_int4_layers():
    with pytest.raises(RecipeError, match="mode dynamic takes 8-bit weights .*'head' = int4"):
        Recipe(mode="dynamic", layers={"head": "int4"}).validate()
    Recipe(mode="dynamic", layers={"head": "float"}).validate()


def test_recipe_file_table_keeps_its_order(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('weight_bits = 4\n[layers]\n"node_Conv_2" = "int8"\n"Conv" = "float"\n"head/.*" = "int4"\n')
    assert list(load_recipe(path).layers.items()) == [("node_Conv_2", "int8"), ("Conv", "float"), ("head/.*", "int4")]
    path.write_text('layers = "int4"\n')
    with pytest.raises(RecipeError, match=f"^recipe file {path}: layers must be a table"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layer", "node_Conv_2=int3"], "--layer: layers key 'node_Conv_2': precision must be one of"),
        (["--layer", "node_Conv_2"], "--layer 'node_Conv_2': expected PATTERN=PRECISION"),
        (["--layer", "=int4"], "--layer '=int4': expected PATTERN=PRECISION"),
        (["--layer", "Conv=int4", "--layer", "Conv=float"], "--layer 'Conv' is given twice"),
        (["--mode", "dynamic", "--layer", "Gemm=int4"], "mode dynamic takes 8-bit weights"),
    ],
)
def test_cli_refuses_bad_layer_flags_in_one_line(tmp_path, monkeypatch, flags, message):
    box = Sandbox(tmp_path, monkeypatch)
    args = ["quantize", DIGITS, "-o", tmp_path / "out.onnx", "--calib", DIGITS_CALIB, *flags]
    box.refused(args, message.replace("(", r"\("))


def _node(name: str, op: str) -> ir.Node:
    return ir.node(op, [], name=name)


def test_first_matching_key_wins_and_exclude_wins_over_the_table():
    table = LayerPrecisions({"conv_12": "int4", "Conv": "int8", "head/.*": "float"})
    conv12, conv3, head = _node("conv_12", "Conv"), _node("conv_3", "Conv"), _node("head/fc", "Gemm")
    assert [table.of(n) for n in (conv12, conv3, head, _node("x", "Gemm"))] == ["int4", "int8", "float", None]
    assert [table.weight_bits(n, 4) for n in (conv12, conv3, head, _node("x", "Gemm"))] == [4, 8, 4, 4]
    exclusions = Exclusions(["conv_12"], table)
    assert [exclusions.reason(n) for n in (conv12, conv3, head)] == ["excluded", None, "layers: float"]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Layer name -> the integers behind its weight DequantizeLinear (through a packing Cast), or its float weight."""
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    found = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            name = node.input[1]
            while name in producer:  # DequantizeLinear, then the Cast of packed INT4 weights
                name = producer[name].input[0]
            found[node.name] = constants[name]
    return found


def test_mixed_table_in_the_qdq_model_and_the_report(tmp_path):
    result = edgeq.quantize(
        str(DIGITS), str(DIGITS_CALIB), output=tmp_path / "mixed.onnx", weight_bits=4, layers=MIXED,
        cpu="x86-vnni",  # no weight-pair bound (edgeq.quantization.cpus): the int8 weights reach 127
    )  # fmt: skip
    weights = _weights(result.model)
    assert weights["node_Conv_1"].dtype == np.float32  # kept float
    for name in ("node_Conv_2", "/classifier/Gemm"):  # the table's int4: INT4 initializers in [-7, 7]
        assert weights[name].dtype.name == "int4" and np.abs(weights[name].astype(np.int8)).max() == 7
    for name in ("node_Conv_0", "node_Conv_3"):  # "Conv" = int8 wins over weight_bits 4
        assert weights[name].dtype == np.int8 and np.abs(weights[name]).max() == 127
    report = result.report
    assert report["layer_precisions"] == {
        "node_Conv_1": "float", "node_Conv_0": "int8", "node_Conv_2": "int4", "node_Conv_3": "int8",
        "/classifier/Gemm": "int4",
    }  # fmt: skip
    assert report["float_nodes"]["node_Conv_1"] == "layers: float"
    assert (report["int4_storage"], report["int4_layers"]) == ("int4", 2)
    graph = ir.load(tmp_path / "mixed.onnx").graph
    assert layer_precisions(graph, Recipe(layers={"node_Conv_.": "int4"})) == {
        f"node_Conv_{i}": "int4" for i in range(4)
    }


def test_dynamic_mode_keeps_the_tables_float_layers_float():
    report = edgeq.quantize(str(DIGITS), str(DIGITS_CALIB), mode="dynamic", layers={"Gemm": "float"}).report
    assert report["quantized_nodes"] == {} and report["float_nodes"]["/classifier/Gemm"] == "layers: float"
    assert "Gemm" in edgeq.quantize(str(DIGITS), str(DIGITS_CALIB), mode="dynamic").report["quantized_nodes"]


def test_without_a_table_the_report_has_no_layer_precisions(tmp_path):
    report = edgeq.quantize(str(DIGITS), str(DIGITS_CALIB)).report
    assert "layer_precisions" not in report and "int4_storage" not in report


@pytest.mark.slow
def test_integer_targets_convert_and_verify_a_mixed_table(tmp_path):
    table = {"node_Conv_2": "int4", "/classifier/.*": "int4"}
    result = edgeq.convert(
        str(DIGITS), str(DIGITS_CALIB), outdir=tmp_path, targets="all", eval_data=str(DIGITS_TEST), layers=table
    )
    report = result.report["targets"]
    expected = {"node_Conv_2": "int4", "/classifier/Gemm": "int4"}
    for name in ("onnxruntime", "tflite"):
        assert report[name]["layer_precisions"] == expected
    assert report["onnxruntime"]["int4_storage"] == "int4"
    assert report["tflite"]["int4_storage"] == "int8"  # LiteRT takes no INT4 weights edgeq's reference checks
    for name in ("tflite", "tflm"):
        assert report[name]["verification"]["bit_exact"], report[name]["verification"]
    graph = read_file(tmp_path / "digits_cnn.tflite")
    largest = {
        graph.tensors[op.inputs[1]].name: int(np.abs(graph.tensors[op.inputs[1]].data.astype(np.int16)).max())
        for op in graph.operators
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    }
    assert largest == {
        "node_Conv_0.weight": 127, "node_Conv_1.weight": 127, "node_Conv_2.weight": 7, "node_Conv_3.weight": 127,
        "/classifier/Gemm.weight": 7,
    }  # fmt: skip
    verified = edgeq.verify([str(tmp_path / "digits_cnn.qdq.onnx")], str(DIGITS_TEST), samples=16)
    assert verified.passed, verified.report
