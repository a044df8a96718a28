"""Plots for the self-contained HTML pages (the quantization report, `debug`, the accuracy budget):
matplotlib drawn off-screen, each figure inlined as a base64 PNG."""
from __future__ import annotations

import base64
import io


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when a page is drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig, dpi: int = 110) -> str:
    """The figure as base64 PNG text for `<img src='data:image/png;base64,...'>`; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()
