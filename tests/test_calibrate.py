"""Calibration runs the real float model in onnxruntime and sees the same tensors the model computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import make_convnet
from onnx import TensorProto, helper

from edgeq.calibration.collect import collect
from edgeq.calibration.observers import METHODS, TensorObserver
from edgeq.data import ArrayData, CalibrationData, input_specs
from edgeq.errors import EdgeqError
from edgeq.io.session import session as ort_session
from edgeq.passes.preprocess import preprocess

X = np.random.default_rng(0).normal(size=(20, 3, 8, 8)).astype(np.float32)


def _model(batch="N"):
    return preprocess(ir.serde.deserialize_model(make_convnet(batch=batch)))


def _reference(proto: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The tensors NAMES computed by an unoptimized onnxruntime session, one sample at a time."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    runner = ort_session(proto, optimization="disabled")
    runs = [runner.run(names, {"input": x[i : i + 1]}) for i in range(len(x))]
    return {name: np.concatenate([run[k] for run in runs]) for k, name in enumerate(names)}


def _assert_same_statistics(observer: TensorObserver, values: np.ndarray) -> None:
    assert observer.count == values.size
    assert observer.min == pytest.approx(float(values.min()), rel=1e-5, abs=1e-6)
    assert observer.max == pytest.approx(float(values.max()), rel=1e-5, abs=1e-6)
    direct = TensorObserver()
    direct.update(values)
    for method in METHODS:
        assert observer.range(method) == pytest.approx(direct.range(method), rel=1e-4, abs=1e-6), method


def test_exposed_tensors_match_the_model():
    model = _model()
    names = ["input", "relu", "add", "gap", "probs"]
    observers = collect(model, names, ArrayData({"input": X}, input_specs(model), "x"), progress=False)
    reference = _reference(ir.serde.serialize_model(model), names, X)
    for name in names:
        _assert_same_statistics(observers[name], reference[name])
    direct = TensorObserver()
    direct.update(X)  # graph inputs are observed from the fed batches themselves
    np.testing.assert_array_equal(observers["input"].counts, direct.counts)


def test_basic_optimizations_fuse_nothing_we_read():
    """On the raw model, onnxruntime's basic level would fold BatchNorm into the Conv before it."""
    proto = make_convnet()
    model = ir.serde.deserialize_model(proto)
    names = ["stem", "bn", "relu", "dw", "clip", "pw"]
    observers = collect(model, names, ArrayData({"input": X}, input_specs(model), "x"), progress=False)
    reference = _reference(proto, names, X)
    for name in names:
        _assert_same_statistics(observers[name], reference[name])


def test_batch_size_does_not_change_statistics():
    model = _model()
    data = ArrayData({"input": X}, input_specs(model), "x")
    one = collect(model, ["add", "relu"], data, batch_size=1, progress=False)
    many = collect(model, ["add", "relu"], data, batch_size=7, progress=False)
    default = collect(model, ["add", "relu"], data, progress=False)
    for name in ("add", "relu"):
        for other in (many[name], default[name]):
            assert (one[name].min, one[name].max) == (other.min, other.max)
            np.testing.assert_array_equal(one[name].counts, other.counts)


class _Stream(CalibrationData):
    """Samples made on the fly, with an unknown count (like a generator callable)."""

    def __init__(self, x):
        self.x, self.specs, self.num_samples = x, [], None

    def batches(self, batch_size):
        for start in range(0, len(self.x), batch_size):
            yield {"input": self.x[start : start + batch_size]}


def test_fixed_batch_dimension():
    fixed = _model(batch=1)
    observers = collect(fixed, ["add"], ArrayData({"input": X}, input_specs(fixed), "x"), progress=False)
    dynamic = collect(_model(), ["add"], ArrayData({"input": X}, input_specs(_model()), "x"), progress=False)
    np.testing.assert_array_equal(observers["add"].counts, dynamic["add"].counts)
    four = _model(batch=4)
    with pytest.raises(EdgeqError, match="fixed to 4 and the data has 10 samples"):
        collect(four, ["add"], ArrayData({"input": X[:10]}, input_specs(four), "x"), progress=False)
    with pytest.raises(EdgeqError, match="fixed to 4 and the data has 10 samples"):
        collect(four, ["add"], _Stream(X[:10]), progress=False)
    assert collect(four, ["add"], _Stream(X[:8]), progress=False)["add"].count == 8 * 8 * 8 * 8


def test_model_is_left_unchanged_and_unknown_names_are_refused():
    model = _model()
    before = ir.serde.serialize_model(model).SerializeToString()
    collect(model, ["relu"], ArrayData({"input": X}, input_specs(model), "x"), progress=False)
    assert ir.serde.serialize_model(model).SerializeToString() == before
    with pytest.raises(ValueError, match="stem.w"):
        collect(model, ["relu", "stem.w"], ArrayData({"input": X}, input_specs(model), "x"), progress=False)


def test_a_model_that_fails_at_run_time_is_one_error_line():
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    data = ArrayData({"input": np.ones((1, 4), np.float32)}, input_specs(model), "x")
    with pytest.raises(EdgeqError, match="the float model failed on the calibration data") as exc_info:
        collect(model, ["y"], data, progress=False)
    assert "\n" not in str(exc_info.value)


_MEMORY_SCRIPT = """
import sys, numpy as np, onnx_ir as ir
sys.path.insert(0, {tests!r})
from conftest import make_convnet
from edgeq.calibration.collect import collect
from edgeq.data import CalibrationData, input_specs, load_npz
from edgeq.passes.preprocess import preprocess

class Stream(CalibrationData):
    def __init__(self, specs, n):
        self.specs, self.num_samples = specs, n
    def batches(self, size):
        rng = np.random.default_rng(0)
        for start in range(0, self.num_samples, size):
            yield {{"input": rng.normal(size=(min(size, self.num_samples - start), 3, 64, 64)).astype(np.float32)}}

model = ir.serde.deserialize_model(make_convnet(batch="N"))
model.graph.inputs[0].shape = ir.Shape(["N", 3, 64, 64])
preprocess(model)
names = [v.name for n in model.graph for v in n.outputs]
data = Stream(input_specs(model), int(sys.argv[1]))
if sys.argv[2] != "stream":  # an .npz written by the test
    data = load_npz(sys.argv[3], input_specs(model))
collect(model, names, data, batch_size=16, progress=False)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["stream", "npz", "npz-compressed"])
def test_peak_memory_does_not_grow_with_samples(tmp_path, source):
    """1024 samples of 3x64x64 are 48 MB; an .npz of them must not be held (nor memory-mapped) whole."""
    script = tmp_path / "mem.py"
    script.write_text(_MEMORY_SCRIPT.format(tests=str(Path(__file__).parent)))

    def peak_kb(n: int) -> int:
        npz = tmp_path / f"{n}.npz"
        if source != "stream":
            x = np.random.default_rng(0).normal(size=(n, 3, 64, 64)).astype(np.float32)
            (np.savez_compressed if source == "npz-compressed" else np.savez)(npz, input=x)
        args = [sys.executable, str(script), str(n), source, str(npz)]
        return int(subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()[-1])

    small, large = peak_kb(64), peak_kb(1024)
    assert large <= small + 16 * 1024, (small, large)
