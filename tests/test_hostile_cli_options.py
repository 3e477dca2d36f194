"""Hostile command lines: for every command, a missing required option, an option with a value it cannot take,
an output path that is an input, a folder, in a missing or read-only folder, and option combinations a target
cannot take are refused with exit 2 and one line naming the option and why (click's usage error at parse time,
or the one-line edgeq error), never exit 3 and never a partial artifact (tests/hostile.py states the contract).
The last tests hold the interface to its word: every option says what it does and its default, and the exit
codes are documented."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import pytest
from conftest import REPO
from hostile import DIGITS, DIGITS_CALIB, DIGITS_TEST, Sandbox, edgeq_process

from edgeq.cli import EXIT_CODES_EPILOG, main

# A folder root cannot write into either (os.access ignores modes for root; /proc refuses new files).
READ_ONLY = Path("/proc") if os.geteuid() == 0 else None

QUANTIZE = ["quantize", DIGITS, "--calib", DIGITS_CALIB, "--no-progress"]
CONVERT = ["convert", DIGITS, "--calib", DIGITS_CALIB, "--no-progress"]


def _quantize(*extra) -> list:
    return [*QUANTIZE, "-o", "{t}/out.onnx", *extra]


def _convert(*extra) -> list:
    return [*CONVERT, "-o", "{t}/out", *extra]


MISSING = {
    "quantize-no-model": (["quantize", "-o", "{t}/o.onnx", "--calib", DIGITS_CALIB], "Missing argument 'MODEL'"),
    "quantize-no-output": (QUANTIZE, "Missing option '-o' / '--output'"),
    "quantize-no-calib": (["quantize", DIGITS, "-o", "{t}/o.onnx"], "Missing option '--calib'"),
    "convert-no-outdir": (CONVERT, "Missing option '-o' / '--outdir'"),
    "convert-no-calib": (["convert", DIGITS, "-o", "{t}/out"], "Missing option '--calib'"),
    "export-no-factory": (["export", "-o", "{t}/m.onnx"], "Missing argument 'FACTORY'"),
    "export-no-output": (["export", "factory_module:make"], "Missing option '-o' / '--output'"),
    "verify-no-artifact": (["verify", "--data", DIGITS_TEST], "Missing argument 'ARTIFACTS...'"),
    "verify-no-data": (["verify", DIGITS], "Missing option '--data'"),
    "compare-no-quantized": (["compare", DIGITS, "--data", DIGITS_TEST], "Missing argument 'QUANTIZED...'"),
    "compare-no-data": (["compare", DIGITS, DIGITS], "Missing option '--data'"),
    "profile-no-artifact": (["profile"], "Missing argument 'ARTIFACT'"),
    "report-no-output": (["report", DIGITS, DIGITS, "--data", DIGITS_TEST], "Missing option '-o' / '--output'"),
    "report-no-data": (["report", DIGITS, DIGITS, "-o", "{t}/r.html"], "Missing option '--data'"),
    "report-no-artifact": (["report", DIGITS, "--data", DIGITS_TEST, "-o", "{t}/r.html"], "Missing argument"),
    "option-without-value": (_quantize("--percentile"), "Option '--percentile' requires an argument"),
    "unknown-option": (_quantize("--percentil", "99"), "No such option '--percentil'.*Did you mean.*'--percentile'"),
}

# Recipe flags: quantize and convert take the same ones.
RECIPE_FLAG_VALUES = {
    "activation-type-unknown": (["--activation-type", "int4"], "--activation-type.*'int4' is not one of"),
    "weight-bits-3": (["--weight-bits", "3"], "--weight-bits.*'3' is not one of '8', '4'"),
    "calib-method-unknown": (["--calib-method", "kl"], "--calib-method.*'kl' is not one of"),
    "percentile-below-range": (["--percentile", "40"], "--percentile.*40.0 is not in the range 50<x<=100"),
    "percentile-not-number": (["--percentile", "high"], "--percentile.*'high' is not a valid float"),
    "percentile-nan": (["--percentile", "nan"], "percentile must be in \\(50, 100\\], not nan"),
    "max-calib-samples-zero": (["--max-calib-samples", "0"], "--max-calib-samples.*0 is not in the range x>=1"),
    "max-calib-samples-negative": (["--max-calib-samples", "-3"], "--max-calib-samples.*-3 is not in the range"),
    "dyadic-bits-zero": (["--dyadic-bits", "0"], "--dyadic-bits.*0 is not in the range 1<=x<=31"),
    "dyadic-bits-40": (["--dyadic-bits", "40"], "--dyadic-bits.*40 is not in the range 1<=x<=31"),
    "cpu-unknown": (["--cpu", "arm"], "--cpu.*'arm' is not one of"),
    "weight-range-unknown": (["--weight-range", "max"], "--weight-range.*'max' is not one of"),
    "weight-rounding-unknown": (["--weight-rounding", "round"], "--weight-rounding.*'round' is not one of"),
    "bias-correction-unknown": (["--bias-correction", "exact"], "--bias-correction.*'exact' is not one of"),
    "equalize-clip-unknown": (["--equalize-clip", "clip"], "--equalize-clip.*'clip' is not one of"),
    "equalize-scaling-unknown": (["--equalize-scaling", "both"], "--equalize-scaling.*'both' is not one of"),
    "mode-unknown": (["--mode", "fast"], "--mode.*'fast' is not one of"),
    "passes-unknown": (["--passes", "magic"], "--passes.*unknown pass\\(es\\): magic"),
    "passes-typo": (["--passes", "equalise"], "--passes.*did you mean 'equalize'"),
    "passes-twice": (["--passes", "equalize,equalize"], "--passes.*lists 'equalize' twice"),
    "input-shape-letter": (["--input-shape", "1,x,3"], "--input-shape.*'1,x,3': expected NAME=1,3,320,320"),
    "input-shape-empty-dim": (["--input-shape", "input=1,,8,8"], "--input-shape.*'input=1,,8,8'"),
    "input-shape-zero": (["--input-shape", "input=0,1,8,8"], "--input-shape.*positive integers"),
    "input-shape-negative": (["--input-shape", "input=-1,1,8,8"], "--input-shape.*positive integers"),
    "input-shape-no-dims": (["--input-shape", "input="], "--input-shape.*'input='"),
    "input-shape-unknown-input": (["--input-shape", "pixels=1,1,8,8"], "--input-shape: the model has no input 'pixels'"),
    "input-shape-wrong-rank": (["--input-shape", "input=1,8,8"], "--input-shape input=\\[1, 8, 8\\] does not fit"),
    "exclude-empty": (["--exclude", ""], "--exclude.*empty name"),
    "recipe-missing": (["--recipe", "{t}/nope.toml"], "recipe file .*nope.toml does not exist"),
    "recipe-directory": (["--recipe", "{t}"], "--recipe.*is a directory"),
}

OTHER_VALUES = {
    "convert-target-unknown": (_convert("--target", "gpu"), "unknown target 'gpu'; choose from onnxruntime"),
    "convert-target-empty": (_convert("--target", ""), "unknown target ''"),
    "convert-verify-samples-negative": (_convert("--verify-samples", "-1"), "--verify-samples.*-1 is not in the range x>=0"),
    "convert-io-unknown": (_convert("--target", "tflite", "--io", "int4"), "--io.*'int4' is not one of"),
    "convert-precision-unknown": (_convert("--precision", "fp16"), "--precision.*'fp16' is not one of"),
    "profile-runs-zero": (["profile", DIGITS, "--runs", "0"], "--runs.*0 is not in the range x>=1"),
    "profile-runs-not-number": (["profile", DIGITS, "--runs", "many"], "--runs.*'many' is not a valid integer"),
    "profile-warmup-negative": (["profile", DIGITS, "--warmup", "-1"], "--warmup.*-1 is not in the range x>=0"),
    "profile-threads-reversed-range": (["profile", DIGITS, "--threads", "4-1"], "--threads.*the range 4-1 is empty"),
    "profile-threads-zero": (["profile", DIGITS, "--threads", "0"], "--threads.*between 1 and"),
    "profile-threads-too-many": (["profile", DIGITS, "--threads", "1-100000"], "--threads.*between 1 and"),
    "profile-threads-negative": (["profile", DIGITS, "--threads", "-2"], "--threads.*give thread counts as"),
    "profile-threads-letters": (["profile", DIGITS, "--threads", "all"], "--threads.*give thread counts as"),
    "profile-threads-trailing-comma": (["profile", DIGITS, "--threads", "1,"], "--threads.*give thread counts as"),
    "profile-compare-missing": (["profile", DIGITS, "--compare", "{t}/nope.onnx"], "nope.onnx does not exist"),
    "profile-artifact-missing": (["profile", "{t}/gone.onnx"], "gone.onnx does not exist"),
    "verify-samples-zero": (["verify", DIGITS, "--data", DIGITS_TEST, "--samples", "0"], "--samples.*0 is not in the range"),
    "compare-max-samples-zero": (
        ["compare", DIGITS, DIGITS, "--data", DIGITS_TEST, "--max-samples", "0"],
        "--max-samples.*0 is not in the range x>=1",
    ),
    "report-runs-zero": (
        ["report", DIGITS, DIGITS, "--data", DIGITS_TEST, "-o", "{t}/r.html", "--runs", "0"],
        "--runs.*0 is not in the range x>=1",
    ),
    "report-max-samples-negative": (
        ["report", DIGITS, DIGITS, "--data", DIGITS_TEST, "-o", "{t}/r.html", "--max-samples", "-2"],
        "--max-samples.*-2 is not in the range",
    ),
    "export-opset-too-old": (["export", "factory_module:make", "-o", "{t}/m.onnx", "--opset", "3"], "--opset.*3 is not in 7\\.\\."),
    "export-opset-too-new": (["export", "factory_module:make", "-o", "{t}/m.onnx", "--opset", "99"], "--opset.*99 is not in"),
    "export-opset-not-number": (["export", "factory_module:make", "-o", "{t}/m.onnx", "--opset", "x"], "--opset.*'x' is not a valid"),
}

# Options each valid alone, that a target cannot take together.
COMBINATIONS = {
    "tflite-uint8-activations": (_convert("--target", "tflite", "--activation-type", "uint8"), "tflite target takes int8 or int16"),
    "integer-onnx-int16-activations": (
        _convert("--target", "onnxruntime-integer", "--activation-type", "int16"),
        "onnxruntime-integer target takes int8",
    ),
    "tflite-integer-only": (_convert("--target", "tflite", "--integer-only"), "--integer-only.*--target onnxruntime or all"),
    "tflite-dynamic-mode": (_convert("--target", "tflite", "--mode", "dynamic"), "tflite target takes mode static"),
    "percentile-with-minmax": (
        _quantize("--calib-method", "minmax", "--percentile", "99.9"),
        "--percentile is used only by --calib-method percentile or auto, not minmax",
    ),
    "dynamic-mode-int16": (_quantize("--mode", "dynamic", "--activation-type", "int16"), "mode dynamic.*int16"),
    "dynamic-mode-4-bit-weights": (_quantize("--mode", "dynamic", "--weight-bits", "4"), "mode dynamic.*weight_bits 4"),
    "dynamic-mode-adaround": (_quantize("--mode", "dynamic", "--passes", "adaround"), "adaround.*mode dynamic"),
}


def _model_copy(t: Path) -> Path:
    path = t / "model.onnx"
    shutil.copyfile(DIGITS, path)
    return path


OUTPUTS = {
    "quantize-output-is-the-model": (
        lambda t: [*QUANTIZE[:1], _model_copy(t), *QUANTIZE[2:], "-o", t / "model.onnx"],
        "output path .*model.onnx is the input file",
    ),
    "quantize-output-is-the-calibration-data": (
        lambda t: [*QUANTIZE, "-o", DIGITS_CALIB],
        "is the input file",
    ),
    "quantize-output-is-a-folder": (lambda t: [*QUANTIZE, "-o", t], "--output.*is a directory"),
    "quantize-output-in-missing-folder": (lambda t: [*QUANTIZE, "-o", t / "no" / "o.onnx"], "folder .*no does not exist"),
    "quantize-output-read-only-folder": (lambda t: [*QUANTIZE, "-o", READ_ONLY / "o.onnx"], "not writable|cannot"),
    "quantize-report-is-the-output": (
        lambda t: [*QUANTIZE, "-o", t / "o.onnx", "--report", t / "o.onnx"],
        "o.onnx is the input file",
    ),
    "quantize-report-in-missing-folder": (
        lambda t: [*QUANTIZE, "-o", t / "o.onnx", "--report", t / "no" / "r.json"],
        "does not exist",
    ),
    "convert-outdir-is-a-file": (lambda t: [*CONVERT, "-o", _model_copy(t)], "exists and is not a directory"),
    "convert-outdir-read-only": (lambda t: [*CONVERT, "-o", READ_ONLY / "edgeq-out"], "cannot create|not writable"),
    "convert-report-html-not-html": (
        lambda t: [*CONVERT, "-o", t / "out", "--report-html", t / "r.txt"],
        "must be an .html file",
    ),
    "convert-report-html-is-a-folder": (lambda t: [*CONVERT, "-o", t / "out", "--report-html", t], "is a directory"),
    "convert-report-html-in-missing-folder": (
        lambda t: [*CONVERT, "-o", t / "out", "--report-html", t / "no" / "r.html"],
        "does not exist",
    ),
    "compare-plot-is-the-model": (
        lambda t: ["compare", _model_copy(t), DIGITS, "--data", DIGITS_TEST, "--plot", t / "model.onnx"],
        "is the input file",
    ),
    "compare-plot-in-missing-folder": (
        lambda t: ["compare", DIGITS, DIGITS, "--data", DIGITS_TEST, "--plot", t / "no" / "p.png"],
        "does not exist",
    ),
    "report-output-is-an-artifact": (
        lambda t: ["report", DIGITS, _model_copy(t), "--data", DIGITS_TEST, "-o", t / "model.onnx"],
        "is the input file",
    ),
    "report-output-is-a-folder": (lambda t: ["report", DIGITS, DIGITS, "--data", DIGITS_TEST, "-o", t], "is a directory"),
    "report-output-read-only": (
        lambda t: ["report", DIGITS, DIGITS, "--data", DIGITS_TEST, "-o", READ_ONLY / "r.html"],
        "not writable|cannot",
    ),
    "export-output-is-a-folder": (lambda t: ["export", "factory_module:make", "-o", t], "--output.*is a directory"),
}


def _cases() -> dict[str, tuple]:
    cases = {f"missing-{name}": case for name, case in MISSING.items()}
    for command, args in (("quantize", _quantize()), ("convert", _convert())):
        for name, (extra, message) in RECIPE_FLAG_VALUES.items():
            cases[f"{command}-{name}"] = ([*args, *extra], message)
    cases.update(OTHER_VALUES)
    cases.update({f"combination-{name}": case for name, case in COMBINATIONS.items()})
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_is_refused_naming_it(tmp_path, monkeypatch, case):
    args, message = CASES[case]
    box = Sandbox(tmp_path, monkeypatch)
    box.refused([str(a).replace("{t}", str(tmp_path)) for a in args], message)


@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_bad_output_path_is_refused_before_anything_is_written(tmp_path, monkeypatch, case):
    if READ_ONLY is None and "read-only" in case:
        read_only = tmp_path / "locked"
        read_only.mkdir(mode=0o500)
        monkeypatch.setitem(globals(), "READ_ONLY", read_only)
    make, message = OUTPUTS[case]
    box = Sandbox(tmp_path, monkeypatch)
    box.refused(make(tmp_path), message)


FACTORIES = {
    "raises": ("def make():\n    raise ValueError('no weights here')\n", "{m}:make raised ValueError: no weights here"),
    "needs-arguments": ("def make(size):\n    return size\n", "{m}:make raised TypeError"),
    "not-callable": ("make = 3\n", "{m}:make is not callable"),
    "returns-no-module": ("def make():\n    return 'model'\n", "{m}:make did not return a torch.nn.Module"),
    "missing-function": ("", "module '{m}' has no attribute 'make'"),
    "missing-module": (None, "cannot import 'no_such_factory_module'"),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_export_refuses_a_broken_factory(tmp_path, monkeypatch, case):
    code, message = FACTORIES[case]
    box = Sandbox(tmp_path, monkeypatch)
    module = "hostile_factory_" + case.replace("-", "_") if code is not None else "no_such_factory_module"
    if code is not None:
        (box.work / f"{module}.py").write_text(code)
    box.refused(["export", f"{module}:make", "-o", tmp_path / "m.onnx"], message.format(m=module))


def test_real_process_usage_errors(tmp_path):
    code, stderr = edgeq_process("profile", DIGITS, "--threads", "4-1", cwd=tmp_path)
    assert code == 2 and stderr == "edgeq: error: --threads '4-1': the range 4-1 is empty\n", stderr
    assert "Traceback" not in stderr
    code, stderr = edgeq_process("quantize", DIGITS, "--calib", DIGITS_CALIB, "-o", tmp_path / "o", "--cpu", "z", cwd=tmp_path)
    assert code == 2 and "Error: Invalid value for '--cpu': 'z' is not one of" in stderr, stderr
    args = [str(a).replace("{t}", str(tmp_path)) for a in _convert("--target", "tflite", "--activation-type", "uint8")]
    code, stderr = edgeq_process(*args, cwd=tmp_path)
    assert code == 2 and stderr.startswith("edgeq: error: the tflite target takes") and stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


def _options(name: str) -> dict[str, tuple[click.Option, str, object]]:
    """Each option of `edgeq NAME` (convert: with every target's own) -> (option, its --help text, default)."""
    command = main.commands[name]
    with click.Context(command, info_name=name) as ctx:
        return {
            p.opts[-1]: (p, p.get_help_record(ctx)[1], p.get_default(ctx, call=False))
            for p in command.get_params(ctx)
            if isinstance(p, click.Option) and p.name != "_click_default_help"
        }


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_option_says_what_it_does_and_its_default(name):
    for flag, (option, help_text, default) in _options(name).items():
        assert help_text.strip(), f"edgeq {name} {flag} has no help text"
        if option.required or option.multiple or default in (None, False):
            continue
        assert "[default: " in help_text, f"edgeq {name} {flag} does not show its default {default!r}"


def test_recipe_flags_show_the_recipe_default_and_choices():
    options = _options("quantize")
    assert "[default: (31, or the --recipe file's)" in options["--dyadic-bits"][1]
    assert "[default: (all, or the --recipe file's)" in options["--max-calib-samples"][1]
    assert list(options["--weight-bits"][0].type.choices) == ["8", "4"]
    assert isinstance(options["--percentile"][0].type, click.FloatRange)
    assert isinstance(options["--max-calib-samples"][0].type, click.IntRange)


def test_exit_codes_are_documented_in_help_and_readme(tmp_path):
    code, _ = edgeq_process("--help", cwd=tmp_path)
    assert code == 0
    for words in ("0 done", "2 bad input", "3 an internal error"):
        assert words in EXIT_CODES_EPILOG
    readme = (REPO / "README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert "Exit status" in readme and "`2`" in readme and "`3`" in readme
