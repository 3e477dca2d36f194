"""The ONNX Runtime target on real sessions: fusion, .ort conversion, validation metrics, profiling."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from edgeq.data import ArrayData, input_specs, load_npz
from edgeq.io.onnx_model import load_model, model_bytes
from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import accuracy, sqnr_db, top1_agreement
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.onnxruntime import artifact as target
from edgeq.targets.onnxruntime import profile
from edgeq.targets.onnxruntime.fusion import fusion_report

DIGITS = REPO / "models" / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def digits_qdq(tmp_path_factory):
    """int8 and uint8 QDQ digits models from one calibration."""
    folder = tmp_path_factory.mktemp("qdq")
    model = load_model(DIGITS)
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, load_npz(REPO / "models" / "digits_calib.npz", input_specs(model)))
    paths = {}
    for activation_type in ("int8", "uint8"):
        qdq, _ = Pipeline(Recipe()).quantize(calibration, activation_type)
        paths[activation_type] = target.emit(model_bytes(qdq), folder, f"digits_{activation_type}")[0]
    return paths


def test_uint8_fuses_every_conv_and_int8_does_not(digits_qdq):
    # Measured with onnxruntime 1.31 on x86: QDQ Conv with int8 activations followed by Relu/Clip stays
    # float, uint8 becomes QLinearConv. The ORT target chooses by this report, not by this expectation.
    uint8 = fusion_report(digits_qdq["uint8"])
    int8 = fusion_report(digits_qdq["int8"])
    assert uint8.convs_total == int8.convs_total == 4
    assert uint8.convs_fused == 4 and uint8.float_compute == [] and uint8.sandwiches == {}
    assert int8.convs_fused < 4 and int8.float_compute
    # each float Conv and Add runs between a DequantizeLinear and a QuantizeLinear
    assert {op: int8.sandwiches.get(op) for op in ("Conv", "Add")} == {"Conv": 2, "Add": 1}
    assert "QLinearAdd" in uint8.quantized_kernels


def test_ort_format_runs_like_the_onnx_model(tmp_path, digits_qdq):
    """The .ort file holds the graph onnxruntime optimized at conversion, with its default int8 kernels (the
    converter takes no session.x64quantprecision entry): it computes what the .onnx model does with those kernels.
    On x86 without VNNI they saturate where edgeq's exact ones do not (docs/runtimes.md §5.4)."""
    written = target.write_ort_format(digits_qdq["uint8"], tmp_path)
    assert [p.name for p in written] == ["digits_uint8.ort", "required_operators.config"]
    assert "QuantizeLinear" in written[1].read_text()
    x = np.load(REPO / "models" / "digits_test.npz")["input"][:16]
    onnx_out = ort_session(digits_qdq["uint8"], exact_int8=False).run(
        None, {"input": x}
    )
    ort_out = ort_session(written[0]).run(
        None, {"input": x}
    )
    np.testing.assert_array_equal(onnx_out[0], ort_out[0])


def test_validate_matches_hand_computed_metrics(digits_qdq):
    test = np.load(REPO / "models" / "digits_test.npz")
    data = ArrayData({"input": test["input"]}, input_specs(load_model(DIGITS)), "test")
    report = target.validate(DIGITS, digits_qdq["uint8"], data, labels=test["label"], batch_size=50)

    def run(p):
        return ort_session(p).run(
            None, {"input": test["input"]}
        )[0]

    ref, out = run(DIGITS), run(digits_qdq["uint8"])
    row = report["outputs"]["logits"]
    assert row["sqnr_db"] == pytest.approx(sqnr_db(ref, out), abs=1e-3)
    assert row["top1_agreement"] == pytest.approx(top1_agreement(ref, out))
    assert row["max_abs_error"] == pytest.approx(float(np.abs(ref - out).max()), rel=1e-6)
    assert report["accuracy"]["quantized"] == pytest.approx(accuracy(out, test["label"]))


def test_profile_reports_latency_and_per_op_time(digits_qdq):
    result = profile.profile(digits_qdq["uint8"], runs=30, warmup=5)
    latency = result["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
    per_op = result["per_op"]
    assert per_op["sum_ms"] > 0 and per_op["by_node"]
    assert sum(per_op["by_op_type"].values()) == pytest.approx(per_op["sum_ms"])
    assert "QLinearConv" in per_op["by_op_type"]
    assert result["fusion"]["convs_fused"] == 4
    assert "p50" in profile.format_profile(result)


def test_metrics_edge_cases():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x + 1) == pytest.approx(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / 12))
    assert top1_agreement(x, x[:, ::-1]) == 0.0
    assert accuracy(x, np.array([3, 3, 0])) == pytest.approx(2 / 3)
