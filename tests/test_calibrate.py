"""Calibration runs the real float model in onnxruntime and sees the same tensors the model computes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import make_convnet
from edgeq.passes.preprocess import preprocess

from edgeq.calibrate import collect
from edgeq.data import ArrayData, input_specs

X = np.random.default_rng(0).normal(size=(20, 3, 8, 8)).astype(np.float32)


def _model():
    return preprocess(ir.serde.deserialize_model(make_convnet()))


def test_exposed_tensors_match_the_model():
    model = _model()
    names = ["relu", "add", "gap"]
    observers = collect(model, names, ArrayData({"input": X}, input_specs(model), "x"), progress=False)
    proto = make_convnet()
    del proto.graph.output[:]
    for name in names:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    outs = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": X}
    )
    for name, out in zip(names, outs, strict=True):
        assert observers[name].min == pytest.approx(float(out.min()), rel=1e-5)
        assert observers[name].max == pytest.approx(float(out.max()), rel=1e-5)
        assert observers[name].count == out.size


def test_batch_size_does_not_change_statistics():
    model = _model()
    data = ArrayData({"input": X}, input_specs(model), "x")
    one = collect(model, ["add"], data, batch_size=1, progress=False)["add"]
    many = collect(model, ["add"], data, batch_size=7, progress=False)["add"]
    assert one.min == many.min and one.max == many.max
    # the bin width starts from the first batch; mse picks from a 1%-step grid on a flat optimum
    for method in ("percentile", "mse", "entropy"):
        assert one.range(method) == pytest.approx(many.range(method), rel=2e-2)


def test_model_is_left_unchanged():
    model = _model()
    outputs_before = [v.name for v in model.graph.outputs]
    collect(model, ["relu"], ArrayData({"input": X}, input_specs(model), "x"), progress=False)
    assert [v.name for v in model.graph.outputs] == outputs_before


_MEMORY_SCRIPT = """
import sys, numpy as np, onnx_ir as ir
sys.path.insert(0, {tests!r})
from conftest import make_convnet
from edgeq.calibrate import collect
from edgeq.data import CalibrationData, input_specs, load_npz
from edgeq.passes.preprocess import preprocess

class Stream(CalibrationData):
    def __init__(self, specs, n):
        self.specs, self.num_samples = specs, n
    def batches(self, size):
        rng = np.random.default_rng(0)
        for start in range(0, self.num_samples, size):
            yield {{"input": rng.normal(size=(min(size, self.num_samples - start), 3, 64, 64)).astype(np.float32)}}

model = preprocess(ir.serde.deserialize_model(make_convnet(batch="N")))
model.graph.inputs[0].shape = ir.Shape(["N", 3, 64, 64])
preprocess(model)
names = [v.name for n in model.graph for v in n.outputs]
data = Stream(input_specs(model), int(sys.argv[1]))
if sys.argv[2] == "npz":  # an uncompressed .npz written by the test
    data = load_npz(sys.argv[3], input_specs(model))
collect(model, names, data, batch_size=16, progress=False)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["stream", "npz"])
def test_peak_memory_does_not_grow_with_samples(tmp_path, source):
    """1024 samples of 3x64x64 are 48 MB; an .npz of them must not be held (nor memory-mapped) whole."""
    script = tmp_path / "mem.py"
    script.write_text(_MEMORY_SCRIPT.format(tests=str(__import__("pathlib").Path(__file__).parent)))

    def peak_kb(n: int) -> int:
        npz = tmp_path / f"{n}.npz"
        if source == "npz":
            np.savez(npz, input=np.random.default_rng(0).normal(size=(n, 3, 64, 64)).astype(np.float32))
        args = [sys.executable, str(script), str(n), source, str(npz)]
        return int(subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()[-1])

    small, large = peak_kb(64), peak_kb(1024)
    assert large <= small + 16 * 1024, (small, large)
