"""Evaluation of a DAN classifier: fused, per-modality, per-class accuracy and the confusion matrix
(torchmetrics, reduced over DDP ranks), modality contributions (Shapley values), modality ablation and
accuracy against input noise."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from dan.batch import Transform, drop_modality, only_modalities
from dan.engine.trainer import autocast, to_device
from dan.metrics.contribution import imbalance_degree, shapley_values
from dan.models.output import DANOutput

NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0, 4.0)  # Gaussian noise std (normalised units) swept when eval.noise_levels is null


@dataclass
class EvalResult:
    """Metrics of one pass over a split.

    Attributes:
        acc: fused-head accuracy; ``loss``: its mean cross-entropy.
        modality_acc: each modality's auxiliary-head accuracy.
        per_class_acc: fused accuracy per class ``[C]`` (as a list).
        confusion: ``[C, C]`` counts, rows = true class, columns = prediction.
        num_samples: samples seen (over every rank).
    """

    acc: float
    loss: float
    modality_acc: dict[str, float]
    per_class_acc: list[float]
    confusion: list[list[int]]
    num_samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def scalars(self, prefix: str = "val") -> dict[str, float]:
        """Flat ``{prefix/acc, prefix/loss, prefix/acc_<m>}`` for logging and early stopping."""
        out = {f"{prefix}/acc": self.acc, f"{prefix}/loss": self.loss}
        out.update({f"{prefix}/acc_{m}": v for m, v in self.modality_acc.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "acc": self.acc,
            "loss": self.loss,
            "modality_acc": self.modality_acc,
            "per_class_acc": self.per_class_acc,
            "confusion": self.confusion,
            "num_samples": self.num_samples,
            **self.extra,
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    num_classes: int,
    modalities: Sequence[str],
    device: torch.device,
    *,
    transform: Transform | None = None,
    amp: bool = False,
) -> EvalResult:
    """One pass of ``model`` over ``batches`` ``{m: [B, ...], "label": [B]}``; ``transform`` edits each
    batch first (drop a modality, add noise). Under DDP every metric is reduced over the ranks."""
    was_training = model.training
    model.eval()
    fused_acc = MulticlassAccuracy(num_classes, average="micro").to(device)
    per_class = MulticlassAccuracy(num_classes, average=None).to(device)
    confusion = MulticlassConfusionMatrix(num_classes).to(device)
    loss = MeanMetric().to(device)
    aux = {m: MulticlassAccuracy(num_classes, average="micro").to(device) for m in modalities}
    for raw in batches:
        batch = to_device(raw, device)
        if transform is not None:
            batch = transform(batch)
        labels = batch["label"]
        if labels.numel() == 0:
            continue
        with autocast(device, amp):
            out = model(batch)
        logits = out.logits.float()
        fused_acc.update(logits, labels)
        per_class.update(logits, labels)
        confusion.update(logits, labels)
        loss.update(F.cross_entropy(logits, labels, reduction="none"))
        for m, lg in out.modality_logits.items():
            rows = present_rows(out, m, lg.float(), labels)
            if rows[1].numel():
                aux[m].update(*rows)
    model.train(was_training)
    cm = confusion.compute().long()
    return EvalResult(
        acc=float(fused_acc.compute()),
        loss=float(loss.compute()),
        modality_acc={m: float(a.compute()) for m, a in aux.items() if a.update_count > 0},
        per_class_acc=[float(x) for x in per_class.compute().nan_to_num(0.0)],
        confusion=cm.tolist(),
        num_samples=int(cm.sum()),
    )


def add_noise(m: str, std: float, seed: int = 0) -> Transform:
    """A transform adding seeded Gaussian noise of ``std`` (in normalised input units) to modality ``m``."""
    generator: dict[str, torch.Generator] = {}

    def transform(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch[m]
        if x.device.type not in generator:
            generator[x.device.type] = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn(x.shape, generator=generator[x.device.type], device=x.device, dtype=x.dtype)
        return {**batch, m: x + std * noise}

    return transform


def contributions(
    model: nn.Module,
    make_batches: Callable[[], Iterable[Mapping[str, Tensor]]],
    num_classes: int,
    modalities: Sequence[str],
    device: torch.device,
    *,
    full_acc: float | None = None,
    without: Mapping[str, float] | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Each modality's Shapley value over the fused accuracy and the imbalance degree
    (:mod:`dan.metrics.contribution`): ``{"shapley_<m>": φ_m, "imbalance": d}``; empty for one modality.
    ``modalities`` are those the split holds (a tower without data has nothing to contribute).

    ``v(S)`` evaluates the split with the modalities outside ``S`` removed (up to ``2^M - 2`` passes),
    ``v(∅) = 1 / num_classes``. Accuracies already measured are not measured again: ``full_acc`` is ``v`` of
    all modalities, ``without`` the fused accuracy with one modality removed (:func:`robustness`'s
    ``"without"``). Samples left with no modality of ``S`` (missing-modality data) are not counted in ``v(S)``.
    """
    if len(modalities) < 2:
        return {}
    known: dict[frozenset[str], float] = {frozenset(): 1.0 / num_classes}
    if full_acc is not None:
        known[frozenset(modalities)] = full_acc
    for m, acc in (without or {}).items():
        known[frozenset(modalities) - {m}] = acc

    def value(subset: frozenset[str]) -> float:
        if subset in known:
            return known[subset]
        def transform(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            return only_modalities(batch, set(subset), list(modalities))

        return evaluate(model, make_batches(), num_classes, modalities, device, transform=transform, amp=amp).acc

    phi = shapley_values(value, modalities)
    return {**{f"shapley_{m}": v for m, v in phi.items()}, "imbalance": imbalance_degree(phi)}


def robustness(
    model: nn.Module,
    make_batches: Callable[[], Iterable[Mapping[str, Tensor]]],
    num_classes: int,
    modalities: Sequence[str],
    device: torch.device,
    noise_levels: Sequence[float] | None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fused accuracy with each modality removed, and against noise std per modality (``noise_levels``;
    None: :data:`NOISE_LEVELS`).

    Returns ``{"without": {m: acc}, "noise": {m: [{"std": s, "acc": a}, ...]}}``; ``make_batches`` gives a
    fresh iterable of the split's batches per pass.
    """
    without: dict[str, float] = {}
    if len(modalities) > 1:
        for m in modalities:
            r = evaluate(model, make_batches(), num_classes, modalities, device, transform=drop_modality(m))
            without[m] = r.acc
    noise: dict[str, list[dict[str, float]]] = {}
    for m in modalities:
        noise[m] = []
        for std in NOISE_LEVELS if noise_levels is None else noise_levels:
            r = evaluate(
                model, make_batches(), num_classes, modalities, device, transform=add_noise(m, std, seed)
            )
            noise[m].append({"std": float(std), "acc": r.acc})
    return {"without": without, "noise": noise}


@torch.no_grad()
def misclassified(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    modalities: Sequence[str],
    device: torch.device,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` wrongly predicted samples: ``{"index", "label", "pred", "prob", <m>: input}`` with
    each modality's (normalised) input on the CPU, for tables of errors."""
    was_training = model.training
    model.eval()
    found: list[dict[str, Any]] = []
    for raw in batches:
        if len(found) >= limit:
            break
        batch = to_device(raw, device)
        out = model(batch)
        prob = out.logits.float().softmax(-1)
        pred = prob.argmax(-1)
        for i in (pred != batch["label"]).nonzero().flatten().tolist()[: limit - len(found)]:
            item = {
                "index": int(batch["index"][i]) if "index" in batch else -1,
                "label": int(batch["label"][i]),
                "pred": int(pred[i]),
                "prob": float(prob[i, pred[i]]),
            }
            item.update({m: batch[m][i].cpu() for m in modalities if m in batch})
            found.append(item)
    model.train(was_training)
    return found


def present_rows(out: DANOutput, m: str, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``logits [B, C]`` and ``labels [B]`` cut to the samples where modality ``m`` was present."""
    keep = out.presence(m)
    return (logits, labels) if keep is None else (logits[keep], labels[keep])


@torch.no_grad()
def head_losses_mean(
    model: nn.Module, batches: Iterable[Mapping[str, Tensor]], modalities: Sequence[str], device: torch.device
) -> dict[str, float]:
    """Mean cross-entropy of the fused head (``fused``) and of each auxiliary head over ``batches``
    (reduced over DDP ranks); what gradient blending compares between train and held-out data."""
    was_training = model.training
    model.eval()
    means = {h: MeanMetric().to(device) for h in ("fused", *modalities)}
    for raw in batches:
        batch = to_device(raw, device)
        out = model(batch)
        labels = batch["label"]
        means["fused"].update(F.cross_entropy(out.logits.float(), labels, reduction="none"))
        for m, lg in out.modality_logits.items():
            rows = present_rows(out, m, lg.float(), labels)
            if rows[1].numel():
                means[m].update(F.cross_entropy(*rows, reduction="none"))
    model.train(was_training)
    return {h: float(v.compute()) for h, v in means.items() if v.update_count > 0}
