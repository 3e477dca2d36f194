"""edgeq: quantize trained models into verified integer artifacts for edge devices.

The Python API (edgeq.api) is available here: ``edgeq.quantize``, ``edgeq.convert``, ``edgeq.verify``,
``edgeq.compare``, ``edgeq.profile``, ``edgeq.report``, ``edgeq.describe``, ``edgeq.export`` and their result
types, imported on first use so that ``import edgeq`` stays light. ``edgeq.Recipe`` holds every quantization option; errors are
``edgeq.EdgeqError`` and its subclasses (edgeq.errors).
"""

import importlib
import os

# onnxruntime's telemetry writes a session file ($TMPDIR/.ses) that outlives every run; off unless asked for
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from edgeq.errors import (
    DataError,
    EdgeqError,
    ExecutionError,
    ModelError,
    OutputError,
    RecipeError,
    UnsupportedError,
)

__version__ = "0.1.0"
# The Python API (edgeq.api), loaded on first use of one of these names.
API = (
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
)
__all__ = [
    "DataError",
    "EdgeqError",
    "ExecutionError",
    "ModelError",
    "OutputError",
    "Recipe",
    "RecipeError",
    "UnsupportedError",
    "__version__",
    *API,
]


def __getattr__(name: str):
    if name == "Recipe":
        from edgeq.quantization.recipe import Recipe

        return Recipe
    if name in API:
        return getattr(importlib.import_module("edgeq.api"), name)
    raise AttributeError(f"module 'edgeq' has no attribute {name!r}")
