"""Cross-modal retrieval: one tower per modality trained into one L2-normalised space with NT-Xent /
InfoNCE (learnable temperature), so "does this recording say the digit in this picture?" is a distance.

    dan train avmnist_crossmodal [key=value ...]

Any registered dataset with the two modalities the model's towers name serves (AV-MNIST, a two-modality
``manifest``). Reports, on the test split: verification of cross-modal pairs at the validation-chosen
threshold (accuracy, FAR, FRR, AUC, EER) and retrieval (Precision@1, R-precision, MAP@R) in both directions.
The loop is dan.engine's.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from omegaconf import DictConfig

from dan.config import check_data, check_verify, refuse_fusion_options, to_dict
from dan.data import build_data
from dan.data.augment import build_augment
from dan.data.pairing import split_generator
from dan.data.pairs import cross_modal_pairs
from dan.engine import BaseTask, Engine, StepOutput, Validation, checkpoint_record, script_main
from dan.engine.pair_eval import PairEvaluator, embed_all, finish_verification
from dan.errors import ConfigError
from dan.losses.metric import build_metric_loss, loss_spec
from dan.metrics.retrieval import retrieval_metrics
from dan.models.siamese import build_metric_model


class CrossModalTask(BaseTask):
    """Two towers, one embedding space; symmetric loss over each batch's cross-modal pairs."""

    def setup(self, engine: Engine) -> None:
        cfg = self.cfg
        self.splits = build_data(to_dict(cfg.data))
        train = self.splits["train"]
        towers = sorted(cfg.model.towers)
        if len(towers) != 2 or not set(towers) <= set(train.modalities):
            raise ConfigError(
                f"model.towers must name two modalities of the data; towers {towers}, data {train.modalities}"
            )
        self.left, self.right = towers
        shapes = {m: train.input_shape(m) for m in towers}
        meta = {"kind": "crossmodal", "input_shapes": shapes, "classes": train.preprocessing["classes"]}
        self.model = build_metric_model("crossmodal", to_dict(cfg.model), shapes).to(engine.device)
        name, kwargs = loss_spec(to_dict(cfg.loss))
        self.loss_fn = build_metric_loss(name, **kwargs)
        self.modules = {"loss": self.loss_fn}
        self.augment = build_augment(to_dict(cfg.augment))
        self.train_batches = engine.loader(train, shuffle=True, drop_last=True)
        self.used = {s: self._used_rows(s) for s in ("val", "test")}
        self.evaluator = PairEvaluator.for_engine(
            self._eval_pairs, self._embeddings, self.model.embedding_distance, engine
        )
        self.checkpoint_info = checkpoint_record(train, towers, metric_model=meta)

    def _used_rows(self, split: str) -> dict[str, torch.Tensor]:
        """Per side, the storage rows some sample of ``split`` uses, and their labels."""
        s = self.splits[split]
        out = {}
        for m in (self.left, self.right):
            labels = s.item_labels(m)
            rows = (labels >= 0).nonzero().squeeze(1)
            out[m], out[f"{m}_labels"] = rows, labels[rows]
        return out

    def _eval_pairs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        used, n = self.used[split], getattr(self.cfg.verify, f"{split}_pairs")
        g = split_generator(self.cfg.seed, f"{split}-pairs")
        return cross_modal_pairs(used[f"{self.left}_labels"], used[f"{self.right}_labels"], n, g, f"{split} pairs")

    def _embeddings(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        s, used = self.splits[split], self.used[split]
        self.model.eval()
        out = []
        for m in (self.left, self.right):
            x = s.items[m][used[m]]
            if m in s.normalisers:
                x = s.normalisers[m](x)
            out.append(embed_all(lambda chunk, m=m: self.model.embed(m, chunk), x, self.evaluator.batch_size, self.evaluator.device))
        return out[0], out[1]

    def training_step(self, engine: Engine, batch: dict[str, Any]) -> StepOutput:
        keep = batch[f"{self.left}_mask"] & batch[f"{self.right}_mask"]
        batch = self.augment(batch)
        emb = engine.forward({m: batch[m][keep] for m in (self.left, self.right)})
        y = batch["label"][keep]
        a, b = emb[self.left], emb[self.right]
        loss = (self.loss_fn(a, y, b, y) + self.loss_fn(b, y, a, y)) / 2
        return StepOutput(loss, {"loss": loss}, int(keep.sum()))

    def validate(self, engine: Engine) -> Validation:
        return Validation(self.evaluator.validate())

    def test(self, engine: Engine) -> dict[str, Any]:
        report = self.evaluator.report(self.cfg.verify.threshold, self.cfg.verify.target_far)
        left, right = self._embeddings("test")
        ll, rl = self.used["test"][f"{self.left}_labels"], self.used["test"][f"{self.right}_labels"]
        extra = {}
        for direction, (q, ql, r, rlab) in {
            f"{self.left}_to_{self.right}": (left, ll, right, rl),
            f"{self.right}_to_{self.left}": (right, rl, left, ll),
        }.items():
            extra.update({f"test/{direction}/{k}": v for k, v in retrieval_metrics(q, ql, r, rlab).items()})
        return finish_verification(engine, report, extra)


LOSSES = ("ntxent", "supcon")


def validate_config(cfg: DictConfig) -> None:
    """The recipe's own checks (called by dan.config.validate): loss, mixup, model, verification; reads no
    data."""
    refuse_fusion_options(cfg)
    loss, kwargs = loss_spec(to_dict(cfg.loss))
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is not valid for the crossmodal recipe; valid: {', '.join(LOSSES)}")
    build_metric_loss(loss, **kwargs)
    shapes = check_data(cfg).input_shapes()
    towers = sorted(cfg.model.towers or {})
    missing = [m for m in towers if m not in shapes]
    if missing:
        raise ConfigError(f"model.towers names {missing}, which data.name={cfg.data.get('name')} does not give ({sorted(shapes)})")
    build_metric_model("crossmodal", to_dict(cfg.model), {m: shapes[m] for m in towers})
    check_verify(cfg)


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe on a validated config (see dan.config.load_config); returns the final metrics."""
    return Engine(cfg).run(CrossModalTask(cfg))


if __name__ == "__main__":
    sys.exit(script_main(main))
