"""Hostile ONNX files through every command that reads one (issue 19, "Trust"): damaged bytes, graphs onnx's
parser accepts but no runtime can run, unsafe external data. Each is refused with exit 2 and one line
"edgeq: error: <file>: <what is wrong>", no traceback, no file written anywhere (output folder, current directory,
temp dir), the input untouched, in bounded time. Exit 3 (internal error) or exit 0 on a broken model is a bug.

The commands run in-process (click's runner) to stay fast; test_real_process_* prove the same contract for the
installed entry point. A bounded hypothesis fuzz of the entrance itself (read_proto: parser, checker and
edgeq.io.model_checks) closes the file: mutated bytes give a model or a ModelError, nothing else.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import REPO
from hostile import flip_bits, zero_block
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import edgeq as edgeq_api
from edgeq.cli import main
from edgeq.errors import ModelError
from edgeq.io.onnx_model import load_model

DIGITS = REPO / "models" / "digits_cnn.onnx"
CALIB = REPO / "models" / "digits_calib.npz"
TEST = REPO / "models" / "digits_test.npz"
SECONDS_PER_COMMAND = 60


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so the CLI's internal-error handler does not swallow it."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under FOLDER, with the bytes of each file (None for a folder)."""
    return {
        str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(name="sandbox")
def sandbox_fixture(tmp_path, monkeypatch):
    """tmp_path as the whole world a command may touch: the current directory and the temp dir live in it."""
    for name in ("cwd", "tmp", "out"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def run_in_process(args) -> tuple[int, str]:
    with time_limit(SECONDS_PER_COMMAND):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stderr


def assert_refused(world: Path, culprit: str, commands, what: str, *, may_be_valid: bool = False) -> None:
    """Each of COMMANDS exits 2 with one line naming CULPRIT (the file's name; the node's for a valid model that
    edgeq does not support) and matching WHAT, and leaves WORLD (the sandbox: input folder, output folder, current
    and temp directories) exactly as it was. With MAY_BE_VALID (random damage that may have hit only weight
    values), exit 0 is allowed too."""
    for args in commands:
        before = snapshot(world)
        code, stderr = run_in_process(args)
        lines = stderr.strip().splitlines()
        shown = " ".join(map(str, args))
        assert "Traceback" not in stderr
        if code == 0 and may_be_valid:  # artifacts written, the inputs untouched
            after, inputs = snapshot(world), [name for name in before if name.split("/")[0] == "in"]
            assert all(after.get(name) == before[name] for name in inputs), f"{shown} changed an input"
            continue
        assert code == 2, f"{shown}: exit {code}: {stderr[-800:]}"
        assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), f"{shown}: {stderr[-800:]}"
        assert culprit in lines[0], f"{shown}: the error does not name {culprit}: {lines[0]}"
        assert re.search(what, lines[0]), f"{shown}: {lines[0]}"
        assert snapshot(world) == before, f"{shown} changed the files: {set(snapshot(world)) ^ set(before)}"


@pytest.fixture(scope="module", name="qdq")
def qdq_fixture(tmp_path_factory) -> Path:
    """A good QDQ artifact of digits_cnn, the other side of compare, report and profile --compare."""
    out = tmp_path_factory.mktemp("qdq") / "digits_qdq.onnx"
    edgeq_api.quantize(DIGITS, CALIB, output=out)
    return out


def reading_commands(model: Path, out: Path, qdq: Path) -> list[list]:
    """Every command line that reads MODEL, as the float model and as an artifact."""
    data = ["--data", TEST]
    return [
        ["quantize", model, "-o", out / "q.onnx", "--calib", CALIB, "--no-progress"],
        *(
            ["convert", model, "--target", target, "--calib", CALIB, "-o", out, "--no-progress"]
            for target in ("onnxruntime", "tflite", "tflm", "onnxruntime-integer", "all")
        ),
        ["verify", model, *data, "--samples", "1"],
        ["compare", model, qdq, *data, "--max-samples", "2"],
        ["compare", DIGITS, model, *data, "--max-samples", "2"],
        ["profile", model, "--runs", "1", "--warmup", "0", "--no-progress"],
        ["profile", qdq, "--compare", model, "--runs", "1", "--warmup", "0", "--no-progress"],
        ["report", model, qdq, *data, "--max-samples", "2", "--runs", "1", "-o", out / "r.html"],
        ["report", DIGITS, model, *data, "--max-samples", "2", "--runs", "1", "-o", out / "r.html"],
    ]


# ---- the cases: each builds a model in FOLDER and returns its path; WHAT is the complaint the error must state


def digits() -> onnx.ModelProto:
    return onnx.load(DIGITS)


def saved(folder: Path, proto: onnx.ModelProto, name="model.onnx") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def written(folder: Path, data: bytes, name="model.onnx") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def edited(change, *, declared: bool = True):
    """A case: digits_cnn with CHANGE(proto) applied (and without its value_info unless DECLARED: then only onnx's
    shape inference can tell that a weight does not fit its node)."""

    def build(folder: Path) -> Path:
        proto = digits()
        change(proto)
        if not declared:
            del proto.graph.value_info[:]
        return saved(folder, proto)

    return build


def node(proto, op_type: str, index: int = 0) -> onnx.NodeProto:
    return [n for n in proto.graph.node if n.op_type == op_type][index]


def initializer(proto, name: str) -> onnx.TensorProto:
    return next(t for t in proto.graph.initializer if t.name == name)


def set_values(name: str, value: float, at: int = 0):
    def change(proto):
        tensor = initializer(proto, name)
        array = numpy_helper.to_array(tensor).copy()
        array.flat[at] = value
        tensor.CopyFrom(numpy_helper.from_array(array, name))

    return change


def small(nodes, inputs, outputs, inits=(), opset=17, ir_version=8, **kw) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(inits), **kw)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def digits_input(shape=("N", 1, 8, 8), dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info("input", dtype, list(shape))


def logits(shape=("N", 10)):
    return helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(shape))


