"""Bit allocation under a size budget (edgeq.mixed.allocation): the integer program, real file sizes, refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner
from conftest import REPO
from hostile import Sandbox
from test_cli import DIGITS, DIGITS_CALIB

import edgeq.api as edgeq_api
from edgeq.api.inputs import data_of
from edgeq.cli import main
from edgeq.errors import RecipeError
from edgeq.io.onnx_model import load_model
from edgeq.mixed.allocation import (
    TARGET_RULES,
    Budget,
    ByteModel,
    TargetRule,
    allocate,
    byte_model,
    parse_budget,
    solve,
)
from edgeq.mixed.layers import weight_bytes
from edgeq.mixed.sensitivity import measure_sensitivity
from edgeq.mixed.workbench import Workbench
from edgeq.quantization.recipe import Recipe

INTEGER_ONLY = TargetRule(("int8", "int4"), True, "integer layers, packed int4")


@pytest.fixture(scope="module")
def measured():
    model = load_model(DIGITS)
    bench = Workbench.prepare(model, data_of(DIGITS_CALIB, model), Recipe(activation_type="auto"), samples=64)
    return bench, measure_sensitivity(bench, address="serial")


def test_budget_text():
    assert parse_budget("size=1.2MB") == Budget(size=1_200_000)
    assert parse_budget("size=96KiB") == Budget(size=96 * 1024)
    assert parse_budget("size=150000") == Budget(size=150_000)
    assert parse_budget("arena=96KB") == Budget(arena=96_000)
    assert parse_budget("size=1MB, arena=64KiB") == Budget(1_000_000, 64 * 1024)
    for text, why in [
        ("size=abc", "expected an amount"),
        ("size=-1MB", "expected an amount"),
        ("speed=1MB", "expected size=AMOUNT"),
        ("size=1MB,size=2MB", "size is given twice"),
        ("latency=5ms", "latency budgets need a per-layer latency"),
    ]:
        with pytest.raises(RecipeError, match=why):
            parse_budget(text)


def test_program_picks_all_int8_when_it_fits_and_all_int4_when_only_that_fits(measured):
    _, table = measured
    # weights alone (no per-layer overhead): the uniform int4 mix is then the only one at its own size
    sizes = ByteModel(table, True, 0.0, {})
    int8 = sum(weight_bytes(layer.params, "int8") for layer in table.layers)
    int4 = sum(weight_bytes(layer.params, "int4") for layer in table.layers)
    assert set(solve(table, sizes, int8, INTEGER_ONLY).layers.values()) == {"int8"}
    assert set(solve(table, sizes, int4, INTEGER_ONLY).layers.values()) == {"int4"}
    between = solve(table, sizes, (int8 + int4) // 2, INTEGER_ONLY).layers
    assert set(between.values()) == {"int8", "int4"}
    assert sum(weight_bytes(layer.params, between[layer.name]) for layer in table.layers) <= (int8 + int4) // 2
    with pytest.raises(RecipeError, match="no mix"):
        solve(table, sizes, int4 - 1, INTEGER_ONLY)


def test_real_builds_honour_the_budget(measured):
    bench, table = measured
    base = bench.build({})
    chosen = allocate(bench, table, base.size, INTEGER_ONLY)
    assert chosen.layers == {} and chosen.measured.size == base.size  # all int8: the base build
    sizes = byte_model(bench, table, TARGET_RULES["onnxruntime"])
    smallest = sizes.size(sizes.smallest(("float", "int8", "int4")))
    # the byte model's per-layer overheads are averages: on this small model a mix's real size is within ~2% of it
    for budget in (smallest + (base.size - smallest) // 4, (smallest + base.size) // 2):
        chosen = allocate(bench, table, budget, TARGET_RULES["onnxruntime"], sizes)
        assert chosen.measured.size <= budget and chosen.layers
    with pytest.raises(RecipeError, match="cannot be met"):
        allocate(bench, table, smallest - 1, TARGET_RULES["onnxruntime"], sizes)


def test_quantize_with_a_budget_writes_a_file_that_fits(tmp_path, measured):
    bench, _ = measured
    budget = bench.build({}).size - 3000
    out, report = tmp_path / "mix.onnx", tmp_path / "mix.json"
    result = CliRunner().invoke(main, [str(a) for a in (
        "quantize", DIGITS, "-o", out, "--calib", DIGITS_CALIB, "--report", report, "--budget", f"size={budget}",
        "--ray-address", "serial", "--no-progress",
    )])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.stat().st_size <= budget and "mixed precision:" in result.stdout
    chosen = json.loads(report.read_text())["mixed_precision"]["budget"]
    assert chosen["size_bytes"] == out.stat().st_size and chosen["fits"]
    assert (tmp_path / "mix.sensitivity.png").stat().st_size and (tmp_path / "mix.pareto.png").stat().st_size


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (["--budget", "size=1KB"], "cannot be met: the smallest mix"),
        (["--budget", "size=lots"], "expected an amount"),
        (["--budget", "arena=96KB"], "an arena budget is TFLite Micro's tensor arena"),
        (["--budget", "latency=5ms"], "latency budgets need a per-layer latency"),
        (["--max-drop", "-1"], "max-drop must be a number >= 0"),
        (["--max-drop", "0.5", "--metric", "bogus"], "--metric must be one of"),
        (["--metric", "top1"], "give --budget or --max-drop"),
        (["--eval-data", DIGITS_CALIB], "give --budget or --max-drop"),
        (["--budget", "size=1MB", "--max-drop", "1"], "not both"),
        (["--budget", "size=1MB", "--layer", "Conv=int4"], "give no --layer"),
        (["--max-drop", "0.5", "--metric", "top1"], "needs labels"),
    ],
)
def test_bad_mixed_options_are_one_line_errors(tmp_path, monkeypatch, options, pattern):
    box = Sandbox(tmp_path, monkeypatch)
    box.refused(["quantize", DIGITS, "-o", tmp_path / "o.onnx", "--calib", DIGITS_CALIB, *options,
                 "--ray-address", "serial", "--no-progress"], pattern, watch=(REPO / "models",))  # fmt: skip


def test_convert_for_tflite_keeps_every_layer_integer(tmp_path):
    """TFLite has no bit-exact float Conv island and stores int4 as int8: int4 buys no bytes there, so under any
    budget the base build's int8 layers stay, and no layer goes float."""
    result = edgeq_api.convert(
        DIGITS, DIGITS_CALIB, outdir=tmp_path, targets=["tflite"], eval_data=REPO / "models" / "digits_test.npz",
        budget="size=100KB", ray_address="serial", verify_samples=0,
    )  # fmt: skip
    chosen = result.report["mixed_precision"]["budget"]
    assert chosen["precisions"] == {"int8": 5, "int4": 0} and "float" not in chosen["layers"].values()
    assert (tmp_path / "mixed_sensitivity.png").exists() and result.report["recipe"]["layers"] == {}


