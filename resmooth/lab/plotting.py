"""The book's one figure style, and two small helpers for the figures it draws.

matplotlib is an optional dependency (the ``book`` and ``test`` extras): it is imported here,
inside the functions, and nowhere else in the library, so that ``import resmooth`` never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The colour cycle of every line plot in the book (colour-blind safe, after Okabe and Ito).
COLORS = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
)

#: The rcParams that :func:`use_style` sets.
STYLE: dict[str, Any] = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.constrained_layout.use": True,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 2.0,
    "lines.markersize": 6,
    "image.cmap": "viridis",
    "image.interpolation": "nearest",
    # Text, not paths, in SVG output; a fixed hash salt, so that files do not change run to run.
    "svg.fonttype": "none",
    "svg.hashsalt": "resmooth",
}


def use_style() -> None:
    """Set matplotlib's rcParams to the book's style: readable fonts, a light grid, COLORS."""
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)
    mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=list(COLORS))


def show_images(
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    *,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
    size: float = 2.6,
    xlabel: str = "x (pixel)",
    ylabel: str = "y (pixel)",
):
    """Show 2-D images side by side, with titles and labeled pixel axes; returns the figure.

    Each image is anything ``numpy.asarray`` takes (a CPU tensor included) with two dims.
    ``vmin`` and ``vmax`` default to a shared range over all images, so that grey levels compare;
    pass them to fix the range yourself. Only the first panel carries the y label.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    arrays = [np.asarray(im.detach().cpu() if hasattr(im, "detach") else im, dtype=float) for im in images]
    if not arrays:
        raise ValueError("show_images needs at least one image")
    for a in arrays:
        if a.ndim != 2:
            raise ValueError(f"each image must be 2-D; got shape {a.shape}")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"got {len(titles)} titles for {len(arrays)} images")
    lo = min(float(a.min()) for a in arrays) if vmin is None else vmin
    hi = max(float(a.max()) for a in arrays) if vmax is None else vmax
    fig, axes = plt.subplots(1, len(arrays), figsize=(size * len(arrays) + (0.8 if colorbar else 0), size + 0.4), squeeze=False)
    for k, (ax, a) in enumerate(zip(axes[0], arrays)):
        im = ax.imshow(a, cmap=cmap, vmin=lo, vmax=hi)
        ax.grid(False)
        ax.set_xlabel(xlabel)
        if k == 0:
            ax.set_ylabel(ylabel)
        if titles is not None:
            ax.set_title(titles[k])
    if colorbar:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    return fig


def image_grid(
    columns: dict[str, Sequence[Any]],
    *,
    ranges: dict[str, tuple[float, float]] | None = None,
    cmaps: dict[str, str] | None = None,
    size: float = 1.5,
):
    """A grid of 2-D images: one column per key of ``columns`` (its title), one row per sample.

    Each column shares one grey range (``ranges[title]``, or its own min and max) so that a
    column's images compare with each other; ``cmaps`` picks a colormap per column (gray by
    default). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not columns:
        raise ValueError("image_grid needs at least one column")
    arrays = {t: [np.asarray(im.detach().cpu() if hasattr(im, "detach") else im, dtype=float) for im in ims]
              for t, ims in columns.items()}
    rows = {len(a) for a in arrays.values()}
    if len(rows) != 1 or 0 in rows:
        raise ValueError(f"every column needs the same, non-zero number of images; got {sorted(rows)}")
    n = rows.pop()
    ranges, cmaps = ranges or {}, cmaps or {}
    fig, axes = plt.subplots(n, len(arrays), figsize=(size * len(arrays), size * n + 0.4), squeeze=False)
    for j, (title, images) in enumerate(arrays.items()):
        lo, hi = ranges.get(title, (min(a.min() for a in images), max(a.max() for a in images)))
        for i, a in enumerate(images):
            ax = axes[i, j]
            ax.imshow(a, cmap=cmaps.get(title, "gray"), vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[0, j].set_title(title, fontsize="small")
    return fig
