"""The Python API: what the ``edgeq`` command line does, as functions that take paths, ``onnx.ModelProto``s or torch
modules and numpy data, and return result objects instead of printing.

    import edgeq

    result = edgeq.quantize("model.onnx", calib="calib.npz", output="model.int8.onnx", passes=["equalize"])
    converted = edgeq.convert("model.onnx", calib="calib.npz", targets=["tflite", "tflm"], outdir="out")
    checked = edgeq.verify(converted.artifacts[:1], "eval.npz")
    errors = edgeq.compare("model.onnx", "out/model.tflite", "eval.npz")
    timing = edgeq.profile("out/model.tflite", runs=200)
    facts = edgeq.describe("model.onnx")  # what `edgeq inspect` prints, as a dict

Every bad input raises an ``edgeq.EdgeqError`` subclass (edgeq.errors) whose message is the line the CLI prints.
The functions' docstrings are the reference.
"""

from edgeq.api.convert import ConvertResult, convert
from edgeq.api.export import export_module as export
from edgeq.api.inspect import CompareResult, ProfileResult, VerifyResult, compare, profile, report, verify
from edgeq.api.mixed import SensitivityResult, sensitivity
from edgeq.api.model_summary import describe
from edgeq.api.quantize import QuantizeResult, quantize
from edgeq.api.sweep import SweepResult, sweep

__all__ = [  # also edgeq.API, which makes them attributes of the edgeq package (tests/test_readme.py)
    "CompareResult",
    "ConvertResult",
    "ProfileResult",
    "QuantizeResult",
    "SensitivityResult",
    "SweepResult",
    "VerifyResult",
    "compare",
    "convert",
    "describe",
    "export",
    "profile",
    "quantize",
    "report",
    "sensitivity",
    "sweep",
    "verify",
]
