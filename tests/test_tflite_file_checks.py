"""Broken .tflite files given to the commands that read one (profile, verify, compare): exit 2 with one line that
names the file, never an internal error (exit 3), a crash or a traceback. edgeq's reader checks every tensor
reference and LiteRT's flatbuffer verifier checks offsets and lengths before any kernel sees the file
(targets/tflite/target.py check_file)."""

from __future__ import annotations

import random

import pytest
from conftest import REPO
from test_cli import assert_one_line_error, edgeq

import edgeq as edgeq_api

DIGITS = REPO / "models" / "digits_cnn.onnx"
TEST = REPO / "models" / "digits_test.npz"


@pytest.fixture(scope="module")
def tflite_bytes(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("tflite")
    edgeq_api.convert(DIGITS, REPO / "models" / "digits_calib.npz", outdir=out, targets=["tflite"])
    return (out / "digits_cnn.tflite").read_bytes()


def _zeroed(data: bytes) -> bytes:
    block = len(data) // 4
    return data[: len(data) // 3] + bytes(block) + data[len(data) // 3 + block :]


BROKEN = {
    # a zeroed block reads as absent fields or as tensors nothing writes, depending on what it hits
    "zeroed-block": (_zeroed, r"(which has no data and no operator before it writes|not a valid TFLite flatbuffer)"),
    "truncated": (lambda d: d[: len(d) // 2], r"not a valid TFLite flatbuffer"),
    "empty": (lambda d: b"", r"not a TFLite flatbuffer \(no TFL3 file identifier\)$"),
    "wrong-magic": (lambda d: d[:4] + b"XXXX" + d[8:], r"not a TFLite flatbuffer \(no TFL3 file identifier\)$"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_tflite_is_refused_by_every_reading_command(tmp_path, tflite_bytes, case):
    damage, message = BROKEN[case]
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(damage(tflite_bytes))
    for command in (
        ["profile", path, "--runs", "2"],
        ["verify", path, "--data", TEST, "--samples", "2"],
        ["compare", DIGITS, path, "--data", TEST],
    ):
        result = edgeq(*command)
        assert_one_line_error(result, message)
        assert str(path) in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("density", [0.0005, 0.005, 0.05])
def test_bit_flips_never_crash_profile(tmp_path, tflite_bytes, density):
    """Flips behind the header: a flip in weight data leaves a valid model (profiled, exit 0); anything else is one
    line naming the file, exit 2."""
    for seed in range(3):
        rng = random.Random(seed)
        damaged = bytearray(tflite_bytes)
        for i in rng.sample(range(8, len(damaged)), max(1, int(len(damaged) * density))):
            damaged[i] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flipped-{seed}.tflite"
        path.write_bytes(bytes(damaged))
        result = edgeq("profile", path, "--runs", "2")
        assert result.returncode in (0, 2), (seed, result.returncode, result.stderr[-500:])
        assert "Traceback" not in result.stderr
        if result.returncode == 2:
            assert_one_line_error(result, str(path).replace(".", r"\.") + ": ")
