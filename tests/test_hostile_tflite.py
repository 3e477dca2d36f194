"""Hostile .tflite files through every command that reads one (issue 19, "Trust"): damaged bytes and flatbuffers
whose offsets, lengths and indices point anywhere. Each is refused with exit 2 and one line
"edgeq: error: <file>: <what is wrong>", no traceback, no file written anywhere, the input untouched, in bounded
time, before LiteRT or TFLite Micro (which read out of bounds or abort on such files) sees it. The same contract
and harness as test_hostile_onnx.py; the cases start from the .tflite `edgeq convert --target tflite` writes for
digits_cnn, patched field by field where the flatbuffer stores them.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
import tflite
from conftest import REPO
from hostile import flip_bits, zero_block
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_onnx import (  # noqa: F401  (the fixtures qdq and sandbox)
    SECONDS_PER_COMMAND,
    assert_refused,
    qdq_fixture,
    sandbox_fixture,
    snapshot,
    time_limit,
)

import edgeq as edgeq_api
from edgeq.errors import ModelError
from edgeq.tflite_format.reader import read

DIGITS = REPO / "models" / "digits_cnn.onnx"
CALIB = REPO / "models" / "digits_calib.npz"
TEST = REPO / "models" / "digits_test.npz"


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("tflite")
    edgeq_api.convert(DIGITS, CALIB, outdir=out, targets=["tflite"])
    return (out / "digits_cnn.tflite").read_bytes()


def reading_commands(artifact, out, qdq) -> list[list]:
    """Every command line that reads the .tflite ARTIFACT."""
    data = ["--data", TEST]
    quick = ["--runs", "1", "--warmup", "0", "--no-progress"]
    return [
        ["verify", artifact, *data, "--samples", "1"],
        ["compare", DIGITS, artifact, *data, "--max-samples", "2"],
        ["profile", artifact, *quick],
        ["profile", qdq, "--compare", artifact, *quick],
        ["profile", artifact, "--compare", qdq, *quick],
        ["report", DIGITS, artifact, *data, "--max-samples", "2", "--runs", "1", "-o", out / "r.html"],
    ]


# ---- where the flatbuffer stores things (field slots of the tflite schema: Model.subgraphs is slot 8, ...)


def model(data: bytes):
    return tflite.Model.GetRootAs(data, 0)


def field_at(table, slot: int) -> int:
    """File position of TABLE's field SLOT (a scalar, or the offset of a vector or table)."""
    offset = table._tab.Offset(slot)
    assert offset, f"field {slot} is absent"
    return table._tab.Pos + offset


def vector_at(table, slot: int) -> int:
    """File position of the first element of TABLE's vector field SLOT (its length is the 4 bytes before)."""
    return table._tab.Vector(table._tab.Offset(slot))


MODEL_SUBGRAPHS, MODEL_BUFFERS, MODEL_CODES = 8, 12, 6
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS = 4, 6, 8, 10
TENSOR_SHAPE, TENSOR_BUFFER, TENSOR_NAME = 4, 8, 10
OPERATOR_OPCODE, OPERATOR_INPUTS, OPERATOR_OUTPUTS = 4, 6, 8
BUFFER_DATA = 4


def subgraph(data):
    return model(data).Subgraphs(0)


def first_constant(data) -> int:
    """Index of the first tensor with data (a weight)."""
    sg = subgraph(data)
    return next(i for i in range(sg.TensorsLength()) if model(data).Buffers(sg.Tensors(i).Buffer()).DataLength())


def patched(where, fmt: str, value: int):
    """A case: the valid file with VALUE packed as FMT at the position WHERE(data) returns."""

    def damage(data: bytes) -> bytes:
        out = bytearray(data)
        struct.pack_into("<" + fmt, out, where(data), value)
        return bytes(out)

    return damage


def length_of(vector_position):
    """The length word of the vector whose first element is at VECTOR_POSITION(data)."""
    return lambda data: vector_position(data) - 4


def operator_inputs(data, op=0):
    return vector_at(subgraph(data).Operators(op), OPERATOR_INPUTS)


def last_output(data) -> int:
    sg = subgraph(data)
    return int(sg.Operators(sg.OperatorsLength() - 1).OutputsAsNumpy()[0])


def second_opcode_user(data):
    """The first operator that names its opcode (opcode 0 is the default the writer leaves out)."""
    sg = subgraph(data)
    return next(op for op in map(sg.Operators, range(sg.OperatorsLength())) if op.OpcodeIndex())


def read_before_written(data: bytes) -> bytes:
    """Operator 0 reads the tensor the last operator writes."""
    return patched(operator_inputs, "i", last_output(data))(data)


