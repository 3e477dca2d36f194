"""Quantizing for the deployment CPU: its profile, the weights ONNX Runtime's fast kernels compute exactly on it,
and the speed check and note of the ONNX Runtime target."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import REPO
from onnx import TensorProto, helper

import edgeq
from edgeq.data import ArrayData, input_specs
from edgeq.errors import RecipeError, UnsupportedError
from edgeq.io import host
from edgeq.io.onnx_model import model_bytes
from edgeq.io.session import session
from edgeq.passes.limit_weight_pairs import LimitWeightPairsPass
from edgeq.pipeline import Pipeline
from edgeq.quantization import cpus
from edgeq.quantization.recipe import Recipe
from edgeq.quantization.weight_pairs import limit_pairs, pair_sums
from edgeq.targets.onnxruntime.speed import slower_note

DIGITS = REPO / "models" / "digits_cnn.onnx"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx avx2 fma avx512f avx512_vnni", "x86-vnni"),
        ("fpu sse2 avx avx2 fma avx_vnni", "x86-vnni"),
        ("fpu sse2 avx avx2 fma", "x86-avx2"),
    ],
)
def test_host_cpu_from_the_kernel_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setattr(host.platform, "machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    assert cpus.host_cpu(cpuinfo).name == expected


def test_host_cpu_without_flags_and_on_arm(tmp_path, monkeypatch):
    monkeypatch.setattr(host.platform, "machine", lambda: "x86_64")
    assert cpus.host_cpu(tmp_path / "absent").name == "x86-avx2"  # unknown x86: the weights exact everywhere
    monkeypatch.setattr(host.platform, "machine", lambda: "aarch64")
    assert cpus.host_cpu(tmp_path / "absent").name == "arm64"


def test_recipe_names_the_cpu_choices():
    assert Recipe(cpu="arm64").validate().cpu == "arm64"
    with pytest.raises(RecipeError, match="cpu must be one of auto, x86-vnni, x86-avx2, arm64"):
        Recipe(cpu="x86-sse").validate()


def _saturating_model() -> onnx.ModelProto:
    """A 1x1 convolution whose u8 x s8 pairs overflow int16 at 8 bits (inputs near the top of their range, equal
    positive weights), then a depthwise 3x3 one."""
    rng = np.random.default_rng(0)
    pointwise = np.abs(rng.normal(1.0, 0.05, (16, 32, 1, 1))).astype(np.float32)
    depthwise = rng.normal(0.0, 1.0, (16, 1, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "pw"], ["h"], name="pointwise"),
            helper.make_node("Conv", ["h", "dw"], ["y"], name="depthwise", group=16, pads=[1, 1, 1, 1]),
        ],
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 8, 8])],
        [onnx.numpy_helper.from_array(pointwise, "pw"), onnx.numpy_helper.from_array(depthwise, "dw")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pair_limited_weights_make_the_default_kernels_exact(tmp_path):
    """x86-avx2's weights: in the pointwise convolution (a u8s8 GEMM) no two weights of a channel add up to more
    than 128, the depthwise one keeps 8 bits, and ONNX Runtime's default kernels compute what its exact ones do,
    on any CPU (on x86 without VNNI the unlimited model's default kernels saturate: docs/runtimes.md §5.4)."""
    model = ir.from_proto(_saturating_model())
    x = np.random.default_rng(1).uniform(0.9, 1.0, (64, 32, 8, 8)).astype(np.float32)
    calibrated = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"x": x}, input_specs(model), "data"))
    qdq, report = Pipeline(Recipe()).quantize(calibrated, "uint8", gemm_pair_limit=128)
    assert report["gemm_pair_limit"] == 128
    weights = {v.name: v.const_value.numpy() for v in qdq.graph.initializers.values() if "weight_quantized" in v.name}
    assert 120 <= pair_sums(weights["pointwise.weight_quantized"], 0).max() <= 128
    assert np.abs(weights["depthwise.weight_quantized"]).max() == 127
    path = tmp_path / "w7.onnx"
    path.write_bytes(model_bytes(qdq))
    feeds = {"x": x[:8]}
    exact = session(path, exact_int8=True).run(None, feeds)[0]
    default = session(path, exact_int8=False).run(None, feeds)[0]
    np.testing.assert_array_equal(default, exact)
    if cpus.host_cpu().name == "x86-avx2":  # the premise: without the limit, this CPU's default kernels saturate
        unlimited, _ = Pipeline(Recipe()).quantize(calibrated, "uint8")
        path.write_bytes(model_bytes(unlimited))
        saturated = session(path, exact_int8=False).run(None, feeds)[0]
        assert not np.array_equal(saturated, session(path, exact_int8=True).run(None, feeds)[0])


