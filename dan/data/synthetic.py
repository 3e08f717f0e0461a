"""SYNTHETIC audio-visual digits: no files, no network. For tests and the offline quickstart.

Images are seven-segment digit glyphs under a random affine warp and pixel noise. Recordings are
per-digit two-tone signatures (digit-specific frequencies and a rising or falling glide) with
speaker-like variation in pitch, duration and loudness, plus noise. Every split this module builds
carries ``source="synthetic"``, and reports name it so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.data.cache import stable_hash
from dan.data.dataset import AVSplit
from dan.data.features import FeatureConfig, Standardizer, compute_features
from dan.data.pairing import split_generator
from dan.errors import ConfigError

# Segments a..g of a seven-segment display: (row0, row1, col0, col1) in a 28x28 canvas.
_SEGMENTS = {
    "a": (5, 7, 10, 18), "b": (6, 14, 17, 19), "c": (14, 22, 17, 19), "d": (21, 23, 10, 18),
    "e": (14, 22, 9, 11), "f": (6, 14, 9, 11), "g": (13, 15, 10, 18),
}
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and difficulty of the synthetic set (``data.*`` keys with ``data.name=synthetic``)."""

    seed: int = 0
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    image_noise: float = 0.15
    audio_noise: float = 0.1
    audio: FeatureConfig = field(default_factory=FeatureConfig)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> SyntheticConfig:
        """Build from a ``data`` mapping; unknown keys are a ConfigError listing the valid ones."""
        cfg = {k: v for k, v in dict(cfg).items() if k not in ("name", "root", "cache_dir")}
        valid = {f.name for f in fields(cls)}
        for key in cfg:
            if key not in valid:
                raise ConfigError(f"unknown key data.{key} for data.name=synthetic; valid keys: {', '.join(sorted(valid))}")
        for key in ("n_train", "n_val", "n_test"):
            if int(cfg.get(key, 1)) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {cfg[key]}")
        if "audio" in cfg:
            cfg["audio"] = FeatureConfig(**dict(cfg["audio"]))
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


def synth_waveforms(labels: Tensor, generator: torch.Generator, cfg: SyntheticConfig) -> Tensor:
    """Per-digit tone signatures for ``labels`` ``[N]`` -> ``[N, num_samples]`` waveforms."""
    n, length, sr = len(labels), cfg.audio.num_samples, cfg.audio.sample_rate
    t = torch.arange(length) / sr
    d = labels.float()[:, None]
    pitch = 0.85 + 0.3 * torch.rand(n, 1, generator=generator)
    duration = 0.35 + 0.45 * torch.rand(n, 1, generator=generator)
    loud = 0.3 + 0.6 * torch.rand(n, 1, generator=generator)
    f1 = (300 + 60 * d) * pitch
    f2 = (1000 + 150 * d) * pitch
    glide = torch.where(labels[:, None] % 2 == 0, 1.0, -1.0) * 150 * t / duration
    envelope = torch.sin(math.pi * (t / duration).clamp(0, 1)) * (t < duration)
    wave = torch.sin(2 * math.pi * f1 * t) + 0.6 * torch.sin(2 * math.pi * (f2 + glide) * t)
    return loud * envelope * wave + cfg.audio_noise * torch.randn(n, length, generator=generator)


def build_synthetic(cfg: SyntheticConfig | Mapping[str, Any]) -> dict[str, AVSplit]:
    """Build SYNTHETIC train/val/test splits; pairs are one image and one recording each."""
    if not isinstance(cfg, SyntheticConfig):
        cfg = SyntheticConfig.from_dict(cfg)
    raw: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    for name, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        g = split_generator(cfg.seed, f"synthetic-{name}")
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=g)]
        images = render_images(labels, g, cfg.image_noise)
        feats = compute_features(synth_waveforms(labels, g, cfg), cfg.audio)
        raw[name] = (images, feats, labels)
    img_mean, img_std = float(raw["train"][0].mean()), float(raw["train"][0].std())
    standardize = Standardizer.fit(raw["train"][1])
    preprocessing = {
        "image": {"mean": img_mean, "std": img_std, "size": 28},
        "audio": {"features": cfg.audio.to_dict(), "standardize": standardize.to_dict()},
        "variant": "synthetic",
    }
    manifest_hash = stable_hash({"synthetic": cfg.__repr__()})
    out = {}
    for name, (images, feats, labels) in raw.items():
        n = len(labels)
        out[name] = AVSplit(
            name=name,
            images=((images - img_mean) / img_std).unsqueeze(1),
            audio=standardize(feats),
            pairs=torch.arange(n).repeat(2, 1).T.contiguous(),
            labels=labels,
            manifest_hash=manifest_hash,
            preprocessing=preprocessing,
            source="synthetic",
            info={"note": "SYNTHETIC data: procedurally generated digits, not MNIST/FSDD", "num_images": n},
        )
    return out
