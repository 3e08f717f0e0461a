"""Audio front end: fixed-length waveforms -> log-mel, PCEN or MFCC spectrograms, and their normalisation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torchaudio
from torch import Tensor

from dan.errors import ConfigError

FEATURE_KINDS = ("logmel", "mfcc", "pcen")


MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz: any real recording; outside is a corrupt or hostile header
MAX_DURATION_S = 60.0  # one clip's feature window


@dataclass(frozen=True)
class FeatureConfig:
    """How recordings become spectrograms. ``num_frames`` follows from the other fields.

    ``utterance_norm`` subtracts each recording's own mean over time from every feature row (cepstral mean
    normalisation): a speaker's or microphone's constant spectral tilt is removed before the dataset-level
    standardisation, which helps on voices not heard in training. ``utterance_scale`` divides each
    recording's features by their own standard deviation over all rows and frames (after the mean
    normalisation, when both are set): a voice recorded with little contrast between speech and background
    gets the contrast of the others.
    """

    sample_rate: int = 8000
    kind: str = "logmel"
    duration_s: float = 1.0
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 40
    n_mfcc: int = 20
    top_db: float = 80.0
    utterance_norm: bool = False
    utterance_scale: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ConfigError(f"data.audio.kind={self.kind!r} is unknown; valid: {', '.join(FEATURE_KINDS)}")
        for key in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc"):
            if int(getattr(self, key)) <= 0:
                raise ConfigError(f"data.audio.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ConfigError(f"data.audio.duration_s must lie in (0, {MAX_DURATION_S}] seconds, got {self.duration_s!r}")
        if not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise ConfigError(f"data.audio.sample_rate must lie in [{MIN_RATE}, {MAX_RATE}] Hz, got {self.sample_rate!r}")
        for key, top in (("n_fft", 65536), ("hop_length", 65536), ("n_mels", 1024), ("n_mfcc", 1024)):
            if int(getattr(self, key)) > top:
                raise ConfigError(f"data.audio.{key} must be at most {top}, got {getattr(self, key)!r}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ConfigError(f"data.audio.n_mfcc={self.n_mfcc} must not exceed data.audio.n_mels={self.n_mels}")

    @classmethod
    def from_config(cls, value: FeatureConfig | Mapping[str, Any] | None, key: str = "data.audio") -> FeatureConfig:
        """A config section (a mapping, None for the defaults, or a FeatureConfig) -> FeatureConfig; an unknown
        key is a ConfigError naming ``key.<k>`` and the valid keys."""
        if isinstance(value, FeatureConfig):
            return value
        value = dict(value or {})
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key {key}.{unknown[0]}; valid keys: {', '.join(valid)}")
        return cls(**value)

    @property
    def shape(self) -> list[int]:
        """The feature shape of one recording: ``[1, num_bins, num_frames]``."""
        return [1, self.num_bins, self.num_frames]

    @property
    def num_samples(self) -> int:
        """Fixed waveform length in samples."""
        return round(self.sample_rate * self.duration_s)

    @property
    def num_bins(self) -> int:
        """Feature rows: mel bands for log-mel and PCEN, coefficients for MFCC."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def num_frames(self) -> int:
        """Feature columns (centred STFT frames) of one fixed-length recording."""
        return self.num_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        """Plain-dict form, for configs, hashes and checkpoints. Options added after dan 0.1 appear only when
        set, so the hashes of builds that do not use them stay what they were."""
        d = asdict(self)
        for key in ("utterance_norm", "utterance_scale"):
            if not d[key]:
                d.pop(key)
        return d


def pad_or_trim(waveforms: Sequence[Tensor], num_samples: int) -> Tensor:
    """Stack 1-D waveforms of any lengths into ``[N, num_samples]``: zero-padded at the end, or trimmed."""
    out = torch.zeros(len(waveforms), num_samples)
    for i, w in enumerate(waveforms):
        n = min(num_samples, w.shape[-1])
        out[i, :n] = w[:n]
    return out


def add_noise_at_snr(waves: Tensor, snr_db: float, generator: torch.Generator, signal_lengths: Tensor) -> Tensor:
    """White Gaussian noise at ``snr_db`` relative to each signal's power over its own length.

    Args:
        waves: ``[N, L]`` padded waveforms.
        signal_lengths: ``[N]`` original lengths (the power is measured before padding).
    Returns:
        ``[N, L]`` noisy waveforms.
    """
    lengths = signal_lengths.clamp(min=1, max=waves.shape[1]).to(waves.dtype)
    power = waves.pow(2).sum(dim=1) / lengths
    noise_std = torch.sqrt(power / (10.0 ** (snr_db / 10.0)))
    noise = torch.randn(waves.shape, generator=generator) * noise_std[:, None]
    return waves + noise


