"""Data-free calibration (edgeq.calibration.synthetic) and the torch evaluator it relies on (edgeq.calibration.torch_graph).

Every check runs the models in onnxruntime as the reference: the evaluator must agree with it, and the
distilled data's statistics are measured there, not in torch.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import make_convnet
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from edgeq.calibration.synthetic import batchnorm_targets, distill  # noqa: E402
from edgeq.calibration.torch_graph import TorchGraph  # noqa: E402
from edgeq.errors import EdgeqError  # noqa: E402
from edgeq.io.onnx_model import load_model, to_proto  # noqa: E402
from edgeq.io.session import session as ort_session  # noqa: E402
from edgeq.passes.preprocess import preprocess  # noqa: E402


def _session(model: ir.Model, exposed=()) -> ort.InferenceSession:
    proto = to_proto(model)
    for name in exposed:
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return ort_session(proto)


def _torch_outputs(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        values = TorchGraph(model).run({k: torch.from_numpy(v) for k, v in feeds.items()})
    return [values[v.name].numpy() for v in model.graph.outputs]


def _export_bn_model(path, fixed_batch: int | None = None):
    """Conv-BN-Relu, strided Conv-BN-Relu6, GAP, Linear, exported to PATH, with BatchNorm statistics measured on
    "training data" unlike N(0, 1) (smooth images with per-channel offsets), so that they can be matched."""
    from edgeq.api.export import export_module

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(8, momentum=None),  # momentum None: exact averages over the batches seen
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        torch.nn.BatchNorm2d(16, momentum=None),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 4),
    )
    noise = torch.randn(256, 3, 6, 6)
    training_data = torch.nn.functional.interpolate(noise, size=(12, 12), mode="bilinear")
    training_data = 0.7 * training_data + torch.tensor([0.8, -0.5, 0.2]).view(1, 3, 1, 1)
    with torch.no_grad():
        module.train()(training_data)
        for bn in (module[1], module[4]):  # gamma and beta as training would leave them: not 1 and 0
            bn.weight.uniform_(0.3, 2.0)
            bn.bias.normal_(0.3, 0.5)
    example = torch.zeros(fixed_batch or 1, 3, 12, 12)
    export_module(
        module.eval(),
        (example,),
        path,
        input_names=["input"],
        output_names=["logits"],
        dynamic_batch=fixed_batch is None,
    )
    return path


@pytest.fixture(scope="module")
def bn_model_path(tmp_path_factory):
    return _export_bn_model(tmp_path_factory.mktemp("bn") / "bn.onnx")


def _load(path) -> ir.Model:
    return preprocess(load_model(path))


def _folded_outputs(model: ir.Model, samples: np.ndarray, chunk: int) -> list[np.ndarray]:
    """The outputs of every BatchNorm-folded layer for SAMPLES, run in onnxruntime CHUNK samples at a time."""
    session = _session(model, batchnorm_targets(model))
    names = list(batchnorm_targets(model))
    parts = [session.run(names, {"input": samples[i : i + chunk]}) for i in range(0, len(samples), chunk)]
    return [np.concatenate(values) for values in zip(*parts, strict=True)]


def _statistics_errors(model: ir.Model, samples: np.ndarray, chunk: int | None = None) -> list[tuple]:
    """Per folded layer, measured in onnxruntime: ZeroQ's loss terms ||mean - beta||, ||std - |gamma|||."""
    errors = []
    outputs = _folded_outputs(model, samples, chunk or len(samples))
    for (beta, abs_gamma), value in zip(batchnorm_targets(model).values(), outputs, strict=True):
        axes = tuple(a for a in range(value.ndim) if a != 1)
        errors.append((np.linalg.norm(value.mean(axes) - beta), np.linalg.norm(value.std(axes) - abs_gamma)))
    return errors


def _zeroq_loss(model: ir.Model, samples: np.ndarray, chunk: int | None = None) -> float:
    return float(sum(sum(pair) for pair in _statistics_errors(model, samples, chunk)))


# ---- the evaluator ----------------------------------------------------------------------------------------
def test_evaluator_matches_onnxruntime_on_the_convnet(tmp_path):
    onnx.save(make_convnet(), tmp_path / "convnet.onnx")
    model = preprocess(load_model(tmp_path / "convnet.onnx"))
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        _torch_outputs(model, {"input": x})[0], _session(model).run(None, {"input": x})[0], atol=1e-4
    )


def _single_op_model(op: str, attributes: dict, constants=(), output_shape=None) -> onnx.ModelProto:
    """One OP node fed by the graph input "x" [2, 4, 7, 6] and CONSTANTS (None: an omitted optional input)."""
    names = ["x"] + [f"c{i}" if c is not None else "" for i, c in enumerate(constants)]
    inits = [
        numpy_helper.from_array(np.asarray(c), f"c{i}") for i, c in enumerate(constants) if c is not None
    ]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attributes)],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