def flatten_gemm(extra=(), x="input"):
    """input -> Flatten -> Gemm(64->10) -> logits, a digits-shaped graph, with EXTRA nodes first."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.1, (64, 10)).astype(np.float32), "w")
    nodes = [*extra, helper.make_node("Flatten", [x], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w"], ["logits"], name="gemm")]
    return nodes, [w]


def damaged_bytes(damage):
    return lambda folder: written(folder, damage(DIGITS.read_bytes()))


def truncated(fraction: float):
    return damaged_bytes(lambda data: data[: int(len(data) * fraction)])


def zeroed(fraction: float, size: int = 64):
    return damaged_bytes(lambda data: zero_block(data, fraction, size))


def flipped(density: float, seed: int):
    return damaged_bytes(lambda data: flip_bits(data, density, seed))


def no_graph(folder):
    proto = onnx.ModelProto(ir_version=8)
    proto.opset_import.append(helper.make_opsetid("", 17))
    return saved(folder, proto)


def clear(field: str):
    return edited(lambda proto: getattr(proto.graph, field).__delitem__(slice(None)))


def output_nobody_produces(proto):
    proto.graph.output[0].name = "ghost"


def input_nobody_produces(proto):
    node(proto, "Relu").input[0] = "ghost"


def cycle(folder):
    nodes = [helper.make_node("Add", ["input", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second")]
    nodes, inits = flatten_gemm(nodes, x="b")
    return saved(folder, small(nodes, [digits_input()], [logits()], inits))


def duplicate_output(proto):
    node(proto, "Relu", 1).output[0] = node(proto, "Relu", 0).output[0]


def duplicate_initializer(proto):
    copy = proto.graph.initializer.add()
    copy.CopyFrom(initializer(proto, "stem.0.weight"))


def unknown_op(proto):
    node(proto, "Relu").op_type = "Frobnicate"


def custom_domain(proto):
    node(proto, "Relu").domain = "com.example"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))


def opset(version: int | None):
    def change(proto):
        del proto.opset_import[:]
        proto.opset_import.append(helper.make_opsetid("" if version else "com.microsoft", version or 1))

    return change


def ir_version(version: int):
    return edited(lambda proto: setattr(proto, "ir_version", version))


def raw_data_length(proto):
    tensor = initializer(proto, "stem.0.weight")
    tensor.raw_data = tensor.raw_data[:-4]


def weight_dtype(dtype):
    def change(proto):
        tensor = initializer(proto, "stem.0.weight")
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(dtype), tensor.name))

    return change


def input_dtype(dtype):
    return edited(lambda proto: setattr(proto.graph.input[0].type.tensor_type, "elem_type", dtype))


def conv_weight_rank_2(proto):
    tensor = initializer(proto, "stem.0.weight")
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).reshape(24, 9), tensor.name))


def gemm_weight_wrong_shape(proto):
    tensor = initializer(proto, "classifier.weight")
    tensor.CopyFrom(numpy_helper.from_array(np.zeros((10, 47), np.float32), tensor.name))


def string_initializer(proto):
    tensor = initializer(proto, "classifier.bias")
    tensor.CopyFrom(helper.make_tensor(tensor.name, TensorProto.STRING, [10], [b"x"] * 10))


def external(location: str, *, length: int | None = None, data_file: str | None = None):
    """digits_cnn with stem.0.weight stored externally at LOCATION (its bytes written to DATA_FILE, relative to
    the model's folder, if given)."""

    def build(folder: Path) -> Path:
        proto = digits()
        tensor = initializer(proto, "stem.0.weight")
        raw = tensor.raw_data
        if data_file:
            target = folder / data_file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(length or len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return saved(folder / "model", proto)

    return build


def symlink_escape(folder: Path) -> Path:
    (folder / "secret.bin").write_bytes(bytes(24 * 9 * 4))
    path = external("weights.bin")(folder)
    (path.parent / "weights.bin").symlink_to(folder / "secret.bin")
    return path


def huge_declared_dims(proto):
    tensor = initializer(proto, "stem.0.weight")
    del tensor.dims[:]
    tensor.dims.extend([24, 1, 3, 3 * 10**9])  # raw_data holds 216 floats


def if_node(folder):
    def branch(name, scale):
        k = numpy_helper.from_array(np.full((64, 10), scale, np.float32), f"{name}_w")
        return helper.make_graph([helper.make_node("MatMul", ["flat", f"{name}_w"], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["N", 10])], [k])

    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
        helper.make_node("ReduceSum", ["flat"], ["total"], name="sum", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="greater"),
        helper.make_node("If", ["positive"], ["logits"], name="choose",
                         then_branch=branch("a", 0.5), else_branch=branch("b", 2.0)),
    ]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    return saved(folder, small(nodes, [digits_input()], [logits()], [zero]))


def loop_node(folder):
    scale = numpy_helper.from_array(np.ones((8, 8), np.float32), "scale")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["carried_in", "scale"], ["carried_out"], name="body_matmul")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, None)],
    )
    trips = numpy_helper.from_array(np.array(2, np.int64), "trips")
    nodes, inits = flatten_gemm([helper.make_node("Loop", ["trips", "", "input"], ["looped"], name="repeat",
                                                  body=body)], x="looped")
    return saved(folder, small(nodes, [digits_input()], [logits()], [trips, scale, *inits]))


