"""Integer graph inputs and outputs (token ids, ArgMax results): quantization leaves them integer, the TFLite graph
takes and gives them as unquantized int32 tensors (targets/tflite/lower/integers.py), `convert` builds and verifies
every target on a model with them, and the validator accepts unquantized int32 while it still requires a bias to
be quantized. The corpus sentence encoder quantizes with its three embedding tables per row.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import CORPUS
from onnx import TensorProto, helper
from ops_cases import VOCABULARY, check_against_onnxruntime, onnx_model, quantized
from tflite_cases import assert_bit_exact
from tflite_validate_cases import assert_reported, mutated, tensor

import edgeq
from edgeq.errors import DataError, EdgeqError
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.passes.integer_casts import CastIntegersFirstPass
from edgeq.reference.interface import model_inputs
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.tflite_format.flatbuffer import read, write

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
    # the sequence length is fixed from the calibration data, so the position and token-type lookups (constant
    # indices) fold to constants; the word table is the one left, quantized per row
    embeddings = [n for n in tables if "embeddings" in n.input[0]]
    assert [n.input[0] for n in embeddings] == ["model.0.auto_model.embeddings.word_embeddings.weight_quantized"]
    assert [a.i for a in embeddings[0].attribute if a.name == "axis"] == [0]
    layer_norms = [n for n in qdq.graph.node if n.op_type == "LayerNormalization"]
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    # placed for ONNX Runtime (edgeq.quantization.placement): the residual sums and the layer norms stay float
    assert len(layer_norms) == 7 and all(producers[n.input[0]] == "Add" for n in layer_norms)
    assert {i.name: i.type.tensor_type.elem_type for i in qdq.graph.input} == {
        "input_ids": TensorProto.INT64,
        "attention_mask": TensorProto.INT64,
    }


def _masked_pooling(rng) -> onnx.ModelProto:
    """A transformer's masked sum pooling: mask -> Unsqueeze -> Cast(float) -> Mul with the embeddings -> ReduceSum."""
    table = (rng.normal(size=(VOCABULARY, 8)) * rng.uniform(0.1, 3, (VOCABULARY, 1))).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Cast", ["mask3"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["emb", "maskf"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "tokens"], ["y"], keepdims=0),
    ]
    inits = [("table", table), ("last", np.array([2], np.int64)), ("tokens", np.array([1], np.int64))]
    return onnx_model(nodes, [], [("y", TensorProto.FLOAT, [1, 8])], inits,
                      int_inputs=[("ids", [1, TOKENS]), ("mask", [1, TOKENS])])  # fmt: skip


def test_a_cast_of_integers_moves_to_the_input_and_lowers_to_cast_and_quantize():
    rng = np.random.default_rng(6)
    proto = _masked_pooling(rng)
    qdq = quantized(proto, [], [("ids", (1, TOKENS)), ("mask", (1, TOKENS))])
    cast = next(n for n in qdq.graph if n.op_type == "Cast")
    assert cast.inputs[0].name == "mask"  # moved before the Unsqueeze
    lowered = check_against_onnxruntime(proto, [], int_inputs=[("ids", (1, TOKENS)), ("mask", (1, TOKENS))],
                                        start=("masked",))  # fmt: skip
    assert lowered.ops == {"CAST": 1, "QUANTIZE": 1, "GATHER": 1, "RESHAPE": 1, "MUL": 2, "MEAN": 1}
    float_ops = lower(
        quantized(proto, [], [("ids", (1, TOKENS)), ("mask", (1, TOKENS))]), precision="float"
    ).ops
    assert "QUANTIZE" not in float_ops and float_ops["CAST"] == 1


def test_a_cast_of_a_float_tensor_is_refused_in_one_line():
    rng = np.random.default_rng(7)
    qdq = quantized(_masked_pooling(rng), [], [("ids", (1, TOKENS)), ("mask", (1, TOKENS))])
    cast = next(n for n in qdq.graph if n.op_type == "Cast")
    cast.replace_input_with(
        0, next(v for n in qdq.graph for v in n.outputs if v.name == "emb")
    )  # a DQ output
    with pytest.raises(
        EdgeqError, match="^unsupported: Cast at .*: a Cast of emb .*FLOAT.*, which is not integer data"
    ):
        lower(qdq)


def test_integer_casts_move_up_their_chains_merge_and_compute_the_same():
    """Two Casts after different chains of one integer input become one Cast of the input; an integer tensor that
    another node still reads keeps its chain; graph outputs keep their names and values."""
    nodes = [
        helper.make_node("Unsqueeze", ["mask", "axis1"], ["u1"]),
        helper.make_node("Unsqueeze", ["u1", "axis3"], ["u2"]),
        helper.make_node("Cast", ["u2"], ["a"], to=TensorProto.FLOAT),
        helper.make_node("Expand", ["u1", "shape"], ["e"]),
        helper.make_node("Cast", ["e"], ["b"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["u1"], ["u1_out"]),
    ]
    inits = [("axis1", np.array([1], np.int64)), ("axis3", np.array([3], np.int64)),
             ("shape", np.array([1, 4, TOKENS], np.int64))]  # fmt: skip
    outputs = [("a", TensorProto.FLOAT, [1, 1, TOKENS, 1]), ("b", TensorProto.FLOAT, [1, 4, TOKENS]),
               ("u1_out", TensorProto.INT64, [1, 1, TOKENS])]  # fmt: skip
    proto = onnx_model(nodes, [], outputs, inits, int_inputs=[("mask", [1, TOKENS])])
    model = ir.serde.deserialize_model(proto)
    assert CastIntegersFirstPass()(model).modified
    casts = [n for n in model.graph if n.op_type == "Cast"]
    assert len(casts) == 1 and casts[0].inputs[0].name == "mask"
    assert [o.name for o in model.graph.outputs] == ["a", "b", "u1_out"]
    assert next(n for n in model.graph if n.outputs[0].name == "u1_out").inputs[0].name == "u1"  # still integer
    feed = {"mask": np.random.default_rng(0).integers(0, 2, (1, TOKENS))}
    for want, got in zip(
        ort_session(proto).run(None, feed), ort_session(to_proto(model)).run(None, feed), strict=True
    ):
        np.testing.assert_array_equal(want, got)
