"""Interactive explorers for the notebooks: how temperature softens a teacher's prediction.

Used by ``notebooks/02_soft_targets_temperature.ipynb``. Nothing else in the
package imports this module, and it imports matplotlib and ipywidgets lazily,
inside the functions, so the rest of ``kd_tutorial`` (and its tests) never
need them.

* :func:`softened` and :func:`entropy` - the two numbers every view shows.
* :func:`plot_temperature` - one bar chart of ``softmax(z / T)`` for one ``T``.
* :func:`plot_temperature_grid` - the static figure: one panel per temperature.
* :func:`temperature_explorer` - the same chart behind an ipywidgets ``T`` slider.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .losses import softmax_with_temperature


def _as_logits(logits) -> torch.Tensor:
    z = torch.as_tensor(logits, dtype=torch.float32)
    if z.ndim != 1 or z.numel() < 2:
        raise ValueError(f"expected one vector of at least 2 logits, got shape {tuple(z.shape)}")
    return z


def softened(logits, temperature: float) -> list[float]:
    """``softmax(z / T)`` of one logit vector, as a list of floats."""
    return softmax_with_temperature(_as_logits(logits), temperature).tolist()


def entropy(probs) -> float:
    """Entropy in nats, ``-sum_c p_c log p_c`` (with ``0 log 0 = 0``)."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    return float(-(p * torch.log(p.clamp_min(1e-300))).sum()) + 0.0  # + 0.0: a one-hot's -0.0 prints as 0.00


def _names(n: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [f"class {i}" for i in range(n)]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} logits")
    return [str(c) for c in class_names]


def _check_highlight(highlight: int | None, n: int) -> None:
    """Refuse a ``highlight`` that is no class index (drawing would leave every bar plain, as if none was given)."""
    if highlight is not None and not 0 <= highlight < n:
        raise ValueError(f"highlight={highlight}: give the index of one of the {n} classes")


def plot_temperature(logits, temperature: float, class_names: Sequence[str] | None = None, ax=None,
                     highlight: int | None = None, title: str | None = None):
    """Bar chart of ``softmax(z / T)``; the uniform distribution ``1/C`` is drawn as a dashed line.

    ``highlight`` (a class index, e.g. the true label) is drawn in red and hatched, with a black edge: the hatch tells
    it apart where the hue does not (in greyscale, tab:red and tab:blue are equally dark).
    Returns the axes.
    """
    import matplotlib.pyplot as plt

    z = _as_logits(logits)
    names = _names(z.numel(), class_names)
    _check_highlight(highlight, z.numel())
    p = softened(z, temperature)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    colors = ["tab:blue" if i != highlight else "tab:red" for i in range(len(p))]
    bars = ax.bar(names, p, color=colors, label=f"softmax(z / T), T = {temperature:.3g}")
    if highlight is not None:
        bars[highlight].set(hatch="//", edgecolor="black")
    ax.axhline(1 / len(p), color="gray", linestyle="--", linewidth=1, label=f"uniform 1/C = {1 / len(p):.3g}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    h, h_max = entropy(p), math.log(len(p))
    ax.set_title(title or f"T = {temperature:.3g}: entropy {h:.2f} of max {h_max:.2f} nats")
    ax.legend(fontsize=8, loc="upper right")
    ax.tick_params(axis="x", labelsize=8)
    return ax


def plot_temperature_grid(logits, temperatures: Sequence[float] = (0.5, 1, 2, 5),
                          class_names: Sequence[str] | None = None, highlight: int | None = None,
                          title: str = "One prediction softened at several temperatures"):
    """The static companion of :func:`temperature_explorer`: one bar chart per temperature. Returns the figure."""
    import matplotlib.pyplot as plt

    temperatures = list(temperatures)
    if not temperatures:
        raise ValueError("plot_temperature_grid needs at least one temperature, e.g. temperatures=(0.5, 1, 2, 5)")
    fig, axes = plt.subplots(1, len(temperatures), figsize=(3.6 * len(temperatures), 3.6), sharey=True)
    axes = [axes] if len(temperatures) == 1 else list(axes)
    for ax, t in zip(axes, temperatures):
        plot_temperature(logits, t, class_names, ax=ax, highlight=highlight,
                         title=f"T = {t:g}  (H = {entropy(softened(logits, t)):.2f} nats)")
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def temperature_explorer(logits, class_names: Sequence[str] | None = None, *, t_min: float = 0.1,
                         t_max: float = 20.0, value: float = 1.0, highlight: int | None = None):
    """An ipywidgets view: a log-scale slider for ``T`` above the bar chart of ``softmax(z / T)``.

    Display the returned widget (make it the last expression of a cell). Its
    output changes with every move of the slider, so a notebook cell that shows
    it should start with ``# NBVAL_IGNORE_OUTPUT``.
    """
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - ipywidgets is a dependency of the course
        raise ImportError("the temperature explorer needs ipywidgets: pip install ipywidgets") from err
    import matplotlib.pyplot as plt

    z = _as_logits(logits)
    if not 0 < t_min <= value <= t_max:
        raise ValueError(f"need 0 < t_min <= value <= t_max, got {t_min}, {value}, {t_max}")
    _names(z.numel(), class_names)  # refused now, not inside the widget's first draw, where the error is hidden
    _check_highlight(highlight, z.numel())

    def show(T: float) -> None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        plot_temperature(z, T, class_names, ax=ax, highlight=highlight)
        fig.tight_layout()
        plt.show()

    slider = ipywidgets.FloatLogSlider(value=value, base=10, min=math.log10(t_min), max=math.log10(t_max),
                                       step=0.02, description="T", continuous_update=True,
                                       readout_format=".2f")
    return ipywidgets.interactive(show, T=slider)
