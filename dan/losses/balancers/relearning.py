"""``relearning``: Diagnosing and Re-learning for balanced multimodal learning (Wei, Li & Hu, ECCV 2024).

Reference read: GeWu-Lab/Diagnosing_Relearning_ECCV2024 ``code/ours.py`` (``get_feature``,
``reinit_score``, ``purity_score``, ``reinit``); BalanceBenchmark's ``ReLearning_trainer.py`` ports it.

The towers learn from the fused loss alone (the reference trains no auxiliary heads; dan's heads train on
detached features, see :func:`~dan.losses.balancers.base.fused_objective`). After epoch ``e`` (0-based)
with ``e % every == 0`` and ``e > 0``, at most ``times`` times:

1. *Diagnose*: each modality's embedding (``output.embeddings[m]``, eval mode) over the training split and
   over the validation split is scaled per feature to ``[-1, 1]`` (``MinMaxScaler``) and clustered by
   k-means into as many clusters as classes (``random_state=0``); the purity of each clustering (the share
   of samples whose cluster's majority label is their own) gives ``gap_m = |purity_train - purity_val|``.
2. *Re-learn*: ``α_m = tanh(strength · gap_m)`` and every parameter of modality ``m``'s encoder
   (``model.tower_parameters(m)``) moves to ``α_m θ_m(0) + (1 - α_m) θ_m``, ``θ_m(0)`` its value before
   training. A modality that has learnt features which do not carry over to held-out data is pulled back
   towards its initialisation the most. The optimizer's state is left as it is, as in the reference.

Defaults as the reference: ``every=20``, ``times=3``, ``strength=3`` (``move_lambda``).

Where dan differs, and why:

- Any number of modalities, each diagnosed on its own; samples where a modality is missing are left out of
  its clustering.
- k-means is scikit-learn's with ``n_init="auto"`` (one k-means++ run); the reference ran the scikit-learn
  default of its day.
- DDP: the embeddings of every rank are gathered, rank 0 computes ``α`` and broadcasts it, so every rank
  moves its weights identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dan.engine.distributed import current_world, from_rank0, gather_objects
from dan.errors import ConfigError
from dan.losses.balancers.base import Balancer, check_int, check_number, fused_objective, register_balancer
from dan.losses.balancers.context import Batch, EpochContext, StepContext
from dan.losses.balancers.features import present_embeddings


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of samples whose cluster's majority label is their own label (``[N]`` each)."""
    hits = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters))
    return float(hits) / len(labels)


def cluster_purity(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> float:
    """Purity of k-means (``n_clusters``, seed 0) on ``features [N, D]`` scaled per column to ``[-1, 1]``."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import MinMaxScaler

    scaled = MinMaxScaler(feature_range=(-1, 1)).fit_transform(features)
    clusters = KMeans(n_clusters=min(n_clusters, len(features)), random_state=0, n_init="auto").fit_predict(scaled)
    return purity(labels, clusters)


@register_balancer("relearning")
class ReLearningBalancer(Balancer):
    """Periodic diagnosis by clustering purity and soft re-initialisation of each encoder.

    Config: ``every`` (epochs between diagnoses, default 20), ``times`` (at most this many, default 3),
    ``strength`` (``move_lambda``, default 3).
    """

    name = "relearning"

    def __init__(self, modalities: Sequence[str], every: int = 20, times: int = 3, strength: float = 3.0) -> None:
        super().__init__(modalities)
        self.every = check_int(self.name, "every", every, low=1)
        self.times = check_int(self.name, "times", times, low=0)
        self.strength = check_number(self.name, "strength", strength)
        self.register_buffer("done", torch.zeros((), dtype=torch.long))
        self.register_buffer("alpha", torch.zeros(len(self.modalities)))
        self.register_buffer("purity_gap", torch.zeros(len(self.modalities)))
        self._initial: dict[str, list[Tensor]] | None = None

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``L_f`` plus the auxiliary losses on detached features (scalar)."""
        return fused_objective(fused_loss, modality_losses, ctx)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Before the first step: keep each encoder's initial parameters."""
        if self._initial is None:
            self._initial = {
                m: [p.detach().clone() for p in ctx.model.tower_parameters(m)] for m in self.modalities
            }

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """Diagnose and re-learn after every ``every``-th epoch (not the first), ``times`` times at most."""
        if ctx.epoch == 0 or ctx.epoch % self.every or int(self.done) >= self.times:
            return
        if self._initial is None:
            raise ConfigError(
                f"balancer {self.name!r} has no initial parameters: on_epoch_start was not called before "
                "training; the trainer calls it (a custom loop must too)"
            )
        missing = [k for k in ("train", "val") if k not in ctx.loaders]
        if missing:
            raise ConfigError(f"balancer {self.name!r} needs EpochContext.loaders {missing} to diagnose")
        classes = int(getattr(ctx.model, "num_classes", 0)) or None
        train = _embeddings(ctx.model, ctx.loaders["train"], self.modalities, ctx.device)
        val = _embeddings(ctx.model, ctx.loaders["val"], self.modalities, ctx.device)
        gaps = torch.zeros(len(self.modalities))
        if current_world()[0] == 0:
            for i, m in enumerate(self.modalities):
                purities = []
                for feats, labels in (train[m], val[m]):
                    n = classes or int(labels.max()) + 1
                    purities.append(cluster_purity(feats, labels, n))
                gaps[i] = abs(purities[0] - purities[1])
        gaps = from_rank0(gaps)
        alpha = torch.tanh(self.strength * gaps)
        with torch.no_grad():
            for i, m in enumerate(self.modalities):
                for p, p0 in zip(ctx.model.tower_parameters(m), self._initial[m], strict=True):
                    p.copy_(torch.lerp(p.detach(), p0.to(p), alpha[i].item()))
        self.purity_gap.copy_(gaps)
        self.alpha.copy_(alpha)
        self.done += 1

    def weights(self) -> dict[str, float]:
        """Every head weighted 1, plus the last ``alpha/<m>`` and ``purity_gap/<m>`` (0 before the first)."""
        out = super().weights()
        out.update({f"alpha/{m}": float(a) for m, a in zip(self.modalities, self.alpha, strict=True)})
        out.update({f"purity_gap/{m}": float(g) for m, g in zip(self.modalities, self.purity_gap, strict=True)})
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The encoders' initial parameters, so a resumed run re-learns towards the same point."""
        return {"initial": self._initial}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_extra_state`` saved."""
        self._initial = state["initial"]


def _embeddings(
    model: nn.Module, batches: Iterable[Batch], modalities: Sequence[str], device: torch.device
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{m: (features [N, D], labels [N])}`` of every rank's samples where ``m`` is present, eval mode."""
    local: dict[str, tuple[list[Tensor], list[Tensor]]] = {m: ([], []) for m in modalities}
    for per in present_embeddings(model, batches, modalities, device):
        for m, (emb, labels) in per.items():
            local[m][0].append(emb.cpu())
            local[m][1].append(labels.cpu())
    gathered = gather_objects(
        {m: (torch.cat(f) if f else torch.zeros(0), torch.cat(y) if y else torch.zeros(0, dtype=torch.long))
         for m, (f, y) in local.items()}
    )
    return {
        m: (torch.cat([g[m][0] for g in gathered]).numpy(), torch.cat([g[m][1] for g in gathered]).numpy())
        for m in modalities
    }
