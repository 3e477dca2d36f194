"""Dynamic quantization (recipe mode "dynamic", passes/insert_dynamic.py): int8 weights of the products with a
constant matrix and of embedding tables, activations quantized per run by ONNX Runtime; what it computes, what
ONNX Runtime fuses, what it refuses, and on the corpus's sentence encoder against onnxruntime's own dynamic
quantizer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import CORPUS
from onnx import TensorProto, helper
from ops_cases import onnx_model

import edgeq
from edgeq import targets as registry
from edgeq.errors import ModelError, RecipeError, UnsupportedError
from edgeq.io.session import session
from edgeq.quantization.weight_pairs import PAIR_LIMIT, pair_sums
from edgeq.targets.onnxruntime.fusion import fusion_report

TOKENS, WIDTH, HIDDEN, VOCAB = 5, 16, 24, 50


def _encoder_block() -> onnx.ModelProto:
    """ids -> embedding Gather -> MatMul + bias (torch's Linear) -> Gemm (transB, alpha, beta, bias) -> layer norm
    -> `head` (a MatMul a recipe can exclude) -> a product of two activations -> y."""
    rng = np.random.default_rng(0)
    inits = [
        ("table", rng.normal(0, 1, (VOCAB, WIDTH)).astype(np.float32)),
        ("w1", rng.normal(0, 0.3, (WIDTH, HIDDEN)).astype(np.float32)),
        ("b1", rng.normal(0, 0.1, HIDDEN).astype(np.float32)),
        ("w2", rng.normal(0, 0.3, (WIDTH, HIDDEN)).astype(np.float32)),  # transB: [N, K]
        ("b2", rng.normal(0, 0.1, WIDTH).astype(np.float32)),
        ("w3", rng.normal(0, 0.3, (WIDTH, WIDTH)).astype(np.float32)),
        ("shape2d", np.array([TOKENS, HIDDEN], np.int64)),
        ("shape3d", np.array([1, TOKENS, WIDTH], np.int64)),
        ("gamma", rng.uniform(0.5, 1.5, WIDTH).astype(np.float32)),
        ("beta", rng.normal(0, 0.1, WIDTH).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"]),
        helper.make_node("MatMul", ["e", "w1"], ["p1"]),
        helper.make_node("Add", ["b1", "p1"], ["h1"]),
        helper.make_node("Reshape", ["h1", "shape2d"], ["h2d"]),
        helper.make_node("Gemm", ["h2d", "w2", "b2"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Reshape", ["g", "shape3d"], ["g3"]),
        helper.make_node("LayerNormalization", ["g3", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "w3"], ["head"], name="head"),
        helper.make_node("Transpose", ["head"], ["t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["head", "t"], ["y"], name="scores"),
    ]
    proto = onnx_model(nodes, [], [("y", TensorProto.FLOAT, [1, TOKENS, TOKENS])], inits, 17)
    proto.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [1, TOKENS]))
    return proto


def _ids(count: int = 16) -> dict[str, np.ndarray]:
    return {"ids": np.random.default_rng(1).integers(0, VOCAB, (count, TOKENS)).astype(np.int64)}


def _run(model, feeds):
    return session(model).run(None, feeds)[0]


def test_products_and_embeddings_become_fused_integer_kernels_and_keep_the_function(tmp_path):
    path = tmp_path / "dynamic.onnx"
    result = edgeq.quantize(_encoder_block(), _ids(), output=path, mode="dynamic")
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("MatMulInteger") == 3 and ops.count("DynamicQuantizeLinear") == 3, ops
    assert result.report["quantized_nodes"] == {"Gather": 1, "Gemm": 2, "MatMul": 1}
    assert "scores" in result.report["float_nodes"]  # a product of two activations has no constant weight
    fused = fusion_report(path)
    assert sum(fused.quantized_kernels.get(op, 0) for op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat")) == 3
    assert "MatMulInteger" not in fused.op_counts  # every chain became one kernel
    feeds = {"ids": _ids(1)["ids"]}
    reference, quantized = _run(_encoder_block(), feeds), _run(result.model, feeds)
    error = np.abs(quantized - reference).max() / np.abs(reference).max()
    assert 0 < error < 0.03, error


def test_the_integer_product_is_what_the_docstring_states():
    """One MatMul: y = (x_q - z_x) W_q * (s_x s_w) with DynamicQuantizeLinear's (s_x, z_x) of this input."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.5, (WIDTH, HIDDEN)).astype(np.float32)
    proto = onnx_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [1, TOKENS, WIDTH])],
        [("y", TensorProto.FLOAT, [1, TOKENS, HIDDEN])], [("w", w)], 17,
    )  # fmt: skip
    x = rng.normal(0.3, 1, (1, TOKENS, WIDTH)).astype(np.float32)
    model = edgeq.quantize(
        proto, {"x": x}, mode="dynamic", weight_range="minmax", weight_rounding="nearest",
        cpu="x86-vnni",  # no weight-pair bound (edgeq.quantization.cpus): the formula's plain product
    ).model  # fmt: skip
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    w_q = next(v for k, v in inits.items() if k.endswith("_weight_quantized"))
    s_w = next(v for k, v in inits.items() if k.endswith("_weight_scale"))
    np.testing.assert_array_equal(s_w, np.abs(w).max(axis=0) / 127)  # symmetric, per output column
    np.testing.assert_array_equal(w_q, np.rint(w / s_w))
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s_x = np.float32((high - low) / 255)
    z_x = np.clip(np.rint(-low / s_x), 0, 255)
    x_q = np.clip(np.rint(x / s_x) + z_x, 0, 255)
    expected = ((x_q - z_x) @ w_q.astype(np.float64)) * (s_x * s_w.astype(np.float64))
    np.testing.assert_allclose(_run(model, {"x": x}), expected, rtol=1e-5, atol=1e-6)


