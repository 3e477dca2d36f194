"""edgeq.reports.compare: layer_order keeps one x position per layer across models with different tensors;
compare_artifacts shares the float side between artifacts."""

from __future__ import annotations

from pathlib import Path

from edgeq.reports.compare import layer_order


def _result(*names: str) -> dict:
    return {"layers": {name: {"sqnr_db": 30.0} for name in names}}


def test_union_keeps_every_models_graph_order():
    # the equalized model has a Min output (m) the default lacks; the default has a fused Relu6 output (r)
    results = {"default.onnx": _result("a", "r", "b", "c"), "equalized.onnx": _result("a", "m", "b", "c")}
    order = layer_order(results)
    assert sorted(order) == ["a", "b", "c", "m", "r"]
    for names in (["a", "r", "b", "c"], ["a", "m", "b", "c"]):
        positions = [order.index(name) for name in names]
        assert positions == sorted(positions)


def test_one_model_keeps_its_order():
    assert layer_order({"q.onnx": _result("z", "y", "x")}) == ["z", "y", "x"]


def test_several_artifacts_at_once_match_one_at_a_time(tmp_path):
    """compare_artifacts runs the float model once for a QDQ .onnx and a .tflite: each result is the one
    compare gives for that artifact alone."""
    import numpy as np

    import edgeq
    from edgeq.data import ArrayData, input_specs
    from edgeq.io.onnx_model import load_model
    from edgeq.reports.compare import compare, compare_artifacts

    models = Path(__file__).resolve().parents[1] / "models"
    converted = edgeq.convert(
        models / "digits_cnn.onnx", models / "digits_calib.npz", outdir=tmp_path, targets=["onnxruntime", "tflite"]
    )
    paths = [p for p in converted.artifacts if p.name.endswith((".qdq.onnx", ".tflite"))]
    assert len(paths) == 2
    x = np.load(models / "digits_test.npz")["input"][:12]
    data = ArrayData({"input": x}, input_specs(load_model(models / "digits_cnn.onnx")), "test")
    together = compare_artifacts(models / "digits_cnn.onnx", paths, data, batch_size=4)
    for path in paths:
        alone = compare(models / "digits_cnn.onnx", path, data, batch_size=4)
        assert together[path] == alone
        assert alone["layers"] and alone["largest_losses"]
