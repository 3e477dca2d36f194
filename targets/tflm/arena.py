"""The tensor arena a .tflite needs in TFLite Micro, measured in its Python interpreter.

The answer is the smallest ``arena_size`` (on a 16-byte grid) with which the TFLite Micro Python interpreter
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

from edgeq.errors import ExecutionError
from edgeq.targets.tflm.interpreter import default_arena_size, tflm_interpreter
from edgeq.tflite_format.flatbuffer import read

ARENA_ALIGNMENT = 16
MAX_ARENA = 1 << 30
_RECORDED = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_OUT_OF_MEMORY = ("Failed to allocate", "Failed to resize", "missing:")


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
def captured_stderr() -> Iterator[_Log]:
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
            raise ExecutionError(f"the TFLite Micro probe process failed: {last}")
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


def round_up(size: int) -> int:
    return -(-size // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _require_tflm() -> None:
    try:
        from tflite_micro import runtime  # noqa: F401
    except ImportError:
        raise ExecutionError(
            "running TFLite Micro needs its interpreter: pip install 'edgeq[tflm]' (Linux x86_64)"
        ) from None


def _recorded(model_bytes: bytes, arena_size: int) -> dict[str, int]:
    """The RecordingMicroAllocator's totals for a working ARENA_SIZE (it prints them to fd 2)."""
    with captured_stderr() as log:
        interpreter = tflm_interpreter(model_bytes, arena_size)
        interpreter.print_allocations()
    recorded = {name: int(value) for name, value in _RECORDED.findall(log.text)}
    if "total" not in recorded:
        raise ExecutionError(f"TFLite Micro printed no allocation total: {log.first_line()}")
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
            upper = round_up(default_arena_size(model_bytes))
            while not allocates(upper):
                if not (prober.crashed or _out_of_memory(prober.messages)) or upper >= MAX_ARENA:
                    raise ExecutionError(f"TFLite Micro cannot allocate the model: {prober.first_message()}")
                upper *= 2
            start = min(upper, max(ARENA_ALIGNMENT, round_up(_recorded(model_bytes, upper)["total"])))
            arena = _smallest(allocates, *_gallop(allocates, start, upper))
            if not runs(arena):
                if not runs(upper):
                    raise ExecutionError(f"TFLite Micro cannot invoke the model: {prober.first_message()}")
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