def output_is_input(folder):
    nodes, inits = flatten_gemm()
    return saved(folder, small(nodes, [digits_input()], [logits(), digits_input()], inits))


def only_output_is_input(folder):
    return saved(folder, small([], [digits_input()], [digits_input()]))


def zero_size_input(proto):
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0


def not_protobuf(text: bytes):
    return lambda folder: written(folder, text)


CASES = {
    "empty-file": (lambda folder: written(folder, b""), r"is empty"),
    **{f"truncated-at-{p}%": (truncated(p / 100), r"not an ONNX model|truncated|not a valid ONNX model")
       for p in (1, 10, 33, 50, 90, 99)},
    "plain-text": (not_protobuf(b"this is not a model\n"), r"not an ONNX model"),
    "json-text": (not_protobuf(b'{"graph": {"node": []}}'), r"not an ONNX model"),
    "a-tflite-renamed-onnx": (not_protobuf(b"\x1c\x00\x00\x00TFL3" + bytes(64)), r"not an ONNX model"),
    "proto-without-graph": (no_graph, r"no graph"),
    "name-not-utf-8": (damaged_bytes(lambda data: data.replace(b"\x05group", b"\x05\x80roup", 1)), r"not UTF-8"),
    "unknown-tensor-data-type": (edited(lambda proto: setattr(initializer(proto, "stem.1.bias"), "data_type", 70)),
                                 r"stem\.1\.bias.* data type 70"),
    "no-inputs": (clear("input"), r"no inputs"),
    "no-outputs": (clear("output"), r"no outputs"),
    "no-nodes": (clear("node"), r"'logits' is not an output of any node"),
    "output-nobody-produces": (edited(output_nobody_produces), r"ghost"),
    "node-input-nobody-produces": (edited(input_nobody_produces), r"ghost"),
    "cycle": (cycle, r"'(a|b)'|cycle|topolog"),
    "duplicate-node-output": (edited(duplicate_output), r"Relu_output_0"),
    "duplicate-initializer": (edited(duplicate_initializer), r"stem\.0\.weight"),
    "unknown-op-default-domain": (edited(unknown_op), r"Frobnicate"),
    "custom-domain": (edited(custom_domain), r"com\.example"),
    "opset-too-new": (edited(opset(99)), r"opset 99"),
    "opset-too-old": (edited(opset(5)), r"opset 5"),
    "no-default-opset": (edited(opset(None)), r"opset"),
    "ir-version-0": (ir_version(0), r"ir_version|IR version"),
    "ir-version-absurd": (ir_version(10**6), r"ir_version|IR version"),
    "nan-weight": (edited(set_values("stem.0.weight", np.nan)), r"stem\.0\.weight.*NaN"),
    "inf-weight": (edited(set_values("down.0.weight", -np.inf, 5)), r"down\.0\.weight.*infinite"),
    "nan-batchnorm-mean": (edited(set_values("stem.1.running_mean", np.nan)), r"stem\.1\.running_mean.*NaN"),
    "inf-batchnorm-variance": (edited(set_values("pointwise.1.running_var", np.inf)),
                               r"pointwise\.1\.running_var.*infinite"),
    "inf-gemm-bias": (edited(set_values("classifier.bias", np.inf)), r"classifier\.bias.*infinite"),
    "raw-data-wrong-length": (edited(raw_data_length), r"stem\.0\.weight"),
    "huge-declared-dims": (edited(huge_declared_dims), r"stem\.0\.weight"),
    "weight-dtype-double": (edited(weight_dtype(np.float64)), r"'stem\.0\.weight' holds DOUBLE .* declares it FLOAT"),
    "weight-dtype-int32": (edited(weight_dtype(np.int32)), r"'stem\.0\.weight' holds INT32 .* declares it FLOAT"),
    "weight-dtype-double-undeclared": (edited(weight_dtype(np.float64), declared=False), r"Conv.*(type|T)"),
    "weight-dtype-int32-undeclared": (edited(weight_dtype(np.int32), declared=False), r"Conv.*type"),
    "input-dtype-int64": (input_dtype(TensorProto.INT64), r"node name: /stem/stem\.0/Conv.*tensor\(int64\)"),
    "input-dtype-string": (input_dtype(TensorProto.STRING), r"node name: /stem/stem\.0/Conv.*tensor\(string\)"),
    "string-initializer": (edited(string_initializer), r"'classifier\.bias' holds STRING \[10\]"),
    "string-initializer-undeclared": (edited(string_initializer, declared=False), r"Gemm.*string"),
    "conv-weight-rank-2": (edited(conv_weight_rank_2), r"'stem\.0\.weight' holds FLOAT \[24, 9\]"),
    "conv-weight-rank-2-undeclared": (edited(conv_weight_rank_2, declared=False),
                                      r"node '/stem/stem\.0/Conv' \(Conv\): weight 'stem\.0\.weight' has rank 2, its input"),
    "gemm-weight-wrong-shape": (edited(gemm_weight_wrong_shape), r"'classifier\.weight' holds FLOAT \[10, 47\]"),
    "gemm-weight-wrong-shape-undeclared": (edited(gemm_weight_wrong_shape, declared=False), r"Gemm.*47"),
    "external-data-parent-dir": (external("../weights.bin", data_file="weights.bin"), r"outside the model folder"),
    "external-data-absolute-path": (external("/etc/hostname"), r"not relative"),
    "external-data-symlink-escapes": (symlink_escape, r"outside the model folder"),
    "external-data-missing": (external("weights.bin"), r"missing"),
    "external-data-over-2gb-declared": (external("weights.bin", length=3 * 2**30, data_file="model/weights.bin"),
                                        r"truncated|length"),
    "output-is-an-input": (output_is_input, r"'input'.*(input|output)"),
    "only-output-is-the-input": (only_output_is_input, r"'input'.*(input|output)"),
    "zero-size-input-dimension": (edited(zero_size_input), r"'input'.*(0|zero|empty)"),
}


