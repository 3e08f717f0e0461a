"""AV-MNIST built from raw MNIST and FSDD: deterministic, seeded, class-consistent pairs.

Variants:
    ``clean``: the images and recordings as they are.
    ``hard``: the CentralNet/MFAS protocol: images keep only the principal components that explain
    ``hard.pca_variance`` of the variance (fitted on the training split), and recordings are mixed with
    white noise at ``hard.snr_db``.

The whole build (images, features, pairs, normalisation) is cached in one file keyed by a hash of the
config and the source files' contents; a pair manifest and its hash are written beside it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dan.data import fsdd, mnist
from dan.data.cache import atomic_write_bytes, fingerprint_files, load_tensors, save_tensors, stable_hash
from dan.data.dataset import Split
from dan.data.features import FeatureConfig, Standardizer, add_noise_at_snr, compute_features, pad_or_trim
from dan.data.pairing import AUDIO_REUSE, pair_by_class, split_generator
from dan.data.readers import AudioReader, ImageReader, modality_specs
from dan.data.registry import register_dataset
from dan.errors import ConfigError
from dan.paths import cache_root, data_root

log = logging.getLogger(__name__)

CACHE_VERSION = 1
VARIANTS = ("clean", "hard")
OFFLINE_SPLITS = {
    "train": {"mnist": "test[:7000]", "fsdd": "train[250:]"},
    "val": {"mnist": "test[7000:8000]", "fsdd": "train[:250]"},
    "test": {"mnist": "test[8000:]", "fsdd": "test"},
}


@dataclass(frozen=True)
class HardConfig:
    """Degradations of the ``hard`` variant."""

    pca_variance: float = 0.25
    snr_db: float = 0.0


@register_dataset("avmnist")
@dataclass(frozen=True)
class AVMnistConfig:
    """Everything that determines an AV-MNIST build (``data.*`` keys); the registered ``avmnist`` dataset."""

    root: str | None = None
    cache_dir: str | None = None
    variant: str = "clean"
    seed: int = 0
    pairs_per_image: int = 1
    audio_reuse: str = "cycle"
    on_bad_file: str = "raise"
    heldout_speakers: tuple[str, ...] | None = None
    splits: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: OFFLINE_SPLITS)
    audio: FeatureConfig = field(default_factory=FeatureConfig)
    hard: HardConfig = field(default_factory=HardConfig)
    use_cache: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio", FeatureConfig.from_config(self.audio))
        if isinstance(self.hard, Mapping):
            _reject_unknown(self.hard, HardConfig, "data.hard")
            object.__setattr__(self, "hard", HardConfig(**self.hard))
        object.__setattr__(self, "splits", {k: dict(v) for k, v in dict(self.splits).items()})
        if self.heldout_speakers is not None:
            object.__setattr__(self, "heldout_speakers", tuple(self.heldout_speakers))
        if "train" not in self.splits:
            raise ConfigError("data.splits needs a 'train' entry (normalisation and PCA are fitted on it)")
        if self.variant not in VARIANTS:
            raise ConfigError(f"data.variant={self.variant!r} is unknown; valid: {', '.join(VARIANTS)}")
        if self.audio_reuse not in AUDIO_REUSE:
            raise ConfigError(f"data.audio_reuse={self.audio_reuse!r} is unknown; valid: {', '.join(AUDIO_REUSE)}")
        if self.pairs_per_image < 1:
            raise ConfigError(f"data.pairs_per_image must be >= 1, got {self.pairs_per_image}")
        for name, spec in self.splits.items():
            missing = {"mnist", "fsdd"} - set(spec)
            if missing:
                raise ConfigError(f"data.splits.{name} lacks {', '.join(sorted(missing))}; give both mnist and fsdd specs")
        if not 0.0 < self.hard.pca_variance <= 1.0:
            raise ConfigError(f"data.hard.pca_variance must lie in (0, 1], got {self.hard.pca_variance}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> AVMnistConfig:
        """Build from a ``data`` config mapping; unknown keys are a ConfigError listing the valid ones."""
        cfg = dict(cfg)
        cfg.pop("name", None)
        _reject_unknown(cfg, cls, "data")
        if cfg.get("splits") is None:
            cfg.pop("splits", None)
        return cls(**cfg)

    def group_folds(self) -> dict[str, dict[str, Any]]:
        """Leave one speaker out: ``{speaker: {"heldout_speakers": [speaker]}}`` for every speaker the data
        root's FSDD folder holds (read from the file names, no audio decoded)."""
        recordings = fsdd.index_recordings(fsdd.fsdd_dir(data_root(self.root)))
        return {s: {"heldout_speakers": [s]} for s in sorted({r.speaker for r in recordings})}

    def input_shapes(self) -> dict[str, list[int]]:
        """``{m: item shape}`` of the built splits, known without reading data."""
        return {"image": [1, 28, 28], "audio": self.audio.shape}

    def verify(self) -> list[Any]:
        """File checks of both sources: MNIST's md5s and every FSDD recording read (``dan data verify``)."""
        from dan.data.verify import verify_fsdd_files, verify_mnist_files

        root = data_root(self.root)
        return [*verify_mnist_files(root), *verify_fsdd_files(root)]

    def build(
        self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None
    ) -> dict[str, Split]:
        """The splits (see :func:`build_avmnist`)."""
        return build_avmnist(self, preprocessing, only)

    def cache_key_material(self) -> dict[str, Any]:
        """The fields that change the built data (not where it lives)."""
        d = asdict(self)
        for key in ("root", "cache_dir", "use_cache", "on_bad_file"):
            d.pop(key)
        d["splits"] = {k: dict(v) for k, v in self.splits.items()}
        d["audio"] = self.audio.to_dict()
        return d


