"""Plot styling shared by every figure: the colour wheel of the p answer words and its legend.

Neighbouring values on the task's circle (Monday, Tuesday, ...) get neighbouring hues, so a circle in
the activations shows as a rainbow. Figures are saved with `multid.io.save_figure` (atomic).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def answer_colors(p: int) -> np.ndarray:
    """[p, 4] RGBA colours, value i at hue i / p of matplotlib's "hsv" wheel."""
    import matplotlib.pyplot as plt

    return plt.get_cmap("hsv")(np.arange(p) / p)


def answer_legend_handles(names: Sequence[str], short: int | None = 3, colors: np.ndarray | None = None) -> list:
    """Legend markers for the p answer words (`names[i]` cut to `short` letters; None keeps whole names)."""
    import matplotlib.pyplot as plt

    colors = answer_colors(len(names)) if colors is None else colors
    return [plt.Line2D([], [], marker="o", linestyle="", color=colors[i], label=name[:short] if short else name)
            for i, name in enumerate(names)]
