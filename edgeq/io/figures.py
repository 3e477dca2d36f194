"""Figures for reports: matplotlib without a display, a figure as PNG bytes or as a file written atomically."""

from __future__ import annotations

import io
import os

from edgeq.io.files import write_bytes_atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display; imported on first use: plotting is optional work)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(figure, dpi: int = 100) -> bytes:
    """FIGURE laid out and rendered as PNG, then closed."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()


def save_png(figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """FIGURE written to PATH as PNG (atomically), then closed."""
    write_bytes_atomic(path, png_bytes(figure, dpi))
