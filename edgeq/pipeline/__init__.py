"""The quantization pipeline: a recipe's stages from the float model to the QDQ model (see pipeline.py)."""

from edgeq.pipeline.pipeline import Calibrated, Pipeline, Quantized

__all__ = ["Calibrated", "Pipeline", "Quantized"]
