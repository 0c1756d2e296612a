"""One matplotlib style for the whole book."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000"]

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
}


def use_book_style() -> None:
    mpl.rcParams.update(STYLE)
    try:  # notebook figures at twice the pixel density, shown at their natural size
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


def color_map(keys, cmap: str = "viridis") -> dict:
    """Evenly spaced colours from `cmap` for an ordered family (e.g. τ values)."""
    keys = list(keys)
    colors = plt.get_cmap(cmap)([i / max(1, len(keys) - 1) * 0.9 for i in range(len(keys))])
    return dict(zip(keys, colors))


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 3.3, height: float = 2.8, **kw):
    """plt.subplots sized per panel, with constrained layout."""
    kw.setdefault("constrained_layout", True)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kw)


def panel_grid(n: int, max_cols: int = 3, *, width: float = 2.6, height: float = 2.4, **kw):
    """n panels in rows of at most `max_cols` (legible at column width); unused cells removed.
    Returns the figure and a flat list of the n axes."""
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig, axes = subplots(nrows, ncols, width=width, height=height, squeeze=False, **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]
