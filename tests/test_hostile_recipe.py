"""Hostile recipe files: every broken recipe is refused by `edgeq quantize --recipe` with exit 2 and one line
that names the file and the key at fault, before anything is written (tests/hostile.py states the contract).
tests/test_recipe_types.py holds the first wrong-type cases; these extend them to every key and to the file
itself, unknown names (with suggestions), duplicates and conflicting options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile import DIGITS, DIGITS_CALIB, Sandbox, edgeq_process

from edgeq.errors import RecipeError
from edgeq.quantization.recipe import load_recipe

# Each case: the recipe file's bytes (or a function of the sandbox giving the recipe path) -> what the error says.
FILES = {
    "empty-file": (b"", "is empty"),
    "whitespace-only": (b"  \n\n", "is empty"),
    "binary-not-utf8": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not valid TOML"),
    "binary-with-nul": (b"weight_bits = 8\x00\n", "not valid TOML"),
    "json-not-toml": (b'{"weight_bits": 8}', "not valid TOML"),
    "yaml-not-toml": (b"weight_bits: 8\n", "not valid TOML"),
    "unterminated-string": (b'cpu = "auto\n', "not valid TOML"),
    "duplicate-key": (b"weight_bits = 8\nweight_bits = 4\n", "not valid TOML"),
    "dash-and-underscore-same-key": (b"weight_bits = 8\nweight-bits = 4\n", "weight_bits.*given twice"),
    "integer-beyond-64-bits": (b"weight_bits = 99999999999999999999\n", "weight_bits must be 8 or 4, not 9{20}"),
    "table-at-top": (b"[recipe]\nweight_bits = 8\n", "unknown option 'recipe'"),
    "array-of-tables": (b"[[passes]]\nname = 'equalize'\n", "passes must be a list of names"),
    "key-is-a-table": (b"[activation_type]\nvalue = 'int8'\n", "activation_type must be a string"),
}

UNKNOWN = {
    "typo-activation": ("activaton_type = 'int8'", "unknown option 'activaton_type' \\(did you mean 'activation_type'\\?\\)"),
    "typo-percentile": ("percentil = 99.9", "unknown option 'percentil' \\(did you mean 'percentile'\\?\\)"),
    "cli-only-flag": ("per_tensor = true", "unknown option 'per_tensor' \\(did you mean 'per_channel = false'\\?\\)"),
    "no-close-match": ("zoom = 3", "unknown option 'zoom'$"),
    "image-spec-not-recipe": ("image_spec = 'resize=8'", "unknown option 'image_spec'"),
    "unknown-pass": ("passes = ['magic']", "unknown pass\\(es\\): magic"),
    "typo-pass": ("passes = ['equalise']", "unknown pass\\(es\\): equalise \\(did you mean 'equalize'\\?\\)"),
    "pass-wrong-case": ("passes = ['Equalize']", "unknown pass\\(es\\): Equalize"),
    "pass-underscore": ("passes = ['bias_correction']", "did you mean 'bias-correction'"),
    "dyadic-not-optional-pass": ("passes = ['dyadic']", "unknown pass\\(es\\): dyadic"),
    "duplicate-pass": ("passes = ['equalize', 'equalize']", "passes lists 'equalize' twice"),
    "empty-pass-name": ("passes = ['']", "unknown pass"),
}

# key -> wrong values (TOML text) -> what the error says about the key.
WRONG_VALUES = {
    "activation_type": {
        "number": ("8", "activation_type must be a string, not 8"),
        "list": ("['int8']", "activation_type must be a string"),
        "bool": ("true", "activation_type must be a string, not True"),
        "unknown": ("'int4'", "activation_type must be one of int8, uint8, int16, auto, not 'int4'"),
        "wrong-case": ("'INT8'", "activation_type must be one of"),
    },
    "weight_bits": {
        "string": ("'8'", "weight_bits must be an integer, not '8'"),
        "float": ("8.0", "weight_bits must be an integer, not 8.0"),
        "bool": ("true", "weight_bits must be an integer, not True"),
        "nan": ("nan", "weight_bits must be an integer, not nan"),
        "negative": ("-8", "weight_bits must be 8 or 4, not -8"),
        "zero": ("0", "weight_bits must be 8 or 4, not 0"),
        "out-of-range": ("16", "weight_bits must be 8 or 4, not 16"),
        "huge": ("9223372036854775807", "weight_bits must be 8 or 4"),
    },
    "per_channel": {
        "int": ("1", "per_channel must be true or false, not 1"),
        "string": ("'true'", "per_channel must be true or false"),
        "list": ("[true]", "per_channel must be true or false"),
    },
    "weight_range": {
        "unknown": ("'max'", "weight_range must be one of minmax, mse, not 'max'"),
        "number": ("1", "weight_range must be a string"),
    },
    "weight_rounding": {
        "unknown": ("'round'", "weight_rounding must be one of nearest, sum-preserving, not 'round'"),
        "list": ("['nearest']", "weight_rounding must be a string"),
    },
    "calib_method": {
        "unknown": ("'kl'", "calib_method must be one of auto, minmax, percentile, entropy, mse, not 'kl'"),
        "number": ("3", "calib_method must be a string"),
    },
    "percentile": {
        "string": ("'99'", "percentile must be a number, not '99'"),
        "bool": ("true", "percentile must be a number, not True"),
        "list": ("[99.9]", "percentile must be a number"),
        "nan": ("nan", "percentile must be in \\(50, 100\\], not nan"),
        "inf": ("inf", "percentile must be in \\(50, 100\\], not inf"),
        "negative": ("-99.9", "percentile must be in \\(50, 100\\], not -99.9"),
        "at-lower-bound": ("50", "percentile must be in \\(50, 100\\], not 50"),
        "above-100": ("100.5", "percentile must be in \\(50, 100\\]"),
        "huge": ("1e308", "percentile must be in \\(50, 100\\]"),
    },
    "exclude": {
        "string": ("'head'", "exclude must be a list of names, not 'head'"),
        "numbers": ("[1, 2]", "exclude must be a list of names"),
        "table": ("{ a = 1 }", "exclude must be a list of names"),
        "nested": ("[['a']]", "exclude must be a list of names"),
        "empty-name": ("['']", "exclude lists an empty name"),
    },
    "passes": {
        "number": ("3", "passes must be a list of names, not 3"),
        "bool": ("true", "passes must be a list of names"),
        "numbers": ("[1]", "passes must be a list of names"),
    },
    "bias_correction": {
        "unknown": ("'exact'", "bias_correction must be one of empirical, analytic, not 'exact'"),
        "bool": ("true", "bias_correction must be a string"),
    },
    "equalize_clip": {
        "unknown": ("'clip'", "equalize_clip must be one of exact, to-relu, keep, not 'clip'"),
        "number": ("6", "equalize_clip must be a string"),
    },
    "equalize_scaling": {
        "unknown": ("'both'", "equalize_scaling must be one of auto, weights, activations, not 'both'"),
        "list": ("['auto']", "equalize_scaling must be a string"),
    },
    "dyadic_bits": {
        "string": ("'31'", "dyadic_bits must be an integer, not '31'"),
        "float": ("15.5", "dyadic_bits must be an integer, not 15.5"),
        "bool": ("false", "dyadic_bits must be an integer, not False"),
        "zero": ("0", "dyadic_bits must be between 1 and 31, not 0"),
        "negative": ("-1", "dyadic_bits must be between 1 and 31, not -1"),
        "above-31": ("32", "dyadic_bits must be between 1 and 31, not 32"),
        "huge": ("9223372036854775807", "dyadic_bits must be between 1 and 31"),
    },
    "pow2": {
        "string": ("'no'", "pow2 must be true or false, not 'no'"),
        "int": ("0", "pow2 must be true or false, not 0"),
    },
    "max_calib_samples": {
        "string": ("'10'", "max_calib_samples must be an integer, not '10'"),
        "float": ("1.5", "max_calib_samples must be an integer, not 1.5"),
        "nan": ("nan", "max_calib_samples must be an integer, not nan"),
        "zero": ("0", "max_calib_samples must be at least 1, not 0"),
        "negative": ("-5", "max_calib_samples must be at least 1, not -5"),
        "list": ("[10]", "max_calib_samples must be an integer"),
    },
    "batch_size": {
        "string": ("'8'", "batch_size must be an integer, not '8'"),
        "bool": ("true", "batch_size must be an integer, not True"),
        "float": ("2.5", "batch_size must be an integer, not 2.5"),
        "zero": ("0", "batch_size must be at least 1, not 0"),
        "negative": ("-1", "batch_size must be at least 1, not -1"),
    },
    "input_shapes": {
        "list": ("[1, 2]", "input_shapes must map input names to shapes, not \\[1, 2\\]"),
        "string": ("'1,1,8,8'", "input_shapes must map input names to shapes"),
        "shape-string": ("{ input = '1,1,8,8' }", "input shape of 'input' must be positive integers"),
        "zero-dim": ("{ input = [0, 1, 8, 8] }", "input shape of 'input' must be positive integers"),
        "negative-dim": ("{ input = [-1, 1, 8, 8] }", "input shape of 'input' must be positive integers"),
        "float-dim": ("{ input = [1.5, 1, 8, 8] }", "input shape of 'input' must be positive integers"),
        "bool-dim": ("{ input = [true, 1, 8, 8] }", "input shape of 'input' must be positive integers"),
        "empty-shape": ("{ input = [] }", "input shape of 'input' must be positive integers, not \\[\\]"),
        "nested-table": ("{ input = { n = 1 } }", "input shape of 'input' must be positive integers"),
    },
    "mode": {
        "unknown": ("'fast'", "mode must be one of .*, not 'fast'"),
        "bool": ("true", "mode must be a string"),
    },
    "smooth_quant_alpha": {
        "above-1": ("1.5", "smooth_quant_alpha must be \"auto\" or a number in \\[0, 1\\], not 1.5"),
        "negative": ("-0.5", "smooth_quant_alpha must be"),
        "bool": ("true", "smooth_quant_alpha must be"),
        "nan": ("nan", "smooth_quant_alpha must be"),
        "string": ("'max'", "smooth_quant_alpha must be"),
    },
    "smooth_quant_shared": {"unknown": ("'share'", "smooth_quant_shared must be one of skip, copy, not 'share'")},
    "cpu": {
        "unknown": ("'arm'", "cpu must be one of .*, not 'arm'"),
        "number": ("5", "cpu must be a string, not 5"),
    },
}

CONFLICTS = {
    "bias-correction-mode-without-pass": (
        "bias_correction = 'analytic'",
        "bias_correction is set but passes does not list 'bias-correction'",
    ),
    "equalize-clip-without-pass": ("equalize_clip = 'keep'", "equalize_clip is set but passes does not list 'equalize'"),
    "equalize-scaling-without-pass": (
        "passes = ['adaround']\nequalize_scaling = 'weights'",
        "equalize_scaling is set but passes does not list 'equalize'",
    ),
    "dynamic-mode-with-adaround": ("mode = 'dynamic'\npasses = ['adaround']", "adaround.*mode dynamic"),
    "dynamic-mode-with-int16": ("mode = 'dynamic'\nactivation_type = 'int16'", "mode dynamic.*int16"),
    "percentile-with-minmax": (
        "calib_method = 'minmax'\npercentile = 99.9",
        "percentile is used only by calib_method percentile or auto, not 'minmax'",
    ),
}

CASES = {
    **{f"file-{name}": case for name, case in FILES.items()},
    **{f"name-{name}": (text.encode(), message) for name, (text, message) in UNKNOWN.items()},
    **{
        f"{key}-{kind}": (f"{key} = {text}\n".encode(), message)
        for key, kinds in WRONG_VALUES.items()
        for kind, (text, message) in kinds.items()
    },
    **{f"conflict-{name}": (text.encode(), message) for name, (text, message) in CONFLICTS.items()},
}


def _quantize(recipe: Path, out: Path) -> list:
    return ["quantize", DIGITS, "-o", out, "--calib", DIGITS_CALIB, "--recipe", recipe, "--no-progress"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_recipe_is_refused_naming_the_file_and_key(tmp_path, monkeypatch, case):
    content, message = CASES[case]
    box = Sandbox(tmp_path, monkeypatch)
    recipe = tmp_path / "recipe.toml"
    recipe.write_bytes(content)
    line = box.refused(_quantize(recipe, tmp_path / "out.onnx"), message)
    assert line.startswith(f"edgeq: error: recipe file {recipe}"), line


PATHS = {
    "missing": (lambda t: t / "nope.toml", "does not exist"),
    "broken-symlink": (lambda t: (t / "link.toml").symlink_to(t / "gone.toml") or t / "link.toml", "does not exist"),
    "unreadable-device": (lambda t: Path("/proc/self/mem"), "cannot be read"),
    "directory": (lambda t: t, "Invalid value for '--recipe'.*is a directory"),
}


@pytest.mark.parametrize("case", sorted(PATHS))
def test_recipe_path_that_cannot_be_read(tmp_path, monkeypatch, case):
    make, message = PATHS[case]
    box = Sandbox(tmp_path, monkeypatch)
    box.refused(_quantize(make(tmp_path), tmp_path / "out.onnx"), message)


def test_recipe_file_is_left_byte_identical_and_comments_alone_are_a_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("# only a comment: every default\n")
    assert load_recipe(recipe).to_dict() == load_recipe(None).to_dict()
    os.chmod(recipe, 0o444)
    before = recipe.read_bytes()
    with pytest.raises(RecipeError):
        load_recipe(tmp_path / "missing.toml")
    assert recipe.read_bytes() == before


def test_real_process_exit_code_and_stderr(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("weight_bits = '8'\n")
    code, stderr = edgeq_process(*_quantize(recipe, tmp_path / "o.onnx"), cwd=tmp_path)
    assert code == 2 and stderr == f"edgeq: error: recipe file {recipe}: weight_bits must be an integer, not '8'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]