def spectrogram_transform(cfg: FeatureConfig) -> torch.nn.Module:
    """The front end of ``cfg`` without padding or normalisation: ``[L]`` or ``[n, 1, L]`` waveforms ->
    ``[num_bins, frames]`` or ``[n, 1, num_bins, frames]`` log-mel, PCEN or MFCC; a log-mel is clamped
    ``top_db`` under the peak of each recording."""
    if cfg.kind == "pcen":
        return torch.nn.Sequential(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels, power=1.0
            ),
            PCEN(frames_per_second=cfg.sample_rate / cfg.hop_length),
        )
    if cfg.kind == "logmel":
        return torch.nn.Sequential(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
            ),
            torchaudio.transforms.AmplitudeToDB(stype="power", top_db=cfg.top_db),
        )
    return torchaudio.transforms.MFCC(
        sample_rate=cfg.sample_rate,
        n_mfcc=cfg.n_mfcc,
        melkwargs={"n_fft": cfg.n_fft, "hop_length": cfg.hop_length, "n_mels": cfg.n_mels},
    )


class PCEN(torch.nn.Module):
    """Per-channel energy normalisation (Wang, Getreuer, Hughes, Lyon & Saurous, ICASSP 2017, eq. 1) with
    librosa's defaults: ``E`` a mel magnitude spectrogram ``[..., F, T]`` scaled by 2**31 (float audio in
    [-1, 1] read as 32-bit integers, as librosa advises), ``M`` its first-order IIR smoothing over time with
    ``s`` from a 0.4 s time constant (librosa's rule ``(sqrt(1 + 4 T^2) - 1) / (2 T^2)``, ``T`` in frames), the
    filter started at its steady state for the first frame (``M[0] = E[0]``), then
    ``(E / (eps + M)^alpha + delta)^r - delta^r`` with alpha 0.98, delta 2, r 0.5, eps 1e-6. Where it differs
    from the paper: the parameters are fixed, not trained (the paper also learns them), and the frames are
    the front end's (32 ms every 16 ms by default, against the paper's 25 ms every 10 ms); the time constant
    is kept in seconds, so ``s`` follows the frame rate."""

    def __init__(
        self, frames_per_second: float, time_constant: float = 0.4, alpha: float = 0.98, delta: float = 2.0,
        r: float = 0.5, eps: float = 1e-6,
    ) -> None:
        super().__init__()
        t = time_constant * frames_per_second
        self.s = (math.sqrt(1 + 4 * t**2) - 1) / (2 * t**2)
        self.alpha, self.delta, self.r, self.eps = alpha, delta, r, eps

    def forward(self, mel: Tensor) -> Tensor:
        """``[..., F, T]`` mel magnitudes -> ``[..., F, T]`` PCEN."""
        e = mel.double() * 2.0**31
        m = torch.empty_like(e)
        m[..., 0] = e[..., 0]
        for t in range(1, e.shape[-1]):
            m[..., t] = (1 - self.s) * m[..., t - 1] + self.s * e[..., t]
        out = (e / (self.eps + m) ** self.alpha + self.delta) ** self.r - self.delta**self.r
        return out.to(mel.dtype)


def compute_features(waves: Tensor, cfg: FeatureConfig, batch_size: int = 512) -> Tensor:
    """``[N, num_samples]`` waveforms -> ``[N, 1, num_bins, num_frames]`` log-mel, PCEN or MFCC features."""
    transform = spectrogram_transform(cfg)
    chunks = []
    with torch.no_grad():
        for start in range(0, waves.shape[0], batch_size):
            # [n, 1, L] input makes AmplitudeToDB apply top_db per recording, not per chunk.
            spec = transform(waves[start : start + batch_size].unsqueeze(1))
            chunks.append(spec)
    if not chunks:
        return torch.zeros(0, 1, cfg.num_bins, cfg.num_frames)
    feats = torch.cat(chunks)
    if cfg.utterance_norm:
        feats = feats - feats.mean(dim=-1, keepdim=True)
    if cfg.utterance_scale:
        feats = feats / feats.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-5)
    return feats


@dataclass
class Standardizer:
    """Per-row (mel band) mean and std of features, fitted on the training split only."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, feats: Tensor) -> Standardizer:
        """Fit on ``[N, 1, F, T]`` features: statistics per feature row ``F``."""
        mean = feats.mean(dim=(0, 1, 3))
        std = feats.std(dim=(0, 1, 3)).clamp_min(1e-5)
        return cls(mean=mean, std=std)

    def __call__(self, feats: Tensor) -> Tensor:
        """``[N, 1, F, T]`` -> standardised ``[N, 1, F, T]``."""
        return (feats - self.mean[:, None]) / self.std[:, None]
