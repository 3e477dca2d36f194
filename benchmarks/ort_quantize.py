"""onnxruntime's quantizer as its documentation recommends: quant_pre_process, then quantize_static (QDQ,
per-channel int8 weights). ``python -m benchmarks.ort_quantize MODEL CALIB.npz OUT METHOD ACTIVATION``"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


def ort_worker(model: str, calib: str, out: str, method: str, activation: str, reduce_range: bool = False) -> None:
    data = dict(np.load(calib))  # one array per model input, by name, samples on axis 0
    count = len(next(iter(data.values())))
    # an input of the sample's own rank (a recurrent state, a scalar) is fed without a batch axis
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in onnx.load(model).graph.input}

    def sample(name: str, i: int) -> np.ndarray:
        return np.asarray(data[name][i]) if ranks.get(name) == data[name].ndim - 1 else data[name][i : i + 1]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter({name: sample(name, i) for name in data} for i in range(count))

        def get_next(self):
            return next(self.samples, None)

    pre = Path(out).with_suffix(".pre.onnx")
    proto = onnx.load(model)
    if next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) < 13:
        # per-channel DequantizeLinear needs opset 13: below it the quantizer writes a model onnxruntime refuses,
        # and its users convert first
        model = str(Path(out).with_suffix(".opset13.onnx"))
        onnx.save(onnx.version_converter.convert_version(proto, 13), model)
    try:
        quant_pre_process(model, str(pre))
    except Exception:  # symbolic shape inference fails on some exports: the documented retry skips it
        quant_pre_process(model, str(pre), skip_symbolic_shape=True)
    extra = {"CalibPercentile": 99.99} if method == "Percentile" else {}
    quantize_static(
        str(pre),
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=getattr(QuantType, activation),
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
        reduce_range=reduce_range,  # 7-bit weights: what its docs advise on x86 without VNNI
        extra_options=extra,
    )
    pre.unlink()


if __name__ == "__main__":
    ort_worker(*sys.argv[1:6])