_f = np.float32
_i = np.int64
SINGLE_OPS = {
    "conv_asymmetric_pads_dilated_grouped": (
        "Conv",
        {"pads": [0, 2, 1, 1], "dilations": [2, 1], "strides": [1, 2], "group": 2},
        [np.random.default_rng(1).normal(size=(6, 2, 3, 2)).astype(_f), np.arange(6, dtype=_f)],
    ),
    "conv_same_upper": ("Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, [np.ones((3, 4, 2, 3), _f)]),
    "avgpool_pads_ceil_exclude": (
        "AveragePool",
        {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1},
        [],
    ),
    "avgpool_pads_include": (
        "AveragePool",
        {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        [],
    ),
    "maxpool_pads_ceil": (
        "MaxPool",
        {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 1, 0, 1], "ceil_mode": 1},
        [],
    ),
    "pad_reflect": ("Pad", {"mode": "reflect"}, [np.array([0, 0, 1, 2, 0, 0, 2, 1], _i)]),
    "pad_constant": ("Pad", {}, [np.array([0, 1, 0, 1, 0, 0, 1, 0], _i), np.array(0.5, _f)]),
    "resize_nearest_half_pixel": ("Resize", {"mode": "nearest"}, [None, np.array([1, 1, 1.7, 2.5], _f)]),
    "resize_nearest_asymmetric_floor": (
        "Resize",
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        [None, None, np.array([2, 4, 14, 12], _i)],
    ),
    "transpose": ("Transpose", {"perm": [0, 2, 3, 1]}, []),
    "reshape": ("Reshape", {}, [np.array([0, -1, 3], _i)]),
    "flatten_axis2": ("Flatten", {"axis": 2}, []),
    "concat": ("Concat", {"axis": 1}, [np.ones((2, 3, 7, 6), _f)]),
    "softmax_axis1": ("Softmax", {"axis": 1}, []),
    "sigmoid": ("Sigmoid", {}, []),
    "hardswish": ("HardSwish", {}, []),
    "div": ("Div", {}, [np.array([1.5, -2.0, 4.0, 0.25], _f).reshape(4, 1, 1)]),
    "sub": ("Sub", {}, [np.array(0.75, _f)]),
    "mul": ("Mul", {}, [np.full((6,), 3.0, _f)]),
    "matmul": ("MatMul", {}, [np.random.default_rng(2).normal(size=(6, 5)).astype(_f)]),
    "clip_min_only": ("Clip", {}, [np.array(-0.5, _f)]),
}


@pytest.mark.parametrize("case", sorted(SINGLE_OPS))
def test_evaluator_matches_onnxruntime_per_op(case):
    proto = _single_op_model(*SINGLE_OPS[case])
    model = ir.serde.deserialize_model(proto)
    x = np.random.default_rng(0).normal(size=(2, 4, 7, 6)).astype(np.float32)
    expected = ort_session(proto).run(
        None, {"x": x}
    )[0]
    got = _torch_outputs(model, {"x": x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_evaluator_names_unsupported_ops():
    proto = _single_op_model("Tanh", {})
    with pytest.raises(EdgeqError, match="does not support op.*Tanh"):
        TorchGraph(ir.serde.deserialize_model(proto))


# ---- distillation -----------------------------------------------------------------------------------------
def test_distilled_statistics_approach_the_batchnorm_targets(bn_model_path):
    model = _load(bn_model_path)
    assert len(batchnorm_targets(model)) == 2
    noise = distill(model, 32, iterations=0, progress=False)  # the N(0, 1) starting point
    data = distill(model, 32, iterations=60, progress=False, class_weight=0.0)  # ZeroQ's loss alone
    assert data.num_samples == 32 and [s.name for s in data.specs] == ["input"]
    (batch,) = data.batches(32)
    samples = batch["input"]
    assert samples.shape == (32, 3, 12, 12) and samples.dtype == np.float32
    before = _statistics_errors(model, noise.arrays["input"])
    after = _statistics_errors(model, samples)
    # every term of the loss shrinks, and the whole loss by an order of magnitude
    for layer_before, layer_after in zip(before, after, strict=True):
        assert all(a < 0.3 * b for a, b in zip(layer_after, layer_before, strict=True)), (before, after)
    assert _zeroq_loss(model, samples) < 0.1 * _zeroq_loss(model, noise.arrays["input"]), (before, after)
    again = distill(model, 32, iterations=60, progress=False, class_weight=0.0)  # same seed, same samples
    np.testing.assert_array_equal(again.arrays["input"], samples)


def test_class_term_makes_the_distilled_samples_confident(bn_model_path):
    """The cross-entropy term asks each sample for a class: the model's top probability rises."""
    model = _load(bn_model_path)
    session = _session(model)

    def mean_top_probability(class_weight):
        samples = distill(model, 16, iterations=40, progress=False, class_weight=class_weight).arrays["input"]
        logits = session.run(None, {"input": samples})[0]
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        return float((probabilities.max(1) / probabilities.sum(1)).mean())

    assert mean_top_probability(10.0) > mean_top_probability(0.0) + 0.1  # measured: 0.55 vs 0.41


def test_distill_runs_a_fixed_batch_model_in_batches_of_its_size(tmp_path):
    model = _load(_export_bn_model(tmp_path / "bn4.onnx", fixed_batch=4))
    with pytest.raises(EdgeqError, match="multiple of 4"):
        distill(model, 6, iterations=1, progress=False)
    noise = distill(model, 8, iterations=0, progress=False).arrays["input"]
    # ZeroQ's loss alone: the default class term (weighted for MobileNetV2) outweighs it on this two-layer model
    samples = distill(model, 8, iterations=40, progress=False, class_weight=0.0).arrays["input"]
    assert _zeroq_loss(model, samples, chunk=4) < 0.3 * _zeroq_loss(model, noise, chunk=4)


def test_distill_refuses_models_it_cannot_serve(bn_model_path, monkeypatch):
    no_batchnorm = ir.serde.deserialize_model(_single_op_model("Relu", {}, output_shape=[2, 4, 7, 6]))
    with pytest.raises(EdgeqError, match="needs BatchNorm statistics; this model has none"):
        distill(no_batchnorm, 4, iterations=1, progress=False)

    two_inputs = _load(bn_model_path)
    two_inputs.graph.inputs.append(
        ir.Value(name="other", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    )
    with pytest.raises(EdgeqError, match="one input; this model has 2 .input, other."):
        distill(two_inputs, 4, iterations=1, progress=False)

    model = _load(bn_model_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(EdgeqError, match=r"pip install 'edgeq\[torch\]'"):
        distill(model, 4, iterations=1, progress=False)


# ---- MobileNetV2 ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet_v2(tmp_path_factory):
    from edgeq.api.export import export_module
    from models.mobilenet_v2 import build

    module, example = build()
    path = tmp_path_factory.mktemp("mbv2") / "mbv2.onnx"
    export_module(module, example, path, input_names=["input"], output_names=["logits"])
    return path


@pytest.mark.slow
def test_evaluator_matches_onnxruntime_on_mobilenet_v2(mobilenet_v2):
    from models.photos import eval_views

    model = preprocess(load_model(mobilenet_v2))
    views = eval_views(4, seed=3)
    np.testing.assert_allclose(
        _torch_outputs(model, {"input": views})[0], _session(model).run(None, {"input": views})[0], atol=1e-4
    )


@pytest.mark.slow
def test_mobilenet_v2_calibrated_on_distilled_data_keeps_top1_agreement(mobilenet_v2):
    """Distilled data calibrates MobileNetV2 far better than the N(0, 1) noise it starts from, and its winning
    logits reach the photos' upper range, so calibration does not clip the photos' winning logits (the class
    term's weight: 4 gave 14.4, short of the photos' 90th percentile 17.3; see the module report)."""
    from edgeq.measure.metrics import top1_agreement
    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from models.photos import eval_views

    views = eval_views(128, seed=5)
    float_session = ort_session(mobilenet_v2)
    reference = float_session.run(None, {"input": views})[0]
    agreement = {}
    for iterations in (0, 30):
        model = preprocess(load_model(mobilenet_v2))
        data = distill(model, 8, iterations=iterations, progress=False)
        qdq, _ = Pipeline(Recipe(), progress=False).run(model, data)
        quantized = _session(qdq).run(None, {"input": views})[0]
        agreement[iterations] = top1_agreement(reference, quantized)
    distilled_logits = float_session.run(None, {"input": data.arrays["input"]})[0]
    photos_top = np.percentile(reference.max(1), 90)
    assert distilled_logits.max() > photos_top, (distilled_logits.max(1), photos_top)  # measured 19.7 vs 17.3
    assert agreement[30] > 0.75 and agreement[30] > agreement[0] + 0.3, agreement  # measured 0.84 and 0.32


def test_channel_moments_gradient_matches_autograd():
    from edgeq.calibration.synthetic import _moments_function

    value = torch.randn(3, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_moments_function(torch), (value,))
    mean, var = _moments_function(torch)(value)
    expected_var, expected_mean = torch.var_mean(value, dim=[0, 2, 3], correction=0)
    torch.testing.assert_close((mean, var), (expected_mean, expected_var))
