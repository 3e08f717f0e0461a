"""The one training loop of dan. :class:`Engine` owns seeding, devices, DDP, AMP, the optimizer and
scheduler, checkpoints, resume, SIGTERM/Ctrl-C, NaN handling, early stopping, logging and results; a
recipe supplies a :class:`Task`: its data and model, its step, its validation and its test.

    def main(cfg):
        return Engine(cfg).run(MyTask(cfg))
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import platform
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from dan.config import to_dict
from dan.data import Split, TensorBatchLoader
from dan.engine import checkpoint as ckpt
from dan.engine import distributed as dist
from dan.engine import trainer as T
from dan.engine.resume_check import check_resumable
from dan.engine.run_folder import RunFolder, claim_run_folder
from dan.engine.weight_average import WeightAverage, restore_average
from dan.errors import CheckpointError, ConfigError, describe
from dan.logging import Logger, NullLogger, build_logger
from dan.logging.console import clock
from dan.logging.plots import plot_learning_curves

Batch = Mapping[str, Tensor]


@dataclass
class StepOutput:
    """What :meth:`Task.training_step` returns.

    Attributes:
        loss: the scalar objective to backward.
        parts: named scalar losses (detached or not) averaged over the epoch and logged as ``train/loss_<k>``.
        size: samples in the step on this rank.
        context: anything :meth:`Task.after_backward` needs again (the model output, a balancer context).
    """

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    size: int = 0
    context: Any = None


@dataclass
class Validation:
    """What :meth:`Task.validate` returns: ``scalars`` ``{"val/<metric>": value}`` (early stopping reads
    one), the full ``result`` and misclassified ``samples`` for the logger."""

    scalars: dict[str, float]
    result: Any = None
    samples: list[dict[str, Any]] = field(default_factory=list)


class BatchSource(Protocol):
    """The training batches of an epoch (:class:`~dan.data.TensorBatchLoader` is one)."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; skip the first ``start_batch`` batches (a resumed run saw them)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


class Task(Protocol):
    """What a recipe supplies. The engine calls, in order: :meth:`setup` once, then per epoch
    :meth:`start_epoch`, ``training_step``/``after_backward``/``after_step`` per batch of :attr:`train_batches`,
    :meth:`end_epoch` and :meth:`validate`, and :meth:`test` once on the best checkpoint.

    Attributes (set by :meth:`setup`): ``model`` (the trained module, on ``engine.device``),
    ``train_batches`` (a :class:`BatchSource` of this rank's shard), ``modules`` (further trained and
    checkpointed modules outside the model, e.g. ``{"balancer": ...}``), ``checkpoint_info`` (what a
    checkpoint records besides the weights: ``preprocessing``, ``manifest_hash``, ``modalities``, ...).
    """

    model: nn.Module
    train_batches: BatchSource
    modules: dict[str, nn.Module]
    checkpoint_info: dict[str, Any]

    def setup(self, engine: Engine) -> None:
        """Build data and model (on ``engine.device``); the engine then builds the optimizer."""

    def start_epoch(self, engine: Engine) -> None:
        """Work before an epoch's first step; skipped when a run resumes inside the epoch (balancers
        estimating weights)."""

    def training_step(self, engine: Engine, batch: Batch) -> StepOutput:
        """Forward (through ``engine.forward``) and the loss of one batch."""

    def after_backward(self, engine: Engine, batch: Batch, out: StepOutput) -> None:
        """Gradient-side work between ``backward`` and the optimizer step (balancers)."""

    def after_step(self, engine: Engine, batch: Batch, out: StepOutput) -> None:
        """Work right after the optimizer step (a balancer that scales the step it took)."""

    def end_epoch(self, engine: Engine, train_losses: dict[str, float]) -> None:
        """Work at an epoch's end, before validation (balancers re-estimating weights)."""

    def validate(self, engine: Engine) -> Validation:
        """Metrics on the validation split."""

    def test(self, engine: Engine) -> dict[str, Any]:
        """Metrics of the best checkpoint (already loaded into ``model``) on the test split."""


