"""The TFLite Micro target: the arena a model needs, the C++ sources that embed it, and runs in TFLM's interpreter.

Arena. The answer is the smallest ``arena_size`` (on a 16-byte grid) with which the TFLite Micro Python interpreter
both allocates and invokes the model. Starting from the total that ``print_allocations()`` records (the tail of
persistent data plus the head of planned activations), the search gallops down or up in steps 16, 32, 64, ...
until the answer changes, then bisects; invoking runs only once at the end (memory planning happens entirely
in AllocateTensors). The recorded total is not the arena: GetNonPersistentUsedBytes reports where the head/temp
pointer is *after* allocation, and the temporary memory kernels use while preparing (temp TfLiteTensors, int32
copies of per-channel zero points) was released by then. When that peak exceeds the planned activations (small
activations, wide per-channel layers) the arena must be larger than the total; otherwise the two are equal.

Probes run in a child process. On a too-small arena this tflite-micro crashes instead of raising: a segfault in
RecordingMicroAllocator::Create when the allocator objects do not fit, and in kernel Prepare when an unchecked
temp allocation fails, e.g. 16 bytes below the minimum for two FC layers. The parent counts a dead child as a
failed probe and starts another; the child's stderr (TFLM's error messages) goes to a file, never to the user.

The measured arena comes from the x86-64 interpreter with reference kernels and the recording allocator:
a 32-bit MCU build has smaller structs, and optimized kernels (CMSIS-NN) request their own scratch buffers,
so re-check on the device with the RecordingMicroInterpreter.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.io.files import prepare_output_dir, write_bytes_atomic, write_text_atomic
from edgeq.targets.tflite.interpreters import default_arena_size, invoke_tflm, tflm_interpreter
from edgeq.tflite_format.flatbuffer import read

ARENA_ALIGNMENT = 16
MAX_ARENA = 1 << 30
BYTES_PER_LINE = 12

# MicroMutableOpResolver's method for each builtin edgeq writes (tensorflow/lite/micro/micro_mutable_op_resolver.h).
RESOLVER_METHODS = {
    "ADD": "AddAdd",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "FULLY_CONNECTED": "AddFullyConnected",
    "HARD_SWISH": "AddHardSwish",
    "LOGISTIC": "AddLogistic",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "QUANTIZE": "AddQuantize",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "SOFTMAX": "AddSoftmax",
    "TRANSPOSE": "AddTranspose",
}

_RECORDED = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_OUT_OF_MEMORY = ("Failed to allocate", "Failed to resize", "missing:")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")


@dataclass(frozen=True)
class ArenaReport:
    arena_bytes: int  # smallest working arena_size, a multiple of 16
    recorded_total: int  # print_allocations(): "Arena allocation total"
    recorded_head: int | None  # planned activations and scratch buffers (non-persistent)
    recorded_tail: int | None  # persistent: allocator, eval tensors, node structs, kernel op data
    explanation: str
    probes: int
    seconds: float


# ------------------------------------------------------------------------------------------------ stderr capture


@dataclass
class _Log:
    text: str = ""

    def first_line(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "no message")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[_Log]:
    """Point the C-level stderr (fd 2) at a temporary file for the block; restored even on error."""
    log = _Log()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield log
            finally:
                os.dup2(saved, 2)
                capture.seek(0)
                log.text = capture.read().decode("utf-8", "replace")
    finally:
        os.close(saved)


def _out_of_memory(message: str) -> bool:
    return any(marker in message for marker in _OUT_OF_MEMORY)


# ------------------------------------------------------------------------------------------------ probing


# The child imports only numpy and tflite_micro (edgeq's packages import onnx and friends: seconds, not 0.25 s).
# Its stderr goes to a log file that the parent reads after each answer.
_PROBE_CHILD = """
import sys
import numpy as np
from tflite_micro import runtime

model_bytes = open(sys.argv[1], "rb").read()
for line in sys.stdin:
    mode, size = line.split()
    try:
        interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=int(size))
        if mode == "invoke":
            for i in range(int(sys.argv[2])):
                detail = interpreter.get_input_details(i)
                interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), i)
            interpreter.invoke()
        print("ok", flush=True)
    except (RuntimeError, ValueError):
        print("fail", flush=True)
