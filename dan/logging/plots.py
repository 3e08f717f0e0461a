"""PNG plots of evaluation results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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


def plot_noise_curves(noise: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> Path:
    """Fused accuracy against the std of Gaussian noise added to each modality (one line per modality)."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for m, points in noise.items():
        ax.plot([p["std"] for p in points], [p["acc"] for p in points], marker="o", label=m)
    ax.set(
        xlabel="noise std (normalised input units)",
        ylabel="fused accuracy",
        ylim=(0, 1.02),
        title="accuracy vs noise",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_per_class(per_class: Sequence[float], path: Path) -> Path:
    """Bar chart of per-class accuracy."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.bar(range(len(per_class)), per_class)
    ax.set(
        xlabel="class",
        ylabel="accuracy",
        ylim=(0, 1.02),
        xticks=range(len(per_class)),
        title="per-class accuracy",
    )
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
