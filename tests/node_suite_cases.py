"""The ONNX backend node tests (``onnx.backend.test.case.node``) as edgeq cases, and what edgeq makes of each.

The onnx wheel ships the node tests' generators (each case: a model and the inputs its numpy expectation was run
on, every generator seeded with 0), not their data. ``node_cases()`` runs the generators once and keeps the float
cases in ``benchmarks/.cache/onnx-node-tests-<onnx version>/`` (the model and its inputs per case, an index of
every case); later calls read the index (a cache hit costs no generator run).

A case runs when every graph input is a float32 tensor (the others are skipped with a counted reason: edgeq
calibrates float inputs). ``run_case`` sends it through the Python API in-process, ``edgeq.quantize`` and then
``edgeq.convert(targets=["tflite"])``, calibrated on the case's own inputs, and classifies the outcome:

* ``converted``: both succeed; ``refused``: an ``UnsupportedError`` in the one-line form
  ``unsupported: <op> at <node>: <reason>`` (its code is counted), at either step;
* ``opset``: a one-line ModelError from edgeq's opset check (an opset outside the range it reads, or no default
  domain): the model loader is being extended to every opset onnxruntime runs, and these are counted apart;
* ``user-error``: a one-line DataError: the case's inputs are not calibration data under edgeq's convention
  (every input carries the samples on its first axis, finite values). Node tests pass one call's arguments, so a
  case whose inputs do not share a first dimension (a Conv's weights given as an input), has a scalar input or
  holds NaN/Inf is refused with a line naming the inputs; that is the data's fault, not a failure of edgeq. A
  DataError saying the float model failed counts only when onnxruntime cannot run the float model itself, and
  so does an ExecutionError;
* ``crash``: anything else: an exception that is not an EdgeqError, an EdgeqError of more than one line, an
  UnsupportedError not in the refusal form, another ModelError (for a model onnx generated as valid), or a
  runtime failure on a model onnxruntime runs (edgeq built something its own runtimes refuse).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache" / f"onnx-node-tests-{onnx.__version__}"
REFUSAL = re.compile(r"^unsupported: (\S+) at (.*?): \S")
# edgeq.io.onnx_model's opset checks (being extended to every opset onnxruntime runs)
OPSET_REFUSAL = re.compile(
    r": opset \d+ is not supported \(edgeq supports \d+\.\.\d+\)$|: imports no default-domain \(ai\.onnx\) opset$"
)
FLOAT_MODEL_FAILED = "the float model failed on the calibration data"
DATA_REASONS = {
    "NaN or Inf": "NaN or Inf inputs",
    "no shared batch axis": "inputs without a shared batch axis",
    "has no axes": "scalar input",
    FLOAT_MODEL_FAILED: "onnxruntime cannot run the float model",
}
FLOAT = onnx.TensorProto.FLOAT
# Crashes in targets/ (not the quantize side), routed to the TFLite target's owners: substring of the crash line ->
# where it happens (tests/test_onnx_node_suite.py expects these to fail until they are fixed there).
ROUTED: dict[str, str] = {}  # none open today


@dataclass(frozen=True)
class NodeCase:
    """One node test: its name, the op type it tests (``expanded``: as the op's function body), its default
    opset, and why it is skipped (None when it runs)."""

    name: str
    op_type: str
    expanded: bool
    opset: int
    skip: str | None

    @property
    def model_path(self) -> Path:
        return CACHE / self.name / "model.onnx"

    def inputs(self) -> dict[str, np.ndarray]:
        with np.load(CACHE / self.name / "inputs.npz") as data:
            return {key: data[key] for key in data.files}


@dataclass(frozen=True)
class Outcome:
    """What edgeq made of a case: ``kind`` (converted, refused, opset, user-error, crash), the step that stopped
    (quantize or convert; None when converted), the refusal's reason code, and the message (a crash's last
    traceback line)."""

    kind: str
    step: str | None = None
    code: str | None = None
    message: str = ""
    quantized: bool = False


def node_cases() -> list[NodeCase]:
    """Every node test of the installed onnx, generated into the cache on the first call."""
    index = CACHE / "index.json"
    if not index.exists():
        _generate()
    return [NodeCase(**entry) for entry in json.loads(index.read_text())]


def _skip_reason(model: onnx.ModelProto, inputs) -> str | None:
    if not model.graph.input:
        return "no graph inputs"
    for value, array in zip(model.graph.input, inputs, strict=False):
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{kind.removesuffix('_type')} input"
        if value.type.tensor_type.elem_type != FLOAT:
            return f"{onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)} input"
        if not isinstance(array, np.ndarray):
            return "input without data"
    return None


def _array(value):
    """A generator's input as numpy where it is a tensor (they also give TensorProtos and numpy scalars)."""
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value) if isinstance(value, np.generic) else value


