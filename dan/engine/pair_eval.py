"""Verification of item pairs by embedding distance, shared by the Siamese and cross-modal recipes: each
item is embedded once, the threshold is chosen on validation pairs and applied unchanged to test pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dan.engine import checkpoint as ckpt
from dan.metrics.verification import VerificationReport, plot_roc, roc, verify_distances

Embed = Callable[[str], tuple[Tensor, Tensor]]
Distance = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def embed_all(embed: Callable[[Tensor], Tensor], x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """``embed`` over ``x [N, ...]`` in chunks of ``batch_size``: ``[N, E]`` on the CPU."""
    return torch.cat([embed(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


@dataclass
class PairEvaluator:
    """Distances of fixed ``pairs {split: (pairs [P, 2], same [P])}`` between the two sides that ``embed(split)``
    returns (``left [N_l, E]``, ``right [N_r, E]``), measured with ``distance``."""

    pairs: dict[str, tuple[Tensor, Tensor]]
    embed: Embed
    distance: Distance
    batch_size: int
    device: torch.device

    @classmethod
    def for_engine(
        cls, eval_pairs: Callable[[str], tuple[Tensor, Tensor]], embed: Embed, distance: Distance, engine: Any
    ) -> PairEvaluator:
        """The validation and test pairs ``eval_pairs(split)`` gives, embedded in chunks of
        ``train.eval_batch_size`` on the engine's device."""
        pairs = {s: eval_pairs(s) for s in ("val", "test")}
        return cls(pairs, embed, distance, int(engine.cfg.train.eval_batch_size), engine.device)

    @torch.no_grad()
    def distances(self, split: str) -> Tensor:
        """``[P]`` float64 distances of the split's pairs."""
        left, right = self.embed(split)
        pairs = self.pairs[split][0]
        return torch.cat(
            [
                self.distance(left[p[:, 0]].to(self.device), right[p[:, 1]].to(self.device)).double().cpu()
                for p in pairs.split(self.batch_size)
            ]
        )

    def validate(self) -> dict[str, float]:
        """``val/auc``, ``val/eer`` and ``val/acc`` (1 - EER) of the validation pairs."""
        r = roc(-self.distances("val"), self.pairs["val"][1])
        return {"val/auc": r.auc, "val/eer": r.eer, "val/acc": 1.0 - r.eer}

    def report(self, method: str, target_far: float) -> VerificationReport:
        """Test metrics at the threshold chosen on validation pairs."""
        return verify_distances(
            self.distances("val"), self.pairs["val"][1], self.distances("test"), self.pairs["test"][1], method, target_far
        )


def finish_verification(engine: Any, report: VerificationReport, extra: dict[str, float]) -> dict[str, Any]:
    """Plot the test ROC, store the threshold in ``best.pt`` (what ``dan verify`` reads), print and return the
    test summary."""
    cfg = engine.cfg
    roc_path = engine.run_dir / "roc_test.png"
    if engine.info.is_main:
        plot_roc(report, roc_path, title=f"{cfg.run_name}: test ROC")
        engine.logger.log_figures({"roc_test": roc_path}, engine.step)
    best = engine.checkpoints.best_path
    if engine.info.is_main and best.exists():
        state = ckpt.load_checkpoint(best)
        ckpt.save_checkpoint(best, {**state, "verification": report.to_dict()})
    summary = {
        **{f"test/{k}": v for k, v in report.test.items()},
        **{f"val/{k}": v for k, v in report.val.items()},
        **extra,
        "threshold": report.threshold,
        "threshold_method": report.method,
        "roc_plot": str(roc_path),
    }
    engine.logger.log_test({k: v for k, v in summary.items() if isinstance(v, float)}, engine.step)
    t = report.test
    engine.logger.message(
        f"test at the val-chosen threshold {report.threshold:.4f} ({report.method}): accuracy {t['accuracy']:.4f} "
        f"FAR {t['far']:.4f} FRR {t['frr']:.4f} AUC {t['auc']:.4f} EER {t['eer']:.4f}"
        + "".join(f" {k}={v:.4f}" for k, v in extra.items())
        + f"; checkpoint {best}"
    )
    return summary
