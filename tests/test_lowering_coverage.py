"""The TFLite lowering's coverage report: every node of the QDQ model as int8 or refused, with a reason code, in
the convert report; a graph with refusals fails in one line that counts all of them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import make_convnet
from onnx import TensorProto, helper

import edgeq
from edgeq.data import ArrayData, input_specs
from edgeq.errors import REASON_CODES, UnsupportedError
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.tflite.artifact import build
from edgeq.targets.tflite.lower import lower


def _qdq(proto: onnx.ModelProto) -> ir.Model:
    model = ir.serde.deserialize_model(proto)
    x = np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32)
    calibrated = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"input": x}, input_specs(model), "x"))
    return Pipeline(Recipe()).quantize(calibrated, "int8")[0]


def _hardmax_convnet() -> onnx.ModelProto:
    proto = make_convnet()
    next(n for n in proto.graph.node if n.op_type == "Softmax").op_type = "Hardmax"  # TFLite has no such operator
    return proto


def test_every_node_of_a_lowered_model_is_int8_and_fused_activations_say_so():
    qdq = _qdq(make_convnet())
    coverage = lower(qdq).coverage
    computed = [n.name for n in qdq.graph if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert [r.node for r in coverage] == computed
    assert {r.lowered for r in coverage} == {"int8"}
    fused = {r.op: r.reason for r in coverage if r.reason}
    assert set(fused) == {"Relu", "Clip"} and all(reason.startswith("fused into ") for reason in fused.values())


def test_survey_records_every_refusal_and_the_error_counts_them():
    qdq = _qdq(_hardmax_convnet())
    with pytest.raises(UnsupportedError) as first:
        lower(qdq)
    assert first.value.code == "no-lowering" and first.value.op == "Hardmax"
    surveyed = lower(qdq, survey=True).coverage
    refused = [r for r in surveyed if r.lowered == "refused"]
    # the Hardmax, and the graph output it leaves float
    assert [(r.op, r.code) for r in refused] == [("Hardmax", "no-lowering"), ("output", "not-quantized")]
    assert all(r.code in REASON_CODES and r.reason for r in refused)
    assert sum(r.lowered == "int8" for r in surveyed) == len(surveyed) - 2
    with pytest.raises(UnsupportedError, match=r"^unsupported: Hardmax at softmax: the TFLite target has no "
                       r"lowering for it \(and 1 more nodes refused: output x1\)$"):  # fmt: skip
        build(qdq)


def test_convert_reports_the_coverage_of_each_tflite_target(tmp_path):
    model = tmp_path / "convnet.onnx"
    onnx.save(make_convnet(), model)
    calib = {"input": np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32)}
    result = edgeq.convert(model, calib, outdir=tmp_path / "out", targets=["tflite"])
    saved = json.loads(result.report_path.read_text())["targets"]["tflite"]["coverage"]
    assert saved["nodes"] == saved["int8"] == len(saved["per_node"]) > 10
    assert "refused" not in saved
    assert {"node", "op", "lowered"} <= set(saved["per_node"][0])


def test_tflite_micro_refuses_an_int8_op_it_runs_in_float_only(tmp_path):
    """EXP has an int8 kernel in LiteRT, not in TFLite Micro: the .tflite converts, the tflm target refuses in one
    line, and verifying the .tflite leaves TFLite Micro out."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["square"]), helper.make_node("Exp", ["square"], ["y"], name="exp")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    model = tmp_path / "exp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    calib = {"x": np.random.default_rng(2).uniform(-1, 1, (16, 16)).astype(np.float32)}
    converted = edgeq.convert(model, calib, outdir=tmp_path / "tflite", targets=["tflite"])
    runtimes = converted.targets["tflite"]["verification"]["exact"]
    assert "TFLite Micro" not in runtimes and converted.targets["tflite"]["verification"]["bit_exact"]
    with pytest.raises(UnsupportedError, match=r"^unsupported: EXP at y: TFLite Micro runs EXP in float32 only") as e:
        edgeq.convert(model, calib, outdir=tmp_path / "tflm", targets=["tflm"])
    assert e.value.code == "no-micro-kernel"


def test_largest_losses_rank_the_noise_each_node_adds():
    """x -> Conv a (40 dB) -> Relu b (40 dB) -> Conv c (20 dB): c adds the most noise (about 20 dB alone), the Relu
    none, and a node whose inputs are not compared is left out."""
    from edgeq.reports.compare import largest_losses

    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a"),
            helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
            helper.make_node("Conv", ["b", "w"], ["c"], name="conv_c"),
            helper.make_node("Identity", ["hidden"], ["d"], name="not_compared"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph))
    rows = largest_losses(model, {"a": 40.0, "b": 40.0, "c": 20.0, "d": 30.0})
    assert [r["node"] for r in rows] == ["conv_c", "conv_a", "relu_b"]
    assert rows[0]["added_noise_sqnr_db"] == pytest.approx(20.04, abs=0.01)
    assert rows[1]["added_noise_sqnr_db"] == pytest.approx(40.0) and rows[2]["added_noise_sqnr_db"] == float("inf")


def test_convert_names_where_the_accuracy_is_lost(tmp_path):
    model = tmp_path / "convnet.onnx"
    onnx.save(make_convnet(), model)
    calib = {"input": np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32)}
    result = edgeq.convert(model, calib, outdir=tmp_path / "out", targets=["onnxruntime", "tflite"])
    for name in ("onnxruntime", "tflite"):
        rows = result.targets[name]["largest_losses"]
        assert len(rows) == 5 and rows == sorted(rows, key=lambda r: r["added_noise_sqnr_db"])
        # float-model nodes (the convnet's layers), each once
        assert {r["op"] for r in rows} <= {"Conv", "Relu", "Clip", "Add", "MaxPool", "GlobalAveragePool", "Gemm"}
        assert len({r["node"] for r in rows}) == 5
