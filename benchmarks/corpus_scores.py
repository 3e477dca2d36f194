"""Each corpus case's primary metric (its case.json, scored by the corpus's metrics.py) as an edgeq ``--metric``
callable: ``benchmarks.corpus_scores:<case name>`` is ``f(reference_outputs, outputs, labels)``, the metric in
percent (agreements as percentages, correlations and IoU times 100), so that `--max-drop 0.5` means half a point.

The outputs come in the model's graph-output order, which case.json's ``outputs`` lists; the evaluation inputs
(the anomaly score needs them) are the first samples of the case's eval.npz, as many as there are outputs.
"""

from __future__ import annotations

import json
import sys
from functools import cache, partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_corpus import CORPUS, _metrics  # noqa: E402

CASES = ("mediapipe_face_detection_short_range", "mlperf_ad01_autoencoder", "mlperf_streaming_wakeword", "mtcnn_onet")


@cache
def _case(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    return json.loads((CORPUS / name / "case.json").read_text()), dict(np.load(CORPUS / name / "eval.npz"))


def score(name: str, reference: list[np.ndarray], outputs: list[np.ndarray], labels=None) -> float:
    """Case NAME's primary metric of OUTPUTS against REFERENCE (the fp32 outputs), in percent."""
    spec, data = _case(name)
    names = [o["name"] for o in spec["outputs"]]
    samples = len(outputs[0])
    inputs = {key: array[:samples] for key, array in data.items()}
    primary = spec["metric"]["primary"]
    value = _metrics().score_case(
        spec, inputs, dict(zip(names, reference, strict=True)), dict(zip(names, outputs, strict=True)),
        CORPUS / name / "model.onnx",
    )[primary]  # fmt: skip
    return 100.0 * float(value)


for _name in CASES:
    globals()[_name] = partial(score, _name)
