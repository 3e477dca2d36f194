"""Static analysis (edgeq.measure.footprint and the targets' readers): MACs, parameters and liveness against hand-computed values, and the liveness bound against
TFLite Micro's measured arena on real models."""

from __future__ import annotations

import onnx
import pytest
from conftest import REPO, calibrated_mobilenet_v2, make_convnet

from edgeq.data import input_specs, load_npz
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import load_model, save_model
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reports.profile import analyze
from edgeq.targets.onnxruntime.analysis import analyze_onnx
from edgeq.targets.tflite.analysis import analyze_tflite
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflm.arena import measure_arena
from edgeq.tflite_format.flatbuffer import read, write

# make_convnet: input [1, 3, 8, 8], 8 channels, 3x3 pads 1, so every conv writes 8 x 8 x 8 = 512 elements.
CONVNET_MACS = {"stem": 512 * 3 * 3 * 3, "dw": 512 * 3 * 3, "pw": 512 * 8, "fc": 10 * 8}
# stem w + b, BN gamma/beta/mean/var, dw w + b, pw w, fc w + b (Clip's bounds are fused away, not parameters)
CONVNET_PARAMS = (216 + 8) + 4 * 8 + (72 + 8) + 64 + (80 + 10)
# At the pointwise conv: the residual "relu" (read again by Add), pw's input and output, 2048 B each in float32,
# (the graph output lives from its producer to the end).
CONVNET_PEAK = 3 * 2048


def test_float_onnx_counts_match_hand_computed_values():
    result = analyze_onnx(make_convnet())
    macs = {row["name"]: row["macs"] for row in result["layers"] if row["macs"]}
    assert macs == CONVNET_MACS
    kinds = {row["name"]: row["kind"] for row in result["layers"]}
    assert (kinds["stem"], kinds["dw"], kinds["pw"], kinds["fc"]) == (
        "conv",
        "depthwise",
        "conv",
        "fully_connected",
    )
    assert "relu" not in kinds and "clip" not in kinds  # fused into the layer before them
    summary = result["summary"]
    assert summary["macs"] == sum(CONVNET_MACS.values())
    assert summary["params"] == CONVNET_PARAMS and summary["param_bytes"] == 4 * CONVNET_PARAMS
    assert (summary["peak_activation_bytes"], summary["peak_at"]) == (CONVNET_PEAK, "pw")
    assert next(r for r in result["layers"] if r["name"] == "pool")["output_bytes"] == 8 * 4 * 4 * 4


@pytest.fixture(scope="module")
def digits_tflite():
    model = load_model(REPO / "models" / "digits_cnn.onnx")
    data = load_npz(REPO / "models" / "digits_calib.npz", input_specs(model))
    qdq, _ = Pipeline(Recipe(), progress=False).run(model, data, "int8")
    return qdq, write(lower(qdq).graph)


def test_qdq_onnx_and_tflite_agree_on_the_digits_cnn(digits_tflite, tmp_path):
    qdq, model_bytes = digits_tflite
    onnx_result = analyze(save_model(qdq, tmp_path / "digits.qdq.onnx"))
    tflite_result = analyze_tflite(read(model_bytes))
    assert onnx_result["summary"]["macs"] == tflite_result["summary"]["macs"] == 230_880
    # Q/DQ nodes are not layers: the same compute operators (TFLite adds an explicit PAD before the stride-2 conv)
    assert [r["macs"] for r in onnx_result["layers"] if r["macs"]] == [
        r["macs"] for r in tflite_result["layers"] if r["macs"]
    ]
    # int8 weights and int32 biases in both; TFLite's MEAN axes and RESHAPE shape are not parameters
    assert onnx_result["summary"]["params"] == tflite_result["summary"]["params"]
    # int8 activations: a quarter of the float model's 18472 B; the .tflite rounds buffers up to 16 B
    assert onnx_result["summary"]["peak_activation_bytes"] == 3 * 1536
    assert tflite_result["summary"]["peak_activation_bytes"] == 3 * 1536


def test_liveness_bound_is_below_the_tflm_arena_on_the_digits_cnn(digits_tflite):
    _, model_bytes = digits_tflite
    bound = analyze_tflite(read(model_bytes))["summary"]["peak_activation_bytes"]
    arena = measure_arena(model_bytes)
    # measured: bound 4608 B, planned activations (head) 5472 B, arena 9152 B (ratio 0.50)
    assert bound <= arena.recorded_head <= arena.arena_bytes
    assert bound / arena.arena_bytes > 0.4


@pytest.mark.slow
def test_liveness_bound_is_below_the_tflm_arena_on_mobilenet_v2(tmp_path):
    _, calibration = calibrated_mobilenet_v2(tmp_path, calib_views=8)
    qdq, _ = Pipeline(Recipe()).quantize(calibration, "int8")
    model_bytes = write(lower(qdq).graph)
    bound = analyze_tflite(read(model_bytes))["summary"]["peak_activation_bytes"]
    arena = measure_arena(model_bytes)
    # measured: bound 2451840 B (at a PAD) equals the planned activations (head); arena 2612768 B (ratio 0.94)
    assert bound <= arena.recorded_head <= arena.arena_bytes
    assert bound / arena.arena_bytes > 0.9


def test_ort_and_unknown_files_are_refused(tmp_path):
    for name, message in (("model.ort", "static analysis"), ("model.pb", "edgeq reads .onnx, .ort and .tflite")):
        path = tmp_path / name
        path.write_bytes(b"x")
        with pytest.raises(EdgeqError, match=message):
            analyze(path)


def test_symbolic_non_batch_dimensions_are_refused():
    model = make_convnet()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(EdgeqError, match="symbolic dimension"):
        analyze_onnx(onnx.shape_inference.infer_shapes(model))
