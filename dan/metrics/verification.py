"""Verification: ROC, AUC and EER with torchmetrics; a threshold chosen on validation, applied to test.

Scores are similarities: higher means "same". A model that gives distances passes ``-distance``;
:func:`verify_distances` does that and reports thresholds as distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_roc

from dan.errors import ConfigError

THRESHOLD_METHODS = ("eer", "far")


@dataclass(frozen=True)
class RocResult:
    """ROC curve ``fpr, tpr, thresholds`` (each ``[K]``), its AUC, the EER and the score at the EER."""

    fpr: Tensor
    tpr: Tensor
    thresholds: Tensor
    auc: float
    eer: float
    eer_threshold: float


def roc(scores: Tensor, same: Tensor) -> RocResult:
    """ROC of similarity ``scores [P]`` against ``same [P]`` (1 = same class)."""
    target = same.long()
    if target.min() == target.max():
        raise ConfigError("verification needs both same and different pairs; got only one kind")
    # torchmetrics squashes scores outside [0, 1] with a sigmoid; an exact affine map into [0, 1] avoids that
    lo, hi = scores.double().min(), scores.double().max()
    span = (hi - lo).clamp_min(1e-12)
    unit = (scores.double() - lo) / span
    fpr, tpr, thr = binary_roc(unit, target, thresholds=None)
    thr = thr.clamp(max=1.0) * span + lo
    fnr = 1 - tpr
    i = int(torch.argmin((fnr - fpr).abs()))
    eer = float((fnr[i] + fpr[i]) / 2)
    return RocResult(fpr, tpr, thr, float(binary_auroc(unit, target)), eer, float(thr[i]))


def choose_threshold(scores: Tensor, same: Tensor, method: str = "eer", target_far: float = 0.01) -> float:
    """Pick the decision threshold on validation scores: the EER point, or the lowest with FAR <= target_far."""
    if method not in THRESHOLD_METHODS:
        raise ConfigError(f"verify.threshold={method!r} is unknown; valid: {', '.join(THRESHOLD_METHODS)}")
    result = roc(scores, same)
    if method == "eer":
        i = int(torch.argmin(((1 - result.tpr) - result.fpr).abs()))
    else:
        if not 0.0 <= target_far <= 1.0:
            raise ConfigError(f"verify.target_far must lie in [0, 1], got {target_far}")
        i = int((result.fpr <= target_far).nonzero().squeeze(1)[-1])
    # every value in (thr[i+1], thr[i]] decides the validation pairs alike; the midpoint leaves test pairs
    # near the edge the most room
    thr = result.thresholds.double()
    return float((thr[i] + thr[i + 1]) / 2) if i + 1 < len(thr) else float(thr[i])


def apply_threshold(scores: Tensor, same: Tensor, threshold: float) -> dict[str, float]:
    """Accuracy, FAR (different pairs accepted) and FRR (same pairs rejected) at ``threshold``."""
    accept = scores.double() >= threshold
    same_b = same.bool()
    far = float((accept & ~same_b).sum() / (~same_b).sum().clamp(min=1))
    frr = float((~accept & same_b).sum() / same_b.sum().clamp(min=1))
    return {
        "accuracy": float((accept == same_b).float().mean()),
        "far": far,
        "frr": frr,
        "threshold": threshold,
    }


@dataclass(frozen=True)
class VerificationReport:
    """A threshold chosen on validation distances and what it gives on the test distances.

    ``threshold`` is a distance: a pair is accepted as "same" when its distance is <= it.
    ``val``/``test``: ``accuracy, far, frr`` at the threshold and ``auc, eer`` of the split; ``test_roc``
    is the test ROC (its thresholds are negated distances).
    """

    threshold: float
    method: str
    target_far: float
    val: dict[str, float]
    test: dict[str, float]
    test_roc: RocResult

    def to_dict(self) -> dict[str, Any]:
        """Plain values for checkpoints and JSON (no tensors)."""
        return {
            "threshold": self.threshold,
            "method": self.method,
            "target_far": self.target_far,
            "val": self.val,
            "test": self.test,
        }


def _split_metrics(distances: Tensor, same: Tensor, threshold: float) -> tuple[dict[str, float], RocResult]:
    r = roc(-distances, same)
    m = apply_threshold(-distances, same, -threshold)
    m["threshold"] = threshold
    return {**m, "auc": r.auc, "eer": r.eer}, r


def verify_distances(
    val_distances: Tensor,
    val_same: Tensor,
    test_distances: Tensor,
    test_same: Tensor,
    method: str = "eer",
    target_far: float = 0.01,
) -> VerificationReport:
    """Choose the threshold on ``val_distances [P_v]`` (``val_same [P_v]``, 1 = same) by ``method``, then
    apply it unchanged to ``test_distances [P_t]``."""
    threshold = -choose_threshold(-val_distances, val_same, method, target_far)
    val, _ = _split_metrics(val_distances, val_same, threshold)
    test, test_roc = _split_metrics(test_distances, test_same, threshold)
    return VerificationReport(threshold, method, target_far, val, test, test_roc)


def plot_roc(report: VerificationReport, path: Path, title: str = "test ROC") -> Path:
    """ROC of the test pairs (log-scale FAR axis) with the validation-chosen operating point marked."""
    from dan.logging.plots import _save, plt

    r = report.test_roc
    positive = r.fpr[r.fpr > 0]
    floor = float(positive.min()) if positive.numel() else 1e-4  # the smallest FAR the test pairs can show
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    ax.plot(r.fpr.clamp_min(floor).numpy(), r.tpr.numpy(), label=f"AUC {r.auc:.4f}, EER {r.eer:.4f}")
    t = report.test
    ax.plot(
        [max(t["far"], floor)],
        [1 - t["frr"]],
        "o",
        color="C3",
        label=f"val threshold {report.threshold:.3g}: FAR {t['far']:.4f}, FRR {t['frr']:.4f}",
    )
    ax.set(
        xscale="log",
        xlim=(floor, 1),
        ylim=(0, 1.01),
        xlabel="false-accept rate (FAR)",
        ylabel="true-accept rate (1 - FRR)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)
