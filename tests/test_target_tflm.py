"""The TFLite Micro target: the measured arena is the smallest that works, the C++ sources compile and hold the
model byte for byte, the op resolver list is right, emit writes atomically, runs match LiteRT's reference kernels.

Arena checks run the real tflite-micro interpreter in a separate process of the test's own (arena - 16 may crash
it), so they do not rely on the module's prober.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tflite_cases import activation, constant, random_input, single_op

from edgeq.errors import EdgeqError
from edgeq.io import files
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflm import arena as arenas
from edgeq.targets.tflm import artifact as tflm
from edgeq.targets.tflm import sources
from edgeq.tflite_format.flatbuffer import Graph, Tensor, write

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------ models


def conv_model(rng, channels_in=8, channels_out=16, size=16, kernel=3) -> bytes:
    s_in = 0.05
    w_scales = rng.uniform(1e-3, 1e-2, channels_out).astype(np.float32)
    return single_op(
        "CONV_2D",
        [
            activation("x", (1, size, size, channels_in), s_in, -3),
            constant(
                "w",
                rng.integers(-127, 128, (channels_out, kernel, kernel, channels_in)).astype(np.int8),
                scale=w_scales,
            ),
            constant(
                "b",
                rng.integers(-1000, 1000, channels_out).astype(np.int32),
                scale=(np.float32(s_in) * w_scales).astype(np.float32),
            ),
        ],
        [activation("y", (1, size, size, channels_out), 0.1, 5)],
        dict(
            Padding="SAME",
            StrideW=1,
            StrideH=1,
            DilationWFactor=1,
            DilationHFactor=1,
            FusedActivationFunction="RELU",
        ),
    )


def _add(graph: Graph, opcode: str, inputs: list[int], output, options=None) -> int:
    out = graph.add_tensor(output)
    lookup(opcode).add_to(graph, inputs, [out], options)
    return out


def _fc(graph, rng, x: int, width_in: int, width_out: int, name: str) -> int:
    s_in = float(graph.tensors[x].quantization.scale[0])
    w_scales = rng.uniform(1e-3, 1e-2, width_out).astype(np.float32)
    w = graph.add_tensor(
        constant(f"{name}.w", rng.integers(-127, 128, (width_out, width_in)).astype(np.int8), scale=w_scales)
    )
    b = graph.add_tensor(
        constant(
            f"{name}.b",
            rng.integers(-1000, 1000, width_out).astype(np.int32),
            scale=(np.float32(s_in) * w_scales).astype(np.float32),
        )
    )
    return _add(
        graph,
        "FULLY_CONNECTED",
        [x, w, b],
        activation(name, (1, width_out), 0.05, -3),
        dict(FusedActivationFunction="NONE", KeepNumDims=False),
    )


def fc_chain(rng, layers=2, width=256) -> bytes:
    """Wide per-channel FC layers and tiny activations: the arena exceeds the recorded total."""
    graph = Graph()
    x = graph.add_tensor(activation("x", (1, width), 0.05, -3))
    graph.inputs = [x]
    for i in range(layers):
        x = _fc(graph, rng, x, width, width, f"fc{i}")
    graph.outputs = [x]
    return write(graph)


def mixed_model(rng) -> bytes:
    """float -> QUANTIZE -> CONV -> DEPTHWISE -> CONV -> MAX_POOL -> RESHAPE -> FC -> SOFTMAX -> DEQUANTIZE."""
    graph = Graph()
    x = graph.add_tensor(float_tensor("x", (1, 8, 8, 3)))
    graph.inputs = [x]
    q = _add(graph, "QUANTIZE", [x], activation("q", (1, 8, 8, 3), 0.02, 1))
    conv = dict(
        Padding="SAME",
        StrideW=1,
        StrideH=1,
        DilationWFactor=1,
        DilationHFactor=1,
        FusedActivationFunction="RELU6",
    )

    def conv2d(src, cin, cout, name):
        w_scales = rng.uniform(1e-3, 1e-2, cout).astype(np.float32)
        s_in = float(graph.tensors[src].quantization.scale[0])
        w = graph.add_tensor(
            constant(f"{name}.w", rng.integers(-127, 128, (cout, 3, 3, cin)).astype(np.int8), scale=w_scales)
        )
        b = graph.add_tensor(
            constant(
                f"{name}.b", np.zeros(cout, np.int32), scale=(np.float32(s_in) * w_scales).astype(np.float32)
            )
        )
        return _add(graph, "CONV_2D", [src, w, b], activation(name, (1, 8, 8, cout), 0.03, -128), conv)

    c1 = conv2d(q, 3, 8, "c1")
    dw_scales = rng.uniform(1e-3, 1e-2, 8).astype(np.float32)
    dw_w = graph.add_tensor(
        constant("dw.w", rng.integers(-127, 128, (1, 3, 3, 8)).astype(np.int8), scale=dw_scales, axis=3)
    )
    dw_b = graph.add_tensor(
        constant("dw.b", np.zeros(8, np.int32), scale=(np.float32(0.03) * dw_scales).astype(np.float32))
    )
    dw = _add(
        graph,
        "DEPTHWISE_CONV_2D",
        [c1, dw_w, dw_b],
        activation("dw", (1, 8, 8, 8), 0.03, -128),
        dict(conv, DepthMultiplier=1),
    )
    c2 = conv2d(dw, 8, 8, "c2")
    pool = _add(
        graph,
        "MAX_POOL_2D",
        [c2],
        activation("pool", (1, 4, 4, 8), 0.03, -128),
        dict(
            Padding="VALID",
            StrideW=2,
            StrideH=2,
            FilterWidth=2,
            FilterHeight=2,
            FusedActivationFunction="NONE",
        ),
    )
    shape = graph.add_tensor(constant("shape", np.array([1, 128], np.int32)))
    flat = _add(graph, "RESHAPE", [pool, shape], activation("flat", (1, 128), 0.03, -128))
    logits = _fc(graph, rng, flat, 128, 10, "fc")
    probs = _add(graph, "SOFTMAX", [logits], activation("probs", (1, 10), 1 / 256, -128), dict(Beta=1.0))
    graph.outputs = [_add(graph, "DEQUANTIZE", [probs], float_tensor("y", (1, 10)))]
    return write(graph)


def float_tensor(name, shape) -> Tensor:
    return Tensor(name, shape, np.float32)


# ------------------------------------------------------------------------------------------------ independent checks

_RUN_AT_SIZES = """
import sys
import numpy as np
from tflite_micro import runtime

