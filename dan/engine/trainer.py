"""The pieces a recipe's training loop is made of: seeding, optimiser, scheduler, AMP, losses, early
stopping, throughput and progress bars. The loop itself lives in the recipe script, in view."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm.auto import tqdm

from dan.config import OPTIMIZERS, SCHEDULERS
from dan.data.dataset import Split
from dan.data.pairing import split_generator
from dan.engine.checkpoint import improves
from dan.engine.distributed import all_reduce_sum
from dan.errors import ConfigError, DanError
from dan.losses.masked import masked_cross_entropy
from dan.models.output import DANOutput


class NonFiniteLossError(DanError, FloatingPointError):
    """The loss became NaN or Inf; the run stopped and kept its last good checkpoint."""


class TrainingInterrupted(DanError):
    """SIGTERM or Ctrl-C stopped the run at a step boundary after its checkpoint was written.

    ``exit_code`` is the shell convention for that signal, 128 + its number: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Turns SIGTERM and SIGINT into a request to stop at the next step boundary.

    The loop polls :meth:`requested` after each step, saves a checkpoint and stops; a second signal acts
    at once (the previous handler is restored after the first). Handlers are only installed from the
    main thread and never replace a signal the parent told this process to ignore.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)  # where the flag is all-reduced (NCCL needs CUDA tensors)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """Whether a stop signal arrived on any DDP rank (every rank stops at the same step)."""
        flag = torch.tensor([float(self.signum is not None)], device=self.device)
        anywhere = bool(all_reduce_sum(flag))
        if anywhere and self.signum is None:
            self.signum = int(signal.SIGTERM)  # another rank was signalled
        return anywhere

    @property
    def name(self) -> str:
        """``SIGTERM`` / ``SIGINT`` (or ``signal N``)."""
        return signal.Signals(self.signum).name if self.signum else "no signal"


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and Python's ``random``; same seed and config -> same run on CPU."""
    random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(
    params: Iterable[nn.Parameter], cfg: DictConfig | Mapping[str, Any]
) -> torch.optim.Optimizer:
    """``optimizer.*`` -> AdamW or SGD (nesterov momentum) over ``params``."""
    params = [p for p in params if p.requires_grad]
    if cfg["name"] == "adamw":
        betas = tuple(float(b) for b in cfg["betas"])
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=betas)  # type: ignore[arg-type]
    if cfg["name"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
            nesterov=cfg["momentum"] > 0,
        )
    raise ConfigError(f"optimizer.name={cfg['name']!r} is not valid; valid choices: {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig | Mapping[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``scheduler.*`` -> a per-step OneCycle or cosine schedule over ``total_steps``, or None."""
    name = cfg["name"]
    if name == "none":
        return None
    if name == "onecycle":
        lrs = [g["lr"] for g in optimizer.param_groups]
        # each phase needs at least 2 steps (torch divides by the phase length minus one): a very short run
        # gets a warm-up of 2 steps instead of a fraction that rounds to nothing
        total = max(total_steps, 4)
        pct_start = min(max(float(cfg["pct_start"]), 2.0 / total), 1.0 - 2.0 / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lrs, total_steps=total, pct_start=pct_start)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total_steps, 1), eta_min=cfg["min_lr"]
        )
    raise ConfigError(f"scheduler.name={name!r} is not valid; valid choices: {', '.join(SCHEDULERS)}")