def _reject_unknown(cfg: Mapping[str, Any], cls: type, prefix: str) -> None:
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]}; valid keys: {', '.join(sorted(valid))}")


def fit_pca(train: Tensor, variance: float) -> dict[str, Any]:
    """The leading principal components of ``train [N, D]`` that explain ``variance``:
    ``{"mean": [D], "basis": [k, D]}`` as lists (stored in the preprocessing, so eval applies the same basis)."""
    mean = train.mean(dim=0)
    _, s, vh = torch.linalg.svd(train - mean, full_matrices=False)
    explained = (s**2).cumsum(0) / (s**2).sum()
    k = int((explained < variance).sum().item()) + 1
    return {"mean": mean.tolist(), "basis": vh[:k].tolist()}


def pca_project(images: Tensor, pca: Mapping[str, Any]) -> Tensor:
    """Reconstruct ``images [M, H, W]`` from the PCA components ``pca`` keeps (same shape)."""
    mean, basis = torch.tensor(pca["mean"]), torch.tensor(pca["basis"])
    flat = images.reshape(len(images), -1)
    return ((flat - mean) @ basis.T @ basis + mean).reshape(images.shape)


def build_avmnist(
    cfg: AVMnistConfig | Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Split]:
    """Build (or reload from cache) every split named in ``cfg.splits`` (or those in ``only``). The cache is
    keyed by the config, the source files' contents and ``torch.get_num_threads()``.

    With ``preprocessing`` (a checkpoint's), images and features are normalised (and, for the hard variant,
    PCA-projected) with its stored statistics and nothing is fitted: only the requested splits are read, and
    no training split is needed.
    """
    if not isinstance(cfg, AVMnistConfig):
        cfg = AVMnistConfig.from_dict(cfg)
    names = list(cfg.splits) if only is None else [n for n in cfg.splits if n in only]
    if only is not None and not names:
        raise ConfigError(f"data.splits has no split {list(only)}; valid choices: {', '.join(cfg.splits)}")
    root = data_root(cfg.root)
    wanted = names if preprocessing is not None else list(cfg.splits)
    bases = sorted({mnist_spec_base(cfg.splits[s]["mnist"]) for s in wanted})
    image_files = [p for base in bases for p in mnist.mnist_files(root, base)]
    recordings = fsdd.index_recordings(fsdd.fsdd_dir(root))
    if preprocessing is not None:
        payload = _build_payload(cfg, root, bases, recordings, wanted, preprocessing)
        return _splits_from_payload(payload, None, names)
    key_material = {
        "version": CACHE_VERSION,
        "config": cfg.cache_key_material(),
        "mnist": fingerprint_files(image_files),
        "fsdd": fingerprint_files(r.path for r in recordings),
        # float reductions (the images' mean, each mel band's statistics, the PCA) add in an order set by the
        # thread count: the cached statistics are those of the run's own count, as its training is
        "threads": torch.get_num_threads(),
    }
    key = stable_hash(key_material)
    cache_file = cache_root(cfg.cache_dir) / "avmnist" / f"{key[:20]}.pt"
    state = "reused"
    if cfg.use_cache and cache_file.exists():
        payload = load_tensors(cache_file)
        log.info("AV-MNIST loaded from cache %s", cache_file)
    else:
        state = "built"
        payload = _build_payload(cfg, root, bases, recordings, wanted, None)
        if cfg.use_cache:
            save_tensors(cache_file, payload)
            manifest = payload["manifest"]
            atomic_write_bytes(cache_file.with_suffix(".manifest.json"), json.dumps(manifest, indent=1).encode())
            log.info("AV-MNIST cache written to %s (manifest hash %s)", cache_file, payload["manifest_hash"])
    splits = _splits_from_payload(payload, cache_file if cfg.use_cache else None, names)
    for split in splits.values():
        split.info["cache"] = state
    return splits


