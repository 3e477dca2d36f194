"""edgeq.mcu: the cycle model on a hand-made analysis, and the Cortex-M4F estimate against MLPerf Tiny's published
latencies on the two models held back from the fit."""

from __future__ import annotations

import pytest

from edgeq.analysis import analyze_tflite
from edgeq.mcu import PROFILES, estimate
from edgeq.tflite_graph import read
from models.mlperf_tiny import PUBLISHED_LATENCY_MS, tflite_model


def test_cycles_follow_the_documented_formula():
    profile = PROFILES["cortex-m4f"]
    analysis = {
        "format": "tflite",
        "layers": [
            {"name": "conv", "op": "CONV_2D", "kind": "conv", "macs": 1000, "params": 0, "output_bytes": 10},
            {
                "name": "pad",
                "op": "PAD",
                "kind": "data_movement",
                "macs": 0,
                "params": 0,
                "output_bytes": 100,
            },
        ],
    }
    result = estimate(analysis, profile)
    expected = round(1000 * profile.cycles_per_mac + 10 * profile.cycles_per_output) + round(
        100 * profile.cycles_per_byte_moved
    )
    assert result["cycles"] == expected
    assert result["latency_ms"] == pytest.approx(expected / 120e6 * 1e3)
    # faster cores give a shorter estimate for the same work
    assert (
        estimate(analysis, PROFILES["cortex-m55"])["latency_ms"]
        < estimate(analysis, PROFILES["cortex-m7"])["latency_ms"]
        < result["latency_ms"]
    )


def test_onnx_analysis_is_refused():
    with pytest.raises(ValueError, match="tflite"):
        estimate({"format": "onnx", "layers": []}, PROFILES["cortex-m4f"])


def _error(name: str) -> float:
    analysis = analyze_tflite(read(tflite_model(name)))
    return estimate(analysis, PROFILES["cortex-m4f"])["latency_ms"] / PUBLISHED_LATENCY_MS[name] - 1


@pytest.mark.slow
def test_fitted_models_are_reproduced():
    assert (
        abs(_error("fc_autoencoder")) < 0.01
    )  # one of the two fitted models (the other, MobileNetV1, is slower)


@pytest.mark.slow
def test_held_back_models_within_measured_error():
    # measured: ResNet-8 -31.0% (486 vs 704 ms), DS-CNN +7.2% (195 vs 182 ms); the +-30% goal is missed on ResNet-8
    assert -0.35 < _error("resnet8") < -0.25
    assert abs(_error("ds_cnn")) < 0.12
