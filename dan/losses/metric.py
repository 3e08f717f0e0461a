"""Metric-learning losses for Siamese and cross-modal models, from pytorch-metric-learning (not rewritten).

Every loss takes ``embeddings [B, D]`` with ``labels [B]`` and, for the cross-modal case, a reference set
``ref_emb [R, D]`` with ``ref_labels [R]``: then positives and negatives are drawn across the two sets only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.registry import Registry

METRIC_LOSSES: Registry[nn.Module] = Registry("metric_losses")


class MetricLoss(nn.Module):
    """A pytorch-metric-learning loss with an optional miner; ``forward`` returns a scalar."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Loss of ``embeddings [B, D]`` (and ``ref_emb [R, D]``) given their labels."""
        indices = None
        if self.miner is not None:
            indices = self.miner(embeddings, labels, ref_emb, ref_labels)
        return self.loss(embeddings, labels, indices, ref_emb, ref_labels)


@METRIC_LOSSES.register("contrastive")
def contrastive(margin: float = 0.5, pos_margin: float = 0.0) -> MetricLoss:
    """Contrastive loss on L2 distance: same pairs pulled under ``pos_margin``, others pushed past ``margin``."""
    if margin <= pos_margin:
        raise ConfigError(f"loss.margin={margin} must exceed loss.pos_margin={pos_margin}")
    return MetricLoss(losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=margin))


@METRIC_LOSSES.register("triplet")
def triplet(margin: float = 0.2, mining: str = "semihard") -> MetricLoss:
    """Triplet margin loss with an in-batch ``TripletMarginMiner`` (``all``, ``hard``, ``semihard``, ``easy``)."""
    if margin <= 0:
        raise ConfigError(f"loss.margin must be > 0, got {margin}")
    valid = ("all", "hard", "semihard", "easy")
    if mining not in valid:
        raise ConfigError(f"loss.mining={mining!r} is unknown; valid: {', '.join(valid)}")
    return MetricLoss(
        losses.TripletMarginLoss(margin=margin),
        miners.TripletMarginMiner(margin=margin, type_of_triplets=mining),
    )


class _LearnableTemperature:
    """Mixin for a pytorch-metric-learning loss with a ``temperature``: it becomes ``exp(-logit_scale)``,
    learned as in CLIP and clamped to [1/100, 1]."""

    logit_scale: nn.Parameter

    def _compute_loss(self, *args: Tensor) -> dict:
        self.temperature = torch.exp(-self.logit_scale.clamp(0.0, math.log(100.0)))
        return super()._compute_loss(*args)  # type: ignore[misc]


class _LearnableTemperatureNTXent(_LearnableTemperature, losses.NTXentLoss):
    def __init__(self, temperature: float) -> None:
        super().__init__(temperature=temperature, distance=CosineSimilarity())
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))


class _LearnableTemperatureSupCon(_LearnableTemperature, losses.SupConLoss):
    def __init__(self, temperature: float) -> None:
        super().__init__(temperature=temperature, distance=CosineSimilarity())
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ConfigError(f"loss.temperature must be > 0, got {temperature}")


@METRIC_LOSSES.register("ntxent")
def ntxent(temperature: float = 0.07, learnable_temperature: bool = True) -> MetricLoss:
    """NT-Xent / InfoNCE on cosine similarity; the temperature is a parameter when ``learnable_temperature``.

    Each positive pair is scored against the anchor's negatives: with class labels that costs
    ``O(positive pairs x negative pairs)``, i.e. ``O(B^4 / C)``; ``supcon`` is the cheaper form for those.
    """
    _check_temperature(temperature)
    if learnable_temperature:
        return MetricLoss(_LearnableTemperatureNTXent(temperature))
    return MetricLoss(losses.NTXentLoss(temperature=temperature))


@METRIC_LOSSES.register("supcon")
def supcon(temperature: float = 0.1, learnable_temperature: bool = True) -> MetricLoss:
    """Supervised contrastive loss (Khosla et al. 2020): InfoNCE in which every same-class item is a positive,
    computed on the ``[B, R]`` cosine-similarity matrix (``O(B R)``); learnable temperature as in ``ntxent``."""
    _check_temperature(temperature)
    if learnable_temperature:
        return MetricLoss(_LearnableTemperatureSupCon(temperature))
    return MetricLoss(losses.SupConLoss(temperature=temperature))


def build_metric_loss(name: str, **kwargs: float | str | bool) -> MetricLoss:
    """``loss=`` config key -> a loss module; unknown names list the valid ones."""
    return METRIC_LOSSES.build(name, **kwargs)


def loss_spec(loss: Any) -> tuple[str, dict[str, Any]]:
    """A ``loss`` config (a name, or ``{name, **kwargs}``) -> ``(name, kwargs)``."""
    if isinstance(loss, str):
        return loss, {}
    if isinstance(loss, Mapping) and isinstance(loss.get("name"), str):
        kwargs = dict(loss)
        return kwargs.pop("name"), kwargs
    raise ConfigError(f"loss must be a name or {{name: ..., ...}}, got {loss!r}; e.g. loss=contrastive")
