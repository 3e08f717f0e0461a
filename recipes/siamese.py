"""Siamese verification: one tower with shared weights embeds both inputs of a pair; the threshold on
their distance is chosen on validation pairs and applied unchanged to the test pairs.

    dan train mnist_siamese_contrastive [key=value ...]     # also loss=triplet or loss=pair_bce
    dan train fsdd_siamese                                  # speaker-independent spoken-digit verification
    dan train folder_siamese data.root=PATH                 # your own tree of class_name/*.png|jpg|wav
    python recipes/siamese.py --config mnist_siamese_triplet

``loss`` picks the objective: ``contrastive`` and ``triplet`` (with an in-batch miner) train the embedding
on labelled batches through pytorch-metric-learning; ``pair_bce`` trains a pair classifier that scores
``|f1 - f2|`` on balanced same/different pairs. The loop is in this file; the crossmodal recipe reuses
:class:`MetricRecipe`.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from dan.config import to_dict
from dan.data import TensorBatchLoader
from dan.data.cache import stable_hash
from dan.data.features import FeatureConfig, Standardizer, compute_features, pad_or_trim
from dan.data.pairing import split_generator
from dan.data.pairs import balanced_pairs, require_positives
from dan.engine import checkpoint as ckpt
from dan.engine import trainer as T
from dan.engine.distributed import select_device
from dan.errors import ConfigError
from dan.logging import build_logger
from dan.losses.metric import build_metric_loss
from dan.metrics.verification import THRESHOLD_METHODS, VerificationReport, plot_roc, roc, verify_distances
from dan.models.siamese import build_metric_model
from dan.paths import data_root

DATASETS = ("mnist", "fsdd", "folder")
LOSSES = ("contrastive", "triplet", "pair_bce")
STOP_METRICS = {"val/auc": "max", "val/eer": "min", "val/acc": "max"}
DATA_KEYS = {
    "mnist": ("name", "root", "splits", "augment"),
    "fsdd": ("name", "root", "val_speakers", "test_speakers", "audio", "on_bad_file"),
    "folder": (
        "name",
        "root",
        "modality",
        "on_bad_file",
        "val_fraction",
        "test_fraction",
        "image_size",
        "audio",
        "augment",
    ),
}
MNIST_OFFLINE = {"train": "test[:7000]", "val": "test[7000:8000]", "test": "test[8000:]"}


@dataclass
class LabelledSplit:
    """One split of a single-modality labelled set: ``items [N, *input_shape]`` normalised, ``labels [N]``."""

    name: str
    modality: str
    items: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        """``idx [B]`` -> ``{modality: [B, *input_shape], "label": [B], "index": [B]}``."""
        return {self.modality: self.items[idx], "label": self.labels[idx], "index": idx}

    @property
    def input_shape(self) -> list[int]:
        """Shape of one item (no batch dim)."""
        return list(self.items.shape[1:])


# ------------------------------------------------------------------------------------------ config
def loss_spec(loss: Any) -> tuple[str, dict[str, Any]]:
    """``loss`` config (a name, or ``{name, **kwargs}``) -> ``(name, kwargs)``."""
    if isinstance(loss, str):
        return loss, {}
    if isinstance(loss, Mapping) and isinstance(loss.get("name"), str):
        kwargs = dict(loss)
        return kwargs.pop("name"), kwargs
    raise ConfigError(f"loss must be a name or {{name: ..., ...}}, got {loss!r}; e.g. loss=contrastive")


def _audio_cfg(data: Mapping[str, Any]) -> FeatureConfig:
    try:
        return FeatureConfig(**dict(data.get("audio") or {}))
    except TypeError as exc:
        raise ConfigError(
            f"data.audio: {exc}; valid keys: see docs/data.md (sample_rate, n_mels, ...)"
        ) from None


def input_shape_of(data: Mapping[str, Any]) -> tuple[str, list[int]]:
    """The modality and item shape a data config yields, known before any file is read."""
    name = data.get("name")
    modality = (
        "audio" if name == "fsdd" or (name == "folder" and data.get("modality") == "audio") else "image"
    )
    if modality == "audio":
        a = _audio_cfg(data)
        return modality, [1, a.num_bins, a.num_frames]
    size = int(data.get("image_size", 28)) if name == "folder" else 28
    return modality, [1, size, size]


def check_stop_metric(cfg: DictConfig) -> None:
    """``train.early_stopping.{metric, mode}`` must be a verification metric and its direction."""
    es = cfg.train.early_stopping
    if es.metric not in STOP_METRICS:
        raise ConfigError(
            f"train.early_stopping.metric={es.metric!r} is not valid; valid: {', '.join(STOP_METRICS)}"
        )
    if es.mode != STOP_METRICS[es.metric]:
        raise ConfigError(f"train.early_stopping.mode must be {STOP_METRICS[es.metric]!r} for {es.metric}")
    if cfg.verify.threshold not in THRESHOLD_METHODS:
        raise ConfigError(
            f"verify.threshold={cfg.verify.threshold!r} is not valid; valid: {', '.join(THRESHOLD_METHODS)}"
        )
    if not 0.0 <= cfg.verify.target_far <= 1.0:
        raise ConfigError(f"verify.target_far must lie in [0, 1], got {cfg.verify.target_far}")
    if cfg.resume:
        raise ConfigError(
            f"resume is not supported by the {cfg.recipe} recipe; train again (runs take minutes)"
        )


def validate_config(cfg: DictConfig) -> None:
    """Checks of the siamese recipe's own sections (called by dan.config.validate); reads no data."""
    data = to_dict(cfg.data)
    name = data.get("name")
    if name not in DATASETS:
        raise ConfigError(
            f"data.name={name!r} is not valid for the siamese recipe; valid: {', '.join(DATASETS)}"
        )
    unknown = sorted(set(data) - set(DATA_KEYS[name]))
    if unknown:
        raise ConfigError(
            f"unknown key data.{unknown[0]} for data.name={name}; valid keys: {', '.join(DATA_KEYS[name])}"
        )
    if name == "folder" and data.get("root") in (None, "", "???"):
        raise ConfigError("data.root is required for data.name=folder: a folder of class_name/ sub-folders")
    loss, kwargs = loss_spec(to_dict(cfg.loss))
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is not valid for the siamese recipe; valid: {', '.join(LOSSES)}")
    if loss != "pair_bce":
        build_metric_loss(loss, **kwargs)
    elif set(kwargs) - {"pairs_per_epoch"}:
        raise ConfigError(f"loss=pair_bce takes only pairs_per_epoch, got {sorted(kwargs)}")
    modality, shape = input_shape_of(data)
    augmenter(data)
    build_metric_model(_kind(loss), to_dict(cfg.model), {modality: shape})
    check_stop_metric(cfg)


