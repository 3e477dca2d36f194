"""The third-party corpus (../shared/corpus: Keras, PaddlePaddle, TFLite-converted, torch and transformer exports,
with calibration and evaluation data from real signals) through ``edgeq.convert`` for every target, as shipped and
(for the PaddlePaddle OCR models) after onnx-simplifier, as many users run it first.

For each case: every target converts, or (a case marked "refusal-or-success") the conversion stops with one
``unsupported: <op> at <node>`` line, or TFLite Micro alone refuses an int8 op it has no kernel for (code
no-micro-kernel) and the other targets convert; the .tflite is bit-exact with the integer reference in LiteRT's
reference kernels and in TFLite Micro where it runs (``verification``); and on the case's own metric (its case.json, computed by the
corpus' metrics.py) the .tflite run in LiteRT is within 1 point of the QDQ ONNX artifact run in onnxruntime (where the ONNX Runtime
artifact is placed for a transformer, edgeq.quantization.placement, that artifact is at least as good).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CORPUS

import edgeq
from edgeq.errors import UnsupportedError
from edgeq.io.session import session
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter
from edgeq.tflite_format.flatbuffer import read

CASES = sorted(p.parent.name for p in CORPUS.glob("*/case.json"))
SIMPLIFIED = [
    "ppocr_v4_det",
    "ppocr_v4_rec",
]  # the graphs onnx-simplifier changes most (shared scalar constants)
ABSENT = pytest.mark.skip(reason=f"the third-party corpus is not on this machine ({CORPUS})")


def _metrics():
    spec = importlib.util.spec_from_file_location("corpus_metrics", CORPUS / "metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _onnx_outputs(path: Path, data: dict) -> dict[str, np.ndarray]:
    """PATH run in onnxruntime on each sample of DATA (an input of the sample's own rank, like a recurrent state
    or a scalar, is fed without a batch axis), outputs concatenated on axis 0. Basic optimizations only: a QDQ
    model then computes what its Q/DQ nodes define on any CPU (fused int8 kernels differ by CPU: docs/runtimes.md)."""
    run = session(path, optimization="basic")
    names = [o.name for o in run.get_outputs()]
    ranks = {i.name: len(i.shape) for i in run.get_inputs()}
    count = len(next(iter(data.values())))

    def sample(name: str, i: int) -> np.ndarray:
        array = data[name]
        return np.asarray(array[i]) if ranks[name] == array.ndim - 1 else array[i : i + 1]

    per_sample = [run.run(names, {name: sample(name, i) for name in ranks}) for i in range(count)]
    return {name: np.concatenate([s[k] for s in per_sample]) for k, name in enumerate(names)}


def _tflite_outputs(path: Path, data: dict, names: list[str]) -> dict[str, np.ndarray]:
    model_bytes = path.read_bytes()
    graph, interpreter = read(model_bytes), litert_interpreter(model_bytes)
    samples = len(next(iter(data.values())))
    per_sample = [
        float_outputs(
            graph, invoke_litert(interpreter, model_inputs(graph, {k: v[i : i + 1] for k, v in data.items()}))
        )
        for i in range(samples)
    ]
    by_tensor = {graph.tensors[index].name: k for k, index in enumerate(graph.outputs)}
    return {name: np.concatenate([s[by_tensor[name]] for s in per_sample]) for name in names}


def _simplified(case: Path, tmp_path: Path) -> Path:
    import onnxsim  # a dev dependency, like the tests themselves

    calib = np.load(case / "calib.npz")
    model = onnx.load(case / "model.onnx")
    shapes = {i.name: [1, *calib[i.name].shape[1:]] for i in model.graph.input}
    simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    assert ok, "onnx-simplifier could not check its own result"
    path = tmp_path / "simplified" / "model.onnx"
    path.parent.mkdir()
    onnx.save(simplified, path)
    return path


def _check_case(case: Path, model: Path, tmp_path: Path, targets="all") -> None:
    spec = json.loads((case / "case.json").read_text())

    def convert(targets):
        return edgeq.convert(
            model, case / "calib.npz", outdir=tmp_path / "out", targets=targets, eval_data=case / "eval.npz"
        )

    try:
        result = convert(targets)
    except UnsupportedError as refusal:
        assert str(refusal).startswith("unsupported: ") and "\n" not in str(refusal)
        if refusal.code != "no-micro-kernel":
            assert spec.get("expect") == "refusal-or-success", f"{case.name}: {refusal}"
            return
        # TFLite Micro has no int8 kernel for one of its ops: the other targets must still convert
        result = convert(["onnxruntime", "tflite"])
    verified = [name for name in ("tflite", "tflm") if name in result.targets]
    for name in verified:
        verification = result.targets[name]["verification"]
        assert verification["bit_exact"], json.dumps(verification)[:600]
    if targets == "all":  # TFLite Micro checks the .tflite exactly when it has the kernels (when tflm converts)
        assert ("TFLite Micro" in result.targets["tflite"]["verification"]["exact"]) == ("tflm" in verified)
    data = dict(np.load(case / "eval.npz"))
    outputs = [o["name"] for o in spec["outputs"]]
    fp32 = _onnx_outputs(case / "model.onnx", data)
    qdq = _onnx_outputs(result.outdir / f"{model.stem}.qdq.onnx", data)
    tflite = _tflite_outputs(result.outdir / f"{model.stem}.tflite", data, outputs)
    metrics = _metrics()
    primary = spec["metric"]["primary"]
    onnx_score = metrics.score_case(spec, data, fp32, qdq, case / "model.onnx")[primary]
    tflite_score = metrics.score_case(spec, data, fp32, tflite, case / "model.onnx")[primary]
    scores = f"{primary}: .tflite {tflite_score:.4f}, QDQ ONNX {onnx_score:.4f}"
    onnxruntime = result.targets["onnxruntime"]
    if onnxruntime["mode"] == "dynamic" or "placement" in onnxruntime:
        # a transformer's ONNX Runtime artifact keeps its layer norms and sums float (edgeq.quantization.placement,
        # or activations quantized per run), which the int8 .tflite cannot: it must do at least as well
        assert onnx_score >= tflite_score - 0.01, scores
    else:
        assert tflite_score >= onnx_score - 0.01, scores


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES or [pytest.param("corpus", marks=ABSENT)])
def test_corpus_model_converts_for_every_target(name, tmp_path):
    _check_case(CORPUS / name, CORPUS / name / "model.onnx", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SIMPLIFIED if CORPUS.exists() else [pytest.param("corpus", marks=ABSENT)])
def test_corpus_model_simplified_by_onnxsim_converts_for_every_target(name, tmp_path):
    # TFLite Micro embeds the same .tflite, and the shipped model's test runs it: what onnx-simplifier changes is
    # the graph the front end and the lowerings read (rec's tflm refusal would also mean converting twice)
    _check_case(CORPUS / name, _simplified(CORPUS / name, tmp_path), tmp_path, targets=["onnxruntime", "tflite"])
