"""passes.layer_sequence: running a QDQ model wave by wave from a cached cut gives each layer's tensors as a full
run of the model would, with the changes made to the layers already visited."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from conftest import make_convnet

from edgeq.data import ArrayData, input_specs
from edgeq.io.onnx_model import load_model
from edgeq.io.session import exposing_copy, session
from edgeq.passes.layer_sequence import LayerSequence
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe


def _qdq_convnet(tmp_path):
    path = tmp_path / "convnet.onnx"
    onnx.save(make_convnet(), path)
    model = load_model(path)
    x = np.random.default_rng(1).normal(0, 1, (24, 3, 8, 8)).astype(np.float32)
    data = ArrayData({"input": x}, input_specs(model), "random")
    qdq, _ = Pipeline(Recipe()).quantize(Pipeline(Recipe(), progress=False).calibrate(model, data))
    return qdq, x


def _full_run(model: ir.Model, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    values = [v for node in model.graph for v in node.outputs if v.name in names]
    runner = session(exposing_copy(model, values), optimization="basic")
    return runner.run(names, {"input": x})


def test_waves_see_what_a_full_run_sees_including_earlier_changes(tmp_path):
    qdq, x = _qdq_convnet(tmp_path)
    nodes = {node.name: node for node in qdq.graph}
    layers = [node.name for node in qdq.graph if node.op_type in ("Conv", "Gemm")]
    assert len(layers) == 4  # stem (BatchNorm folded), dw, pw (joins the residual branch from stem's Relu), fc
    batches = [x[:10], x[10:20], x[20:]]
    sequence = LayerSequence(qdq, layers, {"input": batches})
    seen = []
    while sequence.pending:
        wave = sequence.next_wave()
        assert len(wave) == 1  # a chain: every layer is upstream of the next
        names = [nodes[wave[0]].inputs[0].name, nodes[wave[0]].outputs[0].name]
        collected: list[list[np.ndarray]] = []
        sequence.run(wave, names, collected.append)
        assert [len(batch[0]) for batch in collected] == [10, 10, 4]
        for got, want in zip(zip(*collected, strict=True), _full_run(qdq, names, x), strict=True):
            np.testing.assert_array_equal(np.concatenate(got), want, err_msg=f"{wave[0]}")
        if wave == layers[:1]:  # a change to a visited layer must reach the later waves
            bias = nodes[wave[0]].inputs[2].producer().inputs[0]
            bias.const_value = ir.tensor(bias.const_value.numpy() + 50, name=bias.name)
        seen.append(wave[0])
    assert seen == layers
    assert set(sequence.cache) <= {"input"} | {v.name for node in qdq.graph for v in node.outputs}