def test_convert_reports_the_cpu_and_times_the_artifact_on_this_one(tmp_path):
    calib, test = REPO / "models" / "digits_calib.npz", REPO / "models" / "digits_test.npz"
    here = edgeq.convert(DIGITS, calib, outdir=tmp_path / "here", targets=["onnxruntime"], eval_data=test)
    report = here.targets["onnxruntime"]
    host = cpus.host_cpu()
    assert report["cpu"]["name"] == host.name
    assert report["cpu"]["gemm_pair_limit"] == host.gemm_pair_limit
    speed = report["validation"]["speed"]
    assert speed["fp32_ms"] > 0 and speed["artifact_ms"] > 0 and speed["speedup"] > 0
    assert ("note" in speed) == (speed["speedup"] < 1.0)
    other = next(name for name in cpus.CPUS if name != host.name)
    there = edgeq.convert(DIGITS, calib, outdir=tmp_path / "there", targets=["onnxruntime"], cpu=other, eval_data=test)
    assert there.targets["onnxruntime"]["cpu"]["name"] == other
    assert there.targets["onnxruntime"]["validation"]["speed"] == {
        "not_measured": f"built for {other}; this machine is {host.name}"
    }
    for result in (here, there):  # x86-avx2's limited weight pairs cost at most a point of accuracy here
        accuracy = result.targets["onnxruntime"]["validation"]["accuracy"]
        assert accuracy["quantized"] >= accuracy["float"] - 0.01


def test_slower_than_fp32_gets_a_note_with_the_reasons():
    cpu = cpus.CPUS["x86-avx2"]
    fusion = {"sandwiches": {"Pad": 11, "PRelu": 2}}
    note = slower_note({"speedup": 0.8, "fp32_ms": 0.2}, fusion, cpu)
    assert note.startswith("the int8 artifact runs at 0.80x the fp32 model's speed on this CPU (x86-avx2")
    assert "13 op(s) in float between DequantizeLinear and QuantizeLinear (Pad x11, PRelu x2)" in note
    assert "the model is small (fp32 0.200 ms)" in note and "deploy the fp32 model" in note
    assert "int8 kernels are not faster here" in slower_note({"speedup": 0.9, "fp32_ms": 5.0}, {"sandwiches": {}}, cpu)
    assert slower_note({"speedup": 1.3, "fp32_ms": 0.2}, fusion, cpu) is None
    int16 = slower_note({"speedup": 0.4, "fp32_ms": 5.0}, {"sandwiches": {}}, cpu, "int16")
    assert int16.startswith("the int16 artifact runs at 0.40x") and "no int16 kernels" in int16


@pytest.mark.parametrize("cpu, activation_type", [("x86-vnni", "uint8"), ("x86-avx2", "uint8"), ("arm64", "int8")])
def test_quantize_picks_the_activation_type_onnx_runtime_runs_fastest_on_the_cpu(tmp_path, cpu, activation_type):
    """Without a recipe or an activation type, edgeq quantize takes the CPU's fastest type and says why; an explicit
    type or a recipe's is kept."""
    calib = REPO / "models" / "digits_calib.npz"
    result = edgeq.quantize(DIGITS, calib, cpu=cpu)
    assert result.report["activation_type"] == activation_type
    assert result.report["activation_type_why"] == f"{activation_type}: what ONNX Runtime runs fastest on {cpu}"
    quantizers = [n for n in result.model.graph.node if n.op_type == "QuantizeLinear"]
    expected = onnx.TensorProto.UINT8 if activation_type == "uint8" else onnx.TensorProto.INT8
    initializers = {i.name: i for i in result.model.graph.initializer}
    assert all(initializers[n.input[2]].data_type == expected for n in quantizers)
    explicit = edgeq.quantize(DIGITS, calib, cpu=cpu, activation_type="int8")
    assert explicit.report["activation_type"] == "int8" and "activation_type_why" not in explicit.report
    assert edgeq.quantize(DIGITS, calib, recipe=Recipe(), cpu=cpu).report["activation_type"] == "int8"


def test_limit_pairs_moves_the_largest_weight_of_a_channel_until_its_pairs_fit():
    q = np.array([[100, 90, 10, -120], [5, 6, 7, 8], [127, 1, 0, -1]], np.int8)
    limited = limit_pairs(q, 0, 128)
    np.testing.assert_array_equal(limited, [[64, 64, 10, -64], [5, 6, 7, 8], [127, 1, 0, -1]])
    assert limited.dtype == np.int8 and q[0, 0] == 100  # the input is left as it was
    np.testing.assert_array_equal(limit_pairs(q.T, 1, 128), limited.T)  # channels on another axis


def test_verify_refuses_artifacts_of_two_quantized_models(tmp_path):
    """With --cpu x86-avx2 the QDQ model's weight pairs are bounded and the .tflite's are not: one reference
    cannot check both, and verify says so instead of reporting differences that are not errors."""
    calib = REPO / "models" / "digits_calib.npz"
    result = edgeq.convert(
        DIGITS, calib, outdir=tmp_path, targets=["onnxruntime", "tflite"], cpu="x86-avx2", verify_samples=0
    )
    qdq, tflite = tmp_path / "digits_cnn.qdq.onnx", tmp_path / "digits_cnn.tflite"
    assert result.targets["onnxruntime"]["gemm_pair_limit"] == 128
    with pytest.raises(UnsupportedError, match=f"{qdq} and {tflite} are different quantized models .* separately"):
        edgeq.verify([tflite, qdq], calib)