def checkpoint_record(split: Split, modalities: list[str], **extra: Any) -> dict[str, Any]:
    """What a checkpoint records of the data a task trains on: the training split's manifest hash (resume
    refuses other data), its preprocessing (what ``dan.load`` applies to new inputs), the modalities and the
    dataset's name, plus ``extra`` (e.g. ``metric_model``)."""
    return {
        "manifest_hash": split.manifest_hash,
        "preprocessing": split.preprocessing,
        "modalities": list(modalities),
        "data_source": split.source,
        **extra,
    }


class BaseTask:
    """A :class:`Task` with the optional parts left empty: subclasses set up their data and model and define
    ``training_step``, ``validate`` and ``test``; the epoch hooks and the step hooks do nothing here."""

    modules: dict[str, nn.Module]
    checkpoint_info: dict[str, Any]

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.modules = {}
        self.checkpoint_info = {}

    def start_epoch(self, engine: Engine) -> None:
        """No work at an epoch's start."""

    def after_backward(self, engine: Engine, batch: Batch, out: StepOutput) -> None:
        """No gradient-side work."""

    def after_step(self, engine: Engine, batch: Batch, out: StepOutput) -> None:
        """No work after the optimizer step."""

    def end_epoch(self, engine: Engine, train_losses: dict[str, float]) -> None:
        """No work at an epoch's end."""


