"""Two runs with the same inputs and options write the same bytes: every artifact of every `edgeq convert` target,
`edgeq quantize`'s model with the optional passes that draw random numbers or depend on data order (adaround,
equalize, range search, bias correction), and their reports but for the fields README.md names as measured
(every ``seconds`` and the onnxruntime target's ``validation.speed``). Each run is its own process, so hash seeds
and heap addresses differ between the two.

onnxruntime itself lays out the .ort's kernel-type-string table in the order of a hash map seeded by a heap
address; edgeq rewrites that table in a fixed layout (targets/onnxruntime/ort_layout.py), which must keep every
field of onnxruntime's file and run the same."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from edgeq.io.session import session

MODEL = REPO / "models" / "digits_cnn.onnx"
CALIB = REPO / "models" / "digits_calib.npz"
TEST = REPO / "models" / "digits_test.npz"
MEASURED = {"seconds", "speed"}  # README.md, "Outputs": the report fields that are measurements


def edgeq(*args) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", *map(str, args), "--no-progress"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def without_measurements(report, folder: Path):
    """REPORT without the measured fields, with FOLDER's path written as <out>."""
    if isinstance(report, dict):
        return {k: without_measurements(v, folder) for k, v in report.items() if k not in MEASURED}
    if isinstance(report, list):
        return [without_measurements(v, folder) for v in report]
    return report.replace(str(folder), "<out>") if isinstance(report, str) else report


def ort_content(path: Path):
    """Every field of an .ort file's tables, read with onnxruntime's own flatbuffer classes."""
    from flatbuffers.table import Table
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

    union_kinds = {1: "TensorTypeAndShape", 2: "SequenceType", 3: "MapType"}  # TypeInfo.Value, the one union

    def fields(table):
        if table is None or isinstance(table, int | float | bytes | str):
            return table
        names = set(dir(type(table)))
        found = {}
        for name in sorted(names - {"Init"}):
            if name.startswith(("_", "GetRootAs")) or name.endswith(("IsNone", "AsNumpy", "Length", "Identifier")):
                continue
            method = getattr(table, name)
            if f"{name}Length" in names:  # a vector
                found[name] = [fields(method(j)) for j in range(getattr(table, f"{name}Length")())]
                continue
            value = method()
            if isinstance(value, Table):
                kind = union_kinds[table.ValueType()]
                value, raw = getattr(getattr(fbs, kind), kind)(), value
                value.Init(raw.Bytes, raw.Pos)
            found[name] = fields(value)
        return found

    session = fbs.InferenceSession.InferenceSession.GetRootAs(path.read_bytes(), 0)
    return fields(session)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> list[Path]:
    """Every target (and every optional artifact) converted twice, into two folders."""
    folders = [tmp_path_factory.mktemp(f"convert{run}") / "out" for run in (1, 2)]
    for folder in folders:
        edgeq(
            "convert", MODEL, "--target", "all", "--integer-only", "--precision", "float", "--ort-format",
            "--calib", CALIB, "--eval-data", TEST, "-o", folder,
        )  # fmt: skip
    return folders


def test_convert_writes_the_same_files_for_every_target(converted):
    first, second = converted
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    suffixes = {"qdq.onnx", "qdq.ort", "integer.onnx", "tflite", "float.tflite", "h", "cc", "config", "json"}
    assert {name.split(".", 1)[1] for name in names} == suffixes, names
    for name in names:
        if name.endswith(".json"):
            continue
        data = (first / name).read_bytes()
        for path in (tempfile.gettempdir(), REPO):  # where a build ran never ends up in what it built
            assert f"{path}{os.sep}".encode() not in data, f"{name} holds the path {path}"
        assert data == (second / name).read_bytes(), f"{name} differs between two runs"


def test_ort_rewritten_in_a_fixed_layout_keeps_onnxruntimes_content_and_outputs(converted, tmp_path):
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    shutil.copy(converted[0] / "digits_cnn.qdq.onnx", tmp_path)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        convert_onnx_models_to_ort(
            tmp_path / "digits_cnn.qdq.onnx", output_dir=tmp_path / "ort", optimization_styles=[OptimizationStyle.Fixed]
        )
    own, rewritten = tmp_path / "ort" / "digits_cnn.qdq.ort", converted[0] / "digits_cnn.qdq.ort"
    content = ort_content(own)
    assert len(content["Model"]["Graph"]["Nodes"]) > 5 and content["KernelTypeStrResolver"]["OpKernelTypeStrArgs"]
    assert ort_content(rewritten) == content
    images = np.load(TEST)["input"][:16]
    outputs = [session(path).run(None, {"input": images}) for path in (own, rewritten)]
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))


def test_convert_report_differs_only_in_measurements(converted):
    first, second = ((folder / "report.json") for folder in converted)
    reports = [without_measurements(json.loads(p.read_text()), p.parent) for p in (first, second)]
    assert reports[0] == reports[1]
    assert "seconds" in first.read_text() and "speedup" in first.read_text()  # what was left out is there
    assert str(first.parent) not in json.dumps(reports[0])


@pytest.mark.slow
def test_quantize_with_passes_writes_the_same_model_and_report(tmp_path):
    passes = "equalize,range-search,adaround,bias-correction"
    runs = []
    for run in (1, 2):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        edgeq(
            "quantize", MODEL, "--calib", CALIB, "--passes", passes, "--dyadic-bits", "16",
            "-o", folder / "digits.qdq.onnx", "--report", folder / "report.json",
        )  # fmt: skip
        runs.append(folder)
    first, second = runs
    report = json.loads((first / "report.json").read_text())
    assert {"equalize", "range-search", "adaround", "bias-correction"} <= set(report["stages"]), list(report["stages"])
    assert (first / "digits.qdq.onnx").read_bytes() == (second / "digits.qdq.onnx").read_bytes()
    assert without_measurements(report, first) == without_measurements(
        json.loads((second / "report.json").read_text()), second
    )