"""


class _Prober:
    """Asks a child process whether an arena size works; a crashed child is a failed probe and is replaced."""

    def __init__(self, model_path: Path, num_inputs: int, log_path: Path):
        self.args = [sys.executable, "-c", _PROBE_CHILD, str(model_path), str(num_inputs)]
        self.log_path = log_path
        self.log_path.touch()
        self.process: subprocess.Popen | None = None
        self.count = 0
        self.messages = ""  # what TFLite Micro printed during the last probe
        self.crashed = False  # whether the last probe killed the interpreter

    def works(self, size: int, *, invoke: bool) -> bool:
        self.count += 1
        if self.process is None:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
                )
        logged = self.log_path.stat().st_size
        try:
            self.process.stdin.write(f"{'invoke' if invoke else 'alloc'} {size}\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        code = None if answer else self.process.wait()
        self.crashed = code is not None and code < 0
        with open(self.log_path, "rb") as log:
            log.seek(logged)
            self.messages = log.read().decode("utf-8", "replace").strip()
        if answer:
            return answer.strip() == "ok"
        self.process = None
        if code >= 0:  # not killed by a signal: the child itself is broken
            last = self.messages.splitlines()[-1] if self.messages else f"exit status {code}"
            raise EdgeqError(f"the TFLite Micro probe process failed: {last}")
        return False

    def first_message(self) -> str:
        first = next((line.strip() for line in self.messages.splitlines() if line.strip()), "no message")
        return f"{first} (the interpreter crashed)" if self.crashed else first

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()
            self.process = None


def _smallest(works, fails: int, good: int) -> int:
    """Bisect the 16-byte grid between an arena that FAILS and one that is GOOD."""
    while good - fails > ARENA_ALIGNMENT:
        middle = fails + (good - fails) // (2 * ARENA_ALIGNMENT) * ARENA_ALIGNMENT
        if works(middle):
            good = middle
        else:
            fails = middle
    return good


def _gallop(works, start: int, upper: int) -> tuple[int, int]:
    """A failing and a working size around START, stepping 16, 32, 64, ... away from it (UPPER works)."""
    step = ARENA_ALIGNMENT
    if works(start):
        good = start
        while good - step > 0:
            if not works(good - step):
                return good - step, good
            good -= step
            step *= 2
        return 0, good
    fails = start
    while fails + step < upper and not works(fails + step):
        fails += step
        step *= 2
    return fails, min(fails + step, upper)


def _round_up(size: int) -> int:
    return -(-size // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _require_tflm() -> None:
    try:
        from tflite_micro import runtime  # noqa: F401
    except ImportError:
        raise EdgeqError(
            "running TFLite Micro needs its interpreter: pip install 'edgeq[tflm]' (Linux x86_64)"
        ) from None


def _recorded(model_bytes: bytes, arena_size: int) -> dict[str, int]:
    """The RecordingMicroAllocator's totals for a working ARENA_SIZE (it prints them to fd 2)."""
    with _captured_stderr() as log:
        interpreter = tflm_interpreter(model_bytes, arena_size)
        interpreter.print_allocations()
    recorded = {name: int(value) for name, value in _RECORDED.findall(log.text)}
    if "total" not in recorded:
        raise EdgeqError(f"TFLite Micro printed no allocation total: {log.first_line()}")
    return recorded


def _explain(arena: int, recorded: dict[str, int]) -> str:
    total = recorded["total"]
    parts = (
        f"head {recorded['head']} + tail {recorded['tail']}" if {"head", "tail"} <= recorded.keys() else ""
    )
    recorded_text = f"the recorded allocation total {total} B" + (f" ({parts})" if parts else "")
    if arena == total:
        return f"arena {arena} B equals {recorded_text}: planned activations plus persistent data"
    if arena > total:
        return (
            f"arena {arena} B exceeds {recorded_text} by {arena - total} B: kernels need temporary memory while "
            "preparing (temp tensors, per-channel zero points) beyond the planned activations, and the total "
            "is recorded after that memory was released"
        )
    return (
        f"arena {arena} B is {total - arena} B below {recorded_text}: alignment padding counted in the total"
    )