# Random damage: a flip or a zeroed block in weight data leaves a valid model, which may be converted (exit 0);
# anything else must be refused like the cases above.
DAMAGED = {
    # the nodes fill the first 6% of digits_cnn.onnx, inputs, outputs and opsets the last 2%; weights the rest
    **{f"zeroed-64-bytes-at-{p}%": zeroed(p / 100) for p in (0, 1, 3, 5, 98.5, 99.5)},
    **{f"bit-flips-{d}-seed-{s}": flipped(d, s) for d in (0.0005, 0.005, 0.05) for s in (0, 1, 2)},
}

# Valid models edgeq does not support: refused with the node named (an UnsupportedError, which names no file).
UNSUPPORTED = {
    "if-node": (if_node, "choose", r"unsupported: If at choose: .*inside control flow.* \(in \S+\.onnx\)$"),
    "loop-node": (loop_node, "repeat", r"unsupported: Loop at repeat: .*inside control flow.* \(in \S+\.onnx\)$"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_refuses_a_hostile_onnx_file(sandbox, qdq, case):
    build, what = CASES[case]
    (sandbox / "in").mkdir()
    path = build(sandbox / "in")
    assert_refused(sandbox, path.name, reading_commands(path, sandbox / "out", qdq), what)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_every_command_refuses_or_reads_a_damaged_onnx_file(sandbox, qdq, case):
    (sandbox / "in").mkdir()
    path = DAMAGED[case](sandbox / "in")
    assert_refused(sandbox, path.name, reading_commands(path, sandbox / "out", qdq), r"\S", may_be_valid=True)


def symbolic_spatial_dims(proto):
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim, "NCHW", strict=True):
        dim.dim_param = name
    del proto.graph.value_info[:]


def test_symbolic_dims_a_command_needs_static_are_refused_naming_the_file(sandbox, qdq):
    """quantize, convert, compare and report fix the dimensions from the data; profile's static analysis of the
    float model alone cannot, and says which file and tensor."""
    (sandbox / "in").mkdir()
    path = edited(symbolic_spatial_dims)(sandbox / "in")
    profiling = ["profile", path, "--runs", "1", "--warmup", "0", "--no-progress"]
    assert_refused(sandbox, path.name, [profiling], r"tensor 'input' has a symbolic dimension 'C' beyond the batch")


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_control_flow_is_refused_with_the_node_and_file_named(sandbox, qdq, case):
    build, node_name, what = UNSUPPORTED[case]
    (sandbox / "in").mkdir()
    path = build(sandbox / "in")
    quantizing = [args for args in reading_commands(path, sandbox / "out", qdq) if args[0] in ("quantize", "convert")]
    assert_refused(sandbox, node_name, quantizing, what)


def test_a_function_op_onnx_strict_inference_cannot_expand_is_no_refusal(tmp_path):
    """onnx 1.23's strict shape inference fails inside MeanVarianceNormalization's function body, a valid op
    onnxruntime runs: read_proto falls back to the plain checker there instead of refusing the model."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    proto = small([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")], [x], [y], opset=13)
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(proto, full_check=True)
    assert load_model(saved(tmp_path, proto)).graph.node(0).op_type == "MeanVarianceNormalization"


# ---- the real entry point: exit status and stderr as a shell sees them


@pytest.mark.parametrize("case", ["truncated-at-50%", "external-data-parent-dir", "conv-weight-rank-2"])
def test_real_process_exits_2_with_one_line(tmp_path, case):
    path = CASES[case][0](tmp_path)
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", "convert", str(path), "--target", "tflite", "--calib", str(CALIB),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgeq: error: {path}"), result.stderr
    assert re.search(CASES[case][1], lines[0]) and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


# ---- a bounded fuzz of the entrance: mutated bytes give a model or a ModelError, never another exception


def _structure_heavy_model() -> bytes:
    """A small graph whose bytes are mostly structure (names, attributes, types), not weight data."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.3, (10, 4)).astype(np.float32), "fc")]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], name="gemm", transB=1),
    ]
    return small(nodes, [digits_input()], [logits()], inits).SerializeToString()


SEEDS = {"structure-heavy": _structure_heavy_model(), "digits_cnn": DIGITS.read_bytes()}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        region = draw(st.sampled_from(["anywhere", "nodes", "interface"]))  # digits_cnn: nodes first, I/O last
        at = draw({"anywhere": st.integers(0, len(data) - 1), "nodes": st.integers(0, min(len(data), 3200) - 1),
                   "interface": st.integers(max(0, len(data) - 1000), len(data) - 1)}[region])
        kind = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate"]))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
        if not data:
            break
    return bytes(data)


@settings(derandomize=True, max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated())
def test_the_onnx_entrance_reads_a_model_or_raises_model_error(tmp_path, data):
    path = tmp_path / "fuzzed.onnx"
    path.write_bytes(data)
    with time_limit(SECONDS_PER_COMMAND):
        try:
            load_model(path)
        except ModelError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