def test_excluded_nodes_stay_float():
    result = edgeq.quantize(_encoder_block(), _ids(), mode="dynamic", exclude=["head"])
    assert result.report["quantized_nodes"] == {"Gather": 1, "Gemm": 2}
    assert [n.op_type for n in result.model.graph.node].count("MatMulInteger") == 2


def test_weights_keep_the_pair_bound_of_cpus_without_vnni():
    """DynamicQuantizeLinear's uint8 inputs span 0..255: u8 x s8 pairs must fit int16 on x86 without VNNI."""
    model = edgeq.quantize(_encoder_block(), _ids(), mode="dynamic", cpu="x86-avx2").model
    weights = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_weight_quantized")]
    assert weights and all(pair_sums(w, 1).max() <= PAIR_LIMIT for w in weights)


@pytest.mark.parametrize(
    "options, refusal",
    [
        ({"activation_type": "int16"}, "no int16 activations"),
        ({"passes": ["adaround"]}, "pass adaround works on calibrated activations"),
        ({"weight_bits": 4}, "8-bit weights"),
    ],
)
def test_options_that_need_calibrated_activations_are_refused(options, refusal):
    with pytest.raises(RecipeError, match=refusal):
        edgeq.quantize(_encoder_block(), _ids(), mode="dynamic", **options)


def test_targets_without_dynamic_kernels_refuse_the_mode_and_verify_says_why(tmp_path):
    with pytest.raises(RecipeError, match="the tflite target takes mode static; mode dynamic is for the onnxruntime"):
        edgeq.convert(_encoder_block(), _ids(), outdir=tmp_path / "out", targets=["tflite"], mode="dynamic")
    assert not (tmp_path / "out").exists()
    path = tmp_path / "dynamic.onnx"
    edgeq.quantize(_encoder_block(), _ids(), output=path, mode="dynamic")
    with pytest.raises(UnsupportedError, match="dynamically quantized"):
        registry.get("onnxruntime").integer_graph(path)


def test_auto_mode_builds_both_for_a_transformer_and_keeps_the_smaller_error(tmp_path):
    report = edgeq.convert(_encoder_block(), _ids(), outdir=tmp_path / "auto").targets["onnxruntime"]
    errors = report["mode_choice"]["worst_output_sqnr_db"]
    assert set(errors) == {"static", "dynamic"} and report["mode"] == max(errors, key=errors.get), report["mode"]
    dynamic_kernels = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"} & set(report["fusion"]["op_counts"])
    assert (report["mode"] == "dynamic") == bool(dynamic_kernels), report["fusion"]["op_counts"]
    # activations the recipe pins are honoured: no dynamic candidate
    pinned = edgeq.convert(_encoder_block(), _ids(), outdir=tmp_path / "pinned", activation_type="uint8")
    assert pinned.targets["onnxruntime"]["mode"] == "static" and "mode_choice" not in pinned.targets["onnxruntime"]


@pytest.mark.slow
def test_corpus_sentence_encoder_keeps_its_embeddings_better_than_onnxruntimes_dynamic_quantizer(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    case = CORPUS / "paraphrase_minilm_l3"
    if not case.is_dir():
        pytest.skip(f"the corpus is not at {CORPUS} (set EDGEQ_CORPUS to its folder)")
    source = case / "model.onnx"
    converted = edgeq.convert(source, case / "calib.npz", outdir=tmp_path / "edgeq", mode="dynamic")
    ours = tmp_path / "edgeq" / "model.qdq.onnx"
    theirs = tmp_path / "ort.onnx"
    quantize_dynamic(str(source), str(theirs), per_channel=True)  # its better setting on this model
    data = dict(np.load(case / "eval.npz"))
    rows = range(len(data["input_ids"]))

    def embeddings(path):
        runner = session(path)
        return np.concatenate([runner.run(["461"], {k: v[i : i + 1] for k, v in data.items()})[0] for i in rows])

    def cosines(test, reference):
        return np.sum(test * reference, 1) / (np.linalg.norm(test, axis=1) * np.linalg.norm(reference, axis=1))

    reference = embeddings(source)
    ours_cos, theirs_cos = cosines(embeddings(ours), reference), cosines(embeddings(theirs), reference)
    assert ours_cos.mean() >= 0.995 and ours_cos.min() >= 0.99, (ours_cos.mean(), ours_cos.min())
    assert ours_cos.mean() > theirs_cos.mean(), (ours_cos.mean(), theirs_cos.mean())
    assert ours.stat().st_size <= 0.3 * source.stat().st_size
    assert converted.targets["onnxruntime"]["fusion"]["quantized_kernels"].get("DynamicQuantizeMatMul", 0) >= 6


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_an_already_quantized_model_is_refused_naming_it(mode, tmp_path):
    path = tmp_path / f"{mode}.onnx"
    edgeq.quantize(_encoder_block(), _ids(), output=path, mode=mode)
    with pytest.raises(ModelError, match=f"{path}: already quantized .*give edgeq the float model"):
        edgeq.quantize(path, _ids())
    with pytest.raises(ModelError, match="already quantized"):
        edgeq.convert(path, _ids(), outdir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
