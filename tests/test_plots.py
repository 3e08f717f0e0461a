"""What the run's plots show: titled with the run name, per-class error on a fitted axis, noise curves
labelled by the modality they perturb with the single-modality references, the ROC axis starting at the
smallest false-accept rate the test pairs can show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import dan.logging.plots as plots


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib figures the plot functions draw, kept open for inspection."""
    drawn: list[Any] = []

    def keep(fig: Any, path: Path) -> Path:
        drawn.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _legend(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_noise_curves_name_the_perturbed_modality_and_draw_the_references(figures: list[Any], tmp_path: Path) -> None:
    noise = {m: [{"std": s, "acc": 1.0 - s / 10} for s in (0.0, 1.0, 4.0)] for m in ("image", "audio")}
    plots.plot_noise_curves(noise, tmp_path / "n.png", {"image": 0.97, "audio": 0.88}, title="run7: noise")
    (ax,) = figures[0].axes
    assert _legend(ax) == ["noise added to image", "image removed: 0.970", "noise added to audio", "audio removed: 0.880"]
    assert ax.get_title() == "run7: noise"
    refs = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert refs == [0.97, 0.88]


def test_per_class_error_fits_its_axis(figures: list[Any], tmp_path: Path) -> None:
    plots.plot_per_class_error([1.0, 0.99, 0.95, 1.0], tmp_path / "e.png", title="run7: errors")
    (ax,) = figures[0].axes
    heights = [round(b.get_height(), 6) for b in ax.patches]
    assert heights == [0.0, 1.0, 5.0, 0.0] and ax.get_ylabel() == "error (%)"
    assert ax.get_ylim()[1] == pytest.approx(6.25)  # not a 0-100 axis with every bar near the floor


def test_learning_curves_have_four_titled_panels(figures: list[Any], tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train/loss_fused": 1.0 / e, "val/loss": 1.1 / e, "val/acc": 0.5 + e / 10, "lr": 1e-3 / e,
         "balancer/image": 1.0 + e / 10}
        for e in (1, 2, 3)
    ]
    plots.plot_learning_curves(history, tmp_path / "c.png", title="run7: learning curves")
    fig = figures[0]
    assert fig._suptitle.get_text() == "run7: learning curves"
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {"loss", "validation metrics", "balancer weights", "learning rate"}
    assert _legend(panels["loss"]) == ["train/loss_fused", "val/loss"]
    assert list(panels["validation metrics"].get_lines()[0].get_xdata()) == [1, 2, 3]


def test_roc_axis_starts_where_the_data_starts(monkeypatch: pytest.MonkeyPatch, figures: list[Any], tmp_path: Path) -> None:
    from dan.metrics.verification import plot_roc, verify_distances

    g = torch.Generator().manual_seed(0)
    same = (torch.arange(400) % 2).float()  # 200 negative pairs: the smallest non-zero FAR is 1/200
    d = 1.0 - same * 0.3 + 0.2 * torch.randn(400, generator=g)
    plot_roc(verify_distances(d, same, d, same), tmp_path / "r.png", title="run7: test ROC")
    (ax,) = figures[0].axes
    assert ax.get_xlim()[0] == pytest.approx(1 / 200) and ax.get_title() == "run7: test ROC"