def test_quantize_bounds_the_weight_pairs_for_the_cpu_it_is_given():
    calib = REPO / "models" / "digits_calib.npz"
    largest = {}
    for cpu in ("x86-avx2", "x86-vnni"):
        result = edgeq.quantize(DIGITS, calib, cpu=cpu)
        assert result.report["cpu"] == cpu
        weights = {
            t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name.endswith("weight_quantized")
        }
        # the pointwise layers (digits' 1x1 convolutions and its Gemm) are u8s8 GEMMs in ONNX Runtime
        largest[cpu] = max(pair_sums(q, 0).max() for q in weights.values() if q.ndim == 2 or q.shape[1] > 1)
    assert largest["x86-avx2"] <= 128 < largest["x86-vnni"]


def test_limit_weight_pairs_pass_restores_the_bound_after_a_pass_rounds_again():
    """As after AdaRound or dyadic scales: a pointwise channel pushed over the bound is brought back, the
    depthwise layer (its own kernel) is left alone."""
    model = ir.from_proto(_saturating_model())
    x = np.random.default_rng(1).uniform(0.9, 1.0, (16, 32, 8, 8)).astype(np.float32)
    calibrated = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"x": x}, input_specs(model), "data"))
    qdq, _ = Pipeline(Recipe()).quantize(calibrated, "uint8", gemm_pair_limit=128)
    values = {v.name: v for v in qdq.graph.initializers.values()}
    pointwise, depthwise = values["pointwise.weight_quantized"], values["depthwise.weight_quantized"]
    pushed = pointwise.const_value.numpy().copy()
    pushed[0, :2] = 100
    pointwise.const_value = ir.tensor(pushed, name=pointwise.name)
    before = depthwise.const_value.numpy().copy()
    result = LimitWeightPairsPass(128)(qdq)
    assert result.modified and result.weights_moved == 2
    limited = pointwise.const_value.numpy()
    assert limited[0, :2].ravel().tolist() == [64, 64] and pair_sums(limited, 0).max() <= 128
    np.testing.assert_array_equal(depthwise.const_value.numpy(), before)


def test_profile_times_a_bounded_artifact_on_the_kernels_it_deploys_with(tmp_path):
    """A model whose GEMM weight pairs are bounded runs exactly on ONNX Runtime's default kernels, so edgeq profile
    times those; a full 8-bit model is timed on the exact ones (the default ones may saturate), except on a CPU
    whose default kernels are exact (VNNI, ARM64), where the exact setting would only select slower kernels."""
    from edgeq.targets.onnxruntime.profile import exact_kernels_needed, profile

    calib = REPO / "models" / "digits_calib.npz"
    for cpu, exact in (("x86-avx2", False), ("x86-vnni", not host.this_cpu_exact_int8())):
        path = tmp_path / f"{cpu}.onnx"
        edgeq.quantize(DIGITS, calib, output=path, cpu=cpu)
        assert exact_kernels_needed(path) is exact
        kernels = "exact int8 kernels" if exact else "default kernels"
        assert profile(path, runs=3, warmup=1, per_op=False)["runtime"].endswith(kernels)
    assert exact_kernels_needed(DIGITS) is False  # a float model: nothing to saturate


@pytest.mark.parametrize("exact_dot_products, entry", [(True, "0"), (False, "1")])
def test_sessions_ask_for_exact_kernels_only_where_the_default_ones_saturate(monkeypatch, exact_dot_products, entry):
    """On VNNI and ARM64 the default int8 kernels are exact and session.x64quantprecision=1 would only select slower
    ones (MobileNetV2 8.2 ms instead of 3.6 ms on an AVX-512 VNNI Xeon); on x86 without VNNI it is what keeps a
    full 8-bit model exact."""
    from edgeq.io import session as session_module

    monkeypatch.setattr(session_module, "this_cpu_exact_int8", lambda: exact_dot_products)
    runner = session(DIGITS)
    assert runner.get_session_options().get_session_config_entry("session.x64quantprecision") == entry


@pytest.mark.parametrize("exact_dot_products", [True, False])
def test_profile_takes_the_exact_kernels_only_where_the_default_ones_may_saturate(monkeypatch, tmp_path, exact_dot_products):
    from edgeq.targets.onnxruntime import profile as profile_module

    monkeypatch.setattr(profile_module, "this_cpu_exact_int8", lambda: exact_dot_products)
    path = tmp_path / "full8.onnx"
    edgeq.quantize(DIGITS, REPO / "models" / "digits_calib.npz", output=path, cpu="x86-vnni")  # pairs unbounded
    assert profile_module.exact_kernels_needed(path) is not exact_dot_products
