"""Multimodal fusion: towers per modality, a shared trunk, fusion and heads (a DAN), trained with a
modality balancer on any registered dataset; validates every epoch and tests the best checkpoint.

    dan train avmnist_concat_offline [key=value ...]
    dan train my_config.yaml                     # data.name=manifest: your own files, any modalities
    torchrun --nproc_per_node=2 -m dan.recipes.fusion --config quickstart

The loop (seeding, DDP, AMP, checkpoints, resume, signals, logging) is dan.engine.Engine's; this file is
what fusion adds: the data, the model and balancer, the step, validation and test.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from dan.config import (
    check_adversary,
    check_balancer,
    check_mixup,
    check_model,
    check_stop_metric,
    refuse_metric_options,
    to_dict,
)
from dan.data import build_data
from dan.data.augment import build_augment, refuse_unused_augment
from dan.data.loader import check_finite_inputs, check_num_classes
from dan.data.mixup import Mixup, targets
from dan.engine import BaseTask, Engine, StepOutput, Validation, checkpoint_record, script_main
from dan.engine.evaluate import contributions, evaluate, head_losses_mean, misclassified, robustness
from dan.engine.test_time import check_tta_inputs, with_tta
from dan.engine.trainer import head_losses, split_heldout, to_device
from dan.errors import ConfigError
from dan.logging.plots import plot_classification_report
from dan.losses import EpochContext, StepContext, build_balancer
from dan.losses.adversary import build_adversary
from dan.models import build_model


class FusionTask(BaseTask):
    """A DAN classifier and its balancer on the splits of ``cfg.data``."""

    def setup(self, engine: Engine) -> None:
        cfg, tc = self.cfg, self.cfg.train
        splits = build_data(to_dict(cfg.data))
        self.splits = {name: check_finite_inputs(split, tc.nonfinite_inputs) for name, split in splits.items()}
        train = self.splits["train"]
        self.model = build_model(cfg.model).to(engine.device)
        self.modalities = list(self.model.modalities)
        absent = sorted(set(self.modalities) - set(train.modalities) - set(tc.absent_modalities))
        if absent:
            raise ConfigError(
                f"model.towers names {absent} but data.name={cfg.data.get('name')} gives only "
                f"{train.modalities}: those towers would never learn. Remove them, add the modalities to the "
                f"data, or train without them on purpose: train.absent_modalities=[{','.join(absent)}]"
            )
        check_num_classes(self.model.num_classes, train, str(cfg.data.get("name")))
        self.balancer = build_balancer(cfg.balancer, self.modalities)
        self.balancer.check_model(self.model)
        self.modules = {"balancer": self.balancer}
        self.heldout = None
        if self.balancer.needs_heldout:
            train, held = split_heldout(train, tc.heldout_fraction, cfg.seed)
            self.heldout = engine.loader(held)
        self.train_batches = engine.loader(train, shuffle=True)
        self.val_batches = engine.loader(self.splits["val"])
        self.augment = build_augment(to_dict(cfg.augment))
        self.mixup = Mixup(tc.mixup, self.modalities, self.model.num_classes)
        self.adversary = build_adversary(to_dict(tc.adversary), train, self.model.dim)
        if self.adversary is not None:
            self.modules["adversary"] = self.adversary
        self.checkpoint_info = checkpoint_record(train, self.modalities)
        check_tta_inputs(to_dict(cfg.eval.tta), self.splits.get(cfg.eval.split), self.modalities)

    def training_step(self, engine: Engine, batch: dict[str, Any]) -> StepOutput:
        batch = self.mixup(self.augment(batch))
        out = engine.forward(batch)
        fused, per_modality = head_losses(out, targets(batch))
        ctx = StepContext(
            self.model, batch, out, engine.epoch, engine.step, forward=engine.forward, optimizer=engine.optimizer,
            batch_index=engine.batch_in_epoch, batches=len(self.train_batches),
        )
        loss = self.balancer.combine(fused, per_modality, ctx)
        losses = {"fused": fused, **per_modality}
        if self.adversary is not None:
            losses["adversary"] = self.adversary(out, batch["index"], engine.step / engine.total_steps)
            loss = loss + losses["adversary"]
        return StepOutput(loss, losses, batch["label"].shape[0], ctx)

    def after_backward(self, engine: Engine, batch: dict[str, Any], out: StepOutput) -> None:
        self.balancer.after_backward(out.context)

    def after_step(self, engine: Engine, batch: dict[str, Any], out: StepOutput) -> None:
        self.balancer.after_step(out.context)

    def step_scalars(self) -> dict[str, float]:
        scalars = {f"balancer/{k}": v for k, v in self.balancer.weights().items()}
        if self.adversary is not None:
            scalars |= {"adversary/acc": self.adversary.last_acc, "adversary/lambda": self.adversary.last_lambda}
        return scalars

    def start_epoch(self, engine: Engine) -> None:
        self.balancer.on_epoch_start(self.epoch_context(engine, {}))

    def end_epoch(self, engine: Engine, train_losses: dict[str, float]) -> None:
        self.balancer.on_epoch_end(self.epoch_context(engine, train_losses))

    def epoch_context(self, engine: Engine, train_losses: dict[str, float]) -> EpochContext:
        """What the balancer's epoch hooks see: loaders, a per-head loss meter, the training pipeline."""
        loaders = {"train": self.train_batches, "val": self.val_batches}
        if self.heldout is not None:
            loaders["heldout"] = self.heldout
        return EpochContext(
            engine.epoch, self.model, train_losses, loaders,
            forward=engine.forward,
            prepare=lambda raw: self.augment(to_device(raw, engine.device)),
            measure=lambda model, batches: head_losses_mean(model, batches, self.modalities, engine.device),
            optimizer=engine.optimizer,
            new_optimizer=engine.new_optimizer,
            device=engine.device,
        )

    def validate(self, engine: Engine) -> Validation:
        result = evaluate(
            engine.wrapped, self.val_batches, self.model.num_classes, self.modalities, engine.device, amp=engine.amp
        )
        present = [m for m in self.modalities if m in self.splits["val"].modalities]
        shares = contributions(
            engine.wrapped, lambda: self.val_batches, self.model.num_classes, present, engine.device,
            full_acc=result.acc, amp=engine.amp,
        )
        samples = []
        if engine.info.is_main and self.cfg.logger == "wandb" and self.cfg.wandb.log_misclassified:
            samples = misclassified(
                self.model, self.val_batches, self.modalities, engine.device, self.cfg.wandb.log_misclassified
            )
        return Validation({**result.scalars("val"), **{f"val/{k}": v for k, v in shares.items()}}, result, samples)

    def test(self, engine: Engine) -> dict[str, Any]:
        split, cfg = self.cfg.eval.split, self.cfg
        model = with_tta(engine.wrapped, to_dict(cfg.eval.tta))
        test = evaluate(
            model, engine.loader(self.splits[split]), self.model.num_classes, self.modalities,
            engine.device, amp=engine.amp,
        )
        present = [m for m in self.modalities if m in self.splits[split].modalities]
        robust = robustness(
            model, lambda: engine.loader(self.splits[split]), self.model.num_classes, present,
            engine.device, cfg.eval.noise_levels, seed=cfg.seed,
        )
        shares = contributions(
            model, lambda: engine.loader(self.splits[split]), self.model.num_classes, present,
            engine.device, full_acc=test.acc, without=robust["without"], amp=engine.amp,
        )
        scalars = {**test.scalars(split), **{f"{split}/{k}": v for k, v in shares.items()}}
        engine.logger.log_test(scalars, engine.step, test.confusion, robust)
        if engine.info.is_main:
            plots = plot_classification_report(test, robust, engine.run_dir, split, str(cfg.run_name))
            engine.logger.log_figures(plots, engine.step)
        source = self.splits["train"].source
        engine.logger.message(
            f"{split} accuracy {test.acc:.4f}{' (SYNTHETIC data)' if source == 'synthetic' else ''} "
            + " ".join(f"{m}={a:.4f}" for m, a in test.modality_acc.items())
            + f"; checkpoint {engine.checkpoints.best_path}"
        )
        without = {f"{split}/acc_without_{m}": a for m, a in robust["without"].items()}
        return {**scalars, **without, "data_source": source}


def validate_config(cfg: DictConfig) -> None:
    """The recipe's own checks (called by dan.config.validate): model, balancer, mixup, adversary,
    early-stopping metric, and no metric-recipe options."""
    refuse_metric_options(cfg)
    modalities = check_model(cfg)
    refuse_unused_augment(to_dict(cfg.augment), modalities, "the model's towers")
    check_balancer(cfg, modalities)
    check_mixup(cfg)
    check_adversary(cfg, modalities)
    check_stop_metric(cfg, dict.fromkeys(["val/acc", "val/loss", *(f"val/acc_{m}" for m in modalities)]))


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe on a validated config (see dan.config.load_config); returns the final metrics."""
    return Engine(cfg).run(FusionTask(cfg))


if __name__ == "__main__":
    sys.exit(script_main(main))