def measure_arena(model_bytes: bytes) -> ArenaReport:
    """The smallest arena_size (multiple of 16) with which TFLite Micro allocates and invokes MODEL_BYTES."""
    _require_tflm()
    started = time.perf_counter()
    num_inputs = len(read(model_bytes).inputs)
    with tempfile.TemporaryDirectory(prefix="edgeq-tflm-") as scratch:
        model_path = Path(scratch) / "model.tflite"
        model_path.write_bytes(model_bytes)
        prober = _Prober(model_path, num_inputs, Path(scratch) / "probe.log")
        try:
            allocates = functools.partial(prober.works, invoke=False)
            runs = functools.partial(prober.works, invoke=True)
            upper = _round_up(default_arena_size(model_bytes))
            while not allocates(upper):
                if not (prober.crashed or _out_of_memory(prober.messages)) or upper >= MAX_ARENA:
                    raise EdgeqError(f"TFLite Micro cannot allocate the model: {prober.first_message()}")
                upper *= 2
            start = min(upper, max(ARENA_ALIGNMENT, _round_up(_recorded(model_bytes, upper)["total"])))
            arena = _smallest(allocates, *_gallop(allocates, start, upper))
            if not runs(arena):
                if not runs(upper):
                    raise EdgeqError(f"TFLite Micro cannot invoke the model: {prober.first_message()}")
                arena = _smallest(runs, arena, upper)
        finally:
            prober.close()
    recorded = _recorded(model_bytes, arena)
    return ArenaReport(
        arena_bytes=arena,
        recorded_total=recorded["total"],
        recorded_head=recorded.get("head"),
        recorded_tail=recorded.get("tail"),
        explanation=_explain(arena, recorded),
        probes=prober.count,
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------------------------------ C++ sources


def c_identifier(stem: str) -> str:
    """A C identifier from a file stem: invalid characters become '_', runs of '_' collapse, no leading digit."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")
    if not name:
        raise EdgeqError(f"cannot make a C identifier from {stem!r}: it has no letters or digits")
    return f"model_{name}" if name[0].isdigit() else name


def _check_name(name: str) -> None:
    # No leading '_' or '__' anywhere: C and C++ reserve those identifiers.
    if not _IDENTIFIER.fullmatch(name):
        suggestion = ""
        with contextlib.suppress(EdgeqError):
            suggestion = f"; use {c_identifier(name)!r}"
        raise EdgeqError(
            f"model name {name!r} is not a C identifier (letters, digits, single '_'){suggestion}"
        )


def resolver_ops(model_bytes: bytes) -> list[str]:
    """MicroMutableOpResolver Add calls for the model's operators, in order of first use."""
    methods = []
    for op in read(model_bytes).operators:
        method = RESOLVER_METHODS.get(op.opcode)
        if method is None:
            raise EdgeqError(f"edgeq has no MicroMutableOpResolver method for {op.opcode}")
        if method not in methods:
            methods.append(method)
    return methods


_HEX_CELLS = np.frombuffer(b"".join(b"0x%02x, " % value for value in range(256)), np.uint8).reshape(256, 6)


def _byte_lines(data: bytes) -> str:
    """'  0x28, 0x00, ...,' lines of 12 bytes, built with numpy (a 4 MB model takes 0.1 s, not 1.2 s)."""
    cells = _HEX_CELLS[np.frombuffer(data, np.uint8)]
    full = len(data) // BYTES_PER_LINE * BYTES_PER_LINE
    text = []
    for rows in (cells[:full].reshape(-1, BYTES_PER_LINE * 6), cells[full:].reshape(1, -1)):
        if rows.size:
            lines = np.empty((len(rows), rows.shape[1] + 2), np.uint8)
            lines[:, :2] = ord(" ")
            lines[:, 2:-1] = rows[:, :-1]  # without the last cell's trailing space
            lines[:, -1] = ord("\n")
            text.append(lines.tobytes().decode("ascii"))
    return "".join(text).rstrip("\n")


def c_source(model_bytes: bytes, name: str, *, arena: ArenaReport | None = None) -> tuple[str, str]:
    """(header, source) of ``<name>_model_data``: the model as a 16-byte aligned array, its length, the arena
    size and the op resolver to register."""
    _check_name(name)
    arena = arena or measure_arena(model_bytes)
    methods = resolver_ops(model_bytes)
    macro = name.upper()
    guard = f"{macro}_MODEL_DATA_H_"
    resolver_lines = "\n".join(f"//   {name}_op_resolver.{method}();" for method in methods)
    header = f"""\
// {name}_model_data.h: generated by edgeq. The model {name}.tflite embedded as a C array for TFLite Micro.
#ifndef {guard}
#define {guard}

// Tensor arena: the smallest that allocates and invokes the model in the TFLite Micro Python interpreter
// (x86-64, reference kernels); the allocator recorded {arena.recorded_total} bytes in use. Re-check on the device:
// a 32-bit build needs a little less, optimized kernels (CMSIS-NN) may need scratch buffers of their own.
#define {macro}_ARENA_SIZE {_round_up(arena.arena_bytes)}

// Operators to register ({len(methods)}):
//   tflite::MicroMutableOpResolver<{len(methods)}> {name}_op_resolver;
{resolver_lines}

extern const unsigned char {name}_model[];
extern const unsigned int {name}_model_len;

#endif  // {guard}
"""
    source = f"""\
// {name}_model_data.cc: generated by edgeq from {name}.tflite ({len(model_bytes)} bytes).
// The interpreter reads weights in place, so the array keeps the flatbuffer's 16-byte data alignment.
#include "{name}_model_data.h"

alignas(16) const unsigned char {name}_model[] = {{
{_byte_lines(model_bytes)}
}};
const unsigned int {name}_model_len = {len(model_bytes)};
"""
    return header, source


# ------------------------------------------------------------------------------------------------ runs


def _details(detail: dict) -> dict:
    quantization = detail["quantization_parameters"]
    return {
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scales": [float(s) for s in quantization["scales"]],
        "zero_points": [int(z) for z in quantization["zero_points"]],
        "quantized_dimension": int(quantization["quantized_dimension"]),
    }


def validate(model_bytes: bytes, inputs: list[list[np.ndarray]], *, arena: ArenaReport | None = None) -> dict:
    """Run each sample (one array per model input, in the model's shape) in TFLite Micro with the measured arena.

    ``outputs[j]`` concatenates every sample's output j along axis 0 (the integer reference's batch layout).
    """
    if not inputs:
        raise EdgeqError("validate needs at least one sample")
    arena = arena or measure_arena(model_bytes)
    graph = read(model_bytes)
    per_sample = []
    try:
        with _captured_stderr() as log:
            interpreter = tflm_interpreter(model_bytes, arena.arena_bytes)
            for k, sample in enumerate(inputs):
                if len(sample) != len(graph.inputs):
                    raise EdgeqError(
                        f"sample {k} has {len(sample)} arrays; the model has {len(graph.inputs)} inputs"
                    )
                per_sample.append(invoke_tflm(interpreter, sample, len(graph.outputs)))
                interpreter.reset()  # every sample starts from the initial state (matters for stateful models)
    except (RuntimeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else log.first_line()
        raise EdgeqError(f"TFLite Micro failed on sample {len(per_sample)}: {message}") from None
    return {
        "outputs": [np.concatenate([outs[j] for outs in per_sample]) for j in range(len(graph.outputs))],
        "input_details": [_details(interpreter.get_input_details(i)) for i in range(len(graph.inputs))],
        "output_details": [_details(interpreter.get_output_details(i)) for i in range(len(graph.outputs))],
        "arena_bytes": arena.arena_bytes,
        "samples": len(inputs),
    }


def emit(
    model_bytes: bytes,
    outdir: str | os.PathLike,
    name: str,
    inputs: list[list[np.ndarray]] | None = None,
    *,
    arena: ArenaReport | None = None,
) -> dict:
    """Write ``<name>.tflite``, ``<name>_model_data.h`` and ``<name>_model_data.cc`` into OUTDIR after running
    the model in TFLite Micro with the measured arena (on INPUTS, or once on zeros). Every file is written
    atomically, and only after the run succeeded."""
    _check_name(name)
    arena = arena or measure_arena(model_bytes)
    header, source = c_source(model_bytes, name, arena=arena)
    if inputs is None:
        graph = read(model_bytes)
        inputs = [[np.zeros(graph.tensors[i].shape, graph.tensors[i].dtype) for i in graph.inputs]]
    run = validate(model_bytes, inputs, arena=arena)
    out = prepare_output_dir(outdir)
    files = {
        "tflite": out / f"{name}.tflite",
        "header": out / f"{name}_model_data.h",
        "source": out / f"{name}_model_data.cc",
    }
    write_bytes_atomic(files["tflite"], model_bytes)
    write_text_atomic(files["header"], header)
    write_text_atomic(files["source"], source)
    ops = resolver_ops(model_bytes)
    return {
        "name": name,
        "flash_bytes": len(model_bytes),
        "arena_bytes": arena.arena_bytes,
        "recorded_total": arena.recorded_total,
        "recorded_head": arena.recorded_head,
        "recorded_tail": arena.recorded_tail,
        "arena_explanation": arena.explanation,
        "ops": ops,
        "op_resolver": f"tflite::MicroMutableOpResolver<{len(ops)}>",
        "samples_run": run["samples"],
        "files": {kind: str(path) for kind, path in files.items()},
    }
