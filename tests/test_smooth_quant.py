"""SmoothQuant (passes/smooth_quant.py): the float function is kept, the right tensors are smoothed, and int8
activations with an outlier channel lose less."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import CORPUS
from onnx import TensorProto, helper

import edgeq
from edgeq.api.inputs import data_of
from edgeq.errors import RecipeError
from edgeq.io.session import run_in_chunks, session
from edgeq.passes.preprocess import preprocess
from edgeq.passes.smooth_quant import SmoothQuantPass, smoothing_scales
from edgeq.quantization.recipe import Recipe

K, T = 16, 8
RNG = np.random.default_rng(0)
LN_SCALE = np.ones(K, np.float32)
LN_SCALE[3] = 60.0  # the outlier channel, as BERT's LayerNorm gammas make them
WEIGHTS = [RNG.normal(0, 0.3, (K, 8)).astype(np.float32) for _ in range(2)]
BETA, BIAS = RNG.normal(0, 0.1, K).astype(np.float32), RNG.normal(0, 0.1, 8).astype(np.float32)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.ravel())


def _layer_norm_model(residual: bool = False) -> onnx.ModelProto:
    """x -> LayerNorm (one outlier channel) -> two MatMul(+bias) readers; RESIDUAL: the LayerNorm output is also
    added to x."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "w0"], ["p0"], name="q"),
        helper.make_node("Add", ["p0", "b0"], ["y0"], name="q_bias"),
        helper.make_node("MatMul", ["ln", "w1"], ["y1"], name="k"),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", T, 8]) for n in ("y0", "y1")]
    if residual:
        nodes.append(helper.make_node("Add", ["ln", "x"], ["r"], name="residual"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", T, K]))
    graph = helper.make_graph(
        nodes,
        "ln_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, K])],
        outputs,
        [
            _init("gamma", LN_SCALE),
            _init("beta", BETA),
            _init("w0", WEIGHTS[0]),
            _init("b0", BIAS),
            _init("w1", WEIGHTS[1]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _chain_model() -> onnx.ModelProto:
    """x -> MatMul + bias -> h -> MatMul -> Sigmoid -> s -> MatMul: h can be smoothed, s cannot (Sigmoid)."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["p"], name="first"),
        helper.make_node("Add", ["p", "b0"], ["h"], name="first_bias"),
        helper.make_node("MatMul", ["h", "w1"], ["g"], name="second"),
        helper.make_node("Sigmoid", ["g"], ["s"], name="sigmoid"),
        helper.make_node("MatMul", ["s", "w2"], ["y"], name="third"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [
            _init("w0", rng.normal(0, 0.3, (K, K)).astype(np.float32)),
            _init("b0", rng.normal(0, 0.1, K).astype(np.float32)),
            _init("w1", rng.normal(0, 0.3, (K, 8)).astype(np.float32)),
            _init("w2", rng.normal(0, 0.3, (8, 8)).astype(np.float32)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=shape).astype(np.float32)}


def _smoothed(proto: onnx.ModelProto, calib: dict[str, np.ndarray], **options):
    """The preprocessed model and SmoothQuantPass's result on it (the model is rewritten in place)."""
    model = ir.serde.deserialize_model(proto)
    data = data_of(calib, model)
    preprocess(model, sample_shapes=data.sample_shapes())
    before = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    result = SmoothQuantPass(Recipe().validate(), data, **options)(model)
    return before, model, result


def _assert_same_function(before: ir.Model, after: ir.Model, feeds: dict[str, np.ndarray]) -> None:
    expected, actual = (run_in_chunks(session(m), [o.name for o in m.graph.outputs], feeds) for m in (before, after))
    for e, a in zip(expected, actual, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


@pytest.mark.parametrize("alpha", ["auto", 0.5])
def test_layer_norm_readers_are_smoothed_and_the_function_kept(alpha):
    before, model, result = _smoothed(_layer_norm_model(), _samples((32, T, K), 1), alpha=alpha)
    assert list(result.smoothed) == ["ln"] and result.smoothed["ln"]["producer"] == "LayerNormalization"
    assert len(result.smoothed["ln"]["readers"]) == 2 and result.modified
    assert result.alpha == (0.5 if alpha == 0.5 else result.alpha) and result.alpha is not None
    _assert_same_function(before, model, _samples((4, T, K), 2))
    # the outlier channel's scale is divided out of the LayerNorm: its gamma is no longer 60 times the others
    gamma = next(n for n in model.graph if n.op_type == "LayerNormalization").inputs[1].const_value.numpy()
    assert np.abs(gamma).max() / np.median(np.abs(gamma)) < 60 / 4


def test_a_product_with_a_bias_is_smoothed_and_an_activation_is_not():
    before, model, result = _smoothed(_chain_model(), _samples((64, K), 1), alpha=0.5)
    assert list(result.smoothed) == ["h"] and result.smoothed["h"]["producer"] in ("Gemm", "Add")
    assert "Sigmoid" in result.skipped["s"]
    assert "h.smoothed" in {v.name for n in model.graph for v in n.outputs}  # no longer the float model's values
    _assert_same_function(before, model, _samples((5, K), 2))



def test_gemms_with_transposed_weights_are_smoothed_on_the_right_axis():
    rng = np.random.default_rng(2)
    w0 = rng.normal(0, 0.3, (K, K)).astype(np.float32)
    w0[5] *= 30  # one output channel of the first Gemm (a row, transB) is an outlier
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1, name="first"),
            helper.make_node("Gemm", ["h", "w1"], ["y"], transB=1, name="second"),
        ],
        "gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [_init("w0", w0), _init("b0", rng.normal(0, 0.1, K).astype(np.float32)), _init("w1", WEIGHTS[0].T.copy())],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before, model, result = _smoothed(proto, _samples((64, K), 1), alpha=0.5)
    assert list(result.smoothed) == ["h"] and result.smoothed["h"]["producer"] == "Gemm"
    _assert_same_function(before, model, _samples((4, K), 2))
    first = next(n for n in model.graph if n.name == "first").inputs[1].const_value.numpy()
    row_max = np.abs(first).max(axis=1)
    assert row_max[5] / np.median(row_max) < 30 / 3  # the outlier row was divided by its s

def test_a_layer_norm_output_also_read_by_an_add_is_left_alone_unless_copied():
    calib = _samples((32, T, K), 1)
    before, model, result = _smoothed(_layer_norm_model(residual=True), calib)
    assert not result.smoothed and not result.modified and "also read by Add" in result.skipped["ln"]
    assert onnx.printer.to_text(ir.serde.serialize_model(model)) == onnx.printer.to_text(
        ir.serde.serialize_model(before)
    )
    before, model, result = _smoothed(_layer_norm_model(residual=True), calib, shared="copy")
    assert result.smoothed["ln"]["copied_layer_norm"]
    assert sum(n.op_type == "LayerNormalization" for n in model.graph) == 2
    _assert_same_function(before, model, _samples((4, T, K), 2))


def test_alpha_search_is_deterministic():
    calib = _samples((32, T, K), 1)
    runs = [_smoothed(_layer_norm_model(), calib)[1:] for _ in range(2)]
    (first_model, first), (second_model, second) = runs
    assert first.alpha == second.alpha and first.scores == second.scores and set(first.scores) == {
        "none", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"
    }  # fmt: skip
    weights = [[v.const_value.numpy() for v in m.graph.initializers.values()] for m in (first_model, second_model)]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_smoothing_scales_follow_the_formula():
    activation = np.array([8.0, 1.0, 0.0])
    weight = np.array([[2.0, -1.0], [0.5, 0.25], [1.0, 1.0]])
    scales = smoothing_scales(activation, [weight, weight * 0.5], 0.5)
    np.testing.assert_allclose(scales, [np.sqrt(8.0 / 2.0), np.sqrt(1.0 / 0.5), 1.0])


def _sqnr_db(reference: list[np.ndarray], test: list[np.ndarray]) -> float:
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((r.astype(np.float64) - t) ** 2)) for r, t in zip(reference, test, strict=True))
    return 10 * np.log10(signal / noise)


def test_int8_error_with_an_outlier_channel_is_lower_with_smoothing():
    proto, calib, held_out = _layer_norm_model(), _samples((64, T, K), 1), _samples((32, T, K), 3)
    reference = session(proto).run(None, held_out)
    sqnr = {}
    for passes in ([], ["smooth-quant"]):
        result = edgeq.quantize(proto, calib, activation_type="int8", passes=passes)
        if passes:
            assert list(result.report["stages"]["smooth-quant"]["smoothed"]) == ["ln"]
        sqnr[bool(passes)] = _sqnr_db(reference, session(result.model).run(None, held_out))
    assert sqnr[True] >= sqnr[False] + 6.0, sqnr  # measured 30.7 -> 42.3 dB (alpha 0.7)


def test_recipe_option_types():
    assert Recipe(passes=["bias-correction", "smooth-quant", "equalize"]).validate().passes == [
        "equalize", "smooth-quant", "bias-correction"
    ]  # fmt: skip
    assert Recipe(smooth_quant_alpha=0.6).validate().smooth_quant_alpha == 0.6
    for bad in (True, "0.5", 1.5, -0.1):
        with pytest.raises(RecipeError, match="smooth_quant_alpha"):
            Recipe(smooth_quant_alpha=bad).validate()
    with pytest.raises(RecipeError, match="smooth_quant_shared"):
        Recipe(smooth_quant_shared="always").validate()


@pytest.mark.slow  # 20-40 s: two preprocessings and smoothings of the 69 MB encoder
def test_corpus_encoder_keeps_its_function():
    """paraphrase-MiniLM-L3 (post-LN BERT): every LayerNorm output also feeds a residual Add, so "skip" smooths
    nothing and "copy" smooths all six that feed the Q/K/V and FFN products."""
    case = CORPUS / "paraphrase_minilm_l3"
    if not case.is_dir():
        pytest.skip(f"the third-party corpus is not on this machine ({CORPUS})")
    calib = {k: v[:16] for k, v in np.load(case / "calib.npz").items()}
    proto = onnx.load(case / "model.onnx")
    _, _, skipped = _smoothed(proto, calib)
    assert not skipped.smoothed and sum("also read by Add" in why for why in skipped.skipped.values()) == 6
    before, model, result = _smoothed(proto, calib, shared="copy")
    assert len(result.smoothed) == 6 and all(s["producer"] == "LayerNormalization" for s in result.smoothed.values())
    feeds = {k: v[16:20] for k, v in np.load(case / "eval.npz").items()}
    expected, actual = (run_in_chunks(session(m), ["461"], feeds)[0] for m in (before, model))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
