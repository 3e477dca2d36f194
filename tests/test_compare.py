"""edgeq.reports.compare.layer_order: one x position per layer across models with different tensors."""

from __future__ import annotations

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
