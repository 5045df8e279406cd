"""What every plot of `bench report` is made of: a named PNG, drawn on a matplotlib Figure.

matplotlib's object API (`Figure`, Agg canvas) rather than pyplot: no global figure state, no
display backend, safe to call from any thread. The run's plots (html_report.py) and the LoadGen
scenarios' plots (scenario_plots.py) both draw with these.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Plot:
    name: str  # file stem for the Markdown's PNG
    title: str
    png: bytes


def new_figure(width: float, height: float) -> "Figure":
    """The object API (no pyplot): no global figure state, no GUI backend, safe in any process."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png_bytes(fig: "Figure") -> bytes:
    """The figure as PNG bytes: a file beside the Markdown, a data URI in the HTML."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()
