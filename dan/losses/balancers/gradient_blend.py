"""``gradient_blend``: online Gradient-Blending (Wang, Tran & Feiszli, "What Makes Training Multi-Modal
Classification Networks Hard?", CVPR 2020, Algorithms 1 and 2).

References read: MultiBench ``training_structures/gradient_blend.py`` (``gb_estimate``, ``train_unimodal``,
``train_multimodal``) and GeWu-Lab/BalanceBenchmark ``balancemm/trainer/GBlending_trainer.py``
(``super_epoch_origin``).

At the start of every super-epoch (epochs ``0, K, 2K, ...``; ``every`` = K) the weights are estimated
from the current model, as both references do, and never from the jointly trained, already weighted heads:
for each head ``k`` (the fused head and each modality's auxiliary head) a copy of the model is trained on
``L_k`` alone for ``estimate_epochs`` epochs (default K, the paper's ``n``) on the training part (the
held-out slice excluded), with a fresh optimizer of the recipe's kind and base hyper-parameters. Before and
after, the copy's mean loss over the whole training part (``T``) and over the held-out slice (``V``) is
measured the same way: eval mode, no gradient. The joint model then trains on ``Σ_k w_k L_k`` until the
next estimate, and the copies are dropped.

- ``form: paper``: ``G_k = V_k(n) - V_k(n+K)``, ``O_k = (V_k(n+K) - T_k(n+K)) - (V_k(n) - T_k(n))``,
  ``w_k ∝ |G_k| / O_k²``, normalised to ``Σ_k w_k = 1`` (MultiBench with ``delta=True``, BalanceBenchmark).
- ``form: multibench``: MultiBench's default (``delta=False``): ``o_k = V_k(n+K) - T_k(n+K)``, set to 1e-4
  where negative, ``w_k ∝ |V_k(n+K)| / o_k²``.

Where dan differs, and why:

- ``|G|``: the paper assumes the held-out loss falls (``G > 0``); both reference codes take the absolute
  value, and so does dan.
- ``O²`` is floored at ``eps`` (default 1e-12): the references divide by it unguarded (an infinite weight).
- ``T`` is an eval-mode pass over the whole training part, like ``V``, so ``V - T`` measures the
  generalisation gap, not a train/eval mode difference (BalanceBenchmark sums the minibatch losses seen
  while training against an eval-mode held-out sum; MultiBench measures both without ``eval()``).
- The copies see the training pipeline the joint model sees (augmentation, modality dropout); MultiBench
  and BalanceBenchmark have none. MultiBench also fine-tunes the fused head for 25 epochs after each
  super-epoch; dan does not (that is a separate step of their trainer, not part of the weights).
- Any number of modalities and missing ones: one copy per head, ``M + 1`` in all; a head whose modality is
  absent from every measured sample has no loss and gets ``w_k = 0`` (the references take exactly two
  modalities, always present).
- DDP: each rank trains its copies on its shard with the gradients averaged over ranks every step, and
  losses are reduced over ranks, so every rank computes the same weights, those of the global batch.
- Optimizer: the references train with SGD. Under Adam (dan's default AdamW) a weight that scales the only
  loss reaching a parameter (an auxiliary head's own layer) is normalised away; the towers and the trunk,
  which several weighted losses reach, still see the blend. To train as the references do, set
  ``optimizer.name=sgd``.

Cost: each estimate trains ``(M + 1) × estimate_epochs`` extra epochs; with ``every = estimate_epochs = K``
that is ``M + 1`` times the training itself, as in the references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.losses.balancers.base import (
    Balancer,
    check_int,
    check_number,
    register_balancer,
    stack_losses,
)
from dan.losses.balancers.context import Batch, EpochContext, StepContext
from dan.losses.balancers.copies import train_copy

FORMS = ("paper", "multibench")
Measure = Callable[[nn.Module, Iterable[Batch]], Mapping[str, float]]
MULTIBENCH_FLOOR = 1e-4


def blend_weights(
    train_n: Tensor, heldout_n: Tensor, train_nk: Tensor, heldout_nk: Tensor, *, eps: float = 1e-12
) -> Tensor:
    """The paper's ``w ∝ |G| / O²`` ``[H]`` from per-head losses ``[H]`` at epochs n and n+K (sums to 1).

    Heads whose losses are NaN (never measured) get 0; all zeros where no head has a finite raw weight.
    """
    gain = heldout_n - heldout_nk
    overfit = (heldout_nk - train_nk) - (heldout_n - train_n)
    return _normalise(gain.abs() / overfit.pow(2).clamp_min(eps))


def multibench_weights(train: Tensor, heldout: Tensor, *, eps: float = 1e-12) -> Tensor:
    """MultiBench's default ``w ∝ |V| / o²``, ``o = V - T`` (1e-4 where negative), ``[H]`` from per-head
    losses ``[H]`` at the end of the window (sums to 1)."""
    gap = heldout - train
    gap = torch.where(gap < 0, torch.full_like(gap, MULTIBENCH_FLOOR), gap)
    return _normalise(heldout.abs() / gap.pow(2).clamp_min(eps))


def _normalise(raw: Tensor) -> Tensor:
    raw = torch.where(torch.isfinite(raw), raw, torch.zeros_like(raw))
    total = raw.sum()
    return raw / total if total > 0 else torch.zeros_like(raw)


@register_balancer("gradient_blend")
class GradientBlendBalancer(Balancer):
    """Per-head weights ``head_weights [H]`` estimated from separately trained copies every K epochs.

    Config: ``every`` (K, epochs per super-epoch, int >= 1, default 10 as BalanceBenchmark),
    ``estimate_epochs`` (epochs each copy trains, int >= 1, default K), ``form`` (``paper`` or
    ``multibench``), ``eps`` (floor of ``O²``, > 0).
    """

    name = "gradient_blend"
    needs_heldout = True

    def __init__(
        self,
        modalities: Sequence[str],
        every: int = 10,
        estimate_epochs: int | None = None,
        form: str = "paper",
        eps: float = 1e-12,
    ) -> None:
        super().__init__(modalities)
        self.every = check_int(self.name, "every", every, low=1)
        self.estimate_epochs = check_int(
            self.name, "estimate_epochs", self.every if estimate_epochs is None else estimate_epochs, low=1
        )
        if form not in FORMS:
            raise ConfigError(
                f"balancer {self.name!r}: form must be one of {FORMS}, got {form!r}; set balancer.form"
            )
        self.form = form
        self.eps = check_number(self.name, "eps", eps, strict=True)
        n = len(self.heads)
        self.register_buffer("head_weights", torch.full((n,), 1.0 / n))
        # T(n), V(n), T(n+K), V(n+K) [4, H] of the last estimate
        self.register_buffer("last_losses", torch.full((4, n), float("nan"), dtype=torch.float64))

    def combine(self, fused_loss: Tensor, modality_losses: Mapping[str, Tensor], ctx: StepContext) -> Tensor:
        """``Σ_k w_k L_k`` over the heads present (scalar)."""
        index, losses = stack_losses(self, fused_loss, modality_losses)
        return (self.head_weights[index].to(losses) * losses).sum()

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """At a super-epoch's start, estimate every head's weight from a copy trained on that head alone."""
        if ctx.epoch % self.every:
            return
        train, heldout, measure = self._inputs(ctx)
        start = [measure(ctx.model, train), measure(ctx.model, heldout)]
        losses = torch.tensor(
            [
                [*(float(s.get(head, "nan")) for s in start), *self._train_copy(head, ctx, train, heldout, measure)]
                for head in self.heads
            ],
            dtype=torch.float64,
        ).T
        self.last_losses.copy_(losses)
        if self.form == "paper":
            new = blend_weights(*losses, eps=self.eps)
        else:
            new = multibench_weights(losses[2], losses[3], eps=self.eps)
        if new.sum() > 0:
            self.head_weights.copy_(new.to(self.head_weights))

    def _inputs(self, ctx: EpochContext) -> tuple[Iterable[Batch], Iterable[Batch], Measure]:
        missing = [k for k in ("train", "heldout") if k not in ctx.loaders]
        missing += [k for k in ("measure", "new_optimizer") if getattr(ctx, k) is None]
        if missing or ctx.measure is None or ctx.new_optimizer is None:
            raise ConfigError(
                f"balancer {self.name!r} needs the EpochContext's loaders 'train' and 'heldout', measure and "
                f"new_optimizer (missing: {missing}); the trainer gives them to a balancer with needs_heldout"
            )
        return ctx.loaders["train"], ctx.loaders["heldout"], ctx.measure

    def _train_copy(
        self,
        head: str,
        ctx: EpochContext,
        train: Iterable[Batch],
        heldout: Iterable[Batch],
        measure: Measure,
    ) -> list[float]:
        """``[T(n+K), V(n+K)]`` (NaN where ``head`` had no loss) of a copy of the model trained for
        ``estimate_epochs`` on ``head``'s loss alone, with a fresh optimizer."""
        model = train_copy(ctx, train, head, self.estimate_epochs)
        return [float(measure(model, split).get(head, "nan")) for split in (train, heldout)]

    def weights(self) -> dict[str, float]:
        """``w_k`` per head (they sum to 1)."""
        return dict(zip(self.heads, self.head_weights.tolist(), strict=True))
