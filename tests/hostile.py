"""The contract every hostile-input case checks (tests/test_hostile_*.py): a refused input exits 2 with one
line on stderr naming what is wrong, no traceback, no new file (in the output folder, the working directory or
the system temp dir) and every input byte-identical.

Commands run in-process through click's CliRunner (fast); ``edgeq_process`` runs the real executable for the
few cases that prove the real exit code and stderr. A click usage error (an option refused at parse time) is
click's "Usage: ... Error: ..." block, whose one "Error:" line names the option.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import onnxruntime  # noqa: F401  (its import writes $TMPDIR/.ses, once per process: before any snapshot)
from click.testing import CliRunner
from conftest import REPO

from edgeq.cli import main

DIGITS = REPO / "models" / "digits_cnn.onnx"
DIGITS_CALIB = REPO / "models" / "digits_calib.npz"
DIGITS_TEST = REPO / "models" / "digits_test.npz"


def zero_block(data: bytes, fraction: float, size: int = 64) -> bytes:
    """DATA with SIZE bytes zeroed at FRACTION of its length (the block kept inside the data)."""
    at = min(int(len(data) * fraction), len(data) - size)
    return data[:at] + bytes(size) + data[at + size :]


def flip_bits(data: bytes, density: float, seed: int) -> bytes:
    """DATA with one random bit flipped in DENSITY of its bytes (at least one), reproducibly from SEED."""
    rng, damaged = random.Random(seed), bytearray(data)
    for i in rng.sample(range(len(damaged)), max(1, int(len(damaged) * density))):
        damaged[i] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def snapshot(*folders: Path) -> dict[Path, str]:
    """Every file and folder under FOLDERS, with a digest of each file's bytes."""
    state = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            if path.is_symlink() or not path.is_file():
                state[path] = "link" if path.is_symlink() else "dir"
            else:
                state[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


class Sandbox:
    """A working directory (``work``), a private system temp dir and a place for inputs; ``refused`` runs a
    command and checks the contract."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.root = tmp_path
        self.work = tmp_path / "work"
        self.temp = tmp_path / "systemp"
        for folder in (self.work, self.temp):
            folder.mkdir()
        monkeypatch.chdir(self.work)
        monkeypatch.setenv("TMPDIR", str(self.temp))
        monkeypatch.setattr(tempfile, "tempdir", str(self.temp))
        monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing a test's module:function writes no .pyc

    def refused(self, args: list, pattern: str, *, watch: tuple[Path, ...] = ()) -> str:
        """Run ``edgeq ARGS`` in-process; assert exit 2 and one error line matching PATTERN, and that nothing
        under the sandbox (or WATCH, e.g. the bundled models) changed. Returns the error line."""
        folders = (self.root, *watch)
        before = snapshot(*folders)
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        line = error_line(result.exit_code, result.stderr)
        assert re.search(pattern, line), line
        after = snapshot(*folders)
        changed = sorted(str(p) for p in after.keys() | before.keys() if after.get(p) != before.get(p))
        assert not changed, f"the refused command changed files: {changed}"
        return line


def error_line(exit_code: int, stderr: str) -> str:
    """The one error line of a refusal: "edgeq: error: ..." alone, or the "Error: ..." line of click's usage
    block."""
    assert exit_code == 2, f"exit {exit_code}: {stderr}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    if lines[0].startswith("edgeq: error: "):
        assert len(lines) == 1, stderr
        return lines[0]
    errors = [line for line in lines if line.startswith("Error: ")]
    usage = [line for line in lines if line.startswith(("Usage: ", "Try ")) or not line.strip()]
    assert len(errors) == 1 and len(errors) + len(usage) == len(lines), stderr
    return errors[0]


def edgeq_process(*args, cwd: Path) -> tuple[int, str]:
    """The real ``edgeq`` (python -m edgeq.cli): exit code and stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
    return result.returncode, result.stderr
