"""Cross-modal retrieval: an image tower and an audio tower trained into one L2-normalised space with
NT-Xent / InfoNCE (learnable temperature), so "is this recording the digit in this picture?" is a distance.

    dan train avmnist_crossmodal [key=value ...]
    python recipes/crossmodal.py --config avmnist_crossmodal

Reports, on the test split: verification of image/recording pairs at the validation-chosen threshold
(accuracy, FAR, FRR, AUC, EER) and retrieval (Precision@1, R-precision, MAP@R) image->audio and
audio->image. The loop is the siamese recipe's :class:`MetricRecipe`; only data and loss differ.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from dan.config import to_dict
from dan.data import TensorBatchLoader, build_data
from dan.data.dataset import AVSplit
from dan.data.pairing import split_generator
from dan.data.pairs import cross_modal_pairs
from dan.engine.recipes import load_recipe
from dan.errors import ConfigError
from dan.losses.metric import build_metric_loss
from dan.metrics.retrieval import retrieval_metrics
from dan.models.siamese import build_metric_model

siamese = load_recipe("siamese")
LOSSES = ("ntxent", "supcon")


def item_labels(split: AVSplit) -> tuple[Tensor, Tensor, Tensor]:
    """Per-item labels of an AV split: ``image_labels [N_i]``, ``audio_rows [N_a']`` (recordings used by a
    pair) and their ``audio_labels [N_a']``."""
    images = torch.full((split.images.shape[0],), -1, dtype=torch.long)
    audio = torch.full((split.audio.shape[0],), -1, dtype=torch.long)
    images[split.pairs[:, 0]] = split.labels
    audio[split.pairs[:, 1]] = split.labels
    rows = (audio >= 0).nonzero().squeeze(1)
    return images, rows, audio[rows]


def input_shapes(data: dict[str, Any]) -> dict[str, list[int]]:
    """``{"image": [1, 28, 28], "audio": [1, F, T]}`` of an AV-MNIST data config (no data read)."""
    from dan.data.avmnist import AVMnistConfig

    audio = AVMnistConfig.from_dict(data).audio
    return {"image": [1, 28, 28], "audio": [1, audio.num_bins, audio.num_frames]}


def validate_config(cfg: DictConfig) -> None:
    """Checks of the crossmodal recipe's own sections (called by dan.config.validate); reads no data."""
    data = to_dict(cfg.data)
    if data.get("name") != "avmnist":
        raise ConfigError(
            f"data.name={data.get('name')!r} is not valid for the crossmodal recipe; valid: avmnist"
        )
    loss, kwargs = siamese.loss_spec(to_dict(cfg.loss))
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is not valid for the crossmodal recipe; valid: {', '.join(LOSSES)}")
    build_metric_loss(loss, **kwargs)
    build_metric_model("crossmodal", to_dict(cfg.model), input_shapes(data))
    siamese.check_stop_metric(cfg)


class CrossModalRecipe(siamese.MetricRecipe):
    """Image and audio towers into one space; symmetric NT-Xent over the batch's image-recording pairs."""

    def __init__(self, cfg: DictConfig) -> None:
        self.init_common(cfg)
        self.splits = build_data(to_dict(cfg.data))
        train = self.splits["train"]
        self.labels = {k: item_labels(s) for k, s in self.splits.items()}
        self.preprocessing = train.preprocessing
        self.manifest_hash = train.manifest_hash
        self.meta = {
            "kind": "crossmodal",
            "input_shapes": input_shapes(to_dict(cfg.data)),
            "classes": [str(d) for d in range(10)],
        }
        self.model = build_metric_model("crossmodal", to_dict(cfg.model), self.meta["input_shapes"])
        name, kwargs = siamese.loss_spec(to_dict(cfg.loss))
        self.loss_fn = build_metric_loss(name, **kwargs)
        self.loader = TensorBatchLoader(
            train, cfg.train.batch_size, shuffle=True, seed=cfg.seed, drop_last=True
        )
        if len(self.loader) < 1:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the training set; lower it")
        self.setup(len(self.loader))

    def eval_pairs(self, split: str, n: int) -> tuple[Tensor, Tensor]:
        images, _, audio = self.labels[split]
        return cross_modal_pairs(
            images, audio, n, split_generator(self.cfg.seed, f"{split}-pairs"), f"{split} pairs"
        )

    def split_embeddings(self, split: str) -> tuple[Tensor, Tensor]:
        """Embeddings of the split's images ``[N_i, E]`` and of its recordings used by pairs ``[N_a', E]``."""
        s, rows = self.splits[split], self.labels[split][1]
        return self.embed_as("image", s.images), self.embed_as("audio", s.audio[rows])

    def embed_as(self, modality: str, x: Tensor) -> Tensor:
        return self.embed_all(lambda chunk: self.model.embed(modality, chunk), x)

    def train_epoch(self) -> None:
        self.loader.set_epoch(self.epoch)
        for batch in self.loader:
            emb = self.model({m: batch[m].to(self.device) for m in ("image", "audio")})
            y = batch["label"].to(self.device)
            loss = (
                self.loss_fn(emb["image"], y, emb["audio"], y)
                + self.loss_fn(emb["audio"], y, emb["image"], y)
            ) / 2
            self.optimise(loss)

    def extra_test_metrics(self) -> dict[str, float]:
        """Retrieval on the test split, both directions (queries never in the reference set)."""
        image_labels, _, audio_labels = self.labels["test"]
        img, aud = self.split_embeddings("test")
        out = {}
        for direction, (q, ql, r, rl) in {
            "image_to_audio": (img, image_labels, aud, audio_labels),
            "audio_to_image": (aud, audio_labels, img, image_labels),
        }.items():
            out.update({f"test/{direction}/{k}": v for k, v in retrieval_metrics(q, ql, r, rl).items()})
        return out


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe on a validated config (see dan.config.load_config); returns the final metrics."""
    return CrossModalRecipe(cfg).run()


if __name__ == "__main__":
    from dan.engine.recipes import script_main

    sys.exit(script_main(main))
