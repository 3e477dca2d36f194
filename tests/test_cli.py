"""The edgeq command line, end to end: real models, real onnxruntime; every bad input is one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import REPO, make_convnet

from edgeq.cli import main

DIGITS = REPO / "models" / "digits_cnn.onnx"
DIGITS_CALIB = REPO / "models" / "digits_calib.npz"
DIGITS_TEST = REPO / "models" / "digits_test.npz"


def edgeq(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeq.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), result.stderr
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_quantize_writes_model_and_report(tmp_path):
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    result = edgeq(
        "quantize", DIGITS, "-o", out, "--calib", DIGITS_CALIB, "--report", report, "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    data = json.loads(report.read_text())
    assert data["quantized_nodes"]["Conv"] == 4 and data["float_nodes"] == {}
    assert data["recipe"]["calib_method"] == "auto" and data["calibration"]["method"] == "percentile"


def test_convert_onnxruntime_validates_and_reports(tmp_path):
    result = edgeq(
        "convert",
        DIGITS,
        "--target",
        "onnxruntime",
        "--calib",
        DIGITS_CALIB,
        "--eval-data",
        DIGITS_TEST,
        "-o",
        tmp_path / "out",
        "--ort-format",
        "--no-progress",
        "--cpu",  # full 8-bit weights: x86-avx2's pair-limited ones cost one of 450 images (tests/test_cpus.py)
        "x86-vnni",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())["targets"]["onnxruntime"]
    assert report["activation_type"] in ("int8", "uint8")
    assert report["fusion"]["convs_fused"] == report["fusion"]["convs_total"] == 4  # every conv is integer
    accuracy = report["validation"]["accuracy"]
    assert accuracy["quantized"] >= accuracy["float"] - 0.002 - 1e-9  # issue 2: within 0.2 points
    assert report["validation"]["outputs"]["logits"]["sqnr_db"] > 25
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["digits_cnn.qdq.onnx", "digits_cnn.qdq.ort", "report.json", "required_operators.config"]


@pytest.mark.slow
def test_convert_all_targets_from_one_calibration(tmp_path):
    """--target all: the ORT artifact, the integer-only ONNX model and the .tflite (bit-exact in four runtimes),
    and the TFLite Micro files; then `edgeq verify` on the artifacts."""
    result = edgeq(
        "convert",
        DIGITS,
        "--target",
        "all",
        "--calib",
        DIGITS_CALIB,
        "--eval-data",
        DIGITS_TEST,
        "-o",
        tmp_path / "out",
        "--precision",
        "float",
        "--integer-only",
        "--verify-samples",
        "16",
        "--report-html",
        tmp_path / "report.html",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report.html").read_text()
    for artifact in ("digits_cnn.qdq.onnx", "digits_cnn.integer.onnx", "digits_cnn.tflite"):
        assert artifact in page
    assert "digits_cnn.float.tflite" not in page and "Recipe" in page
    report = json.loads((tmp_path / "out" / "report.json").read_text())["targets"]
    integer = report["onnxruntime-integer"]
    assert integer["ops"].get("ConvInteger") == 4 and "Conv" not in integer["ops"]
    assert integer["validation"]["accuracy"]["quantized"] >= integer["validation"]["accuracy"]["float"] - 0.005
    assert integer["verification"]["bit_exact"] and integer["verification"]["samples"] == 16
    assert set(integer["verification"]["exact"]) == {"onnxruntime digits_cnn.integer.onnx"}
    tflite = report["tflite"]
    assert tflite["inputs"] == [
        {"name": "input", "shape": [1, 8, 8, 1], "dtype": "int8", "layout": "NHWC", **_encoding(tflite)}
    ]
    accuracy = tflite["validation"]["accuracy"]
    assert accuracy["quantized"] >= accuracy["float"] - 0.005
    verification = tflite["verification"]
    assert verification["samples"] == 16 and verification["bit_exact"]
    assert set(verification["exact"]) == {"LiteRT reference kernels", "TFLite Micro"}
    assert report["tflm"]["verification"] == verification  # one check of the one .tflite both targets wrote
    # the same scales as the ORT artifact where both are int8: the outputs agree to about one step
    assert tflite["validation"]["against_qdq_onnx"]["logits"]["sqnr_db"] > 30
    tflm = report["tflm"]
    assert tflm["flash_bytes"] == (tmp_path / "out" / "digits_cnn.tflite").stat().st_size
    assert tflm["arena_bytes"] > 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "digits_cnn.float.tflite",
        "digits_cnn.integer.onnx",
        "digits_cnn.qdq.onnx",
        "digits_cnn.tflite",
        "digits_cnn_model_data.cc",
        "digits_cnn_model_data.h",
        "report.json",
    ]
    assert "tflite: wrote" in result.stdout and "tflm: wrote" in result.stdout

    out = tmp_path / "out"
    # the .tflite's model; the QDQ model is another where this CPU bounds its weight pairs (tests/test_cpus.py)
    verified = edgeq(
        "verify", out / "digits_cnn.tflite", out / "digits_cnn.integer.onnx", "--data", DIGITS_TEST, "--samples", "32",
        "--json",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    checks = json.loads(verified.stdout)
    assert checks["bit_exact"] and checks["samples"] == 32
    assert set(checks["exact"]) == {
        "onnxruntime digits_cnn.integer.onnx",
        "LiteRT reference kernels",
        "TFLite Micro",
    }
    assert all(row["mismatches"] == 0 for rows in checks["exact"].values() for row in rows.values())
    # float-scale requantization (the uint8 QDQ model in ORT, LiteRT's optimized kernels): within 1 LSB per op
    qdq = json.loads(edgeq("verify", out / "digits_cnn.qdq.onnx", "--data", DIGITS_TEST, "--json").stdout)
    assert checks["within_1_lsb_per_op"] and qdq["within_1_lsb_per_op"]
    per_op = checks["per_op"] | qdq["per_op"]
    assert {k: v["ops_checked"] for k, v in per_op.items()} == {
        "onnxruntime digits_cnn.qdq.onnx": 8,  # every op but the PAD the lowering adds
        "LiteRT optimized kernels": 9,
    }
    assert all(row["max_steps"] == 1 for row in per_op.values())
    # a .tflite from other scales: verify finds the disagreement and exits 1
    other = tmp_path / "other"
    assert edgeq("convert", DIGITS, "--target", "onnxruntime", "--integer-only", "--calib", DIGITS_TEST,
                 "-o", other, "--no-progress").returncode == 0
    mixed = edgeq("verify", out / "digits_cnn.tflite", other / "digits_cnn.integer.onnx", "--data", DIGITS_TEST)
    assert mixed.returncode == 1 and "bit-exact: NO" in mixed.stdout


def test_dyadic_options_make_every_multiplier_narrow(tmp_path):
    """--dyadic-bits 8 and --pow2 reach the QDQ model (the pass itself: tests/test_dyadic.py)."""
    for flags, mode in ((["--dyadic-bits", "8"], 8), (["--pow2"], 1)):
        out, report = tmp_path / f"q{mode}.onnx", tmp_path / f"r{mode}.json"
        result = edgeq(
            "quantize", DIGITS, "-o", out, "--calib", DIGITS_CALIB, "--report", report, "--no-progress", *flags
        )
        assert result.returncode == 0, result.stderr
        dyadic = json.loads(report.read_text())["stages"]["dyadic"]
        assert dyadic["significand_bits"] == mode
        # its accuracy cost is in the report: the digits CNN keeps > 25 dB either way
        assert dyadic["sqnr_db_on_calibration_batch_before"] > 25 and dyadic["sqnr_db_on_calibration_batch_after"] > 25
    scales = [
        float(onnx.numpy_helper.to_array(t))
        for t in onnx.load(tmp_path / "q1.onnx").graph.initializer
        if t.name.endswith("_scale") and not t.dims
    ]
    assert scales and all(np.log2(s) == np.round(np.log2(s)) for s in scales)  # powers of two


def test_verify_and_integer_only_bad_input(tmp_path):
    assert_one_line_error(edgeq("verify", tmp_path / "gone.tflite", "--data", DIGITS_TEST), "does not exist")
    text = tmp_path / "model.txt"
    text.write_text("x")
    assert_one_line_error(edgeq("verify", text, "--data", DIGITS_TEST), "reads .onnx, .ort and .tflite")
    assert_one_line_error(edgeq("verify", DIGITS, "--data", DIGITS_TEST), "is not a quantized")
    assert_one_line_error(
        edgeq("convert", DIGITS, "--target", "tflite", "--integer-only", "--calib", DIGITS_CALIB, "-o",
              tmp_path / "o"),
        "use it with --target onnxruntime or all",
    )
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def _encoding(tflite_report: dict) -> dict:
    row = tflite_report["inputs"][0]
    return {"scale": row["scale"], "zero_point": row["zero_point"]}


def test_recipe_pins_options_and_cli_overrides(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('calib-method = "minmax"\nper_channel = false\nexclude = ["Gemm"]\n')
    report = tmp_path / "r.json"
    result = edgeq(
        "quantize",
        DIGITS,
        "-o",
        tmp_path / "q.onnx",
        "--calib",
        DIGITS_CALIB,
        "--recipe",
        recipe,
        "--calib-method",
        "mse",
        "--report",
        report,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["recipe"]["calib_method"] == "mse" and data["recipe"]["per_channel"] is False
    assert list(data["float_nodes"].values()) == ["excluded"]


def test_compare_and_profile(tmp_path):
    out = tmp_path / "q.onnx"
    assert edgeq("quantize", DIGITS, "-o", out, "--calib", DIGITS_CALIB).returncode == 0
    result = edgeq("compare", DIGITS, out, "--data", DIGITS_TEST, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["outputs"]["logits"]["sqnr_db"] > 25 and len(data["layers"]) >= 8
    assert data["outputs"]["logits"]["top1_agreement"] > 0.97
    result = edgeq("profile", out, "--runs", "20", "--json")
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)
    assert profile["latency_ms"]["p50"] > 0 and profile["per_op"]["by_op_type"]
    assert "QLinearConv" in profile["per_op"]["by_op_type"] or "Conv" in profile["per_op"]["by_op_type"]
    assert profile["analysis"]["summary"]["macs"] == 230880  # the digits CNN's convolutions and classifier

    report = tmp_path / "r.json"
    assert edgeq("quantize", DIGITS, "-o", tmp_path / "b.onnx", "--calib", DIGITS_CALIB, "--report", report,
                 "--bias-correction", "empirical").returncode == 0  # fmt: skip
    page = tmp_path / "report.html"
    result = edgeq("report", DIGITS, out, tmp_path / "b.onnx", "--data", DIGITS_TEST, "-o", page, "--runs", "5",
                   "--quantize-report", report)  # fmt: skip
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    for section in ("Accuracy against the float model", "Latency", "Compute and activation memory", "Recipe"):
        assert section in html
    assert html.count("<img") == 4 and "bias-correction" in html  # SQNR, 2 op-type charts, MACs/memory; pass
    assert_one_line_error(edgeq("report", DIGITS, out, "--data", DIGITS_TEST, "-o", out), "is the input file")


@pytest.mark.slow
def test_export_command(tmp_path):
    out = tmp_path / "digits.onnx"
    result = edgeq("export", "models.digits_cnn:build", "-o", out, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert onnx.load(out).opset_import[0].version == 17


# ---- bad input: one line, exit 2, nothing written ------------------------------------------------------------
def _truncated(tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(DIGITS.read_bytes()[:5000])
    return path


def _npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _good_x(n=8):
    return np.load(DIGITS_CALIB)["input"][:n]


BAD_MODELS = {
    "missing file": (lambda t: t / "nope.onnx", "does not exist"),
    "not onnx": (lambda t: (t / "x.onnx").write_text("hello") and t / "x.onnx", "not an ONNX model"),
    "truncated": (_truncated, "not an ONNX model|not a valid ONNX"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model(tmp_path, case):
    make, pattern = BAD_MODELS[case]
    out = tmp_path / "out.onnx"
    assert_one_line_error(edgeq("quantize", make(tmp_path), "-o", out, "--calib", DIGITS_CALIB), pattern)
    assert not out.exists()


def test_unsupported_opset_and_external_data_outside(tmp_path):
    model = make_convnet()
    model.opset_import[0].version = 6
    onnx.save(model, tmp_path / "old.onnx")
    assert_one_line_error(
        edgeq("quantize", tmp_path / "old.onnx", "-o", tmp_path / "o.onnx", "--calib", DIGITS_CALIB),
        "opset 6 is not supported",
    )
    folder = tmp_path / "m"
    folder.mkdir()
    model = make_convnet()
    onnx.save(model, folder / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    onnx.save(proto, folder / "evil.onnx")
    assert_one_line_error(
        edgeq("quantize", folder / "evil.onnx", "-o", tmp_path / "o.onnx", "--calib", DIGITS_CALIB),
        "outside the model folder",
    )


BAD_CALIB = {
    "missing keys": (lambda t: _npz(t, pixels=_good_x()), "missing key"),
    "wrong shape": (lambda t: _npz(t, input=_good_x()[:, :, :4]), "axis 2 must be 8"),
    "wrong dtype": (lambda t: _npz(t, input=_good_x().astype(np.float64)), "dtype float64"),
    "zero samples": (lambda t: _npz(t, input=_good_x()[:0]), "zero samples"),
    "nan": (
        lambda t: _npz(
            t, input=np.where(np.arange(8)[:, None, None, None] == 3, np.nan, _good_x()).astype(np.float32)
        ),
        "NaN or Inf",
    ),
    "inf": (lambda t: _npz(t, input=np.full_like(_good_x(), np.inf)), "NaN or Inf"),
    "missing file": (lambda t: t / "nope.npz", "does not exist"),
    "not npz": (lambda t: (t / "x.npz").write_text("no") and t / "x.npz", "not an .npz"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALIB))
def test_bad_calibration_data(tmp_path, case):
    make, pattern = BAD_CALIB[case]
    out = tmp_path / "out.onnx"
    assert_one_line_error(edgeq("quantize", DIGITS, "-o", out, "--calib", make(tmp_path)), pattern)
    assert not out.exists()


def test_output_equal_to_input_is_refused(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(DIGITS.read_bytes())
    before = model.read_bytes()
    assert_one_line_error(edgeq("quantize", model, "-o", model, "--calib", DIGITS_CALIB), "is the input file")
    assert model.read_bytes() == before


def test_output_directory_not_writable(tmp_path):
    target = "/proc/edgeq-out" if os.geteuid() == 0 else None
    if target is None:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / "sub")
    assert_one_line_error(
        edgeq("convert", DIGITS, "--calib", DIGITS_CALIB, "-o", target), "cannot create|not writable"
    )
    assert_one_line_error(
        edgeq(
            "quantize",
            DIGITS,
            "--calib",
            DIGITS_CALIB,
            "-o",
            "/proc/x.onnx" if os.geteuid() == 0 else f"{target}/x.onnx",
        ),
        "not writable|cannot write|does not exist",
    )


def test_bad_recipe_and_options(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("zoom = 3\n")
    assert_one_line_error(
        edgeq("quantize", DIGITS, "-o", tmp_path / "o.onnx", "--calib", DIGITS_CALIB, "--recipe", recipe),
        "unknown option 'zoom'",
    )
    assert_one_line_error(
        edgeq("quantize", DIGITS, "-o", tmp_path / "o.onnx", "--calib", DIGITS_CALIB, "--passes", "magic"),
        "unknown pass",
    )
    assert_one_line_error(edgeq("profile", tmp_path / "gone.onnx"), "does not exist")


def test_debug_flag_shows_traceback(tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(
        main,
        [
            "--debug",
            "quantize",
            str(tmp_path / "nope.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--calib",
            str(DIGITS_CALIB),
        ],
    )
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


def test_fixed_batch_model_converts_and_compares(tmp_path):
    proto = onnx.load(DIGITS)
    for value in [proto.graph.input[0], proto.graph.output[0]]:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # batch fixed to 1, as --static-batch exports
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, fixed)
    result = edgeq(
        "convert", fixed, "--calib", DIGITS_CALIB, "--eval-data", DIGITS_TEST, "-o", tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    result = edgeq("compare", fixed, tmp_path / "out" / "fixed.qdq.onnx", "--data", DIGITS_TEST, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["logits"]["sqnr_db"] > 25


def test_bad_tflite_inputs_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    assert_one_line_error(edgeq("profile", garbage), "garbage.tflite: not a TFLite flatbuffer \\(no TFL3 file identifier\\)")
    truncated = tmp_path / "truncated.tflite"
    convert = edgeq(
        "convert",
        DIGITS,
        "--target",
        "tflite",
        "--calib",
        DIGITS_CALIB,
        "-o",
        tmp_path / "out",
        "--no-progress",
    )
    assert convert.returncode == 0, convert.stderr
    truncated.write_bytes((tmp_path / "out" / "digits_cnn.tflite").read_bytes()[:5000])
    assert_one_line_error(
        edgeq("compare", DIGITS, truncated, "--data", DIGITS_TEST), "truncated.tflite: not a valid TFLite flatbuffer"
    )
    assert_one_line_error(edgeq("profile", tmp_path / "missing.tflite"), "does not exist")


def test_unsupported_op_for_tflite_names_the_node_and_writes_nothing(tmp_path):
    proto = make_convnet()
    softmax = next(n for n in proto.graph.node if n.op_type == "Softmax")
    softmax.op_type = "Hardmax"  # TFLite has no operator for it
    model = tmp_path / "hardmax.onnx"
    onnx.save(proto, model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32))
    result = edgeq(
        "convert", model, "--target", "tflite", "--calib", calib, "-o", tmp_path / "out", "--no-progress"
    )
    assert_one_line_error(result, r"unsupported: Hardmax at softmax: the TFLite target has no lowering for it")
    assert not (tmp_path / "out" / "hardmax.tflite").exists()


def test_compare_several_recipes_with_a_plot(tmp_path):
    """Per-layer SQNR of two recipes side by side; equalized tensors are compared in the float model's units."""
    models = {}
    for name, extra in {"default": [], "equalized": ["--passes", "equalize"]}.items():
        models[name] = tmp_path / f"{name}.onnx"
        result = edgeq(
            "quantize", DIGITS, "-o", models[name], "--calib", DIGITS_CALIB, "--per-tensor", "--no-progress", *extra
        )
        assert result.returncode == 0, result.stderr
    plot = tmp_path / "sqnr.png"
    result = edgeq(
        "compare", DIGITS, models["default"], models["equalized"], "--data", DIGITS_TEST, "--plot", plot, "--json"
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    default, equalized = (rows[str(models[n])]["layers"] for n in ("default", "equalized"))
    assert default.keys() == equalized.keys()
    # inside the equalized depthwise -> pointwise pair the tensors are rescaled per channel; undone, the
    # layer's error stays that of quantization (a few dB either way, not the 20 dB a unit mismatch costs)
    name = "/depthwise/depthwise.2/Clip_output_0"
    assert abs(default[name]["sqnr_db"] - equalized[name]["sqnr_db"]) < 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_passes_run_in_pipeline_order_and_are_reported(tmp_path):
    report = tmp_path / "r.json"
    result = edgeq(
        "quantize",
        DIGITS,
        "-o",
        tmp_path / "q.onnx",
        "--calib",
        DIGITS_CALIB,
        "--bias-correction",
        "analytic",
        "--passes",
        "bias-correction,equalize",
        "--report",
        report,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["recipe"]["passes"] == ["equalize", "bias-correction"]
    assert data["stages"]["equalize"]["change_from_equalization"] <= 1e-4
    assert data["stages"]["bias-correction"]["mode"] == "analytic"


def test_calib_synthetic_needs_batchnorm_statistics(tmp_path):
    """Data-free calibration on a model without BatchNorm is a clear error (the digits CNN path is tested in
    tests/test_synthetic.py; here the CLI wiring)."""
    proto = make_convnet()
    for node in list(proto.graph.node):
        if node.op_type == "BatchNormalization":  # bypass the BatchNorm: no statistics left to match
            consumer = next(n for n in proto.graph.node if node.output[0] in n.input)
            consumer.input[list(consumer.input).index(node.output[0])] = node.input[0]
            proto.graph.node.remove(node)
    model = tmp_path / "nobn.onnx"
    onnx.save(proto, model)
    result = edgeq("quantize", model, "-o", tmp_path / "q.onnx", "--calib", "synthetic", "--no-progress")
    assert_one_line_error(result, "needs BatchNorm statistics")


def test_calib_synthetic_recipe(tmp_path):
    """Data-free: equalization (by weight ranges: 8 distilled inputs are too few for activation ranges) and
    analytic bias correction are added; an explicit --equalize-scaling wins."""
    for flags, scaling in (([], "weights"), (["--equalize-scaling", "activations"], "activations")):
        report = tmp_path / f"{scaling}.json"
        result = edgeq("quantize", DIGITS, "-o", tmp_path / f"{scaling}.onnx", "--calib", "synthetic",
                       "--report", report, "--no-progress", *flags)  # fmt: skip
        assert result.returncode == 0, result.stderr
        data = json.loads(report.read_text())
        assert data["recipe"]["passes"] == ["equalize", "bias-correction"]
        assert data["recipe"]["bias_correction"] == "analytic"
        assert data["stages"]["equalize"]["scaling"] == scaling


@pytest.mark.parametrize("name", ["dfq", "w8a8", "w4a8"])
def test_shipped_recipes_are_valid(name):
    from edgeq.quantization.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / f"{name}.toml")
    assert recipe.passes and recipe.to_dict() != load_recipe(None).to_dict()


def test_dfq_recipe_quantizes_per_tensor_with_its_passes(tmp_path):
    report = tmp_path / "r.json"
    result = edgeq(
        "quantize", DIGITS, "-o", tmp_path / "q.onnx", "--calib", DIGITS_CALIB,
        "--recipe", REPO / "recipes" / "dfq.toml", "--report", report, "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["recipe"]["per_channel"] is False and data["recipe"]["bias_correction"] == "analytic"
    fixed = {"preprocess", "plan", "calibrate", "quantize", "weight-pairs", "finalize"}  # weight-pairs: x86-avx2
    assert [stage for stage in data["stages"] if stage not in fixed] == ["equalize", "bias-correction"]
