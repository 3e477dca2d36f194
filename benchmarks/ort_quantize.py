"""onnxruntime's quantizer as its documentation recommends: quant_pre_process, then quantize_static (QDQ,
per-channel int8 weights). ``python -m benchmarks.ort_quantize MODEL CALIB.npz OUT METHOD ACTIVATION``"""

import sys
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


def ort_worker(model: str, calib: str, out: str, method: str, activation: str) -> None:
    data = dict(np.load(calib))  # one array per model input, by name, samples on axis 0
    count = len(next(iter(data.values())))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter({name: array[i : i + 1] for name, array in data.items()} for i in range(count))

        def get_next(self):
            return next(self.samples, None)

    pre = Path(out).with_suffix(".pre.onnx")
    quant_pre_process(model, str(pre))
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
        extra_options=extra,
    )
    pre.unlink()


if __name__ == "__main__":
    ort_worker(*sys.argv[1:6])