def weight_without_data(data: bytes) -> bytes:
    """The first weight refers to buffer 0, the empty sentinel: a constant that no operator writes."""
    return patched(lambda d: field_at(subgraph(d).Tensors(first_constant(d)), TENSOR_BUFFER), "I", 0)(data)


def truncated(fraction: float):
    return lambda data: data[: int(len(data) * fraction)]


def zeroed(fraction: float, size: int = 64):
    return lambda data: zero_block(data, fraction, size)


def flipped(density: float, seed: int):
    return lambda data: flip_bits(data, density, seed)


HUGE = 0x7FFFFFF0
CASES = {
    "empty": (lambda data: b"", r"not a TFLite flatbuffer"),
    **{f"truncated-at-{p}%": (truncated(p / 100), r"not a valid TFLite flatbuffer|TFL3") for p in (1, 10, 50, 90, 99)},
    "wrong-magic": (lambda data: data[:4] + b"XXXX" + data[8:], r"no TFL3 file identifier"),
    "an-onnx-model-renamed-tflite": (lambda data: DIGITS.read_bytes(), r"not a TFLite flatbuffer"),
    "text": (lambda data: b"TFL3 is what this file is not\n", r"not a TFLite flatbuffer"),
    "root-offset-huge": (patched(lambda d: 0, "I", HUGE), r"not a valid TFLite flatbuffer"),
    "root-offset-past-the-end": (lambda data: patched(lambda d: 0, "I", len(data) + 8)(data),
                                 r"not a valid TFLite flatbuffer"),
    "model-vtable-offset-huge": (patched(lambda d: model(d)._tab.Pos, "i", HUGE), r"not a valid TFLite flatbuffer"),
    "model-vtable-offset-negative": (patched(lambda d: model(d)._tab.Pos, "i", -HUGE),
                                     r"not a valid TFLite flatbuffer"),
    "subgraphs-offset-huge": (patched(lambda d: field_at(model(d), MODEL_SUBGRAPHS), "I", HUGE),
                              r"not a valid TFLite flatbuffer"),
    "subgraph-count-0": (patched(length_of(lambda d: vector_at(model(d), MODEL_SUBGRAPHS)), "I", 0),
                         r"has 0"),
    "subgraph-count-huge": (patched(length_of(lambda d: vector_at(model(d), MODEL_SUBGRAPHS)), "I", HUGE),
                            r"not a valid TFLite flatbuffer|subgraph"),
    "buffer-count-huge": (patched(length_of(lambda d: vector_at(model(d), MODEL_BUFFERS)), "I", HUGE),
                          r"not a valid TFLite flatbuffer"),
    "opcode-count-huge": (patched(length_of(lambda d: vector_at(model(d), MODEL_CODES)), "I", HUGE),
                          r"not a valid TFLite flatbuffer"),
    "tensor-count-huge": (patched(length_of(lambda d: vector_at(subgraph(d), SUBGRAPH_TENSORS)), "I", HUGE),
                          r"not a valid TFLite flatbuffer"),
    "operator-count-huge": (patched(length_of(lambda d: vector_at(subgraph(d), SUBGRAPH_OPERATORS)), "I", HUGE),
                            r"not a valid TFLite flatbuffer"),
    "buffer-data-length-huge": (
        patched(length_of(lambda d: vector_at(model(d).Buffers(subgraph(d).Tensors(first_constant(d)).Buffer()),
                                              BUFFER_DATA)), "I", HUGE),
        r"not a valid TFLite flatbuffer",
    ),
    "shape-length-huge": (patched(length_of(lambda d: vector_at(subgraph(d).Tensors(0), TENSOR_SHAPE)), "I", HUGE),
                          r"not a valid TFLite flatbuffer"),
    "name-length-huge": (patched(lambda d: subgraph(d).Tensors(0)._tab.Indirect(field_at(subgraph(d).Tensors(0),
                                                                                         TENSOR_NAME)), "I", HUGE),
                         r"not a valid TFLite flatbuffer"),
    "buffer-index-out-of-range": (
        patched(lambda d: field_at(subgraph(d).Tensors(first_constant(d)), TENSOR_BUFFER), "I", 9999),
        r"tensor \S+ refers to buffer 9999",
    ),
    "operator-input-out-of-range": (patched(operator_inputs, "i", 9999), r"operator 0 \(\w+\) refers to tensor 9999"),
    "operator-input-negative": (patched(operator_inputs, "i", -7), r"operator 0 \(\w+\) refers to tensor -7"),
    "operator-output-out-of-range": (patched(lambda d: vector_at(subgraph(d).Operators(0), OPERATOR_OUTPUTS), "i",
                                             9999), r"operator 0 \(\w+\) refers to tensor 9999"),
    "graph-input-out-of-range": (patched(lambda d: vector_at(subgraph(d), SUBGRAPH_INPUTS), "i", 9999),
                                 r"refers to tensor 9999"),
    "graph-output-negative": (patched(lambda d: vector_at(subgraph(d), SUBGRAPH_OUTPUTS), "i", -5),
                              r"refers to tensor -5"),
    "opcode-index-out-of-range": (patched(lambda d: field_at(second_opcode_user(d), OPERATOR_OPCODE), "I", 9999),
                                  r"operator \d+ refers to opcode 9999; the model has \d+"),
    "negative-activation-shape": (patched(lambda d: vector_at(subgraph(d).Tensors(0), TENSOR_SHAPE) + 4, "i", -3),
                                  r"tensor \S+: shape \[1, -3, .*\] has a negative dimension"),
    "negative-weight-shape": (patched(lambda d: vector_at(subgraph(d).Tensors(first_constant(d)), TENSOR_SHAPE),
                                      "i", -1), r"shape .*-1"),
    "tensor-read-before-written": (read_before_written, r"operator 0 \(\w+\) reads tensor .* no operator before"),
    "weight-without-data": (weight_without_data, r"reads tensor .* which has no data"),
}