def _generate() -> None:
    """Run the generators and write the cache: into a temporary folder renamed into place, so concurrent test
    workers never see half a cache (the loser of the rename drops its copy)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow/divide warnings
        cases = collect_testcases(None)
    op_of = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=CACHE.name + ".", dir=CACHE.parent))
    entries = []
    for case in cases:
        base = case.name.split("_expanded")[0]
        expanded = base != case.name
        graph = case.model.graph
        op_type = op_of.get(base) or (graph.node[0].op_type if graph.node else "(none)")
        opset = next((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), 0)
        inputs = [_array(a) for a in case.data_sets[0][0]]
        skip = _skip_reason(case.model, inputs)
        entries.append(asdict(NodeCase(case.name, op_type, expanded, opset, skip)))
        if skip is None:
            folder = tmp / case.name
            folder.mkdir()
            onnx.save(case.model, folder / "model.onnx")
            np.savez(folder / "inputs.npz", **{v.name: a for v, a in zip(graph.input, inputs, strict=True)})
    (tmp / "index.json").write_text(json.dumps(entries, indent=0) + "\n")
    try:
        os.rename(tmp, CACHE)
    except OSError:  # another process wrote the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


def run_case(case: NodeCase, workdir: Path) -> Outcome:
    """CASE through edgeq.quantize, then edgeq.convert to TFLite (artifacts in WORKDIR), classified."""
    import edgeq

    inputs = case.inputs()
    quantized = False
    step = "quantize"
    try:
        edgeq.quantize(case.model_path, inputs)
        quantized, step = True, "convert"
        edgeq.convert(case.model_path, inputs, outdir=workdir, targets=["tflite"])
    except edgeq.EdgeqError as exc:
        return _classify(case, exc, step, quantized)
    except Exception as exc:  # noqa: BLE001 - every other exception is what this suite counts as a crash
        return Outcome("crash", step, None, _last_line(exc), quantized)
    return Outcome("converted", quantized=True)


def routed_to(outcome: Outcome) -> str | None:
    """Where a crash is routed (ROUTED), or None."""
    if outcome.kind != "crash":
        return None
    return next((where for sign, where in ROUTED.items() if sign in outcome.message), None)


def _classify(case: NodeCase, exc: Exception, step: str, quantized: bool) -> Outcome:
    from edgeq.errors import DataError, ExecutionError, ModelError, UnsupportedError

    message = str(exc)
    crash = Outcome("crash", step, None, f"{type(exc).__name__}: {message}", quantized)
    if "\n" in message.strip() or not message:
        return crash
    if isinstance(exc, UnsupportedError):
        return Outcome("refused", step, exc.code, message, quantized) if REFUSAL.match(message) else crash
    if isinstance(exc, ModelError) and OPSET_REFUSAL.search(message):
        return Outcome("opset", step, None, message, quantized)
    if isinstance(exc, DataError) and not (FLOAT_MODEL_FAILED in message and _ort_runs(case)):
        return Outcome("user-error", step, _data_reason(message), message, quantized)
    if isinstance(exc, ExecutionError) and not _ort_runs(case):
        return Outcome("user-error", step, "onnxruntime cannot run the float model", message, quantized)
    return crash


def _data_reason(message: str) -> str:
    """What a DataError says is wrong with the case's inputs as calibration data, in a few words."""
    for words, reason in DATA_REASONS.items():
        if words in message:
            return reason
    return "data"


def _ort_runs(case: NodeCase) -> bool:
    """Whether onnxruntime loads and runs CASE's float model on its inputs."""
    from edgeq.io.session import session

    try:
        session(case.model_path).run(None, case.inputs())
    except Exception:  # noqa: BLE001 - any failure means onnxruntime does not run it
        return False
    return True


def _last_line(exc: BaseException) -> str:
    """EXC's type and first line, where it was raised and the last frame in this repository (for routing)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(REPO))]
    where = list(dict.fromkeys(_frame(f) for f in [*frames[-1:], *ours[-1:]]))
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first} [{'; '.join(where)}]"


def _frame(frame: traceback.FrameSummary) -> str:
    path = frame.filename
    path = path.split("site-packages/", 1)[-1] if "site-packages/" in path else os.path.relpath(path, REPO)
    return f"{path}:{frame.lineno} {frame.name}"
