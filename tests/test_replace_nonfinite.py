"""NaN and infinite weights: refused with one line naming the tensor, or, with --replace-nonfinite, replaced (NaN by 0,
+-inf by the largest finite magnitude of the tensor) and listed with their counts in the report and on stderr
(edgeq/io/model_checks.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from click.testing import CliRunner
from conftest import make_convnet
from onnx import numpy_helper

from edgeq.cli import main
from edgeq.io.onnx_model import read_proto


def broken_convnet(path):
    """The conftest convnet with a NaN, a +inf and two -inf in the stem weights and a NaN in the stem bias."""
    proto = make_convnet()
    tensors = {t.name: t for t in proto.graph.initializer}
    weight = numpy_helper.to_array(tensors["stem.w"]).copy()
    weight.flat[[0, 1, 2, 3]] = [np.nan, np.inf, -np.inf, -np.inf]
    bias = numpy_helper.to_array(tensors["stem.b"]).copy()
    bias[3] = np.nan
    tensors["stem.w"].CopyFrom(numpy_helper.from_array(weight, "stem.w"))
    tensors["stem.b"].CopyFrom(numpy_helper.from_array(bias, "stem.b"))
    onnx.save(proto, path)
    return weight, bias


def test_replaced_values_and_records(tmp_path):
    weight, bias = broken_convnet(tmp_path / "broken.onnx")
    replaced = []
    proto = read_proto(tmp_path / "broken.onnx", replaced=replaced)
    assert replaced == [
        {"tensor": "stem.w", "nan": 1, "posinf": 1, "neginf": 2},
        {"tensor": "stem.b", "nan": 1, "posinf": 0, "neginf": 0},
    ]
    tensors = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    largest = np.abs(weight.flat[4:]).max()
    np.testing.assert_array_equal(tensors["stem.w"].flat[:4], [0, largest, -largest, -largest])
    np.testing.assert_array_equal(tensors["stem.w"].flat[4:], weight.flat[4:])
    assert tensors["stem.b"][3] == 0 and np.array_equal(np.delete(tensors["stem.b"], 3), np.delete(bias, 3))


def test_quantize_refuses_without_the_option_and_lists_what_it_replaced_with_it(tmp_path, convnet_calib):
    model = tmp_path / "broken.onnx"
    broken_convnet(model)
    before = model.read_bytes()
    refused = CliRunner().invoke(main, ["quantize", str(model), "--calib", str(convnet_calib), "-o", str(tmp_path / "q.onnx")])
    assert refused.exit_code == 2 and refused.stderr.strip() == f"edgeq: error: {model}: tensor 'stem.w' holds NaN values"
    assert not (tmp_path / "q.onnx").exists()

    args = ["quantize", str(model), "--calib", str(convnet_calib), "-o", str(tmp_path / "q.onnx"), "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--report", str(tmp_path / "r.json"), "--replace-nonfinite"])
    assert result.exit_code == 0, result.output
    warning = "replaced non-finite weights (--replace-nonfinite): 'stem.w' (1 nan, 1 posinf, 2 neginf); 'stem.b' (1 nan)"
    assert f"warning: {warning}" in result.stderr.splitlines()
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["tensor"] for r in report["nonfinite_replaced"]] == ["stem.w", "stem.b"] and warning in report["warnings"]
    quantized = onnx.load(tmp_path / "q.onnx")
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in quantized.graph.initializer if t.data_type == 1)
    assert model.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.onnx", "calib.npz", "q.onnx", "r.json"
    ]  # fmt: skip