model = open(sys.argv[1], "rb").read()
for size in map(int, sys.argv[2:]):
    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=size)
        detail = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
        interpreter.invoke()
        print(size, "ok", flush=True)
    except RuntimeError:
        print(size, "fail", flush=True)
"""


def runs_at(tmp_path, model_bytes: bytes, *sizes: int) -> list[bool]:
    """Whether TFLite Micro allocates and invokes with each arena size, in order; a crash fails the rest."""
    path = tmp_path / "probe.tflite"
    path.write_bytes(model_bytes)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AT_SIZES, str(path), *map(str, sizes)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    answers = dict(line.split() for line in done.stdout.splitlines())
    return [answers.get(str(size)) == "ok" for size in sizes]


def assert_smallest(tmp_path, model_bytes: bytes, report: arenas.ArenaReport) -> None:
    assert report.arena_bytes % 16 == 0
    assert runs_at(tmp_path, model_bytes, report.arena_bytes, report.arena_bytes - 16) == [True, False]
    assert report.recorded_head + report.recorded_tail == report.recorded_total
    assert (
        f"{report.recorded_total} B" in report.explanation
        and f"arena {report.arena_bytes} B" in report.explanation
    )


# ------------------------------------------------------------------------------------------------ arena


@pytest.mark.parametrize(
    ("build", "relation"),
    [
        (lambda rng: conv_model(rng), "equals"),  # big activations: arena == head + tail
        (lambda rng: fc_chain(rng), "exceeds"),  # per-channel temp memory in Prepare > activations
        (mixed_model, None),
    ],
    ids=["conv", "fc_chain", "mixed"],
)
def test_arena_is_the_smallest_working(tmp_path, build, relation):
    model_bytes = build(np.random.default_rng(0))
    report = arenas.measure_arena(model_bytes)
    assert_smallest(tmp_path, model_bytes, report)
    if relation == "equals":
        assert report.arena_bytes == report.recorded_total and "equals" in report.explanation
    if relation == "exceeds":
        assert report.arena_bytes > report.recorded_total and "exceeds" in report.explanation


@SETTINGS
@given(
    kind=st.sampled_from(["conv", "fc"]),
    channels=st.integers(1, 96),
    size=st.integers(1, 24),
    seed=st.integers(0, 2**32 - 1),
)
def test_arena_is_the_smallest_working_for_drawn_models(tmp_path_factory, kind, channels, size, seed):
    rng = np.random.default_rng(seed)
    if kind == "conv":
        model_bytes = conv_model(rng, channels_in=int(rng.integers(1, 9)), channels_out=channels, size=size)
    else:
        model_bytes = fc_chain(rng, layers=int(rng.integers(1, 4)), width=channels * size)
    assert_smallest(tmp_path_factory.mktemp("arena"), model_bytes, arenas.measure_arena(model_bytes))


def test_failed_probes_print_nothing(capfd):
    # Probes below the minimum of this model crash the interpreter and print TFLM errors: none may show.
    report = arenas.measure_arena(fc_chain(np.random.default_rng(0)))
    assert report.probes > 3
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_search_on_a_model_with_megabytes_of_weights_is_fast():
    model_bytes = fc_chain(np.random.default_rng(0), layers=4, width=1024)
    assert len(model_bytes) > 4_000_000
    report = arenas.measure_arena(model_bytes)
    # Galloping from the recorded total: a few probes instead of ~20 bisection steps from 64 KiB, no more
    # than one invoke; about 1 s measured, mostly the probe process starting.
    assert report.probes <= 24 and report.seconds < 15, report


def test_a_model_tflm_rejects_is_an_error_not_a_search():
    # SOFTMAX int8 output must be (1/256, -128): TFLM fails in Prepare for a reason that is not memory.
    model_bytes = single_op(
        "SOFTMAX", [activation("x", (1, 10), 0.1, 0)], [activation("y", (1, 10), 0.1, 0)], dict(Beta=1.0)
    )
    with pytest.raises(EdgeqError, match="TFLite Micro cannot allocate the model"):
        arenas.measure_arena(model_bytes)


def test_a_too_small_starting_arena_is_doubled(monkeypatch, tmp_path):
    # From 1 KiB the first probes crash the interpreter or run out of memory; the search doubles past them.
    model_bytes = conv_model(np.random.default_rng(4))
    expected = arenas.measure_arena(model_bytes).arena_bytes
    monkeypatch.setattr(arenas, "default_arena_size", lambda _: 1000)
    assert arenas.measure_arena(model_bytes).arena_bytes == expected


def test_a_broken_probe_process_is_an_error(monkeypatch):
    monkeypatch.setattr(arenas, "_PROBE_CHILD", "import sys; sys.exit('no interpreter here')")
    with pytest.raises(EdgeqError, match="probe process failed: no interpreter here"):
        arenas.measure_arena(conv_model(np.random.default_rng(0)))


def test_stderr_is_restored_after_an_error(capfd):
    with pytest.raises(RuntimeError), arenas.captured_stderr() as log:
        os.write(2, b"captured\n")
        raise RuntimeError
    os.write(2, b"visible\n")
    assert log.text == "captured\n" and capfd.readouterr().err == "visible\n"


# ------------------------------------------------------------------------------------------------ C++ sources

_MAIN = """
#include <cstdint>
#include <cstdio>
#include "NAME_model_data.h"