def mnist_spec_base(spec: str) -> str:
    """The base split (``train``/``test``) of an MNIST split spec."""
    from dan.data.splits import parse_split

    return parse_split(spec, mnist.MNIST_SPLITS).base


def _build_payload(
    cfg: AVMnistConfig,
    root: Path,
    bases: list[str],
    recordings: list[fsdd.Recording],
    names: list[str],
    stored: Mapping[str, Any] | None,
) -> dict[str, Any]:
    from dan.data.splits import parse_split

    mnist_data = {base: mnist.load_mnist(root, base) for base in bases}
    waves, kept = fsdd.load_waveforms(
        recordings, cfg.audio.sample_rate, on_error=cfg.on_bad_file, max_seconds=cfg.audio.duration_s
    )
    row_of = {r.path.name: i for i, r in enumerate(kept)}
    lengths = torch.tensor([w.shape[-1] for w in waves])
    padded = pad_or_trim(waves, cfg.audio.num_samples)
    if cfg.variant == "hard":
        padded = add_noise_at_snr(padded, cfg.hard.snr_db, split_generator(cfg.seed, "noise"), lengths)
    feats = compute_features(padded, cfg.audio)

    chosen: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = cfg.splits[name]
        mspec = parse_split(spec["mnist"], mnist.MNIST_SPLITS)
        images, labels = mnist_data[mspec.base]
        img_idx = torch.tensor(list(mspec.resolve(len(labels))), dtype=torch.long)
        recs = fsdd.select_recordings(kept, spec["fsdd"], cfg.heldout_speakers)
        aud_rows = torch.tensor([row_of[r.path.name] for r in recs], dtype=torch.long)
        aud_labels = torch.tensor([r.digit for r in recs], dtype=torch.long)
        img_labels = labels[img_idx]
        pairs = pair_by_class(
            img_labels, aud_labels, cfg.pairs_per_image, split_generator(cfg.seed, name), cfg.audio_reuse, f"split {name}"
        )
        chosen[name] = {
            "images": images[img_idx].float().div(255.0),
            "image_index": img_idx,
            "audio_rows": aud_rows,
            "recordings": recs,
            "pairs": pairs,
            "labels": img_labels[pairs[:, 0]],
        }

    if stored is None:
        train = chosen["train"]
        pca = None
        if cfg.variant == "hard":
            pca = fit_pca(train["images"].reshape(len(train["images"]), -1), cfg.hard.pca_variance)
        for part in chosen.values():
            if pca is not None:
                part["images"] = pca_project(part["images"], pca)
        img_mean = float(train["images"].mean())
        img_std = float(train["images"].std())
        standardize = Standardizer.fit(feats[train["audio_rows"]])
    else:
        specs = modality_specs(stored)
        pca = stored.get("pca")
        if cfg.variant == "hard" and pca is None:
            raise ConfigError("the checkpoint holds no PCA basis for the hard variant; evaluate with a newer checkpoint")
        for part in chosen.values():
            if pca is not None:
                part["images"] = pca_project(part["images"], pca)
        img_mean, img_std = float(_first(specs["image"]["mean"])), float(_first(specs["image"]["std"]))
        audio_stats = specs["audio"].get("standardize") or specs["audio"]
        standardize = Standardizer(torch.tensor(audio_stats["mean"]), torch.tensor(audio_stats["std"]))
    image_reader, audio_reader = ImageReader(size=28), AudioReader(features=cfg.audio)
    image_reader.set_stats(img_mean, img_std)
    audio_reader.set_stats(standardize.mean, standardize.std)

    manifest: dict[str, Any] = {"config": cfg.cache_key_material(), "splits": {}}
    payload: dict[str, Any] = {"splits": {}}
    for name, part in chosen.items():
        manifest["splits"][name] = {
            "mnist": cfg.splits[name]["mnist"],
            "fsdd": cfg.splits[name]["fsdd"],
            "image_index": part["image_index"].tolist(),
            "audio_files": [r.path.name for r in part["recordings"]],
            "pairs": part["pairs"].tolist(),
        }
        payload["splits"][name] = {
            "images": ((part["images"] - img_mean) / img_std).unsqueeze(1).contiguous(),
            "audio": standardize(feats[part["audio_rows"]]).contiguous(),
            "pairs": part["pairs"],
            "labels": part["labels"],
            "manifest_hash": stable_hash(manifest["splits"][name]),
            "speakers": sorted({r.speaker for r in part["recordings"]}),
            "num_recordings": len(part["recordings"]),
        }
    payload["manifest"] = manifest
    payload["manifest_hash"] = stable_hash(manifest)
    payload["preprocessing"] = {
        "modalities": {"image": image_reader.spec(), "audio": audio_reader.spec()},
        "classes": [str(d) for d in range(10)],
        "variant": cfg.variant,
        "pca": pca,
    }
    payload["skipped_files"] = [r.path.name for r in recordings if r.path.name not in row_of]
    return payload


