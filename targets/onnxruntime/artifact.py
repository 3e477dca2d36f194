"""The ONNX Runtime target's artifacts and their validation.

* ``emit``: writes ``<name>.onnx`` atomically and, on request, ``<name>.ort`` plus
  ``required_operators.config`` with onnxruntime's own ``convert_onnx_models_to_ort`` (for minimal mobile builds),
  the ``.ort`` with its kernel-type-string table in a fixed layout (ort_layout.py: the same model, the same bytes).
* ``validate``: runs the float and the quantized model on the same data: SQNR, max abs error, top-1 agreement
  and (with labels) accuracy per output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgeq.data import CalibrationData
from edgeq.errors import ExecutionError
from edgeq.io.files import write_bytes_atomic
from edgeq.io.session import run_batches, session, session_batch
from edgeq.measure.metrics import ErrorSums, accuracy


def write_ort_format(onnx_path: Path, outdir: Path) -> list[Path]:
    """``.ort`` + ``required_operators.config`` via onnxruntime's convert_onnx_models_to_ort, moved into OUTDIR."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    from edgeq.targets.onnxruntime.ort_layout import canonical_ort

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(onnx_path, work / onnx_path.name)
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                convert_onnx_models_to_ort(
                    work / onnx_path.name,
                    output_dir=work / "out",
                    optimization_styles=[OptimizationStyle.Fixed],
                )
        except Exception as exc:  # the tool raises bare RuntimeErrors with ORT's message
            raise ExecutionError(
                f"onnxruntime's .ort conversion failed: {str(exc).strip().splitlines()[0]}"
            ) from None
        produced = sorted((work / "out").glob("*.ort")) + sorted((work / "out").glob("*.config"))
        if not produced:
            raise ExecutionError("onnxruntime's .ort conversion produced no files")
        written = []
        for path in produced:
            name = "required_operators.config" if path.suffix == ".config" else onnx_path.stem + ".ort"
            data = path.read_bytes()
            if path.suffix == ".ort":
                data = canonical_ort(data)
            else:  # the config names the .ort it was made from by its temporary path: keep the file name only
                data = data.replace(f"{work / 'out'}{os.sep}".encode(), b"")
            write_bytes_atomic(outdir / name, data)
            if path.suffix == ".ort":
                session(outdir / name, threads=1)  # the rewritten flatbuffer passes onnxruntime's verifier and loads
            written.append(outdir / name)
    return written


def emit(model_bytes: bytes, outdir: Path, name: str, *, ort_format: bool = False) -> list[Path]:
    """Write ``<name>.onnx`` (and the .ort artifacts) into OUTDIR; the .onnx is always first."""
    path = Path(outdir) / f"{name}.onnx"
    write_bytes_atomic(path, model_bytes)
    return [path, *(write_ort_format(path, Path(outdir)) if ort_format else [])]


def validate(
    float_model: str | Path,
    quant_model: str | Path,
    data: CalibrationData,
    *,
    labels: np.ndarray | None = None,
    batch_size: int = 8,
    threads: int = 2,
) -> dict:
    """Run both models on DATA: per-output SQNR, max abs error, top-1 agreement, and accuracy with LABELS.
    Batches of 8 samples: onnxruntime's arena grows with the batch (MobileNetV2 at 32 took convert to 730 MB)."""
    reference = session(Path(float_model), threads=threads)
    quantized = session(Path(quant_model), threads=threads)
    batch_size = session_batch(quantized) or batch_size  # a batch fixed by preprocessing (the graph reads shapes)
    names = [o.name for o in reference.get_outputs()]
    sums = {name: ErrorSums() for name in names}
    first_scores: dict[str, list[np.ndarray]] = defaultdict(list)
    for batch, ref in run_batches(reference, names, data, batch_size):
        test = quantized.run(names, batch)
        for name, r, t in zip(names, ref, test, strict=True):
            sums[name].add(r, t)
        if labels is not None:
            first_scores["float"].append(ref[0])
            first_scores["quantized"].append(test[0])
    result = {"samples": data.num_samples, "outputs": {name: s.to_dict() for name, s in sums.items()}}
    if labels is not None:
        labels = np.asarray(labels)[: data.num_samples]
        result["accuracy"] = {
            kind: accuracy(np.concatenate(scores), labels) for kind, scores in first_scores.items()
        }
    return result
