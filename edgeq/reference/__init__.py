"""The integer reference executor: TFLite's reference kernels in numpy (see executor.py)."""

from edgeq.reference.executor import run

__all__ = ["run"]
