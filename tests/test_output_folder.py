"""`edgeq convert`'s output folder: artifacts move into it only after every target validated, so a failure leaves it
exactly as it was; a rerun into it replaces what it writes again, deletes the same model's artifacts it does not
write (nothing else), and says so; nothing outlives a run in the current or the system temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

import edgeq
from edgeq import targets
from edgeq.errors import ExecutionError, OutputError
from edgeq.io.files import staged_output

MODEL = REPO / "models" / "digits_cnn.onnx"
CALIB = REPO / "models" / "digits_calib.npz"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry of FOLDER (hidden ones too) with its bytes and modification time."""
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>", p.stat().st_mtime_ns) for p in folder.iterdir()}


def edgeq_cli(*args, cwd: Path, tmpdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeq.cli", *map(str, args), "--no-progress"],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, "TMPDIR": str(tmpdir)},
    )  # fmt: skip


def test_failed_validation_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "digits_cnn.tflite").write_bytes(b"an earlier run's .tflite")
    (out / "report.json").write_text("{}\n")
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    seen = []

    def failing_validation(self, build, emitted):
        # the new .tflite exists, staged; the earlier one is still in place
        seen.append((emitted.artifacts[0].read_bytes()[4:8], (out / "digits_cnn.tflite").read_bytes()))
        raise ExecutionError("LiteRT failed on sample 0 (injected)")

    monkeypatch.setattr(type(targets.get("tflite")), "validate", failing_validation)
    with pytest.raises(ExecutionError, match="injected"):
        edgeq.convert(MODEL, str(CALIB), outdir=out, targets=["onnxruntime", "tflite"])
    assert seen == [(b"TFL3", b"an earlier run's .tflite")]
    assert snapshot(out) == before


def test_failed_convert_leaves_the_folder_as_it_was_and_creates_none(tmp_path):
    out, cwd, tmpdir = tmp_path / "out", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (out, cwd, tmpdir):
        folder.mkdir()
    (out / "digits_cnn.qdq.onnx").write_bytes(b"earlier")
    before = snapshot(out)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 1, 8, 8), np.float32))  # the model's input is "input"
    result = edgeq_cli("convert", MODEL, "--calib", CALIB, "--eval-data", wrong, "-o", out, cwd=cwd, tmpdir=tmpdir)
    assert result.returncode == 2 and result.stderr.startswith("edgeq: error: "), result.stderr
    assert snapshot(out) == before
    created = tmp_path / "new"
    result = edgeq_cli("convert", MODEL, "--calib", CALIB, "--eval-data", wrong, "-o", created, cwd=cwd, tmpdir=tmpdir)
    assert result.returncode == 2 and not created.exists()
    assert list(cwd.iterdir()) == [] and list(tmpdir.iterdir()) == []


def test_rerun_replaces_its_files_and_removes_the_stale_ones(tmp_path):
    out, cwd, tmpdir = tmp_path / "out", tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmpdir.mkdir()
    everything = ["--target", "all", "--integer-only", "--precision", "float", "--ort-format"]
    first = edgeq_cli("convert", MODEL, *everything, "--calib", CALIB, "-o", out, cwd=cwd, tmpdir=tmpdir)
    assert first.returncode == 0, first.stderr
    assert "replaced" not in first.stdout and "removed" not in first.stdout
    written = {p.name for p in out.iterdir()}
    unrelated = {"notes.txt": b"mine", "other.tflite": b"another model", "digits_cnn.tflite.bak": b"a copy"}
    for name, data in unrelated.items():
        (out / name).write_bytes(data)

    second = edgeq_cli("convert", MODEL, "--target", "tflite", "--calib", CALIB, "-o", out, cwd=cwd, tmpdir=tmpdir)
    assert second.returncode == 0, second.stderr
    assert {p.name for p in out.iterdir()} == {"digits_cnn.tflite", "report.json", *unrelated}
    for name, data in unrelated.items():
        assert (out / name).read_bytes() == data
    lines = second.stdout.splitlines()
    replaced = next(line for line in lines if line.startswith("replaced"))
    removed = next(line for line in lines if line.startswith("removed"))
    assert replaced.split(": ", 1)[1].split(", ") == [str(out / "digits_cnn.tflite"), str(out / "report.json")]
    stale = written - {"digits_cnn.tflite", "report.json"}
    assert sorted(removed.split(": ", 1)[1].split(", ")) == sorted(str(out / name) for name in stale)
    assert stale >= {"digits_cnn.qdq.ort", "required_operators.config", "digits_cnn_model_data.cc"}
    report = (out / "report.json").read_text()
    assert "qdq.onnx" not in report and str(out / "digits_cnn.tflite") in report

    page = out / "page.html"
    third = edgeq_cli(
        "convert", MODEL, "--target", "tflite", "--calib", CALIB, "-o", out, "--report-html", page,
        cwd=cwd, tmpdir=tmpdir,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert "removed" not in third.stdout and f"replaced (from an earlier run): {out / 'digits_cnn.tflite'}" in third.stdout
    # the page and the report, made before the artifacts moved into place, name them where they are now
    for written in (page, out / "report.json"):
        assert str(out / "digits_cnn.tflite") in written.read_text() and "staging" not in written.read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder or temp file remains
    assert list(cwd.iterdir()) == [] and list(tmpdir.iterdir()) == []


def test_commit_moves_nothing_when_a_destination_is_a_folder(tmp_path):
    (tmp_path / "model.tflite").mkdir()
    (tmp_path / "report.json").write_text("earlier")
    with pytest.raises(OutputError, match=r"model\.tflite is a directory"):
        with staged_output(tmp_path) as staged:
            (staged.folder / "report.json").write_text("new")
            (staged.folder / "model.tflite").write_bytes(b"new")
            staged.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite", "report.json"]
    assert (tmp_path / "report.json").read_text() == "earlier"


def test_commit_never_removes_an_input(tmp_path):
    model = tmp_path / "model.qdq.onnx"
    model.write_bytes(b"the input")
    with staged_output(tmp_path, model) as staged:
        (staged.folder / "model.tflite").write_bytes(b"new")
        replaced, removed = staged.commit([model])
    assert (replaced, removed) == ([], []) and model.read_bytes() == b"the input"