class Engine:
    """Trains a :class:`Task` as ``cfg`` says. Set up by :meth:`run`; every attribute a task may read is
    named here: ``cfg``, ``info`` (rank, world size, device), ``device``, ``amp``, ``run_dir``, ``logger``,
    ``optimizer``, ``epoch``, ``step``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.info = dist.setup(cfg.device)
        self.device = self.info.device
        tc = cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        T.seed_everything(cfg.seed)
        self.created = time.perf_counter()
        self.amp = bool(tc.amp) and self.device.type == "cuda"
        if tc.batch_size % self.info.world_size:
            raise ConfigError(
                f"train.batch_size={tc.batch_size} must divide by the {self.info.world_size} processes"
            )
        self.run_folder = self._claim_run_folder()
        self.run_dir = self.run_folder.path
        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.meter = T.LossMeter()
        self.signals = T.StopSignals(self.device)
        es = tc.early_stopping
        self.stopper = T.EarlyStopping(es.patience, es.mode, es.min_delta)
        self.checkpoints = ckpt.CheckpointManager(self.run_dir, mode=es.mode)
        self.logger: Logger = NullLogger()
        self.bar: Any = None

    def _claim_run_folder(self) -> RunFolder:
        """Rank 0 claims the run's folder (before any data is read) and tells the other ranks where it is."""
        claimed: RunFolder | None = None
        answer: str | tuple[str, str]
        if self.info.is_main:
            try:
                claimed = claim_run_folder(
                    self.cfg.output_dir, self.cfg.run_name, resume=self.cfg.resume, overwrite=self.cfg.overwrite
                )
                answer = (str(claimed.path), claimed.note)
            except ConfigError as exc:
                answer = str(exc)
        else:
            answer = ""
        answer = dist.broadcast_object(answer, self.info)  # type: ignore[assignment]
        if isinstance(answer, str):
            raise ConfigError(answer)
        return claimed or RunFolder(Path(answer[0]), answer[1])

    # ---------------------------------------------------------------- set-up
    @property
    def batch_size(self) -> int:
        """This rank's share of ``train.batch_size``."""
        return int(self.cfg.train.batch_size) // self.info.world_size

    def loader(self, split: Split, batch_size: int | None = None, shuffle: bool = False, drop_last: bool = False) -> TensorBatchLoader:
        """Batches of ``split``: this rank's shard, shuffled by ``(seed, epoch)`` when ``shuffle``; the
        batch size defaults to this rank's share of ``train.batch_size`` (``train.eval_batch_size`` when
        not shuffled)."""
        if batch_size is None:
            batch_size = self.batch_size if shuffle else int(self.cfg.train.eval_batch_size)
        if shuffle and batch_size * self.info.world_size > len(split):
            raise ConfigError(
                f"train.batch_size={batch_size * self.info.world_size} exceeds the {len(split)} samples of split "
                f"{split.name!r}: each epoch would be a single step; set train.batch_size to at most {len(split)}"
            )
        return TensorBatchLoader(
            split, batch_size, shuffle=shuffle, seed=self.cfg.seed, drop_last=drop_last,
            rank=self.info.rank, world_size=self.info.world_size,
        )

    def new_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer of the config's kind and base hyper-parameters (no schedule) over ``params``,
        for methods that train copies of the model (gradient blending)."""
        return T.build_optimizer(params, self.cfg.optimizer)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The training model (DDP-wrapped where distributed) called under autocast."""
        with T.autocast(self.device, self.amp):
            return self.wrapped(*args, **kwargs)

    def prepare(self, task: Task) -> Engine:
        """Set ``task`` up (data, model, optimizer, logger, resume) without training, for callers that drive
        :meth:`optimise` or :meth:`train_epoch` themselves (benchmarks); :meth:`run` does this first."""
        self._setup(task)
        self.throughput = T.Throughput()
        self.started, self.start_step, self.samples_trained = time.perf_counter(), self.step, 0
        return self

    def _setup(self, task: Task) -> None:
        task.setup(self)
        self.task = task
        self.model = task.model
        if len(task.train_batches) < 1:
            raise ConfigError(f"train.batch_size={self.cfg.train.batch_size} exceeds the training set; lower it")
        if self.cfg.train.compile:
            # Static shapes: one graph per batch size; automatic dynamic shapes trip an inductor bug in torch 2.11.
            self.model.compile(dynamic=False)
        self.modules = dict(getattr(task, "modules", {}) or {})
        for m in self.modules.values():
            m.to(self.device)
        self.wrapped = dist.wrap_model(self.model, self.info)
        # a module's trainable parameters only: GradNorm's weights are a Parameter it updates itself
        self.extra_params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = T.build_optimizer(self.model.parameters(), self.cfg.optimizer)
        # a balancer's own parameters (uncertainty's log-variances) are no weights to decay or to schedule:
        # they get the optimizer at its base learning rate, without weight decay
        self.module_optimizer = (
            T.build_optimizer(self.extra_params, {**to_dict(self.cfg.optimizer), "weight_decay": 0.0})
            if self.extra_params
            else None
        )
        self.optimizers = [self.optimizer, *([self.module_optimizer] if self.module_optimizer else [])]
        self.total_steps = self.cfg.train.epochs * len(task.train_batches)
        self.scheduler = T.build_scheduler(self.optimizer, self.cfg.scheduler, self.total_steps)
        self.scaler = T.grad_scaler(self.device, self.amp)
        ema = self.cfg.train.ema
        self.average = WeightAverage(self.model, ema.decay, ema.warmup) if ema.decay else None
        info = dict(getattr(task, "checkpoint_info", {}) or {})
        self.logger = build_logger(
            self.cfg.logger,
            run_dir=self.run_dir,
            quiet=self.cfg.quiet,
            config=to_dict(self.cfg),
            wandb_cfg=to_dict(self.cfg.wandb),
            run_name=self.cfg.run_name,
            is_main=self.info.is_main,
        )
        if hasattr(self.logger, "set_preprocessing") and info.get("preprocessing"):
            self.logger.set_preprocessing(info["preprocessing"])
        self.logger.message(self.header())
        if self.run_folder.note:
            self.logger.message(self.run_folder.note)
        if self.cfg.resume:
            self._resume(self.cfg.resume)

    def header(self) -> str:
        """What a run is, said once before training: recipe, data (split sizes, cache, manifest hash), model
        size, device and threads, world size, seed and run folder."""
        splits = getattr(self.task, "splits", {}) or {}
        sizes = " / ".join(f"{k} {len(v)}" for k, v in splits.items())
        train = splits.get("train")
        info = getattr(train, "info", {}) or {}
        cache = f", cache {info['cache_file']} ({info.get('cache', 'reused')})" if info.get("cache_file") else ""
        digest = str(getattr(self.task, "checkpoint_info", {}).get("manifest_hash", ""))[:12]
        params = sum(p.numel() for p in self.model.parameters())
        return (
            f"{self.cfg.recipe} recipe | data {self.cfg.data.get('name')}: {sizes}{cache}, manifest {digest} | "
            f"model {params:,} parameters | device {self.device}, {torch.get_num_threads()} threads, "
            f"{self.info.world_size} process(es){', AMP' if self.amp else ''} | seed {self.cfg.seed} | run folder {self.run_dir}"
        )

    def machine(self) -> dict[str, Any]:
        """Where the run trained, for its record: the device (and its name on CUDA), threads, processes and
        whether AMP was on; figures from another machine differ in the last digits."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_name()
        return {
            "device": str(self.device),
            "device_name": name,
            "threads": torch.get_num_threads(),
            "processes": self.info.world_size,
            "amp": bool(self.amp),
        }

    @property
    def epoch_number(self) -> int:
        """The 1-based number of the epoch in progress, or of the one just finished (0 before the first
        step): what step scalars, validation rows, history entries and checkpoint metadata all call "epoch"."""
        return self.epoch + (1 if self.batch_in_epoch > 0 else 0)

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, scheduler, RNG, progress, and what the
        task records (preprocessing, manifest hash, modalities). With ``train.ema``, ``model`` holds the
        averaged weights (what evaluation reads) and ``train_model`` the trained ones."""
        averaged = {
            "model": self.average.state_dict(),
            "train_model": self.model.state_dict(),
            "ema": {"updates": self.average.updates},
        } if self.average else {"model": self.model.state_dict()}
        return {
            "config": to_dict(self.cfg),
            **averaged,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "module_optimizer": self.module_optimizer.state_dict() if self.module_optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "progress": {
                "epoch": self.epoch,
                "step": self.step,
                "batch": self.batch_in_epoch,
                "meter": self.meter.state_dict(),
                "stopper": self.stopper.state_dict(),
                "history": self.history,
            },
            **dict(getattr(self.task, "checkpoint_info", {}) or {}),
        }

    def last_good(self) -> str:
        """The checkpoint a run stopped by NaN/Inf can go back to (every checkpoint written holds finite weights)."""
        last = self.checkpoints.last_path
        return f"{last} (step {self.checkpoints.saved_step})" if last.exists() else "(none yet)"

    def nonfinite_advice(self) -> str:
        """What to change after a NaN or Inf, for this run's settings."""
        return T.nonfinite_advice(float(self.cfg.optimizer.lr), float(self.cfg.train.grad_clip), self.amp)

    def save(self, metric: float | None = None) -> None:
        """Write ``last.pt`` (and ``best.pt`` when ``metric`` improves) on rank 0; weights that hold NaN or Inf
        stop the run instead, naming the last good checkpoint, so no checkpoint ever holds them."""
        bad = ckpt.nonfinite_tensors({**self.model.state_dict(), **{
            f"{k}.{n}": v for k, m in self.modules.items() for n, v in m.state_dict().items()
        }})
        if dist.broadcast_flag(bool(bad), self.info):
            raise T.NonFiniteLossError(
                f"the weights became NaN or Inf by epoch {self.epoch_number} step {self.step} ({len(bad)} tensors, "
                f"e.g. {', '.join(bad[:3])}); nothing was saved and training stopped. The last good checkpoint is "
                f"{self.last_good()}. Fix: {self.nonfinite_advice()}"
            )
        if not self.info.is_main:
            return
        best = self.checkpoints.save(self.state(), metric)
        self.checkpoints.saved_step = self.step
        meta = {"step": self.step, "epoch": self.epoch_number}
        self.logger.log_checkpoint(self.checkpoints.last_path, ["latest"], meta)
        if best:
            self.logger.log_checkpoint(self.checkpoints.best_path, ["best"], {**meta, "metric": metric})

    def _resume(self, path: str) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        if not isinstance(state.get("progress"), dict) or "optimizer" not in state:
            raise CheckpointError(
                f"resume={path}: the checkpoint holds no training progress (optimizer state and position); "
                "it can be evaluated (dan eval) but not resumed: start a new run without resume="
            )
        expected = getattr(self.task, "checkpoint_info", {}).get("manifest_hash")
        if state.get("manifest_hash") != expected:
            raise ConfigError(
                f"resume={path}: the checkpoint was trained on other data (manifest hash differs); "
                "resume with the checkpoint's own data config"
            )
        changes = check_resumable(path, state.get("config") or {}, to_dict(self.cfg))
        weights = restore_average(self.average, state, path) if self.average else state["model"]
        ckpt.load_model_state(self.model, weights, source=str(path))
        for k, m in self.modules.items():
            try:
                m.load_state_dict(state.get("modules", {}).get(k, {}))
            except RuntimeError as e:
                raise CheckpointError(
                    f"resume={path}: the checkpoint's {k} state does not fit this version's {type(m).__name__} "
                    f"(written by another version of it: {describe(e)}); start a new run without resume="
                ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.module_optimizer is not None:
            if not state.get("module_optimizer"):
                raise CheckpointError(
                    f"resume={path}: the checkpoint has no optimizer state for {sorted(self.modules)} (written "
                    "before dan gave a balancer's parameters their own optimizer); start a new run without resume="
                )
            self.module_optimizer.load_state_dict(state["module_optimizer"])
        p = state["progress"]
        self.epoch, self.step, self.batch_in_epoch = p["epoch"], p["step"], p["batch"]
        if "train.epochs" in changes:
            before, now = changes["train.epochs"]
            if self.epoch > now or (self.epoch == now and self.batch_in_epoch):
                raise CheckpointError(
                    f"resume={path}: the checkpoint is already past epoch {now} (it stopped in epoch "
                    f"{self.epoch + 1}); set train.epochs to at least {self.epoch + 1}"
                )
            if self.scheduler:
                T.advance_scheduler(self.scheduler, self.step)
            self.logger.message(
                f"train.epochs changed from {before} to {now}: the learning-rate schedule is rebuilt for {now} "
                f"epochs and continued from step {self.step}"
            )
        elif self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.meter.load_state_dict(p["meter"])
        self.stopper.load_state_dict(p["stopper"])
        self.history = list(p["history"])
        self.checkpoints.best = state.get("best_metric")
        ckpt.set_rng_state(state["rng"])
        self.logger.rewind(self.step)
        self.logger.message(f"resumed from {path} at epoch {self.epoch} step {self.step}")

    def load_best(self) -> dict[str, Any] | None:
        """Load ``best.pt``'s weights into the model on every rank; returns its state (None if absent)."""
        best = self.checkpoints.best_path
        if not best.exists():
            return None
        state = ckpt.load_checkpoint(best, map_location=self.device)
        ckpt.load_model_state(self.model, state["model"], str(best))
        return state

    # ---------------------------------------------------------------- training
    def optimise(self, batch: Batch) -> StepOutput:
        """One step: the task's loss, NaN check, backward, its gradient work, clipping, optimizer and
        scheduler, the epoch meter and periodic logging."""
        out = self.task.training_step(self, batch)
        T.check_finite(
            out.loss,
            {k: v for k, v in out.parts.items()} or {"loss": out.loss},
            epoch=self.epoch,
            step=self.step,
            last_good=self.last_good(),
            advice=self.nonfinite_advice(),
        )
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        for opt in self.optimizers:
            self.scaler.unscale_(opt)
        dist.average_gradients(self.extra_params, self.info)
        # a step whose fp16 gradients overflowed is skipped by the scaler: the task's gradient work
        # (a balancer's gradient statistics, its saved weights) skips it too
        stepped = not self.scaler.is_enabled() or T.gradients_finite(
            [*self.model.parameters(), *self.extra_params]
        )
        if stepped:
            self.task.after_backward(self, batch, out)
        T.clip_gradients(self.model.parameters(), self.cfg.train.grad_clip)
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        after_step = getattr(self.task, "after_step", None)  # optional: tasks written before it existed
        if after_step is not None and stepped:
            after_step(self, batch, out)
        if self.average is not None and stepped:
            self.average.update(self.model)
        if self.scheduler:
            self.scheduler.step()
        self.meter.update({k: v.detach() for k, v in out.parts.items()}, out.size)
        self.throughput.update(out.size * self.info.world_size)
        self.samples_trained += out.size * self.info.world_size
        self.step += 1
        if self.step % self.cfg.train.log_every == 0:
            self._log_step(out)
        return out

    def _log_step(self, out: StepOutput) -> None:
        scalars = {"train/loss": out.loss.item()}
        scalars.update({f"train/loss_{k}": float(v.detach()) for k, v in out.parts.items()})
        scalars.update(self._state_scalars())
        scalars.update({"samples_per_s": self.throughput.rate(), "epoch": self.epoch_number, "eta_s": self.eta_seconds()})
        self.logger.log_scalars(scalars, self.step)
        if hasattr(self.bar, "set_postfix"):
            self.bar.set_postfix(
                loss=f"{scalars['train/loss']:.3f}", sps=f"{scalars['samples_per_s']:.0f}", run_eta=clock(scalars["eta_s"])
            )

    def train_epoch(self) -> None:
        """One pass over this rank's training batches, from where a resumed run stopped."""
        start_epoch = getattr(self.task, "start_epoch", None)  # optional, as after_step
        if self.batch_in_epoch == 0 and start_epoch is not None:
            start_epoch(self)
        self.wrapped.train()
        batches = self.task.train_batches
        batches.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
        self.bar = T.progress(
            batches,
            total=len(batches),
            initial=self.batch_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
            quiet=self.cfg.quiet or not self.info.is_main,
        )
        every = self.cfg.train.checkpoint_every
        for raw in self.bar:
            self.optimise(T.to_device(raw, self.device))
            self.batch_in_epoch += 1
            if every and self.step % every == 0 and self.batch_in_epoch < len(batches):
                self.save()
            if self.signals.requested():
                raise self.interrupted(save=True)

    def run(self, task: Task) -> dict[str, Any]:
        """Train ``task`` for ``train.epochs`` (or until early stopping), then test its best checkpoint."""
        try:
            self.prepare(task)
            started = time.perf_counter()
            with self.signals:
                self._loop()
            return self.finish(time.perf_counter() - started)
        finally:
            # the DDP wrapper must be gone before its process group: destroying it afterwards can hang in gloo
            self.wrapped = None
            gc.collect()
            dist.teardown()
            self.run_folder.release()

    def _loop(self) -> None:
        tc = self.cfg.train
        metric_key = tc.early_stopping.metric
        stop = False
        while self.epoch < tc.epochs and not stop:
            self.train_epoch()
            train_losses = self.meter.means()
            self.task.end_epoch(self, train_losses)
            with self.evaluation_weights():
                val = self.task.validate(self)
            scalars = val.scalars
            if metric_key not in scalars:
                raise ConfigError(
                    f"train.early_stopping.metric={metric_key!r} is not measured by this recipe; it measures "
                    f"{', '.join(sorted(scalars))}"
                )
            entry = {"epoch": self.epoch_number, "step": self.step, **scalars}
            entry.update({f"train/loss_{k}": v for k, v in train_losses.items()})
            entry.update(self._state_scalars())
            self.logger.log_validation({**scalars, "epoch": self.epoch_number}, val.result, self.step, val.samples)
            self.history.append(entry)
            metric = scalars[metric_key]
            stop = dist.broadcast_flag(self.stopper.step(metric), self.info)
            self.epoch, self.batch_in_epoch, self.meter = self.epoch + 1, 0, T.LossMeter()
            self.save(metric)
            dist.barrier(self.info)
            if self.signals.requested():
                raise self.interrupted(save=False)
            if stop:
                self.logger.message(
                    f"early stopping: {metric_key} did not improve for {tc.early_stopping.patience} epochs"
                )

    def evaluation_weights(self) -> contextlib.AbstractContextManager[None]:
        """A block in which the model holds the weights evaluation reads: the average with ``train.ema``,
        else its own."""
        return self.average.swapped_into(self.model) if self.average else contextlib.nullcontext()

    def _state_scalars(self) -> dict[str, float]:
        """The learning rate and the task's own scalars (balancer weights) now."""
        extra = getattr(self.task, "step_scalars", None)
        return {"lr": T.current_lr(self.optimizer), **(extra() if callable(extra) else {})}

    def eta_seconds(self) -> float:
        """Seconds left for the whole run's training steps at the mean pace of this session so far."""
        done = self.step - self.start_step
        if done <= 0:
            return math.nan
        pace = (time.perf_counter() - self.started) / done
        return pace * max(self.total_steps - self.step, 0)

    def interrupted(self, save: bool) -> T.TrainingInterrupted:
        """After SIGTERM/Ctrl-C: write the checkpoint (unless just written), close the logger, say how to resume."""
        if save:
            self.save()
        last = self.checkpoints.last_path
        text = (
            f"stopped by {self.signals.name} at epoch {self.epoch} step {self.step}; checkpoint {last} "
            f"written; continue with resume={last}"
        )
        self.logger.message(text)
        self.logger.finish({"interrupted": self.signals.name, "steps": self.step, "checkpoint": str(last)})
        return T.TrainingInterrupted(text, self.signals.signum or 15)

    def best_entry(self) -> dict[str, Any]:
        """The history entry of the epoch whose checkpoint is ``best.pt`` (the first to reach the best
        value of ``train.early_stopping.metric``); empty before any validation."""
        key, mode = self.cfg.train.early_stopping.metric, self.cfg.train.early_stopping.mode
        best: dict[str, Any] = {}
        for entry in self.history:
            if key in entry and ckpt.improves(entry[key], best.get(key), mode):
                best = entry
        return best

    def finish(self, seconds: float) -> dict[str, Any]:
        """Test the best checkpoint, write ``results.json`` and the learning curves, close the logger; returns
        the summary, whose validation and test figures both come from the best checkpoint."""
        self.load_best()
        test = self.task.test(self)
        best = self.best_entry()
        summary = {
            **{k: v for k, v in best.items() if k not in ("epoch", "step")},
            **test,
            "best_val": self.checkpoints.best,
            "best_epoch": best.get("epoch"),
            "epochs": self.epoch,
            "steps": self.step,
            "world_size": self.info.world_size,
            "train_seconds": round(seconds, 2),
            "train_samples_per_s": round(self.samples_trained / max(seconds, 1e-9), 1),
            "checkpoint": str(self.checkpoints.best_path),
            "manifest_hash": dict(getattr(self.task, "checkpoint_info", {}) or {}).get("manifest_hash"),
        }
        if self.info.is_main:
            curves = plot_learning_curves(
                self.history, self.run_dir / "curves.png", title=f"{self.cfg.run_name}: learning curves"
            )
            self.logger.log_figures({"curves": curves}, self.step)
            record = {
                "summary": summary,
                "history": self.history,
                "config": to_dict(self.cfg),
                "seed": self.cfg.seed,
                "manifest_hash": summary["manifest_hash"],
                "versions": versions(),
                "machine": self.machine(),
                "train_seconds": summary["train_seconds"],
                "wall_seconds": round(time.perf_counter() - self.created, 2),
                "run_dir": str(self.run_dir),
                "files": sorted(p.name for p in self.run_dir.iterdir() if p.suffix in (".png", ".pt")),
            }
            (self.run_dir / "results.json").write_text(json.dumps(record, indent=1))
        self.logger.finish(summary)
        return summary


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of dan, Python, torch, torchaudio and torchvision, for a run's record."""
    packages = ("dan", "torch", "torchaudio", "torchvision")
    return {"python": platform.python_version(), **{p: ckpt.package_version(p) or "not installed" for p in packages}}