def _first(value: Any) -> float:
    return value[0] if isinstance(value, list) else value


def _splits_from_payload(payload: dict[str, Any], cache_file: Path | None, names: Sequence[str]) -> dict[str, Split]:
    out = {}
    for name in names:
        part = payload["splits"][name]
        pairs = part["pairs"]
        files = payload["manifest"]["splits"][name]["audio_files"]
        speaker_of_row = torch.tensor(
            [part["speakers"].index(fsdd.NAME_PATTERN.match(f)["speaker"]) for f in files], dtype=torch.long
        )
        out[name] = Split(
            name=name,
            items={"image": part["images"], "audio": part["audio"]},
            rows={"image": pairs[:, 0].contiguous(), "audio": pairs[:, 1].contiguous()},
            labels=part["labels"],
            manifest_hash=payload["manifest_hash"],
            preprocessing=payload["preprocessing"],
            source="avmnist",
            info={
                "split_manifest_hash": part["manifest_hash"],
                "speakers": part["speakers"],
                "num_recordings": part["num_recordings"],
                "num_images": int(part["images"].shape[0]),
                "cache_file": str(cache_file) if cache_file else None,
                "skipped_files": payload["skipped_files"],
                "mnist": payload["manifest"]["splits"][name]["mnist"],
                "fsdd": payload["manifest"]["splits"][name]["fsdd"],
            },
            groups=speaker_of_row[pairs[:, 1]],  # the speaker of each sample's recording, indexing info["speakers"]
        )
    return out
