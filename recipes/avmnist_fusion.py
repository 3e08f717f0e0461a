"""AV-MNIST fusion: train a two-tower DAN (image + audio towers, shared trunk, fusion, heads) with a
modality balancer, validate every epoch, and report test accuracy of the best checkpoint.

    dan train avmnist_concat_offline [key=value ...]
    python recipes/avmnist_fusion.py --config avmnist_concat_offline [key=value ...]
    torchrun --nproc_per_node=2 recipes/avmnist_fusion.py --config quickstart

The whole loop is in this file; the pieces come from dan.engine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dan.config import to_dict
from dan.data import TensorBatchLoader, build_data
from dan.data.loader import check_finite_inputs
from dan.engine import checkpoint as ckpt
from dan.engine import distributed as dist
from dan.engine import trainer as T
from dan.engine.evaluate import evaluate, head_losses_mean, misclassified
from dan.errors import ConfigError
from dan.logging import build_logger
from dan.losses import build_balancer
from dan.models import build_model


class FusionRecipe:
    """Everything one run needs, set up from a validated config; :meth:`run` trains and tests."""

    def __init__(self, cfg: DictConfig, info: dist.DistInfo) -> None:
        self.cfg, self.info = cfg, info
        tc = cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        T.seed_everything(cfg.seed)
        self.run_dir = Path(cfg.output_dir) / cfg.run_name
        self.amp = bool(tc.amp) and info.device.type == "cuda"

        # data: whole splits as tensors; each rank reads its shard of the global batch
        if tc.batch_size % info.world_size:
            raise ConfigError(
                f"train.batch_size={tc.batch_size} must divide by the {info.world_size} processes"
            )
        self.splits = {
            name: check_finite_inputs(split, tc.nonfinite_inputs)
            for name, split in build_data(to_dict(cfg.data)).items()
        }
        train_split = self.splits["train"]
        self.model = build_model(cfg.model).to(info.device)
        if tc.compile:
            # Static shapes: one graph per batch size; automatic dynamic shapes trip an inductor bug in torch 2.11.
            self.model.compile(dynamic=False)
        self.modalities = list(self.model.modalities)
        self.balancer = build_balancer(cfg.balancer, self.modalities).to(info.device)
        self.heldout = None
        if self.balancer.needs_heldout:
            train_split, held = T.split_heldout(train_split, tc.heldout_fraction, cfg.seed)
            self.heldout = self._loader(held, tc.eval_batch_size, shuffle=False)
        self.train_loader = self._loader(train_split, tc.batch_size // info.world_size, shuffle=True)
        self.val_loader = self._loader(self.splits["val"], tc.eval_batch_size, shuffle=False)

        # optimisation
        self.ddp_model = dist.wrap_model(self.model, info)
        self.optimizer = T.build_optimizer(
            [*self.model.parameters(), *self.balancer.parameters()], cfg.optimizer
        )
        self.total_steps = tc.epochs * len(self.train_loader)
        self.scheduler = T.build_scheduler(self.optimizer, cfg.scheduler, self.total_steps)
        self.scaler = T.grad_scaler(info.device, self.amp)
        self.stopper = T.EarlyStopping(
            tc.early_stopping.patience, tc.early_stopping.mode, tc.early_stopping.min_delta
        )
        self.checkpoints = ckpt.CheckpointManager(self.run_dir, mode=tc.early_stopping.mode)
        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.meter = T.LossMeter()
        self.history: list[dict[str, float]] = []
        self.signals = T.StopSignals(info.device)

        self.logger = build_logger(
            cfg.logger,
            run_dir=self.run_dir,
            quiet=cfg.quiet,
            config=to_dict(cfg),
            wandb_cfg=to_dict(cfg.wandb),
            run_name=cfg.run_name,
            is_main=info.is_main,
        )
        if hasattr(self.logger, "set_preprocessing"):
            self.logger.set_preprocessing(train_split.preprocessing)
        if cfg.resume:
            self._resume(cfg.resume)

    def _loader(self, split: Any, batch_size: int, shuffle: bool) -> TensorBatchLoader:
        return TensorBatchLoader(
            split,
            batch_size,
            shuffle=shuffle,
            seed=self.cfg.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
        )

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimiser, scheduler, RNG, progress."""
        split = self.splits["train"]
        return {
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "balancer": self.balancer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
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
            "manifest_hash": split.manifest_hash,
            "preprocessing": split.preprocessing,
            "modalities": self.modalities,
            "data_source": split.source,
        }

    def save(self, metric: float | None = None) -> None:
        if not self.info.is_main:
            return
        best = self.checkpoints.save(self.state(), metric)
        aliases = ["latest", "best"] if best else ["latest"]
        self.logger.log_checkpoint(
            self.checkpoints.last_path, aliases, {"step": self.step, "epoch": self.epoch}
        )

    def _resume(self, path: str) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.info.device)
        if state.get("manifest_hash") != self.splits["train"].manifest_hash:
            raise ConfigError(
                f"resume={path}: the checkpoint was trained on other data (manifest hash differs); "
                "resume with the checkpoint's own data config"
            )
        ckpt.load_model_state(self.model, state["model"], source=str(path))
        self.balancer.load_state_dict(state["balancer"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        p = state["progress"]
        self.epoch, self.step, self.batch_in_epoch = p["epoch"], p["step"], p["batch"]
        self.meter.load_state_dict(p["meter"])
        self.stopper.load_state_dict(p["stopper"])
        self.history = list(p["history"])
        self.checkpoints.best = state.get("best_metric")
        ckpt.set_rng_state(state["rng"])
        self.logger.message(f"resumed from {path} at epoch {self.epoch} step {self.step}")

    # ---------------------------------------------------------------- training
    def train_step(self, batch: dict[str, torch.Tensor]) -> None:
        cfg, model = self.cfg, self.ddp_model
        with T.autocast(self.info.device, self.amp):
            out = model(batch)
        fused, per_mod = T.head_losses(out, batch["label"])
        loss = self.balancer.combine(fused, per_mod, model=self.model, output=out)
        T.check_finite(
            loss,
            {"fused": fused, **per_mod},
            epoch=self.epoch,
            step=self.step,
            last_good=str(self.checkpoints.last_path)
            if self.checkpoints.last_path.exists()
            else "(none yet)",
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        dist.average_gradients(list(self.balancer.parameters()), self.info)
        self.balancer.after_backward(self.model, out, batch, self.epoch)
        T.clip_gradients(self.model.parameters(), cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler:
            self.scheduler.step()
        n = batch["label"].shape[0]
        self.meter.update({"fused": fused.detach(), **{m: v.detach() for m, v in per_mod.items()}}, n)
        self.throughput.update(n * self.info.world_size)
        self.step += 1
        if self.step % cfg.train.log_every == 0:
            scalars = {"train/loss": loss.item(), "train/loss_fused": fused.item()}
            scalars.update({f"train/loss_{m}": v.item() for m, v in per_mod.items()})
            scalars.update({f"balancer/{k}": v for k, v in self.balancer.weights().items()})
            scalars.update(
                {
                    "lr": T.current_lr(self.optimizer),
                    "samples_per_s": self.throughput.rate(),
                    "epoch": self.epoch,
                }
            )
            self.logger.log_scalars(scalars, self.step)
            if hasattr(self.bar, "set_postfix"):
                self.bar.set_postfix(
                    loss=f"{scalars['train/loss']:.3f}", sps=f"{scalars['samples_per_s']:.0f}"
                )

    def train_epoch(self) -> None:
        self.ddp_model.train()
        self.train_loader.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
        self.bar = T.progress(
            self.train_loader,
            total=len(self.train_loader),
            initial=self.batch_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
            quiet=self.cfg.quiet or not self.info.is_main,
        )
        every = self.cfg.train.checkpoint_every
        for raw in self.bar:
            self.train_step(T.to_device(raw, self.info.device))
            self.batch_in_epoch += 1
            if every and self.step % every == 0 and self.batch_in_epoch < len(self.train_loader):
                self.save()
            if self.signals.requested():
                raise self.interrupted(save=True)

    def validate(self) -> dict[str, float]:
        result = evaluate(
            self.ddp_model,
            self.val_loader,
            self.model.num_classes,
            self.modalities,
            self.info.device,
            amp=self.amp,
        )
        scalars = result.scalars("val")
        samples = []
        if self.info.is_main and self.cfg.logger == "wandb" and self.cfg.wandb.log_misclassified:
            samples = misclassified(
                self.model,
                self.val_loader,
                self.modalities,
                self.info.device,
                self.cfg.wandb.log_misclassified,
            )
        self.logger.log_validation({**scalars, "epoch": self.epoch}, result, self.step, samples)
        return scalars

    def run(self) -> dict[str, Any]:
        """Train for ``train.epochs`` (or until early stopping), then test the best checkpoint."""
        tc = self.cfg.train
        self.throughput = T.Throughput()
        started = time.perf_counter()
        with self.signals:
            self._train_loop(tc)
        return self.finish(time.perf_counter() - started)

    def _train_loop(self, tc: DictConfig) -> None:
        stop = False
        while self.epoch < tc.epochs and not stop:
            self.train_epoch()
            train_losses = self.meter.means()
            if self.heldout is not None:
                self.balancer.on_epoch_end(
                    self.epoch,
                    train_losses,
                    head_losses_mean(self.ddp_model, self.heldout, self.modalities, self.info.device),
                )
            else:
                self.balancer.on_epoch_end(self.epoch, train_losses, {})
            scalars = self.validate()
            self.history.append({**scalars, **{f"train/loss_{k}": v for k, v in train_losses.items()}})
            metric = scalars[tc.early_stopping.metric]
            stop = dist.broadcast_flag(self.stopper.step(metric), self.info)
            self.epoch, self.batch_in_epoch, self.meter = self.epoch + 1, 0, T.LossMeter()
            self.save(metric)
            dist.barrier(self.info)
            if self.signals.requested():
                raise self.interrupted(save=False)
            if stop:
                self.logger.message(
                    f"early stopping: {tc.early_stopping.metric} did not improve for "
                    f"{tc.early_stopping.patience} epochs"
                )

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

    def finish(self, seconds: float) -> dict[str, Any]:
        best = self.checkpoints.best_path
        if best.exists():  # every rank reads rank 0's best weights
            ckpt.load_model_state(
                self.model, ckpt.load_checkpoint(best, map_location=self.info.device)["model"], str(best)
            )
        test_loader = self._loader(
            self.splits[self.cfg.eval.split], self.cfg.train.eval_batch_size, shuffle=False
        )
        test = evaluate(
            self.ddp_model,
            test_loader,
            self.model.num_classes,
            self.modalities,
            self.info.device,
            amp=self.amp,
        )
        summary = {
            **test.scalars(self.cfg.eval.split),
            **(self.history[-1] if self.history else {}),
            "best_val": self.checkpoints.best,
            "epochs": self.epoch,
            "steps": self.step,
            "world_size": self.info.world_size,
            "train_seconds": round(seconds, 2),
            "data_source": self.splits["train"].source,
            "checkpoint": str(best),
        }
        if self.info.is_main:
            (self.run_dir / "results.json").write_text(
                json.dumps({"summary": summary, "history": self.history}, indent=1)
            )
            src = " (SYNTHETIC data)" if summary["data_source"] == "synthetic" else ""
            self.logger.message(
                f"{self.cfg.eval.split} accuracy {test.acc:.4f}{src} "
                + " ".join(f"{m}={a:.4f}" for m, a in test.modality_acc.items())
                + f"; checkpoint {best}"
            )
        self.logger.finish(summary)
        return summary


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe on a validated config (see dan.config.load_config); returns the final metrics."""
    info = dist.setup(cfg.device)
    try:
        return FusionRecipe(cfg, info).run()
    finally:
        dist.teardown()


if __name__ == "__main__":
    from dan.engine.recipes import script_main

    sys.exit(script_main(main))
