"""`edgeq sweep`: the bundled digits CNN x two recipes gives, per pair, what `edgeq convert` gives alone; a
broken recipe is one failed row (exit 1) while the others finish; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
import pickle
import sys

import pytest
from click.testing import CliRunner
from conftest import REPO

import edgeq
from edgeq.cli import main

DIGITS = REPO / "models" / "digits_cnn.onnx"
DIGITS_CALIB = REPO / "models" / "digits_calib.npz"
DIGITS_TEST = REPO / "models" / "digits_test.npz"
# a recipe file and recipe options (4-bit weights without AdaRound: cheap, and a different artifact)
RECIPES = {"dfq": REPO / "recipes" / "dfq.toml", "weight_bits=4": {"weight_bits": 4}}


def _sweep(*args) -> object:
    """`edgeq sweep ARGS` in this process (the Ray instance of an earlier test is reused)."""
    return CliRunner().invoke(main, ["sweep", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    broken = folder / "broken.toml"
    broken.write_text('calib_method = "median"\n')  # a valid file whose value convert refuses
    recipes = ["--recipe", RECIPES["dfq"], "--recipe", "weight_bits=4"]
    # serially: map_tasks gives the same results on Ray (tests/test_scale.py, on a real two-node cluster), and a
    # Ray instance would cost the suite more than the three conversions
    result = _sweep(
        DIGITS, *recipes, "--recipe", broken, "--calib", DIGITS_CALIB, "--eval-data", DIGITS_TEST, "-o", folder / "out",
        "--ray-address", "serial",
    )  # fmt: skip
    return folder, result


@pytest.mark.slow
def test_each_row_is_what_convert_gives_alone(swept, tmp_path):
    folder, result = swept
    assert result.exit_code == 1, result.output  # the broken recipe failed; the sweep did not stop for it
    rows = json.loads((folder / "out" / "sweep.json").read_text())["rows"]
    assert [(r["model"], r["recipe"], r["status"]) for r in rows] == [
        ("digits_cnn", "dfq", "ok"), ("digits_cnn", "weight_bits=4", "ok"), ("digits_cnn", "broken", "failed"),
    ]  # fmt: skip
    assert rows[2]["error"].startswith("recipe file") and "broken.toml" in rows[2]["error"]
    assert "\n" not in rows[2]["error"]
    for row, (name, recipe) in zip(rows, RECIPES.items(), strict=False):
        as_given = recipe if isinstance(recipe, dict) else {"recipe": recipe}  # options, as sweep passes them
        alone = edgeq.convert(DIGITS, DIGITS_CALIB, outdir=tmp_path / name, eval_data=DIGITS_TEST, **as_given)
        artifact = alone.targets["onnxruntime"]["artifacts"][0]
        swept_artifact = folder / "out" / row["artifact"]
        assert swept_artifact.read_bytes() == open(artifact, "rb").read()
        assert row["artifact_bytes"] == swept_artifact.stat().st_size
        assert row["sqnr_db"] == alone.targets["onnxruntime"]["validation"]["outputs"]["logits"]["sqnr_db"]
        assert row["accuracy"] == alone.targets["onnxruntime"]["validation"]["accuracy"]["quantized"]
    with open(folder / "out" / "sweep.csv") as table:
        assert [(r["recipe"], r["status"], r["artifact_bytes"]) for r in csv.DictReader(table)] == [
            (r["recipe"], r["status"], str(r["artifact_bytes"] or "")) for r in rows
        ]
    markdown = (folder / "out" / "sweep.md").read_text().splitlines()
    assert len(markdown) == 2 + len(rows) and all(r["recipe"] in line for r, line in zip(rows, markdown[2:], strict=True))
    assert (folder / "out" / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_a_sweep_task_is_sent_to_ray_workers_by_reference():
    """Ray's workers import the task function by name: it must pickle as a reference to the installed module."""
    from edgeq.api.sweep import convert_pair

    assert pickle.loads(pickle.dumps(convert_pair)) is convert_pair
    assert b"edgeq.api.sweep" in pickle.dumps(convert_pair)


@pytest.mark.slow
def test_without_ray_the_sweep_runs_serially(swept, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as when it is not installed
    result = edgeq.sweep([DIGITS], [REPO / "recipes" / "dfq.toml"], outdir=tmp_path, calib=DIGITS_CALIB, eval_data=DIGITS_TEST)
    folder, _ = swept
    assert [row["status"] for row in result.rows] == ["ok"]
    assert (tmp_path / result.rows[0]["artifact"]).read_bytes() == (folder / "out" / "digits_cnn/dfq/digits_cnn.qdq.onnx").read_bytes()


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["missing.onnx", "--calib", DIGITS_CALIB], r"model missing\.onnx does not exist"),
        ([DIGITS], r"model .*digits_cnn\.onnx: give calibration data"),
        ([DIGITS, "--calib", DIGITS_CALIB, "--recipe", "nowhere.toml"], r"recipe file nowhere\.toml does not exist"),
        ([DIGITS, "--calib", DIGITS_CALIB, "--recipe", "weight_bits"], r"recipe file weight_bits does not exist"),
        ([DIGITS, "--calib", DIGITS_CALIB, "--target", "tpu"], r"tpu"),
        ([DIGITS, "--calib", DIGITS_CALIB, "--ray-address", "localhost"], r"Ray address 'localhost' is not host:port"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, pattern):
    result = _sweep(*args, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), result.stderr
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()
