"""A group adversary (``train.adversary``): domain-adversarial training (DANN; Ganin & Lempitsky, ICML 2015;
Ganin et al., JMLR 2016) against the groups of the training data, e.g. speakers, so that a modality's
features stop telling them apart and carry over to a group never seen.

A small classifier reads one modality's pooled trunk features ``[B, D]`` through a gradient reversal layer
and predicts each sample's group. Its own weights descend ``weight * CE``; the gradient that reaches the
features is multiplied by ``-lambda_p``, so the features ascend it. As in the paper, ``lambda_p = 2 / (1 +
exp(-gamma * p)) - 1`` with ``gamma = 10`` ramps from 0 to 1 over training progress ``p``, so the
adversary's early, noisy signal does not disturb the features, and the classifier has one hidden layer
(``hidden`` units, ReLU; 0: linear; the paper's domain classifiers range from one hidden layer of 100
units for MNIST to two of 1024 for its larger benchmarks; dan's default, 64, is the width of the features it
reads in ``audio_only``).

Where dan differs from the paper: the paper anneals the learning rate of every weight as ``mu_0 / (1 + 10
p)^0.75``; dan's adversary is one of the run's ``modules``, trained by their optimizer at the base learning
rate without weight decay or schedule, while the model keeps ``scheduler.*``. The paper's domain classifier
separates a source domain from a target domain it also sees unlabelled, with a logistic loss; here there is
no target data, only the training groups, told apart by a softmax cross-entropy (the speaker-invariant
training of Meng et al., ICASSP 2018, which applies the same reversal to speaker classification). The
authors' code (Caffe) was not within reach; the reversal and the schedule follow the paper's equations.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dan.data.dataset import Split
from dan.errors import ConfigError
from dan.models import DANOutput


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lam * grad, None


def reverse_gradient(x: Tensor, lam: float) -> Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``-lam`` in the backward pass."""
    return _ReverseGradient.apply(x, lam)


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN's ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1`` for training progress ``p`` in [0, 1]: 0 at the
    start, about 0.9999 at the end with ``gamma=10``."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


class GroupAdversary(nn.Module):
    """The group classifier of ``modality``'s features and its loss (see the module docstring).

    ``groups``: ``[P] int64`` group id of each training sample (the split's ``groups``); the classifier has one
    output per distinct id. ``last_acc``: the accuracy of the last batch's group predictions (chance,
    ``1 / num_groups``, is what the features aim for); ``last_lambda``: the reversal's last ``lambda_p``.
    """

    def __init__(
        self, dim: int, groups: Tensor, modality: str, weight: float = 1.0, hidden: int = 64, gamma: float = 10.0
    ) -> None:
        super().__init__()
        ids = torch.unique(groups)
        if len(ids) < 2:
            raise ConfigError(
                f"train.adversary: the training split holds {len(ids)} group; an adversary needs at least two "
                "groups to tell apart. Train on more groups or set train.adversary.weight=0"
            )
        self.modality, self.weight, self.gamma = modality, float(weight), float(gamma)
        self.num_groups = len(ids)
        lookup = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        lookup[ids] = torch.arange(len(ids))
        self.register_buffer("sample_group", lookup[groups], persistent=False)
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.ReLU(inplace=True)] if hidden else []
        self.classifier = nn.Sequential(*layers, nn.Linear(hidden or dim, len(ids)))
        self.last_lambda = 0.0
        self._hits, self._kept = torch.zeros(()), torch.zeros(())

    @property
    def last_acc(self) -> float:
        """The last batch's group accuracy over its present samples (NaN before any); read when logged, so
        training steps do not wait for it."""
        return float(self._hits / self._kept) if float(self._kept) > 0 else float("nan")

    def forward(self, out: DANOutput, index: Tensor, progress: float) -> Tensor:
        """The adversary's loss ``weight * CE`` (a scalar), averaged over the samples ``index [B]`` of the
        training split where the modality is present, from ``out.embeddings[modality] [B, D]``. Every sample
        passes the classifier (an absent one with weight 0), so each DDP rank's backward reaches the same
        parameters."""
        target = self.sample_group[index.to(self.sample_group.device)]
        self.last_lambda = dann_coefficient(progress, self.gamma)
        feats = out.embeddings.get(self.modality)
        if feats is None:  # no sample of the batch has the modality
            feats = out.logits.new_zeros(len(target), self.classifier[0].in_features)
            present = torch.zeros(len(target), dtype=torch.bool, device=feats.device)
        else:
            present = out.presence(self.modality)
        logits = self.classifier(reverse_gradient(feats, self.last_lambda))
        per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        keep = torch.ones_like(per_sample) if present is None else present.to(per_sample.dtype)
        self._hits = ((logits.detach().argmax(-1) == target) & keep.bool()).sum()
        self._kept = keep.sum()
        return self.weight * (per_sample * keep).sum() / self._kept.clamp_min(1.0)


def build_adversary(cfg: dict[str, Any], train: Split, dim: int) -> GroupAdversary | None:
    """The :class:`GroupAdversary` of ``train.adversary`` (checked by ``dan.config.check_adversary``) on
    features of width ``dim`` for the training split ``train``; None when its weight is 0. A ConfigError
    names the fix when the split has no groups."""
    if not cfg.get("weight"):
        return None
    if train.groups is None:
        raise ConfigError(
            f"train.adversary needs a group (e.g. speaker) for each training sample, and data.name={train.source} "
            "gives none. AV-MNIST gives its speakers; a manifest gives the column named by data.group=COLUMN. "
            "Or set train.adversary.weight=0"
        )
    return GroupAdversary(dim, train.groups, cfg["modality"], cfg["weight"], cfg["hidden"], cfg["gamma"])
