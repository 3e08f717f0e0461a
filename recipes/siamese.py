"""Siamese verification: one tower with shared weights embeds both inputs of a pair; the threshold on
their distance is chosen on validation pairs and applied unchanged to the test pairs.

    dan train mnist_siamese_contrastive [key=value ...]     # also loss=triplet or loss=pair_bce
    dan train fsdd_siamese                                  # speaker-independent spoken-digit verification
    dan train folder_siamese data.root=PATH                 # your own tree of class_name/*.png|jpg|wav

``loss`` picks the objective: ``contrastive`` and ``triplet`` (with an in-batch miner) train the embedding
on labelled batches through pytorch-metric-learning; ``pair_bce`` trains a pair classifier that scores
``|f1 - f2|`` on balanced same/different pairs drawn afresh each epoch. Any registered dataset of one
modality serves (``mnist``, ``fsdd``, ``folder``, a one-modality ``manifest``). The loop is dan.engine's.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dan.config import check_data, check_verify, refuse_fusion_options, to_dict
from dan.data import build_data
from dan.data.augment import build_augment
from dan.data.pairing import split_generator
from dan.data.pairs import PairBatches, balanced_pairs
from dan.engine import BaseTask, Engine, StepOutput, Validation, checkpoint_record, script_main
from dan.engine.pair_eval import PairEvaluator, embed_all, finish_verification
from dan.errors import ConfigError
from dan.losses.metric import build_metric_loss, loss_spec
from dan.models.siamese import build_metric_model


class SiameseTask(BaseTask):
    """One shared tower over the single modality of ``cfg.data``."""

    def setup(self, engine: Engine) -> None:
        cfg = self.cfg
        self.splits = build_data(to_dict(cfg.data))
        train = self.splits["train"]
        if len(train.modalities) != 1:
            raise ConfigError(
                f"the siamese recipe compares items of one modality; data.name={cfg.data.get('name')} gives "
                f"{train.modalities}: pick a one-modality dataset (mnist, fsdd, folder)"
            )
        (self.modality,) = train.modalities
        self.loss_name, loss_kwargs = loss_spec(to_dict(cfg.loss))
        kind = "pair_classifier" if self.loss_name == "pair_bce" else "siamese"
        meta = {"kind": kind, "input_shapes": {self.modality: train.input_shape(self.modality)}, "classes": train.preprocessing["classes"]}
        self.model = build_metric_model(kind, to_dict(cfg.model), meta["input_shapes"]).to(engine.device)
        self.augment = build_augment(to_dict(cfg.augment))
        if self.loss_name == "pair_bce":
            pairs = int(loss_kwargs.pop("pairs_per_epoch", 2 * len(train)))
            self.train_batches = PairBatches(
                train, self.modality, pairs, engine.batch_size, cfg.seed, engine.info.rank, engine.info.world_size
            )
        else:
            self.loss_fn = build_metric_loss(self.loss_name, **loss_kwargs)
            self.modules = {"loss": self.loss_fn}
            self.train_batches = engine.loader(train, shuffle=True, drop_last=True)
        self.evaluator = PairEvaluator.for_engine(
            self._eval_pairs, self._embeddings, self.model.embedding_distance, engine
        )
        self.checkpoint_info = checkpoint_record(train, [self.modality], metric_model=meta)

    def _eval_pairs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = self.splits[split], getattr(self.cfg.verify, f"{split}_pairs")
        g = split_generator(self.cfg.seed, f"{split}-pairs")
        return balanced_pairs(s.labels, n, g, f"{split} pairs", s.preprocessing["classes"])

    def _embeddings(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.splits[split]
        self.model.eval()
        items = s.batch(torch.arange(len(s)))[self.modality]
        emb = embed_all(self.model.embed, items, self.evaluator.batch_size, self.evaluator.device)
        return emb, emb

    def training_step(self, engine: Engine, batch: dict[str, Any]) -> StepOutput:
        m = self.modality
        if self.loss_name == "pair_bce":
            a, b = self.augment({m: batch[m]})[m], self.augment({m: batch[f"{m}_b"]})[m]
            loss = F.binary_cross_entropy_with_logits(engine.forward(a, b), batch["same"])
        else:
            loss = self.loss_fn(engine.forward(self.augment(batch)[m]), batch["label"])
        return StepOutput(loss, {"loss": loss}, batch[m].shape[0])

    def validate(self, engine: Engine) -> Validation:
        return Validation(self.evaluator.validate())

    def test(self, engine: Engine) -> dict[str, Any]:
        report = self.evaluator.report(self.cfg.verify.threshold, self.cfg.verify.target_far)
        return finish_verification(engine, report, {})


LOSSES = ("contrastive", "triplet", "pair_bce")


def validate_config(cfg: DictConfig) -> None:
    """The recipe's own checks (called by dan.config.validate): loss, mixup, model, verification; reads no
    data."""
    refuse_fusion_options(cfg)
    loss, kwargs = loss_spec(to_dict(cfg.loss))
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is not valid for the siamese recipe; valid: {', '.join(LOSSES)}")
    if loss != "pair_bce":
        build_metric_loss(loss, **kwargs)
    elif set(kwargs) - {"pairs_per_epoch"}:
        raise ConfigError(f"loss=pair_bce takes only pairs_per_epoch, got {sorted(kwargs)}")
    shapes = check_data(cfg).input_shapes()
    if len(shapes) != 1:
        raise ConfigError(
            f"the siamese recipe compares items of one modality; data.name={cfg.data.get('name')} gives "
            f"{sorted(shapes)}: pick a one-modality dataset (mnist, fsdd, folder)"
        )
    build_metric_model("pair_classifier" if loss == "pair_bce" else "siamese", to_dict(cfg.model), shapes)
    check_verify(cfg)


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe on a validated config (see dan.config.load_config); returns the final metrics."""
    return Engine(cfg).run(SiameseTask(cfg))


if __name__ == "__main__":
    sys.exit(script_main(main))