def _kind(loss: str) -> str:
    return "pair_classifier" if loss == "pair_bce" else "siamese"


# ------------------------------------------------------------------------------------------ data
def normalise(
    modality: str, parts: dict[str, Tensor], audio: FeatureConfig
) -> tuple[dict[str, Tensor], dict]:
    """Standardise every split with statistics of ``parts["train"]`` only; returns the preprocessing spec
    :class:`dan.api.Preprocessing` reads (images ``[N, 1, S, S]`` in [0, 1]; audio ``[N, 1, F, T]`` features)."""
    train = parts["train"]
    if modality == "image":
        mean, std = float(train.mean()), float(train.std())
        spec = {"image": {"mean": mean, "std": std, "size": int(train.shape[-1])}}
        return {k: (v - mean) / std for k, v in parts.items()}, spec
    st = Standardizer.fit(train)
    return {k: st(v) for k, v in parts.items()}, {
        "audio": {"features": audio.to_dict(), "standardize": st.to_dict()}
    }


def _mnist_parts(data: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    from dan.data.mnist import MNIST_SPLITS, load_mnist
    from dan.data.splits import parse_split

    root = data_root(data.get("root"))
    specs = {k: parse_split(v, MNIST_SPLITS) for k, v in dict(data.get("splits") or MNIST_OFFLINE).items()}
    loaded = {base: load_mnist(root, base) for base in sorted({s.base for s in specs.values()})}
    items, labels = {}, {}
    for k, s in specs.items():
        images, y = loaded[s.base]
        idx = torch.tensor(list(s.resolve(len(y))), dtype=torch.long)
        items[k], labels[k] = images[idx].float().div(255.0).unsqueeze(1), y[idx].long()
    return items, labels, [str(d) for d in range(10)]


def _fsdd_parts(data: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    from dan.data import fsdd

    audio = _audio_cfg(data)
    recs = fsdd.index_recordings(fsdd.fsdd_dir(data_root(data.get("root"))))
    speakers = sorted({r.speaker for r in recs})
    held = {"val": list(data.get("val_speakers") or []), "test": list(data.get("test_speakers") or [])}
    for split, names in held.items():
        unknown = [s for s in names if s not in speakers]
        if unknown or not names:
            raise ConfigError(
                f"data.{split}_speakers={names} must name speakers of the data; speakers found: {', '.join(speakers)}"
            )
    if set(held["val"]) & set(held["test"]):
        raise ConfigError("data.val_speakers and data.test_speakers overlap; a speaker belongs to one split")
    waves, kept = fsdd.load_waveforms(recs, audio.sample_rate, on_error=data.get("on_bad_file", "raise"))
    feats = compute_features(pad_or_trim(waves, audio.num_samples), audio)
    split_of = {s: k for k, names in held.items() for s in names}
    which = [split_of.get(r.speaker, "train") for r in kept]
    items, labels = {}, {}
    for k in ("train", "val", "test"):
        idx = torch.tensor([i for i, w in enumerate(which) if w == k], dtype=torch.long)
        if len(idx) == 0:
            raise ConfigError(f"no recordings left for the {k} split; hold out fewer speakers")
        items[k], labels[k] = feats[idx], torch.tensor([kept[i].digit for i in idx.tolist()])
    return items, labels, [str(d) for d in range(10)]


def _folder_parts(
    data: Mapping[str, Any], seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    from dan.data.folder import load_folder_tree

    modality, shape = input_shape_of(data)
    fs = load_folder_tree(
        Path(data["root"]), modality, data.get("on_bad_file", "raise"), shape[-1], _audio_cfg(data)
    )
    fractions = {"val": float(data.get("val_fraction", 0.2)), "test": float(data.get("test_fraction", 0.2))}
    if any(not 0.0 < f < 1.0 for f in fractions.values()) or sum(fractions.values()) >= 1.0:
        raise ConfigError(
            f"data.val_fraction and data.test_fraction must lie in (0, 1) and sum below 1, got {fractions}"
        )
    g = split_generator(seed, "folder")
    chosen: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in range(len(fs.classes)):  # stratified: every class is split by the same fractions
        idx = (fs.labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_val, n_test = round(len(idx) * fractions["val"]), round(len(idx) * fractions["test"])
        chosen["val"] += idx[:n_val]
        chosen["test"] += idx[n_val : n_val + n_test]
        chosen["train"] += idx[n_val + n_test :]
    index = {k: torch.tensor(sorted(v), dtype=torch.long) for k, v in chosen.items()}
    return {k: fs.items[v] for k, v in index.items()}, {k: fs.labels[v] for k, v in index.items()}, fs.classes


def build_splits(data: Mapping[str, Any], seed: int) -> tuple[dict[str, LabelledSplit], dict[str, Any]]:
    """``data`` config -> train/val/test :class:`LabelledSplit` and the preprocessing spec.

    Every class of every split needs two samples (a positive pair); a DataFormatError names the class.
    """
    name = data["name"]
    modality, _ = input_shape_of(data)
    if name == "mnist":
        items, labels, classes = _mnist_parts(data)
    elif name == "fsdd":
        items, labels, classes = _fsdd_parts(data)
    else:
        items, labels, classes = _folder_parts(data, seed)
    missing = {"train", "val", "test"} - set(items)
    if missing:
        raise ConfigError(f"data.splits lacks {', '.join(sorted(missing))}; give train, val and test")
    for k, y in labels.items():
        require_positives(y, f"{name} split {k}", classes)
    items, prep = normalise(modality, items, _audio_cfg(data))
    return {k: LabelledSplit(k, modality, items[k], labels[k], classes) for k in items}, prep


def augment_images(x: Tensor, shift: float = 0.0, rotate: float = 0.0) -> Tensor:
    """Random translation (up to ``shift`` pixels) and rotation (up to ``rotate`` degrees) of each image of
    ``x [B, C, H, W]`` (same shape), drawn from torch's seeded global RNG; borders are replicated."""
    b, _, h, w = x.shape
    angle = (torch.rand(b) * 2 - 1) * math.radians(rotate)
    cos, sin = angle.cos(), angle.sin()
    tx, ty = (torch.rand(b) * 2 - 1) * 2 * shift / w, (torch.rand(b) * 2 - 1) * 2 * shift / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


def augmenter(data: Mapping[str, Any]) -> Any:
    """``data.augment: {shift: px, rotate: degrees}`` (images only) -> a batch transform, or identity."""
    aug = dict(data.get("augment") or {})
    unknown = sorted(set(aug) - {"shift", "rotate"})
    if unknown:
        raise ConfigError(f"unknown key data.augment.{unknown[0]}; valid keys: shift, rotate")
    if not aug:
        return lambda x: x
    if input_shape_of(data)[0] != "image":
        raise ConfigError("data.augment applies to images only; remove it for audio data")
    shift, rotate = float(aug.get("shift", 0.0)), float(aug.get("rotate", 0.0))
    return lambda x: augment_images(x, shift, rotate)


# ------------------------------------------------------------------------------------------ recipe
def log_figure(logger: Any, key: str, path: Path, step: int) -> None:
    """Log the PNG at ``path`` to W&B as ``key`` when ``logger`` is a W&B logger (never stops the run)."""
    run = getattr(logger, "run", None)
    if run is None:
        return
    try:
        run.log({key: logger.wandb.Image(str(path))}, step=step)
    except Exception as exc:  # W&B must never stop training
        warnings.warn(f"W&B could not log {key} ({type(exc).__name__}: {exc})", stacklevel=2)


class MetricRecipe:
    """The loop shared by the siamese and crossmodal recipes: optimiser over model + loss parameters,
    per-epoch validation verification (AUC, EER), best/last checkpoints, then the test report.

    A subclass sets ``self.model``, ``self.loss_fn``, ``self.splits``, ``self.preprocessing``,
    ``self.meta`` (kind, input shapes) before calling :meth:`setup`, and defines :meth:`train_epoch`,
    :meth:`eval_pairs`, :meth:`split_embeddings` (the embeddings pair indices point into) and optionally
    :meth:`extra_test_metrics`.
    """

    cfg: DictConfig
    model: torch.nn.Module
    loss_fn: torch.nn.Module

    def setup(self, steps_per_epoch: int) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.model.to(self.device)
        self.loss_fn.to(self.device)
        self.optimizer = T.build_optimizer(
            [*self.model.parameters(), *self.loss_fn.parameters()], cfg.optimizer
        )
        self.scheduler = T.build_scheduler(self.optimizer, cfg.scheduler, tc.epochs * steps_per_epoch)
        es = tc.early_stopping
        self.stopper = T.EarlyStopping(es.patience, es.mode, es.min_delta)
        self.checkpoints = ckpt.CheckpointManager(self.run_dir, mode=es.mode)
        self.epoch, self.step, self.history = 0, 0, []
        self.val_pairs = self.eval_pairs("val", cfg.verify.val_pairs)
        self.test_pairs = self.eval_pairs("test", cfg.verify.test_pairs)
        self.logger = build_logger(
            cfg.logger,
            run_dir=self.run_dir,
            quiet=cfg.quiet,
            config=to_dict(cfg),
            wandb_cfg=to_dict(cfg.wandb),
            run_name=cfg.run_name,
        )

    def init_common(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        T.seed_everything(cfg.seed)
        self.device = select_device(cfg.device)
        self.run_dir = Path(cfg.output_dir) / cfg.run_name

    def optimise(self, loss: Tensor) -> None:
        """One optimiser step on ``loss`` (NaN check, clipping, scheduler) and step logging."""
        last = self.checkpoints.last_path
        T.check_finite(
            loss,
            {"loss": loss},
            epoch=self.epoch,
            step=self.step,
            last_good=str(last) if last.exists() else "(none yet)",
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        T.clip_gradients(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        if self.scheduler:
            self.scheduler.step()
        self.step += 1
        if self.step % self.cfg.train.log_every == 0:
            self.logger.log_scalars(
                {"train/loss": loss.item(), "lr": T.current_lr(self.optimizer), "epoch": self.epoch},
                self.step,
            )

    @torch.no_grad()
    @torch.no_grad()
    def embed_all(self, embed: Any, x: Tensor) -> Tensor:
        """``embed`` over ``x [N, ...]`` in eval mode and eval-batch chunks: ``[N, E]`` on the CPU."""
        self.model.eval()
        bs = self.cfg.train.eval_batch_size
        return torch.cat([embed(x[i : i + bs].to(self.device)).cpu() for i in range(0, len(x), bs)])

    @torch.no_grad()
    def distances(self, split: str, pairs: Tensor) -> Tensor:
        """Distances ``[P]`` (float64) of the ``pairs [P, 2]`` of ``split``; each item is embedded once."""
        left, right = self.split_embeddings(split)
        dist = self.model.embedding_distance
        bs = self.cfg.train.eval_batch_size
        return torch.cat(
            [
                dist(left[p[:, 0]].to(self.device), right[p[:, 1]].to(self.device)).double().cpu()
                for p in pairs.split(bs)
            ]
        )

    def validate(self) -> dict[str, float]:
        pairs, same = self.val_pairs
        d = self.distances("val", pairs)
        r = roc(-d, same)
        scalars = {"val/auc": r.auc, "val/eer": r.eer, "val/acc": 1.0 - r.eer, "epoch": self.epoch}
        self.logger.log_scalars(scalars, self.step)
        return scalars

    def state(self) -> dict[str, Any]:
        return {
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": ckpt.rng_state(),
            "progress": {"epoch": self.epoch, "step": self.step, "history": self.history},
            "manifest_hash": self.manifest_hash,
            "preprocessing": self.preprocessing,
            "modalities": sorted(self.meta["input_shapes"]),
            "metric_model": self.meta,
            "data_source": str(self.cfg.data.name),
        }

    def run(self) -> dict[str, Any]:
        """Train for ``train.epochs`` (or until early stopping), then report the best checkpoint on test."""
        started = time.perf_counter()
        metric_key = self.cfg.train.early_stopping.metric
        stop = False
        while self.epoch < self.cfg.train.epochs and not stop:
            self.model.train()
            self.train_epoch()
            scalars = self.validate()
            self.history.append(scalars)
            stop = self.stopper.step(scalars[metric_key])
            self.epoch += 1
            best = self.checkpoints.save(self.state(), scalars[metric_key])
            self.logger.log_checkpoint(
                self.checkpoints.last_path, ["latest", "best"] if best else ["latest"], {"step": self.step}
            )
        return self.finish(time.perf_counter() - started)

    def extra_test_metrics(self) -> dict[str, float]:
        return {}

    def finish(self, seconds: float) -> dict[str, Any]:
        best_path = self.checkpoints.best_path
        best_state = ckpt.load_checkpoint(best_path, map_location=self.device)
        ckpt.load_model_state(self.model, best_state["model"], str(best_path))
        vc = self.cfg.verify
        report: VerificationReport = verify_distances(
            self.distances("val", self.val_pairs[0]),
            self.val_pairs[1],
            self.distances("test", self.test_pairs[0]),
            self.test_pairs[1],
            vc.threshold,
            vc.target_far,
        )
        roc_path = plot_roc(report, self.run_dir / "roc_test.png", title=f"{self.cfg.run_name}: test ROC")
        log_figure(self.logger, "test/roc", roc_path, self.step)
        extra = self.extra_test_metrics()
        ckpt.save_checkpoint(best_path, {**best_state, "verification": report.to_dict()})
        summary = {
            **{f"test/{k}": v for k, v in report.test.items()},
            **{f"val/{k}": v for k, v in report.val.items()},
            **extra,
            "threshold": report.threshold,
            "threshold_method": report.method,
            "epochs": self.epoch,
            "steps": self.step,
            "train_seconds": round(seconds, 2),
            "checkpoint": str(best_path),
            "roc_plot": str(roc_path),
        }
        self.logger.log_scalars({k: v for k, v in summary.items() if isinstance(v, float)}, self.step)
        (self.run_dir / "results.json").write_text(
            json.dumps({"summary": summary, "history": self.history}, indent=1)
        )
        t = report.test
        self.logger.message(
            f"test at the val-chosen threshold {report.threshold:.4f} ({report.method}): accuracy {t['accuracy']:.4f} "
            f"FAR {t['far']:.4f} FRR {t['frr']:.4f} AUC {t['auc']:.4f} EER {t['eer']:.4f}"
            + "".join(f" {k}={v:.4f}" for k, v in extra.items())
            + f"; checkpoint {best_path}"
        )
        self.logger.finish(summary)
        return summary


class SiameseRecipe(MetricRecipe):
    """One tower, shared weights; contrastive / triplet / pair-BCE training on one modality."""

    def __init__(self, cfg: DictConfig) -> None:
        self.init_common(cfg)
        data = to_dict(cfg.data)
        self.splits, self.preprocessing = build_splits(data, cfg.seed)
        train = self.splits["train"]
        self.modality = train.modality
        self.augment = augmenter(data)
        self.loss_name, loss_kwargs = loss_spec(to_dict(cfg.loss))
        self.meta = {
            "kind": _kind(self.loss_name),
            "input_shapes": {self.modality: train.input_shape},
            "classes": train.classes,
        }
        self.model = build_metric_model(self.meta["kind"], to_dict(cfg.model), self.meta["input_shapes"])
        self.pairs_per_epoch = int(loss_kwargs.pop("pairs_per_epoch", 2 * len(train)))
        self.loss_fn = (
            torch.nn.Identity()
            if self.loss_name == "pair_bce"
            else build_metric_loss(self.loss_name, **loss_kwargs)
        )
        self.manifest_hash = stable_hash(
            {
                "data": data,
                "sizes": {k: len(s) for k, s in self.splits.items()},
                "labels": [s.labels.tolist() for s in self.splits.values()],
            }
        )
        self.loader = TensorBatchLoader(
            train, cfg.train.batch_size, shuffle=True, seed=cfg.seed, drop_last=True
        )
        per_epoch = (
            self.pairs_per_epoch // cfg.train.batch_size if self.loss_name == "pair_bce" else len(self.loader)
        )
        if per_epoch < 1:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the training set; lower it")
        self.setup(per_epoch)

    def eval_pairs(self, split: str, n: int) -> tuple[Tensor, Tensor]:
        s = self.splits[split]
        return balanced_pairs(
            s.labels, n, split_generator(self.cfg.seed, f"{split}-pairs"), f"{split} pairs", s.classes
        )

    def split_embeddings(self, split: str) -> tuple[Tensor, Tensor]:
        emb = self.embed_all(self.model.embed, self.splits[split].items)
        return emb, emb

    def train_epoch(self) -> None:
        bs, items = self.cfg.train.batch_size, self.splits["train"].items
        if self.loss_name == "pair_bce":  # fresh balanced pairs every epoch, seeded by (seed, epoch)
            g = split_generator(self.cfg.seed, f"train-pairs-{self.epoch}")
            pairs, same = balanced_pairs(
                self.splits["train"].labels,
                self.pairs_per_epoch,
                g,
                "train pairs",
                self.splits["train"].classes,
            )
            for i in range(0, len(pairs) - bs + 1, bs):
                p = pairs[i : i + bs]
                a, b = (self.augment(items[p[:, k]]).to(self.device) for k in (0, 1))
                logits = self.model(a, b)
                self.optimise(F.binary_cross_entropy_with_logits(logits, same[i : i + bs].to(self.device)))
            return
        self.loader.set_epoch(self.epoch)
        for batch in self.loader:
            emb = self.model.embed(self.augment(batch[self.modality]).to(self.device))
            self.optimise(self.loss_fn(emb, batch["label"].to(self.device)))


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe on a validated config (see dan.config.load_config); returns the final metrics."""
    return SiameseRecipe(cfg).run()


if __name__ == "__main__":
    from dan.engine.recipes import script_main

    sys.exit(script_main(main))
