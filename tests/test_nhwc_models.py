"""NHWC models (Keras/TF exports) lower to TFLite NHWC end to end, with no TRANSPOSE where the source was NHWC.

Such exports take an NHWC input, transpose it to NCHW (0, 3, 1, 2) before every Conv and back (0, 2, 3, 1) after it,
apply elementwise ops (unfolded BatchNorm, activations) in NHWC, and end with a flatten of an NHWC tensor or a
Transpose back to NHWC. The models here are built that way, as shipped and as ONNX Runtime's basic graph
optimizations leave them (most interior pairs cancelled), then quantized by edgeq and lowered; each must:

* lower without any TRANSPOSE, the input and a rank-4 output reported "as ONNX" (NHWC, as the source has them);
* compute in LiteRT BUILTIN_REF and TFLite Micro exactly what edgeq's integer reference computes;
* agree with ONNX Runtime's QDQ model within 1 LSB per op (``edgeq verify``: every tensor the two share, each op
  given the same inputs), which needs every tensor's layout read back from the .tflite correctly;
* convert to the integer-only ONNX model, which computes the reference's integers in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_ops_layout import assert_integer_only_matches
from tflite_cases import assert_bit_exact

from edgeq.data import ArrayData, input_specs
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import sqnr_db
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.interface import float_outputs, model_inputs, tensor_perm
from edgeq.reports.verify import verify
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import check_model
from edgeq.tflite_format.flatbuffer import read, write

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


class Keras:
    """A Keras-style NHWC graph under construction: every Conv between a Transpose to NCHW and one back."""

    def __init__(self, seed: int, shape):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.shape = list(shape)  # NHWC of the current tensor
        self.x = "x"
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def _const(self, array) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def node(self, op, inputs, **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def scale(self, factor=1.5):
        """A Rescaling layer (and what makes the input quantized: an anchor reads it)."""
        self.x = self.node("Mul", [self.x, self._const(factor)])

    def conv(self, channels, kernel=3, depthwise=False, relu=True, transposes=True):
        c = self.shape[3]
        x = self.node("Transpose", [self.x], perm=TO_NCHW) if transposes else self.x
        group, c_out = (c, c) if depthwise else (1, channels)
        w = self._const(self.rng.normal(0, 0.5, (c_out, c // group, kernel, kernel)))
        b = self._const(self.rng.normal(0, 0.1, c_out))
        pad = kernel // 2
        y = self.node("Conv", [x, w, b], pads=[pad] * 4, group=group)
        if relu:
            y = self.node("Relu", [y])
        self.x = self.node("Transpose", [y], perm=TO_NHWC) if transposes else y
        self.shape[3] = c_out

    def batch_norm(self, relu=True):
        """Unfolded BatchNorm on the NHWC tensor: Mul and Add by per-channel constants on the last axis."""
        c = self.shape[3]
        self.x = self.node("Mul", [self.x, self._const(self.rng.uniform(0.5, 1.5, c))])
        self.x = self.node("Add", [self.x, self._const(self.rng.normal(0, 0.3, c))])
        if relu:
            self.x = self.node("Relu", [self.x])

    def head(self, classes=5):
        """Flatten of the NHWC tensor (a Reshape), Gemm."""
        size = int(np.prod(self.shape[1:]))
        flat = self.node("Reshape", [self.x, self._int64([-1, size])])
        w = self._const(self.rng.normal(0, 0.3, (size, classes)))
        self.x = self.node("Gemm", [flat, w, self._const(self.rng.normal(0, 0.1, classes))])
        self.shape = [1, classes]

    def branch_join(self, op: str, channels: int):
        """Two convolutions of the current NHWC tensor joined in NHWC: a residual Add, or a Concat on axis 3."""
        source, shape = self.x, list(self.shape)
        self.conv(channels)
        left = self.x
        self.x, self.shape = source, list(shape)
        self.conv(channels, kernel=1)
        attrs = {"axis": 3} if op == "Concat" else {}
        self.x = self.node(op, [left, self.x], **attrs)
        self.shape[3] = 2 * channels if op == "Concat" else channels

    def max_pool(self):
        x = self.node("Transpose", [self.x], perm=TO_NCHW)
        y = self.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        self.x = self.node("Transpose", [y], perm=TO_NHWC)
        self.shape[1:3] = [self.shape[1] // 2, self.shape[2] // 2]

    def _int64(self, values) -> str:
        name = self._name("shape")
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def model(self, input_shape) -> onnx.ModelProto:
        nodes = [*self.nodes, helper.make_node("Identity", [self.x], ["y"], name="out")]
        graph = helper.make_graph(
            nodes,
            "keras",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=self.inits,
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        return onnx.shape_inference.infer_shapes(proto)


def _ort_basic(proto: onnx.ModelProto, tmp_path) -> onnx.ModelProto:
    """PROTO as ONNX Runtime's basic graph optimizations leave it (the folding of edgeq's front end)."""
    path = tmp_path / "basic.onnx"
    ort_session(proto, optimization="basic", optimized_model_path=path)
    return onnx.load(path)


def _quantized(proto: onnx.ModelProto, shape, seed=0) -> ir.Model:
    rng = np.random.default_rng(seed)
    model = ir.serde.deserialize_model(proto)
    calib = ArrayData({"x": rng.normal(0, 1, (24, *shape[1:])).astype(np.float32)}, input_specs(model), "calib")
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, calib)
    return Pipeline(Recipe()).quantize(calibration, "int8")[0]


def check_nhwc(proto: onnx.ModelProto, shape, tmp_path, seed=0, output_layout="as ONNX"):
    """Lower PROTO's QDQ model: no TRANSPOSE, the layouts reported, bit-exact, within 1 LSB of ORT per op."""
    qdq = _quantized(proto, shape, seed)
    lowered = lower(qdq)
    assert "TRANSPOSE" not in lowered.ops, lowered.ops
    assert lowered.input_layouts == ["as ONNX"] and lowered.output_layouts == [output_layout]
    model_bytes = write(lowered.graph)
    check_model(model_bytes)
    graph = read(model_bytes)
    assert graph.tensors[graph.inputs[0]].shape == tuple(shape)  # NHWC, as the ONNX input
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(0, 1, (4, *shape[1:])).astype(np.float32)
    for i in range(2):
        assert_bit_exact(model_bytes, model_inputs(graph, {"x": x[i : i + 1]}))
    assert_integer_only_matches(lowered, {"x": x})
    (tmp_path / "m.tflite").write_bytes(model_bytes)
    onnx.save(to_proto(qdq), tmp_path / "m.qdq.onnx")
    report = verify([tmp_path / "m.tflite", tmp_path / "m.qdq.onnx"], ArrayData({"x": x}, input_specs(qdq), "x"))
    assert report["bit_exact"] and report["within_1_lsb_per_op"], report
    assert all(row["ops_checked"] > 3 for row in report["per_op"].values()), report["per_op"]
    return lowered