int main(int, char** argv) {
  std::FILE* out = std::fopen(argv[1], "wb");
  std::fwrite(NAME_model, 1, NAME_model_len, out);
  std::fclose(out);
  std::printf("%d %u %d\\n", MACRO_ARENA_SIZE, NAME_model_len,
              static_cast<int>(reinterpret_cast<std::uintptr_t>(NAME_model) % 16));
  return 0;
}
"""


@pytest.fixture(scope="module")
def mixed():
    model_bytes = mixed_model(np.random.default_rng(0))
    return model_bytes, arenas.measure_arena(model_bytes)


def test_sources_compile_and_hold_the_model(tmp_path, mixed):
    model_bytes, arena = mixed
    name = "mixed_net2"
    header, source = sources.c_source(model_bytes, name, arena=arena)
    (tmp_path / f"{name}_model_data.h").write_text(header)
    (tmp_path / f"{name}_model_data.cc").write_text(source)
    (tmp_path / "main.cc").write_text(_MAIN.replace("NAME", name).replace("MACRO", name.upper()))
    flags = ["g++", "-std=c++17", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", str(tmp_path)]
    for unit in ("main", f"{name}_model_data"):
        subprocess.run(
            [*flags, "-c", str(tmp_path / f"{unit}.cc"), "-o", str(tmp_path / f"{unit}.o")], check=True
        )
    binary = tmp_path / "dump"
    subprocess.run(
        ["g++", str(tmp_path / "main.o"), str(tmp_path / f"{name}_model_data.o"), "-o", str(binary)],
        check=True,
    )
    printed = subprocess.run(
        [str(binary), str(tmp_path / "dumped.bin")], capture_output=True, text=True, check=True
    )
    assert (tmp_path / "dumped.bin").read_bytes() == model_bytes
    assert printed.stdout.split() == [str(arena.arena_bytes), str(len(model_bytes)), "0"]
    lines = source.splitlines()
    rows = [line for line in lines if line.startswith("  0x")]
    assert all(line.count("0x") == 12 for line in rows[:-1]) and 1 <= rows[-1].count("0x") <= 12
    assert f"alignas(16) const unsigned char {name}_model[] = {{" in lines


def test_op_list_and_resolver(mixed):
    model_bytes, arena = mixed
    expected = [
        "AddQuantize",
        "AddConv2D",
        "AddDepthwiseConv2D",
        "AddMaxPool2D",
        "AddReshape",
        "AddFullyConnected",
        "AddSoftmax",
        "AddDequantize",
    ]  # first use; the second conv adds nothing
    assert sources.resolver_ops(model_bytes) == expected
    header, _ = sources.c_source(model_bytes, "mixed", arena=arena)
    assert "//   tflite::MicroMutableOpResolver<8> mixed_op_resolver;" in header
    calls = [
        line.split(".", 1)[1] for line in header.splitlines() if line.startswith("//   mixed_op_resolver.")
    ]
    assert calls == [f"{method}();" for method in expected]
    assert f"#define MIXED_ARENA_SIZE {arena.arena_bytes}\n" in header


@pytest.mark.parametrize(
    ("stem", "identifier"),
    [
        ("mobilenet-v2.int8", "mobilenet_v2_int8"),
        ("9lives", "model_9lives"),
        ("__x__y", "x_y"),
        ("kws", "kws"),
    ],
)
def test_identifier_from_a_file_stem(stem, identifier):
    assert sources.c_identifier(stem) == identifier


@pytest.mark.parametrize("name", ["my-model", "9lives", "_x", "a__b", "x_", "", "../evil", "naïve"])
def test_bad_names_are_refused(tmp_path, mixed, name):
    with pytest.raises(EdgeqError, match="not a C identifier"):
        sources.c_source(mixed[0], name, arena=mixed[1])
    with pytest.raises(EdgeqError, match="not a C identifier"):
        tflm.emit(mixed[0], tmp_path / "out", name, arena=mixed[1])
    assert not (tmp_path / "out").exists()
    with pytest.raises(EdgeqError, match="cannot make a C identifier"):
        sources.c_identifier("-.-")


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_derived_identifiers_are_valid(stem):
    try:
        name = sources.c_identifier(stem)
    except EdgeqError:
        assert not any(c.isascii() and c.isalnum() for c in stem)
        return
    sources.check_name(name)


# ------------------------------------------------------------------------------------------------ runs and emit


def float_samples(count: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(0, 1, (1, 8, 8, 3)).astype(np.float32)] for _ in range(count)]


def test_validate_matches_litert_reference_kernels(mixed):
    model_bytes, arena = mixed
    samples = float_samples(4)
    result = tflm.validate(model_bytes, samples, arena=arena)
    expected = np.concatenate([run_litert(model_bytes, s, kernels="reference")[0] for s in samples])
    assert result["outputs"][0].shape == (4, 10)
    np.testing.assert_array_equal(result["outputs"][0], expected)
    assert (
        result["input_details"][0]["shape"] == [1, 8, 8, 3]
        and result["input_details"][0]["dtype"] == "float32"
    )
    assert result["output_details"][0]["dtype"] == "float32" and result["arena_bytes"] == arena.arena_bytes

    int8_model = conv_model(np.random.default_rng(2))
    rng = np.random.default_rng(3)
    int8_samples = [[random_input(activation("x", (1, 16, 16, 8), 0.05, -3), rng)] for _ in range(3)]
    got = tflm.validate(int8_model, int8_samples)["outputs"][0]
    want = np.concatenate([run_litert(int8_model, s, kernels="reference")[0] for s in int8_samples])
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def test_validate_refuses_bad_samples(mixed, capfd):
    model_bytes, arena = mixed
    with pytest.raises(EdgeqError, match="Dimension mismatch"):
        tflm.validate(model_bytes, [[np.zeros((1, 8, 8, 4), np.float32)]], arena=arena)
    with pytest.raises(EdgeqError, match="has 2 arrays"):
        tflm.validate(model_bytes, [[np.zeros((1, 8, 8, 3), np.float32)] * 2], arena=arena)
    with pytest.raises(EdgeqError, match="at least one sample"):
        tflm.validate(model_bytes, [], arena=arena)
    assert capfd.readouterr().err == ""


def test_emit_writes_the_three_files(tmp_path, mixed):
    model_bytes, arena = mixed
    report = tflm.emit(model_bytes, tmp_path / "out", "mixed", float_samples(2), arena=arena)
    header, source = sources.c_source(model_bytes, "mixed", arena=arena)
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["mixed.tflite", "mixed_model_data.cc", "mixed_model_data.h"]
    assert (out / "mixed.tflite").read_bytes() == model_bytes
    assert (out / "mixed_model_data.h").read_text() == header
    assert (out / "mixed_model_data.cc").read_text() == source
    assert report["flash_bytes"] == len(model_bytes) and report["arena_bytes"] == arena.arena_bytes
    assert report["recorded_total"] == arena.recorded_total and report["samples_run"] == 2
    assert report["ops"] == sources.resolver_ops(model_bytes)
    assert report["op_resolver"] == "tflite::MicroMutableOpResolver<8>"
    assert report["files"] == {
        "tflite": str(out / "mixed.tflite"),
        "header": str(out / "mixed_model_data.h"),
        "source": str(out / "mixed_model_data.cc"),
    }
    # Without inputs the model runs once on zeros.
    assert tflm.emit(model_bytes, out, "again", arena=arena)["samples_run"] == 1


def test_emit_writes_nothing_when_the_run_fails(tmp_path, mixed):
    model_bytes, arena = mixed
    with pytest.raises(EdgeqError, match="Dimension mismatch"):
        tflm.emit(model_bytes, tmp_path / "out", "mixed", [[np.zeros((1, 4, 4, 3), np.float32)]], arena=arena)
    assert not (tmp_path / "out").exists()


def test_emit_leaves_no_partial_file_when_a_write_fails(tmp_path, mixed, monkeypatch):
    model_bytes, arena = mixed
    out = tmp_path / "out"
    out.mkdir()
    old = {
        "mixed.tflite": b"old model",
        "mixed_model_data.h": b"old header",
        "mixed_model_data.cc": b"old source",
    }
    for file_name, content in old.items():
        (out / file_name).write_bytes(content)
    real_fsync = files.os.fsync
    calls = []

    def failing_fsync(fd):  # the header is the second file written: its write fails after its data went out
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        tflm.emit(model_bytes, out, "mixed", arena=arena)
    assert sorted(os.listdir(out)) == sorted(old)  # no temporary file left behind
    assert (out / "mixed.tflite").read_bytes() == model_bytes  # written whole before the failure
    assert (out / "mixed_model_data.h").read_bytes() == old["mixed_model_data.h"]  # untouched, not truncated
    assert (out / "mixed_model_data.cc").read_bytes() == old["mixed_model_data.cc"]
