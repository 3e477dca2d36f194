"""4-bit weights stored as INT4 in ONNX Runtime's model (passes/pack_int4.py): smaller, the same outputs bit for
bit, the same integer kernels, and the interchange form back for `edgeq verify`."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import REPO

from edgeq.data import input_specs, load_npz
from edgeq.io.onnx_model import clone_model, load_model, model_bytes, to_proto
from edgeq.io.session import session
from edgeq.passes import pack_int4
from edgeq.passes.raise_opset import default_opset
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.onnxruntime.fusion import fusion_report

MODELS = REPO / "models"


@pytest.fixture(scope="module")
def digits_w4():
    """The digits CNN's interchange QDQ model with 4-bit weights (uint8 activations, as ONNX Runtime fuses them)."""
    model = load_model(MODELS / "digits_cnn.onnx")
    data = load_npz(MODELS / "digits_calib.npz", input_specs(model))
    recipe = Recipe(weight_bits=4)
    pipeline = Pipeline(recipe, progress=False)
    qdq, _ = pipeline.quantize(pipeline.calibrate(model, data), "uint8", onnxruntime=True)
    return qdq, recipe


def _write(model: ir.Model, path):
    path.write_bytes(model_bytes(model))
    return path


def test_packed_model_is_smaller_and_computes_the_same_integers(digits_w4, tmp_path):
    qdq, recipe = digits_w4
    packed = clone_model(qdq)
    assert pack_int4.pack_int4_weights(packed, recipe) == {"int4_storage": "int4", "int4_layers": 5}
    assert (default_opset(qdq), default_opset(packed)) == (17, 21)
    containers, packed_path = _write(qdq, tmp_path / "int8.onnx"), _write(packed, tmp_path / "int4.onnx")
    stored = [t for t in to_proto(packed).graph.initializer if t.data_type == onnx.TensorProto.INT4]
    assert len(stored) == 5 and all(len(t.raw_data) == (np.prod(t.dims) + 1) // 2 for t in stored)  # 2 per byte
    assert packed_path.stat().st_size < containers.stat().st_size
    batch = {"input": np.load(MODELS / "digits_test.npz")["input"][:64]}
    expected = session(containers).run(None, batch)
    for out, want in zip(session(packed_path).run(None, batch), expected, strict=True):
        np.testing.assert_array_equal(out, want)
    # ONNX Runtime folds the Cast when it loads the model: every convolution still runs as an integer kernel
    fused = fusion_report(packed_path)
    assert fused.convs_fused == fused.convs_total == fusion_report(containers).convs_fused == 4


def test_undo_gives_the_interchange_model_back(digits_w4):
    qdq, recipe = digits_w4
    packed = clone_model(qdq)
    pack_int4.pack_int4_weights(packed, recipe)
    pack_int4.undo(packed)
    assert not any(n.op_type == "Cast" for n in packed.graph)
    assert [n.op_type for n in packed.graph] == [n.op_type for n in qdq.graph]
    original = qdq.graph.initializers
    for name, value in packed.graph.initializers.items():
        assert value.dtype == original[name].dtype, name
        np.testing.assert_array_equal(value.const_value.numpy(), original[name].const_value.numpy())


def test_only_4_bit_layers_are_packed(digits_w4):
    qdq, _ = digits_w4
    untouched = clone_model(qdq)
    assert pack_int4.pack_int4_weights(untouched, Recipe(weight_bits=8)) == {}  # no 4-bit layer in the recipe
    assert model_bytes(untouched) == model_bytes(qdq)
    one = clone_model(qdq)
    assert pack_int4.pack_int4_weights(one, Recipe(weight_bits=8, layers={"node_Conv_2": "int4"}))["int4_layers"] == 1
    assert [n.name for n in one.graph if n.op_type == "Cast"] == ["node_Conv_2.weight_quantized_Cast"]


def test_a_model_onnx_cannot_raise_keeps_int8_containers(digits_w4, monkeypatch):
    qdq, recipe = digits_w4
    model = clone_model(qdq)
    monkeypatch.setattr(pack_int4, "convert_up", lambda model, opset: "No adapter for Foo")
    storage = pack_int4.pack_int4_weights(model, recipe)
    assert storage == {
        "int4_storage": "int8",
        "int4_storage_why": "INT4 tensors need opset 21, and onnx cannot convert this model: No adapter for Foo",
    }
    assert model_bytes(model) == model_bytes(qdq)