def test_the_search_builds_without_adaround_and_the_chosen_recipe_keeps_it():
    """AdaRound is too slow for every build of a search: the mixes are ranked rounded to nearest, and the recipe
    returned for the final build still asks for AdaRound."""
    model = load_model(DIGITS)
    recipe = Recipe(activation_type="auto", passes=["equalize", "adaround"])
    bench = Workbench.prepare(model, data_of(DIGITS_CALIB, model), recipe, samples=16)
    assert bench.recipe.passes == ["equalize"]
    choice = edgeq_api.mixed.choose(
        model, data_of(DIGITS_CALIB, model), recipe, budget=bench.build({}).size - 3000, ray_address="serial"
    )
    assert choice.recipe.passes == ["equalize", "adaround"] and choice.recipe.layers


def test_a_mix_measured_worse_than_the_fitting_uniform_build_gives_way_to_it(measured):
    """A table that calls int4 free (its noise the int8 one's) makes the program spend the bytes int4 frees on
    float layers; that mix measures below uniform int8, which fits: uniform int8 is kept, with the reason."""
    bench, table = measured
    flattering = dataclasses.replace(
        table, sqnr_db={name: {**row, "int4": row["int8"]} for name, row in table.sqnr_db.items()}
    )
    base = bench.build({})
    chosen = allocate(bench, flattering, base.size, TARGET_RULES["onnxruntime"])
    assert chosen.layers == {} and chosen.measured is base
    assert "uniform int8 kept" in chosen.to_dict()["note"]


def test_an_arena_budget_buys_int16_tensors_whose_real_arena_fits(tmp_path):
    """TFLite Micro's arena: int16 tensors (and the requantized copies around them) are what changes it, so an
    arena budget above uniform int8's spends the room on the tensors whose int16 removes the most noise; the real
    arena of the .tflite convert writes fits, and the mix is more accurate than int8 and bit-exact."""
    results = {}
    for budget in ("arena=1B", "arena=12KB", "arena=100KB"):
        outdir = tmp_path / budget.replace("=", "_")
        try:
            results[budget] = edgeq_api.convert(
                DIGITS, DIGITS_CALIB, outdir=outdir, targets=["tflm"], budget=budget, ray_address="serial",
            )  # fmt: skip
        except RecipeError as error:
            results[budget] = error
    assert "uniform int8's TFLite Micro arena is" in str(results["arena=1B"])
    int8_arena = int(str(results["arena=1B"]).split("arena is ")[1].split()[0])
    for budget, limit in (("arena=12KB", 12_000), ("arena=100KB", 100_000)):
        report = results[budget].report
        chosen = report["mixed_precision"]["budget"]
        tflm = report["targets"]["tflm"]
        assert chosen["fits"] and chosen["arena_bytes"] == tflm["arena_bytes"] <= limit  # the file's real arena
        assert tflm["verification"]["bit_exact"]
        assert chosen["int16_tensors"] and set(chosen["layers"].values()) == {"int16"}
        base = report["mixed_precision"]["int16_sensitivity"]["base_sqnr_db"]
        assert chosen["measured_sqnr_db"] > base + 0.5
    roomy = results["arena=100KB"].report["mixed_precision"]["budget"]
    tight = results["arena=12KB"].report["mixed_precision"]["budget"]
    assert len(roomy["int16_tensors"]) > len(tight["int16_tensors"])  # every tensor that helps, with the room
    assert roomy["arena_bytes"] > 12_000 > tight["arena_bytes"] > int8_arena


def test_an_arena_budget_needs_a_tflite_target_and_a_latency_budget_is_refused():
    with pytest.raises(RecipeError, match="TFLite Micro's tensor arena: convert with --target tflm"):
        edgeq_api.quantize(DIGITS, DIGITS_CALIB, output="unused.onnx", budget="arena=96KB", ray_address="serial")
    assert parse_budget("arena=96KB,size=1MB") == Budget(1_000_000, 96_000)
