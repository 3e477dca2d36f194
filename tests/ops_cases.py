"""ONNX models with integer inputs and outputs for the op-family tests (gather, reductions, normalization, integer
inputs): build, quantize with edgeq, lower, and check against ONNX Runtime's QDQ model.

:func:`check_against_onnxruntime` is tests/test_target_tflite.py's check generalized to integer inputs (token ids,
drawn below a vocabulary size) and to several outputs, float or integer: the three integer runtimes agree exactly,
and each float output is within 1 LSB of ONNX Runtime's (or equal, ``exact``), each integer output equal.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper
from tflite_cases import assert_bit_exact

from edgeq.data import ArrayData, input_specs
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.interface import dequantized, float_outputs, model_inputs
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter
from edgeq.targets.tflite.lower import Lowered, lower
from edgeq.tflite_format.flatbuffer import read, write

VOCABULARY = 50  # ids of integer inputs are drawn from [0, VOCABULARY)


def onnx_model(nodes, inputs, outputs, inits=(), opset=17, int_inputs=()) -> onnx.ModelProto:
    """INPUTS float and INT_INPUTS int64, [(name, shape)]; OUTPUTS [(name, TensorProto type[, shape])] (a model
    file needs the shapes, a model in memory does not)."""
    graph = helper.make_graph(
        nodes,
        "ops",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs]
        + [helper.make_tensor_value_info(name, TensorProto.INT64, shape) for name, shape in int_inputs],
        [
            helper.make_tensor_value_info(name, elem_type, shape)
            for name, elem_type, shape, *_ in map(_shaped, outputs)
        ],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def _shaped(output):
    return (*output, None) if len(output) == 2 else output


def _samples(rng, inputs, int_inputs, count):
    feeds = {name: rng.normal(0, 1, (count, *shape[1:])).astype(np.float32) for name, shape in inputs}
    feeds.update({name: rng.integers(0, VOCABULARY, (count, *shape[1:])) for name, shape in int_inputs})
    return feeds


def quantized(model, inputs, int_inputs=(), seed: int = 0, **recipe) -> ir.Model:
    """MODEL (a proto or an ir.Model) calibrated on random data and quantized by edgeq (int8; RECIPE: its
    options, e.g. per_channel=False)."""
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    calib = _samples(np.random.default_rng(seed), inputs, int_inputs, 24)
    pipeline = Pipeline(Recipe(**recipe), progress=False)
    qdq, _ = pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib")), "int8")
    return qdq


def _feeds(graph, rng, inputs, int_inputs) -> dict[str, np.ndarray]:
    """Float inputs exactly on their grid (no rounding ties), ids below the vocabulary."""
    by_name = {graph.tensors[i].name: graph.tensors[i] for i in graph.inputs}
    feeds = {}
    for name, shape in inputs:
        q = by_name[name].quantization
        feeds[name] = ((rng.integers(-128, 128, shape) - q.zero_point[0]) * q.scale[0]).astype(np.float32)
    feeds.update({name: rng.integers(0, VOCABULARY, shape) for name, shape in int_inputs})
    return feeds


def check_against_onnxruntime(
    proto, inputs, *, int_inputs=(), start=(), exact=False, samples=3, seed=0, precision="int8", **recipe
) -> Lowered:
    """The three integer runtimes agree exactly; against ONNX Runtime's QDQ model every float output is within
    1 LSB (0 with EXACT) and every integer output equal. START: tensors from which ORT continues with the
    integers the .tflite computed (tests/test_target_tflite.py). Returns the lowering."""
    rng = np.random.default_rng(seed)
    qdq = quantized(proto, inputs, int_inputs, seed, **recipe)
    lowered = lower(qdq, precision=precision)
    model_bytes = write(lowered.graph)
    graph = read(model_bytes)
    qdq_proto = to_proto(qdq)
    if start:
        sources = [f"{name}_float" for name in start] + [
            v.name for v in qdq_proto.graph.input if v.name not in start
        ]
        qdq_proto = onnx.utils.Extractor(qdq_proto).extract_model(
            sources, [o.name for o in qdq_proto.graph.output]
        )
    session = ort_session(qdq_proto)
    interpreter = litert_interpreter(model_bytes, kernels="reference", preserve_all_tensors=True)
    by_name = {t.name: i for i, t in enumerate(graph.tensors)}
    for _ in range(samples):
        feeds = _feeds(graph, rng, inputs, int_inputs)
        tfl_inputs = model_inputs(graph, feeds)
        if precision == "int8":
            assert_bit_exact(model_bytes, tfl_inputs)
        tflite = float_outputs(graph, invoke_litert(interpreter, tfl_inputs))
        for name in start:
            feeds.pop(name, None)
            feeds[f"{name}_float"] = dequantized(graph, by_name[name], interpreter.get_tensor(by_name[name]))
        names = [o.name for o in session.get_outputs()]
        expected = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
        for index, got, want, name in zip(graph.outputs, tflite, expected, names, strict=True):
            assert got.shape == want.shape, (name, got.shape, want.shape)
            q = graph.tensors[index].quantization
            if want.dtype.kind in "iu":
                np.testing.assert_array_equal(got, want, err_msg=name)
                continue
            step = q.scale[0] if q is not None else np.abs(want).max() / 127
            lsb = np.abs(got.astype(np.float64) - want) / step
            assert lsb.max() <= (1e-3 if exact else 1.001), f"{name}: {lsb.max():.2f} LSB"
    return lowered
