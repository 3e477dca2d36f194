"""Staged outputs: `edgeq quantize`'s model and report appear together or not at all, and a run killed while it
staged (SIGKILL) leaves a staging folder that the next run in that folder removes and names, while the staging
folder of a run still alive is never touched (edgeq/io/files.py)."""

from __future__ import annotations

import fcntl
import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

import edgeq
from edgeq.io.files import STAGING_PREFIX, remove_stale_staging, staged_files, staged_output

MODEL = REPO / "models" / "digits_cnn.onnx"
CALIB = REPO / "models" / "digits_calib.npz"
QUANTIZE = importlib.import_module("edgeq.api.quantize")  # the module (edgeq.api.quantize is also its function)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_quantize_writes_model_and_report_together_or_neither(tmp_path, monkeypatch):
    models, reports = tmp_path / "models", tmp_path / "reports"
    models.mkdir()
    reports.mkdir()
    (reports / "report.json").write_text("an earlier report\n")
    saved = []
    original = QUANTIZE.save_model

    def save_then_fail_on_report(*args):
        saved.append(original(*args))  # the model is written (staged) ...
        monkeypatch.setattr(QUANTIZE, "json_text", failing_json)

    def failing_json(data):
        raise OSError("disk full (injected)")  # ... and the report is not

    monkeypatch.setattr(QUANTIZE, "save_model", save_then_fail_on_report)
    with pytest.raises(OSError, match="injected"):
        edgeq.quantize(MODEL, str(CALIB), output=models / "m.qdq.onnx", report=reports / "report.json")
    assert saved and saved[0].parent.name.startswith(STAGING_PREFIX) and not saved[0].exists()
    assert list(models.iterdir()) == [] and [p.name for p in reports.iterdir()] == ["report.json"]
    assert (reports / "report.json").read_text() == "an earlier report\n"

    monkeypatch.undo()
    result = edgeq.quantize(MODEL, str(CALIB), output=models / "m.qdq.onnx", report=reports / "report.json")
    assert [p.name for p in models.iterdir()] == ["m.qdq.onnx"] and [p.name for p in reports.iterdir()] == ["report.json"]
    assert result.report["output"] == str(models / "m.qdq.onnx") and "staging" not in (reports / "report.json").read_text()


def test_staged_files_move_none_when_one_cannot_move(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").mkdir()  # a folder where a file should go
    with pytest.raises(edgeq.OutputError, match=r"report\.json is a directory"):
        with staged_files(tmp_path / "model.onnx", tmp_path / "b" / "report.json") as staged:
            for path in staged.paths:
                path.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and [p.name for p in (tmp_path / "b").iterdir()] == [
        "report.json"
    ]


@pytest.mark.slow
def test_a_killed_convert_leaves_a_staging_folder_that_the_next_run_removes(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeq.cli", "convert", MODEL, "--calib", CALIB, "-o", out, "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out.is_dir() and list(out.glob(f"{STAGING_PREFIX}*"))) and process.poll() is None:
        assert time.monotonic() < deadline, "convert made no staging folder in 60 s"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    left = list(out.glob(f"{STAGING_PREFIX}*"))
    assert process.returncode == -signal.SIGKILL and len(left) == 1 and left[0].name.startswith(f"{STAGING_PREFIX}{process.pid}-")

    result = edgeq.quantize(MODEL, str(CALIB), output=out / "digits.qdq.onnx")
    assert [p.name for p in out.iterdir()] == ["digits.qdq.onnx"]
    assert any(str(left[0]) in warning and "removed" in warning for warning in result.warnings), result.warnings


def test_only_the_staging_folders_of_dead_runs_are_removed(tmp_path):
    dead = dead_pid()
    abandoned = tmp_path / f"{STAGING_PREFIX}{dead}-a"
    locked = tmp_path / f"{STAGING_PREFIX}{dead}-b"  # a live run in another pid namespace holds its lock
    starting = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-c"  # a live run here, before it takes its lock
    for folder in (abandoned, locked, starting):
        folder.mkdir()
        (folder / "model.tflite").write_bytes(b"half")
    lock = os.open(locked, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with staged_output(tmp_path) as staged:
            (staged.folder / "model.tflite").write_bytes(b"whole")
            assert remove_stale_staging(tmp_path) == []  # this run's own folder is locked and alive
            replaced, removed = staged.commit()
    finally:
        os.close(lock)
    assert (replaced, removed) == ([], [abandoned])  # what convert prints as removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.tflite", locked.name, starting.name])
    assert remove_stale_staging(tmp_path) == [locked]  # its lock released, its pid dead