def _classifier(seed=0, shape=(1, 8, 6, 3)) -> onnx.ModelProto:
    k = Keras(seed, shape)
    k.scale()
    k.conv(8)
    k.batch_norm()
    k.conv(8, depthwise=True)
    k.conv(6, kernel=1, relu=False)
    k.batch_norm()
    k.head()
    return k.model(["N", *shape[1:]])


def test_keras_classifier_lowers_without_transposes(tmp_path):
    proto = _classifier()
    lowered = check_nhwc(proto, (1, 8, 6, 3), tmp_path)
    # the BatchNorm after the first Relu cannot fold into a Conv: a 1x1 DEPTHWISE_CONV_2D (passes/fold_affine.py)
    assert lowered.ops["CONV_2D"] == 2 and lowered.ops["DEPTHWISE_CONV_2D"] == 2
    # at float precision too (float32 tensors, dequantized weights): close to the float model
    floats = lower(_quantized(proto, (1, 8, 6, 3)), precision="float")
    assert "TRANSPOSE" not in floats.ops
    graph = floats.graph
    x = np.random.default_rng(3).normal(0, 1, (1, 8, 6, 3)).astype(np.float32)
    got = float_outputs(graph, run_litert(write(graph), model_inputs(graph, {"x": x})))[0]
    assert sqnr_db(ort_session(proto).run(None, {"x": x})[0], got) > 25


def test_keras_classifier_folded_by_onnxruntime_lowers_without_transposes(tmp_path):
    proto = _ort_basic(_classifier(), tmp_path)
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) >= 2
    check_nhwc(proto, (1, 8, 6, 3), tmp_path)


def test_keras_branches_joined_in_nhwc_and_a_pool(tmp_path):
    """A residual Add and a channels-last Concat (axis 3) of NHWC tensors, a MaxPool between Transposes."""
    shape = (1, 8, 8, 4)
    k = Keras(1, shape)
    k.scale()
    k.branch_join("Add", 6)
    k.max_pool()
    k.branch_join("Concat", 3)
    k.head()
    lowered = check_nhwc(k.model(["N", *shape[1:]]), shape, tmp_path)
    assert lowered.ops["CONCATENATION"] == 1 and lowered.ops["MAX_POOL_2D"] == 1


@pytest.mark.parametrize("fold", [False, True])
def test_keras_segmenter_ends_nhwc_with_a_softmax_over_channels(fold, tmp_path):
    """Conv layers and a Softmax over the last axis of the NHWC tensor: the output stays as ONNX (NHWC)."""
    shape = (1, 6, 7, 3)
    k = Keras(2, shape)
    k.scale()
    k.conv(5)
    k.batch_norm()
    k.conv(4, kernel=1, relu=False)
    k.x = k.node("Softmax", [k.x], axis=-1)
    proto = k.model(["N", *shape[1:]])
    lowered = check_nhwc(_ort_basic(proto, tmp_path) if fold else proto, shape, tmp_path)
    graph = lowered.graph
    assert graph.tensors[graph.outputs[0]].shape == (1, 6, 7, 4) and tensor_perm(graph, graph.outputs[0]) == (0, 1, 2, 3)
