"""edgeq.targets.tflm.mcu: the cycle model on a hand-made analysis, and the Cortex-M4F estimate against MLPerf Tiny's published
latencies: the fit reproduces edgeq.targets.tflm.mcu's constants, and the two models held back from it keep their measured
errors."""

from __future__ import annotations

import pytest

from edgeq.targets.tflite.analysis import analyze_tflite
from edgeq.targets.tflm.mcu import PROFILES, estimate
from edgeq.tflite_format.flatbuffer import read
from models.mlperf_tiny import MODELS, PUBLISHED_LATENCY_MS, fit_factors, tflite_model

# a 3x3 conv over 4 channels into 8 channels on 2x2 output pixels, a PAD and a 64 -> 10 fully-connected layer
_ANALYSIS = {
    "format": "tflite",
    "layers": [
        {
            "name": "conv",
            "op": "CONV_2D",
            "kind": "conv",
            "macs": 36 * 8 * 4,
            "params": 8 * 37,
            "output_bytes": 32,
        },
        {"name": "pad", "op": "PAD", "kind": "data_movement", "macs": 0, "params": 0, "output_bytes": 100},
        {
            "name": "fc",
            "op": "FULLY_CONNECTED",
            "kind": "fully_connected",
            "macs": 640,
            "params": 650,
            "output_bytes": 10,
        },
    ],
}


def test_cycles_follow_the_documented_counts():
    profile = PROFILES["cortex-m4f"]
    result = estimate(_ANALYSIS, profile)
    # arm_convolve_s8: 31 cycles per 16 MACs, im2col 11 per 4 values + 20 per pixel, 30 per requantized output
    conv = profile.factor * (31 / 16 * 1152 + 4 * (11 / 4 * 36 + 20) + 30 * 32)
    pad = profile.factor * 15 * 100
    fc = profile.fc_factor * (19 / 8 * 640 + (30 + 5) * 10)  # arm_nn_vec_mat_mult_t_s8
    assert [row["cycles"] for row in result["layers"]] == [round(conv), round(pad), round(fc)]
    assert result["latency_ms"] == pytest.approx(result["cycles"] / 120e6 * 1e3)
    # faster cores give a shorter estimate for the same work
    assert (
        estimate(_ANALYSIS, PROFILES["cortex-m55"])["latency_ms"]
        < estimate(_ANALYSIS, PROFILES["cortex-m7"])["latency_ms"]
        < result["latency_ms"]
    )


def test_onnx_analysis_is_refused():
    with pytest.raises(ValueError, match="tflite"):
        estimate({"format": "onnx", "layers": []}, PROFILES["cortex-m4f"])


@pytest.fixture(scope="module")
def analyses():
    return {name: analyze_tflite(read(tflite_model(name))) for name in MODELS}


def _error(analyses, name: str) -> float:
    return estimate(analyses[name], PROFILES["cortex-m4f"])["latency_ms"] / PUBLISHED_LATENCY_MS[name] - 1


@pytest.mark.slow
def test_fit_reproduces_the_constants(analyses):
    factor, fc_factor = fit_factors(analyses)
    assert factor == pytest.approx(PROFILES["cortex-m4f"].factor, rel=1e-3)
    assert fc_factor == pytest.approx(PROFILES["cortex-m4f"].fc_factor, rel=1e-3)
    assert abs(_error(analyses, "resnet8")) < 0.002 and abs(_error(analyses, "fc_autoencoder")) < 0.002


@pytest.mark.slow
def test_held_back_models_within_measured_error(analyses):
    # measured: DS-CNN +5.7% (192.3 vs 182 ms), MobileNetV1-0.25 +0.3% (601.5 vs 600 ms)
    assert 0.045 < _error(analyses, "ds_cnn") < 0.07
    assert -0.01 < _error(analyses, "mobilenet_v1_025") < 0.015
