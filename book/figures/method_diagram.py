"""The method as a diagram, the paper's Figure 3 in spirit: writes method_diagram.svg beside this file.

    python book/figures/method_diagram.py          # rewrite the SVG
    python book/figures/method_diagram.py --check  # exit 1 if the committed SVG is stale

The output is byte-stable: no date in the metadata, a fixed hash salt for the SVG's ids, and the
text drawn as paths with matplotlib's own DejaVu fonts. tests/test_method_diagram.py regenerates it
and compares it with the committed file.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("method_diagram.svg")

MAIN = "#e8eef7"     # the forward path of the network
SMOOTH = "#fdf0dc"   # the smoothing layers
SCHEDULE = "#e6f2e6"  # the annealing schedule
EDGE = "#33415c"


def box(ax, x, y, w, h, title, formula, color, note=""):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor=EDGE, linewidth=1.2))
    ax.text(x, y + h * 0.28, title, ha="center", va="center", fontsize=12, fontweight="bold", color=EDGE)
    ax.text(x, y - h * 0.02, formula, ha="center", va="center", fontsize=12)
    if note:
        ax.text(x, y - h * 0.33, note, ha="center", va="center", fontsize=9, color="0.3", style="italic")


def arrow(ax, start, end, text="", dashed=False, offset=(0.0, 0.08), ha="center"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, linewidth=1.3,
                                 color=EDGE, linestyle=(0, (4, 3)) if dashed else "-",
                                 shrinkA=2, shrinkB=2))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                ha=ha, va="bottom", fontsize=10, color="0.2")


def draw() -> plt.Figure:
    plt.rcdefaults()
    plt.rcParams.update({"svg.hashsalt": "resmooth-method-diagram", "svg.fonttype": "path",
                         "font.family": "DejaVu Sans", "mathtext.fontset": "dejavusans"})
    fig, ax = plt.subplots(figsize=(11.0, 5.4))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 5.4)
    ax.axis("off")
    w, h = 2.0, 1.2

    # Row 1: the primary network and its residual, left to right.
    top = 4.2
    ax.text(0.35, top, "image\n$x_i$", ha="center", va="center", fontsize=11.5)
    box(ax, 1.95, top, w, h, "network", r"$z_i = h_w(x_i)$", MAIN, "ResNet, DenseNet, ...")
    box(ax, 4.4, top, w, h, "activation", r"$p_i = \mathrm{softmax}(z_i)$", MAIN, "class probabilities")
    box(ax, 6.85, top, w, h, "residual", r"$d_i = |p_i - y_i|$", MAIN, "paper Eq. 9")
    box(ax, 9.45, top, w, h, "normalization", r"$\tilde d_i = (d_i - \mu_i) / \sigma_i$", SMOOTH,
        "paper Eq. 18, 20")
    ax.text(6.85, 5.25, "one-hot target $y_i$", ha="center", va="center", fontsize=10.5)
    arrow(ax, (0.7, top), (1.95 - w / 2, top))
    arrow(ax, (1.95 + w / 2, top), (4.4 - w / 2, top))
    arrow(ax, (4.4 + w / 2, top), (6.85 - w / 2, top))
    arrow(ax, (6.85, 5.1), (6.85, top + h / 2))
    arrow(ax, (6.85 + w / 2, top), (9.45 - w / 2, top))

    # Row 2: the smoothing layers, right to left.
    mid = 2.3
    box(ax, 9.45, mid, w, h, "diffusivity", r"$\kappa_i = s(t)\,/\,(1 + e^{-\alpha \tilde d_i})$", SMOOTH,
        "paper Eq. 19 (sigmoid, Eq. 10)")
    box(ax, 5.6, mid, 3.0, h, "heat step on the classes", r"$r_i = W(\kappa_i)\, d_i$", SMOOTH,
        r"$W_{jj} = 1 - \kappa_j,\ W_{jk} = \kappa_j / (M - 1)$: paper Eq. 22")
    box(ax, 1.95, mid, w, h, "squared norm", r"$g_i = \| r_i \|^2$", MAIN, "paper Eq. 7")
    arrow(ax, (9.45, top - h / 2), (9.45, mid + h / 2))
    arrow(ax, (9.45 - w / 2, mid), (5.6 + 1.5, mid), r"$\kappa_i$, held fixed", dashed=True)
    # The residual itself enters the heat step: it is what is smoothed.
    arrow(ax, (6.85 - 0.3, top - h / 2), (5.6 + 0.3, mid + h / 2), r"$d_i$, smoothed", offset=(0.15, 0.0),
          ha="left")
    arrow(ax, (5.6 - 1.5, mid), (1.95 + w / 2, mid))
    arrow(ax, (1.95, mid - h / 2), (1.95, 0.95))
    ax.text(1.95, 0.65, "loss: the mean of $g_i$ over the batch,\nback-propagated through $d_i$ alone",
            ha="center", va="center", fontsize=10)
    ax.text(5.6, 1.3, "one Euler step of the heat equation (paper Eq. 8)\non the complete graph over the M classes",
            ha="center", va="center", fontsize=10, color="0.25")

    # The annealing schedule feeds the diffusivity's scale.
    box(ax, 9.45, 0.55, w, 0.95, "annealing", r"$s(t) = y(t;\, \mu, b)$", SCHEDULE)
    arrow(ax, (9.45, 0.55 + 0.95 / 2), (9.45, mid - h / 2), "$s(t)$", offset=(0.1, -0.12), ha="left")
    ax.text(9.45 - w / 2 - 0.1, 0.55, "training progress $t$\n(paper Eq. 13, 14, 21)", ha="right", va="center",
            fontsize=10, color="0.25")
    fig.tight_layout(pad=0.1)
    return fig


def render() -> bytes:
    fig = draw()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return buffer.getvalue()


if __name__ == "__main__":
    svg = render()
    if "--check" in sys.argv[1:]:
        same = OUT.exists() and OUT.read_bytes() == svg
        print(f"{OUT.name}: {'up to date' if same else 'STALE: run python book/figures/method_diagram.py'}")
        sys.exit(0 if same else 1)
    OUT.write_bytes(svg)
    print(f"wrote {OUT} ({len(svg)} bytes)")
