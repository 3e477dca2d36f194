"""edgeq: quantize trained models into verified integer artifacts for edge devices."""

from edgeq.errors import EdgeqError

__version__ = "0.1.0"
__all__ = ["EdgeqError", "__version__"]