# Random damage: a flip or zeroed block in weight data leaves a valid model (exit 0 is then right).
DAMAGED = {
    **{f"zeroed-64-bytes-at-{p}%": zeroed(p / 100) for p in (0, 1, 10, 25, 50, 75, 90, 100)},
    **{f"bit-flips-{d}-seed-{s}": flipped(d, s) for d in (0.0005, 0.005, 0.05) for s in (0, 1, 2)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_refuses_a_hostile_tflite_file(sandbox, qdq, valid, case):
    damage, what = CASES[case]
    path = sandbox / "in" / f"{case}.tflite"
    path.parent.mkdir()
    path.write_bytes(damage(valid))
    assert_refused(sandbox, path.name, reading_commands(path, sandbox / "out", qdq), what)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_every_command_refuses_or_reads_a_damaged_tflite_file(sandbox, qdq, valid, case):
    path = sandbox / "in" / f"{case}.tflite"
    path.parent.mkdir()
    path.write_bytes(DAMAGED[case](valid))
    assert_refused(sandbox, path.name, reading_commands(path, sandbox / "out", qdq), r"\S", may_be_valid=True)


def test_a_tflite_given_as_the_float_model_is_refused(sandbox, qdq, valid):
    path = sandbox / "in" / "digits.tflite"
    path.parent.mkdir()
    path.write_bytes(valid)
    commands = [
        ["quantize", path, "-o", sandbox / "out" / "q.onnx", "--calib", CALIB],
        ["convert", path, "--calib", CALIB, "-o", sandbox / "out"],
        ["compare", path, qdq, "--data", TEST],
        ["report", path, qdq, "--data", TEST, "-o", sandbox / "out" / "r.html"],
    ]
    assert_refused(sandbox, path.name, commands, r"ONNX")


@pytest.mark.parametrize("case", ["truncated-at-50%", "opcode-index-out-of-range"])
def test_real_process_exits_2_with_one_line(tmp_path, valid, case):
    damage, what = CASES[case]
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(damage(valid))
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", "profile", str(path), "--runs", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgeq: error: {path}: "), result.stderr
    assert __import__("re").search(what, lines[0]) and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


# ---- a bounded fuzz of the reader: mutated bytes give a Graph or a ModelError, never another exception


@st.composite
def mutations(draw) -> list[tuple[str, int, int]]:
    return draw(st.lists(st.tuples(st.sampled_from(["set", "flip", "word", "delete", "truncate"]),
                                   st.floats(0, 1, exclude_max=True), st.integers(0, 2**32 - 1)),
                         min_size=1, max_size=6))


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        if not out:
            break
        at = int(where * len(out))
        if kind == "set":
            out[at] = value & 0xFF
        elif kind == "flip":
            out[at] ^= 1 << (value % 8)
        elif kind == "word" and at + 4 <= len(out):  # an offset, length or index replaced whole
            struct.pack_into("<I", out, at - at % 4, value)
        elif kind == "delete":
            del out[at : at + 1 + value % 16]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


@settings(derandomize=True, max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=mutations())
def test_the_reader_reads_a_graph_or_raises_model_error(valid, edits):
    with time_limit(SECONDS_PER_COMMAND):
        try:
            read(mutate(valid, edits))
        except ModelError as exc:
            assert "\n" not in str(exc)
