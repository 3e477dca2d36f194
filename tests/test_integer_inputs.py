"""Integer graph inputs and outputs (token ids, ArgMax results): quantization leaves them integer, the TFLite graph
takes and gives them as unquantized int32 tensors (targets/tflite/lower/integers.py), `convert` builds and verifies
every target on a model with them, and the validator accepts unquantized int32 while it still requires a bias to
be quantized. The corpus sentence encoder quantizes with its three embedding tables per row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from ops_cases import VOCABULARY, onnx_model, quantized
from tflite_cases import assert_bit_exact
from tflite_validate_cases import assert_reported, mutated, tensor

import edgeq
from edgeq.errors import DataError
from edgeq.io.onnx_model import to_proto
from edgeq.reference.interface import model_inputs
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.tflite_format.flatbuffer import read, write

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TOKENS = 6


def _classifier(rng, batch="batch") -> onnx.ModelProto:
    """ids -> embedding -> mean over tokens -> MatMul -> logits, ArgMax -> class; the ids pass through as well."""
    table = (rng.normal(size=(VOCABULARY, 8)) * rng.uniform(0.1, 3, (VOCABULARY, 1))).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["class"], axis=1, keepdims=0),
        helper.make_node("Identity", ["ids"], ["ids_out"]),
    ]
    outputs = [
        ("logits", TensorProto.FLOAT, [batch, 4]),
        ("class", TensorProto.INT64, [batch]),
        ("ids_out", TensorProto.INT64, [batch, TOKENS]),
    ]
    inits = [("table", table), ("w", (rng.normal(size=(8, 4)) * 0.3).astype(np.float32))]
    return onnx_model(nodes, [], outputs, inits, int_inputs=[("ids", [batch, TOKENS])])


def test_quantization_keeps_ids_integer_and_stores_the_table_per_row():
    qdq = to_proto(quantized(_classifier(np.random.default_rng(0)), [], [("ids", (1, TOKENS))]))
    consumers = [n.op_type for n in qdq.graph.node if "ids" in n.input]
    assert sorted(consumers) == ["Gather", "Identity"]  # no QuantizeLinear on the ids
    [table_dq] = [
        n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "table_quantized"
    ]
    assert [a.i for a in table_dq.attribute if a.name == "axis"] == [0]
    assert {o.name: o.type.tensor_type.elem_type for o in qdq.graph.output}["class"] == TensorProto.INT64


def test_calibration_data_of_another_integer_type_is_a_one_line_error():
    model = _classifier(np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, VOCABULARY, (8, TOKENS)).astype(np.int32)
    with pytest.raises(DataError, match="input 'ids' has dtype int32, the model expects int64"):
        edgeq.quantize(model, {"ids": ids})


def test_ids_enter_and_leave_as_int32_and_argmax_leaves_as_int32():
    rng = np.random.default_rng(2)
    lowered = lower(quantized(_classifier(rng), [], [("ids", (1, TOKENS))]))
    assert lowered.input_layouts == ["as ONNX"] and lowered.output_layouts == ["as ONNX"] * 3
    model_bytes = write(lowered.graph)
    assert validate_model(model_bytes) == []
    graph = read(model_bytes)
    ids = graph.tensors[graph.inputs[0]]
    assert (ids.name, ids.dtype, ids.quantization, ids.shape_signature) == (
        "ids",
        np.int32,
        None,
        (-1, TOKENS),
    )
    outputs = [graph.tensors[i] for i in graph.outputs]
    assert [(t.name, t.dtype) for t in outputs] == [
        ("logits", np.int8),
        ("class", np.int32),
        ("ids_out", np.int32),
    ]
    feed = rng.integers(0, VOCABULARY, (1, TOKENS))
    _, classes, passed = assert_bit_exact(model_bytes, model_inputs(graph, {"ids": feed}))
    np.testing.assert_array_equal(passed, feed)
    assert classes.shape == (1,) and 0 <= classes[0] < 4


def test_validator_takes_unquantized_int32_but_still_wants_a_quantized_bias():
    def strip(graph):
        tensor(graph, "conv1.b").quantization = None

    assert_reported(mutated(strip), "bias tensor 'conv1.b' (int32) has no quantization parameters")


def test_convert_builds_and_verifies_every_target_with_integer_inputs(tmp_path):
    rng = np.random.default_rng(3)
    model = tmp_path / "classifier.onnx"
    onnx.save(_classifier(rng), model)
    calib = {"ids": rng.integers(0, VOCABULARY, (16, TOKENS))}
    result = edgeq.convert(model, calib, outdir=tmp_path / "out", targets=["tflite", "tflm"])
    for name in ("tflite", "tflm"):
        verification = result.targets[name]["verification"]
        assert verification["bit_exact"], json.dumps(verification)[:400]


@pytest.mark.slow
def test_corpus_sentence_encoder_quantizes_its_embedding_tables_per_row():
    case = CORPUS / "paraphrase_minilm_l3"
    if not case.exists():
        pytest.skip("the third-party corpus is not on this machine")
    calib = {k: v[:16] for k, v in np.load(case / "calib.npz").items()}
    qdq = edgeq.quantize(case / "model.onnx", calib).model
    tables = [
        n
        for n in qdq.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_quantized")
    ]
    embeddings = [n for n in tables if "embeddings" in n.input[0]]
    assert len(embeddings) == 3 and all(
        [a.i for a in n.attribute if a.name == "axis"] == [0] for n in embeddings
    )
    layer_norms = [n for n in qdq.graph.node if n.op_type == "LayerNormalization"]
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    assert len(layer_norms) == 7 and all(producers[n.input[0]] == "DequantizeLinear" for n in layer_norms)
    assert {i.name: i.type.tensor_type.elem_type for i in qdq.graph.input} == {
        "input_ids": TensorProto.INT64,
        "attention_mask": TensorProto.INT64,
    }
