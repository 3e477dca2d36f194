"""int16 activations with int8 weights (A16W8) end to end: the QDQ model for ONNX Runtime (opset 21 int16 Q/DQ)
and the 16x8 .tflite, bit-exact with the integer reference in LiteRT's reference kernels and TFLite Micro.
Single 16x8 kernels are in the tests/test_int16_*.py files of their op families.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import REPO
from test_cli import assert_one_line_error, edgeq

from edgeq.data import ArrayData, input_specs
from edgeq.errors import RecipeError
from edgeq.io.onnx_model import load_model
from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import sqnr_db
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.tflite.lower import lower

DIGITS = REPO / "models" / "digits_cnn.onnx"
DIGITS_CALIB = REPO / "models" / "digits_calib.npz"
DIGITS_TEST = REPO / "models" / "digits_test.npz"


@pytest.fixture(scope="module")
def digits_quantized():
    """The digits CNN quantized with int8 and with int16 activations (same recipe otherwise)."""
    calib = np.load(DIGITS_CALIB)["input"]
    models = {}
    for activation_type in ("int8", "int16"):
        model = load_model(DIGITS)
        pipeline = Pipeline(Recipe(activation_type=activation_type), progress=False)
        calibrated = pipeline.calibrate(model, ArrayData({"input": calib}, input_specs(model), "calib"))
        models[activation_type] = pipeline.quantize(calibrated).model
    return models


def _logits(model, x: np.ndarray) -> np.ndarray:
    from edgeq.io.onnx_model import model_bytes

    return ort_session(model_bytes(model)).run(None, {"input": x})[0]


def test_int16_ranges_are_minmax_unless_a_method_is_asked_for():
    """65536 steps hold the whole range: percentile clipping (the 8-bit default) would only cut outliers."""
    from edgeq.quantization.qparams import ACTIVATION_TYPES, range_method

    int8, int16 = ACTIVATION_TYPES["int8"], ACTIVATION_TYPES["int16"]
    assert range_method("auto", int16) == "minmax" and range_method("auto", int8) == "percentile"
    assert range_method("percentile", int16) == "percentile" and range_method("mse", int16) == "mse"  # as asked


def test_int16_qdq_model_is_opset_21_symmetric_int16_and_closer_to_float(digits_quantized):
    model = digits_quantized["int16"]
    assert model.opset_imports[""] >= 21
    quantizers = [n for n in model.graph if n.op_type == "QuantizeLinear"]
    assert quantizers and all(n.outputs[0].dtype.name == "INT16" for n in quantizers)
    assert all(int(n.inputs[2].const_value.numpy()) == 0 for n in quantizers)  # symmetric: zero point 0
    x = np.load(DIGITS_TEST)["input"][:64]
    reference = ort_session(onnx.load(DIGITS).SerializeToString()).run(None, {"input": x})[0]
    int8, int16 = (sqnr_db(reference, _logits(digits_quantized[t], x)) for t in ("int8", "int16"))
    # the weights stay 8-bit, so their error bounds both; the activations' share of it is gone
    assert int16 > int8 + 2.0, (int8, int16)


def test_int16_tflite_is_16x8_and_bit_exact_in_both_reference_runtimes(digits_quantized):
    from test_target_tflite_models import _bit_exact_on

    from edgeq.tflite_format.flatbuffer import write

    lowered = lower(digits_quantized["int16"])
    graph = lowered.graph
    assert {c.lowered for c in lowered.coverage} == {"int16"}, [c for c in lowered.coverage if c.lowered != "int16"]
    assert all(graph.tensors[i].dtype == np.int16 for i in (*graph.inputs, *graph.outputs))
    for op in graph.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            assert graph.tensors[op.inputs[1]].dtype == np.int8 and graph.tensors[op.inputs[2]].dtype == np.int64
    _bit_exact_on(write(graph), np.load(DIGITS_TEST)["input"][:20])


@pytest.mark.slow
def test_convert_int16_to_every_target_verifies_and_keeps_accuracy(tmp_path):
    out = tmp_path / "out"
    result = edgeq(
        "convert", DIGITS, "--target", "all", "--activation-type", "int16", "--calib", DIGITS_CALIB,
        "--eval-data", DIGITS_TEST, "-o", out, "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    tflite = report["targets"]["tflite"]
    assert tflite["coverage"].get("int16") == tflite["coverage"]["nodes"]
    assert report["targets"]["onnxruntime"]["activation_type"] == "int16"
    for name in ("tflite", "onnxruntime"):
        validation = report["targets"][name]["validation"]
        assert validation["accuracy"]["quantized"] >= validation["accuracy"]["float"] - 0.01, (name, validation)
    verify = edgeq("verify", out / "digits_cnn.tflite", "--data", DIGITS_TEST, "--samples", "32")
    assert verify.returncode == 0, verify.stderr
    assert "TFLite Micro" in verify.stdout and "LiteRT reference kernels" in verify.stdout


def test_int16_is_refused_where_no_target_runs_it(tmp_path):
    result = edgeq(
        "convert", DIGITS, "--target", "onnxruntime-integer", "--activation-type", "int16",
        "--calib", DIGITS_CALIB, "-o", tmp_path / "o",
    )  # fmt: skip
    assert_one_line_error(result, "onnxruntime-integer target takes int8 activations")
    result = edgeq(
        "convert", DIGITS, "--target", "tflite", "--activation-type", "int16", "--io", "uint8",
        "--calib", DIGITS_CALIB, "-o", tmp_path / "u",
    )  # fmt: skip
    assert_one_line_error(result, "--io uint8 is for models with 8-bit activations")
    assert not (tmp_path / "u" / "digits_cnn.tflite").exists()


def test_int16_needs_the_recipe_to_ask_for_it():
    calib = np.load(DIGITS_CALIB)["input"][:8]
    model = load_model(DIGITS)
    pipeline = Pipeline(Recipe(), progress=False)
    calibrated = pipeline.calibrate(model, ArrayData({"input": calib}, input_specs(model), "calib"))
    with pytest.raises(RecipeError, match="int16 activations need a recipe"):
        pipeline.quantize(calibrated, "int16")


@pytest.mark.slow
def test_sentence_encoder_16x8_tflite_keeps_the_embeddings(tmp_path):
    """paraphrase-MiniLM-L3 (the corpus' third-party export): the 16x8 .tflite is bit-exact with the integer
    reference in LiteRT's reference kernels and its sentence embeddings keep a mean cosine >= 0.98 to fp32's
    (the int8 .tflite: about 0.978; BENCHMARKS.md "Sentence encoders")."""
    from conftest import CORPUS
    from test_corpus import _metrics, _onnx_outputs, _tflite_outputs

    import edgeq

    case = CORPUS / "paraphrase_minilm_l3"
    if not case.exists():
        pytest.skip(f"the third-party corpus is not on this machine ({CORPUS})")
    result = edgeq.convert(
        case / "model.onnx", case / "calib.npz", outdir=tmp_path, targets=["tflite"], activation_type="int16"
    )
    report = result.targets["tflite"]
    assert report["verification"]["bit_exact"] and "LiteRT reference kernels" in report["verification"]["exact"]
    assert report["coverage"]["int16"] >= 0.9 * report["coverage"]["nodes"]
    spec = json.loads((case / "case.json").read_text())
    data = {k: v[:64] for k, v in np.load(case / "eval.npz").items()}
    outputs = [o["name"] for o in spec["outputs"]]
    fp32 = _onnx_outputs(case / "model.onnx", data)
    tflite = _tflite_outputs(tmp_path / "model.tflite", data, outputs)
    mean, low = _metrics().cosine_to_reference(fp32[outputs[0]], tflite[outputs[0]])
    assert mean >= 0.98 and low >= 0.95, (mean, low)


def test_a_model_onnx_cannot_raise_to_opset_21_is_refused_in_one_line(monkeypatch):
    """int16 Q/DQ needs opset 21; where onnx's version converter has no adapter, the refusal says so."""
    import onnx.version_converter

    from edgeq.errors import UnsupportedError
    from edgeq.passes.raise_opset import RaiseOpsetPass

    def no_adapter(model, opset):
        raise RuntimeError("No adapter for op SomeOp\nat line 2")

    monkeypatch.setattr(onnx.version_converter, "convert_version", no_adapter)
    model = load_model(DIGITS)
    with pytest.raises(UnsupportedError) as refusal:
        RaiseOpsetPass(21, "int16 activations")(model)
    assert str(refusal.value) == (
        "int16 activations need opset 21, and onnx cannot convert this opset-17 model: No adapter for op SomeOp"
    )
