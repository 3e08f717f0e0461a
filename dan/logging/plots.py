"""PNG plots of evaluation results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_confusion(confusion: Sequence[Sequence[int]], path: Path, title: str = "confusion matrix") -> Path:
    """Heat map of a ``[C, C]`` confusion matrix (rows true class, columns prediction) with counts."""
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n), dpi=100)
    im = ax.imshow(confusion, cmap="Blues")
    top = max((max(r) for r in confusion), default=0)
    for i, row in enumerate(confusion):
        for j, c in enumerate(row):
            if c:
                ax.text(
                    j,
                    i,
                    str(c),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if c > top / 2 else "black",
                )
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(n), yticks=range(n))
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_noise_curves(
    noise: Mapping[str, Sequence[Mapping[str, float]]],
    path: Path,
    without: Mapping[str, float] | None = None,
    title: str = "accuracy vs noise",
) -> Path:
    """Fused accuracy against the std of Gaussian noise added to one modality (a line per modality); the
    accuracy with that modality removed (what the others manage alone) is drawn as a dashed reference line
    in the same colour."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    for i, (m, points) in enumerate(noise.items()):
        colour = f"C{i}"
        ax.plot(
            [p["std"] for p in points], [p["acc"] for p in points], marker="o", color=colour,
            label=f"noise added to {m}",
        )
        if without and m in without:
            ax.axhline(without[m], color=colour, linestyle="--", linewidth=1, label=f"{m} removed: {without[m]:.3f}")
    ax.set(xlabel="noise std (normalised input units)", ylabel="fused accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_per_class_error(per_class_acc: Sequence[float], path: Path, title: str = "per-class error") -> Path:
    """Bar chart of each class's error rate (1 - accuracy), in percent, on an axis fitted to the largest."""
    errors = [100.0 * (1.0 - a) for a in per_class_acc]
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    bars = ax.bar(range(len(errors)), errors, color="C3")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    top = max(errors, default=0.0)
    ax.set(
        xlabel="class", ylabel="error (%)", ylim=(0, max(top * 1.25, 1.0)), xticks=range(len(errors)), title=title
    )
    return _save(fig, path)


def plot_learning_curves(history: Sequence[Mapping[str, float]], path: Path, title: str = "learning curves") -> Path:
    """Per epoch: training and validation loss of each head, validation metrics of each head, the balancer's
    weights and the learning rate (four panels; a panel says so when the run logged none of its series)."""
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    keys = sorted({k for h in history for k in h})
    panels = {
        "loss": [k for k in keys if "loss" in k],
        "validation metrics": [k for k in keys if k.startswith("val/") and "loss" not in k],
        "balancer weights": [k for k in keys if k.startswith("balancer/")],
        "learning rate": [k for k in keys if k == "lr"],
    }
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=90)
    for ax, (name, series) in zip(axes.flat, panels.items(), strict=True):
        for k in series:
            xs = [e for e, h in zip(epochs, history, strict=True) if k in h]
            ax.plot(xs, [h[k] for h in history if k in h], marker="o", markersize=3, label=k)
        if series:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_classification_report(
    result: Any, robust: Mapping[str, Any], out: Path, split: str, run_name: str
) -> dict[str, Path]:
    """The confusion matrix, per-class error and noise curves of one evaluation (an :class:`EvalResult`
    and :func:`~dan.engine.evaluate.robustness`'s dict) as ``<kind>_<split>.png`` in ``out``, titled with
    the run name; returns ``{kind: path}``."""
    out = Path(out)
    return {
        "confusion": plot_confusion(
            result.confusion, out / f"confusion_{split}.png", title=f"{run_name}: {split} confusion matrix"
        ),
        "per_class_error": plot_per_class_error(
            result.per_class_acc, out / f"per_class_error_{split}.png", title=f"{run_name}: {split} error per class"
        ),
        "noise": plot_noise_curves(
            robust["noise"], out / f"noise_{split}.png", robust.get("without"),
            title=f"{run_name}: {split} accuracy vs input noise",
        ),
    }


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
