"""Figures shared by the stages that draw one (evaluate, compare, benchmark): a headless pyplot and one way to save.

matplotlib is imported on first use only, so the stages that never plot (and the GPU machine's benchmark runs)
do not pay for it.
"""

from __future__ import annotations

from pathlib import Path

from .outputs import replacing

__all__ = ["pyplot", "save_figure"]


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path) -> Path:
    """Lay `figure` out, write it as a 120-dpi PNG at `path` (whole or not at all, creating its folder), close it;
    returns the path."""
    figure.tight_layout()
    try:
        with replacing(path, "wb", encoding=None) as handle:
            figure.savefig(handle, format="png", dpi=120)
    finally:
        pyplot().close(figure)
    return Path(path)