def advance_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Step a freshly built ``scheduler`` ``steps`` times without training, so it continues a resumed run
    whose length changed (the optimizer's learning rates follow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()"
        for _ in range(steps):
            scheduler.step()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """fp16 autocast on CUDA when ``enabled``; a no-op elsewhere (AMP is CUDA-only)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for CUDA AMP."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of ``batch`` on ``device`` (non-blocking)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def head_losses(output: DANOutput, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the fused head and of each modality's auxiliary head (scalars).

    ``output.logits [B, C]``, ``output.modality_logits {m: [B, C]}``, ``labels``: class indices ``[B]`` or
    class probabilities ``[B, C]`` (:func:`dan.data.mixup.targets`). An auxiliary loss
    averages over the samples where its modality was present (``output.present``: the batch's mask and
    modality dropout), never over the filler a masked sample carries; with none present it is a zero
    that still reaches every parameter (so DDP ranks keep the same graph).
    """
    fused = F.cross_entropy(output.logits.float(), labels)
    per_modality = {m: masked_cross_entropy(lg, labels, output.presence(m)) for m, lg in output.modality_logits.items()}
    return fused, per_modality


def nonfinite_advice(lr: float, grad_clip: float, amp: bool) -> str:
    """What to change after a NaN/Inf: always a lower learning rate; clipping only where it is off, AMP only
    where it is on."""
    advice = [f"lower optimizer.lr (now {lr:g}), e.g. optimizer.lr={lr / 10:g}"]
    if grad_clip <= 0:
        advice.append("set train.grad_clip=1.0")
    if amp:
        advice.append("set train.amp=false")
    return "; ".join(advice)


def check_finite(
    loss: Tensor, parts: Mapping[str, Tensor], *, epoch: int, step: int, last_good: str, advice: str
) -> None:
    """Raise NonFiniteLossError naming the step and the heads at fault when ``loss`` is NaN or Inf on any
    DDP rank (every rank stops at the same step)."""
    if not bool(all_reduce_sum((~torch.isfinite(loss.detach())).float().reshape(1))):
        return
    heads = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
    raise NonFiniteLossError(
        f"loss is {loss.item()} at epoch {epoch} step {step} ({heads}); training stopped. The last good "
        f"checkpoint is {last_good}. Fix: {advice}"
    )


def gradients_finite(params: Iterable[nn.Parameter]) -> bool:
    """Whether every gradient among ``params`` is finite (False in a step whose fp16 gradients overflowed,
    which the GradScaler skips)."""
    flags = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(torch.stack(flags).all()) if flags else True


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0 = off); returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if max_norm <= 0 or not params:
        return math.nan
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def split_heldout(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out a seeded ``fraction`` of a split's samples (gradient blending's V); ``(train, heldout)``."""
    n = len(split)
    k = max(1, round(n * fraction))
    if k >= n:
        raise ConfigError(f"train.heldout_fraction={fraction} leaves no training pairs out of {n}; lower it")
    order = torch.randperm(n, generator=split_generator(seed, "heldout"))
    keep, held = order[k:].sort().values, order[:k].sort().values
    return split.select(keep), split.select(held, f"{split.name}-heldout")


class EarlyStopping:
    """Stop after ``patience`` epochs without ``min_delta`` improvement of a metric (patience 0 = never), by
    :func:`dan.engine.checkpoint.improves`."""

    def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0) -> None:
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def step(self, value: float) -> bool:
        """Record an epoch's metric; True when training should stop."""
        if improves(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state for checkpoints."""
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])


class Throughput:
    """Samples per second since the last :meth:`rate` call."""

    def __init__(self) -> None:
        self._t, self._n = time.perf_counter(), 0

    def update(self, n: int) -> None:
        """Count ``n`` more samples."""
        self._n += n

    def rate(self) -> float:
        """Samples/s over the window, then start a new window."""
        now = time.perf_counter()
        rate = self._n / max(now - self._t, 1e-9)
        self._t, self._n = now, 0
        return rate


class LossMeter:
    """Running sums of per-head losses over an epoch (checkpointed, so a resumed epoch averages right)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, losses: Mapping[str, Tensor | float], n: int) -> None:
        """Add batch-mean losses of ``n`` samples."""
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self) -> dict[str, float]:
        """Per-head mean loss, over every DDP rank."""
        keys = sorted(self.sums)
        totals = all_reduce_sum(
            torch.tensor([self.sums[k] for k in keys] + [float(self.count)], dtype=torch.float64)
        )
        return {k: float(totals[i] / max(float(totals[-1]), 1.0)) for i, k in enumerate(keys)}

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state."""
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.sums, self.count = dict(state["sums"]), int(state["count"])


def progress(
    iterable: Iterable[Any], *, total: int, desc: str, quiet: bool, initial: int = 0
) -> Iterable[Any]:
    """A tqdm bar (rate, epoch ETA, a postfix the loop sets) over ``iterable`` on a terminal; ``iterable``
    itself when ``quiet`` or when stderr is not a terminal (a log file or CI gets the logger's plain step
    lines instead of hundreds of carriage-return updates)."""
    if quiet or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, unit="batch")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """Learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
