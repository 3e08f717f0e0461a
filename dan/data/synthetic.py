"""SYNTHETIC audio-visual digits: no files, no network. For tests and the offline quickstart.

Images are seven-segment digit glyphs under a random affine warp and pixel noise. Recordings are
per-digit two-tone signatures (digit-specific frequencies and a rising or falling glide) with
speaker-like variation in pitch, duration and loudness, plus noise. Every split this module builds
carries ``source="synthetic"``, and reports name it so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.data.cache import stable_hash
from dan.data.dataset import Split
from dan.data.features import FeatureConfig, Standardizer, compute_features
from dan.data.pairing import split_generator
from dan.data.readers import AudioReader, ImageReader, modality_specs
from dan.data.registry import register_dataset
from dan.errors import ConfigError

# Segments a..g of a seven-segment display: (row0, row1, col0, col1) in a 28x28 canvas.
_SEGMENTS = {
    "a": (5, 7, 10, 18), "b": (6, 14, 17, 19), "c": (14, 22, 17, 19), "d": (21, 23, 10, 18),
    "e": (14, 22, 9, 11), "f": (6, 14, 9, 11), "g": (13, 15, 10, 18),
}
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


@register_dataset("synthetic")
@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and difficulty of the synthetic set (``data.*`` keys with ``data.name=synthetic``); the
    registered ``synthetic`` dataset. ``speakers`` > 0 gives every sample one of that many speakers as its
    group (each speaker saying every digit equally often), each speaker with its own band of pitches; 0
    draws every recording's pitch from the whole range and gives no groups."""

    seed: int = 0
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    image_noise: float = 0.15
    audio_noise: float = 0.1
    speakers: int = 0
    audio: FeatureConfig = field(default_factory=FeatureConfig)
    root: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        for key in ("n_train", "n_val", "n_test"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if int(self.speakers) < 0:
            raise ConfigError(f"data.speakers must be >= 0 (0: no speakers), got {self.speakers}")
        object.__setattr__(self, "audio", FeatureConfig.from_config(self.audio))

    def input_shapes(self) -> dict[str, list[int]]:
        """``{m: item shape}`` of the built splits, known without reading data."""
        return {"image": [1, 28, 28], "audio": self.audio.shape}

    def build(
        self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None
    ) -> dict[str, Split]:
        """The splits (see :func:`build_synthetic`)."""
        return build_synthetic(self, preprocessing, only)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> SyntheticConfig:
        """Build from a ``data`` mapping; unknown keys are a ConfigError listing the valid ones."""
        cfg = {k: v for k, v in dict(cfg).items() if k not in ("name", "root", "cache_dir")}
        valid = {f.name for f in fields(cls)}
        for key in cfg:
            if key not in valid:
                raise ConfigError(f"unknown key data.{key} for data.name=synthetic; valid keys: {', '.join(sorted(valid))}")
        return cls(**cfg)


def glyphs() -> Tensor:
    """The ten clean digit glyphs, ``[10, 28, 28]`` float in [0, 1]."""
    out = torch.zeros(10, 28, 28)
    for digit, segs in enumerate(_DIGIT_SEGMENTS):
        for s in segs:
            r0, r1, c0, c1 = _SEGMENTS[s]
            out[digit, r0:r1, c0:c1] = 1.0
    return out


def render_images(labels: Tensor, generator: torch.Generator, noise: float) -> Tensor:
    """Warped noisy glyphs for ``labels`` ``[N]`` -> ``[N, 28, 28]`` float in [0, 1]."""
    n = len(labels)
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.25
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    base = glyphs()[labels].unsqueeze(1)
    grid = F.affine_grid(theta, list(base.shape), align_corners=False)
    warped = F.grid_sample(base, grid, align_corners=False).squeeze(1)
    return (warped + noise * torch.randn(warped.shape, generator=generator)).clamp(0.0, 1.0)


def synth_waveforms(
    labels: Tensor, generator: torch.Generator, cfg: SyntheticConfig, speakers: Tensor | None = None
) -> Tensor:
    """Per-digit tone signatures for ``labels`` ``[N]`` -> ``[N, num_samples]`` waveforms; with ``speakers``
    ``[N]`` (ids below ``cfg.speakers``) speaker ``s`` draws its pitch from the ``s``-th of ``cfg.speakers``
    equal bands of the range."""
    n, length, sr = len(labels), cfg.audio.num_samples, cfg.audio.sample_rate
    t = torch.arange(length) / sr
    d = labels.float()[:, None]
    u = torch.rand(n, 1, generator=generator)
    if speakers is not None:
        u = (speakers.float()[:, None] + u) / cfg.speakers
    pitch = 0.85 + 0.3 * u
    duration = 0.35 + 0.45 * torch.rand(n, 1, generator=generator)
    loud = 0.3 + 0.6 * torch.rand(n, 1, generator=generator)
    f1 = (300 + 60 * d) * pitch
    f2 = (1000 + 150 * d) * pitch
    glide = torch.where(labels[:, None] % 2 == 0, 1.0, -1.0) * 150 * t / duration
    envelope = torch.sin(math.pi * (t / duration).clamp(0, 1)) * (t < duration)
    wave = torch.sin(2 * math.pi * f1 * t) + 0.6 * torch.sin(2 * math.pi * (f2 + glide) * t)
    return loud * envelope * wave + cfg.audio_noise * torch.randn(n, length, generator=generator)


def build_synthetic(
    cfg: SyntheticConfig | Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Split]:
    """Build SYNTHETIC train/val/test splits (or those in ``only``); each sample is one image and one
    recording. With ``preprocessing`` its stored statistics normalise the inputs instead of the train split's."""
    if not isinstance(cfg, SyntheticConfig):
        cfg = SyntheticConfig.from_dict(cfg)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    names = [n for n in sizes if only is None or n in only]
    if not names:
        raise ConfigError(f"the synthetic set has no split {list(only or [])}; valid choices: train, val, test")
    raw: dict[str, tuple[Tensor, Tensor, Tensor, Tensor | None]] = {}
    for name in sizes if preprocessing is None else names:
        n = sizes[name]
        g = split_generator(cfg.seed, f"synthetic-{name}")
        order = torch.randperm(n, generator=g)
        labels = (torch.arange(n) % 10)[order]
        speakers = (torch.arange(n) // 10 % cfg.speakers)[order] if cfg.speakers else None
        images = render_images(labels, g, cfg.image_noise)
        feats = compute_features(synth_waveforms(labels, g, cfg, speakers), cfg.audio)
        raw[name] = (images, feats, labels, speakers)
    image_reader, audio_reader = ImageReader(size=28), AudioReader(features=cfg.audio)
    if preprocessing is None:
        standardize = Standardizer.fit(raw["train"][1])
        image_reader.set_stats(float(raw["train"][0].mean()), float(raw["train"][0].std()))
        audio_reader.set_stats(standardize.mean, standardize.std)
    else:
        specs = modality_specs(preprocessing)
        image_reader.load_stats(specs["image"])
        audio_reader.load_stats(specs["audio"])
    spec = {
        "modalities": {"image": image_reader.spec(), "audio": audio_reader.spec()},
        "classes": [str(d) for d in range(10)],
        "variant": "synthetic",
    }
    manifest_hash = stable_hash({"synthetic": cfg.__repr__()})
    out = {}
    for name in names:
        images, feats, labels, speakers = raw[name]
        out[name] = Split.aligned(
            name,
            {"image": image_reader.normalise(images.unsqueeze(1)), "audio": audio_reader.normalise(feats)},
            labels,
            manifest_hash=manifest_hash,
            preprocessing=spec,
            source="synthetic",
            info={"note": "SYNTHETIC data: procedurally generated digits, not MNIST/FSDD", "num_images": len(labels)},
            groups=speakers,
        )
    return out
