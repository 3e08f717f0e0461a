"""Normalised model inputs back to things people can look at or listen to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torchaudio
from torch import Tensor


def is_image(prep: Mapping[str, Any]) -> bool:
    """Whether a modality's reader spec is the image reader's."""
    return prep.get("reader", "image" if "features" not in prep else "audio") == "image"


def is_audio(prep: Mapping[str, Any]) -> bool:
    """Whether a modality's reader spec is the audio reader's (an audio feature front end)."""
    return prep.get("reader", "audio" if "features" in prep else "image") == "audio"


def image_to_uint8(x: Tensor, prep: Mapping[str, Any]) -> Tensor:
    """Normalised image ``[C, H, W]`` -> ``[H, W]`` (one channel) or ``[H, W, C]`` uint8, mean/std undone."""
    std = torch.as_tensor(prep["std"], dtype=torch.float32).reshape(-1, 1, 1)
    mean = torch.as_tensor(prep["mean"], dtype=torch.float32).reshape(-1, 1, 1)
    raw = (x.float() * std + mean).clamp(0, 1)
    out = (raw * 255).round().to(torch.uint8)
    return out[0] if out.shape[0] == 1 else out.permute(1, 2, 0)


def features_to_waveform(feats: Tensor, prep: Mapping[str, Any], n_iter: int = 32) -> tuple[Tensor, int]:
    """Standardised log-mel ``[1, n_mels, T]`` -> an approximate waveform ``[L]`` (Griffin-Lim) and its rate.

    Only log-mel features can be inverted; for MFCC the result is silence.
    """
    f = prep["features"]
    sr = int(f["sample_rate"])
    if f.get("kind", "logmel") != "logmel":
        return torch.zeros(int(sr * f["duration_s"])), sr
    std = prep.get("standardize") or prep
    mean = torch.tensor(std.get("mean", [0.0]))[:, None]
    scale = torch.tensor(std.get("std", [1.0]))[:, None]
    db = feats[0].float() * scale + mean
    power = torch.pow(10.0, db / 10.0)
    n_stft = int(f["n_fft"]) // 2 + 1
    spec = torchaudio.transforms.InverseMelScale(n_stft=n_stft, n_mels=int(f["n_mels"]), sample_rate=sr)(
        power
    )
    wave = torchaudio.transforms.GriffinLim(
        n_fft=int(f["n_fft"]), hop_length=int(f["hop_length"]), n_iter=n_iter, power=2.0
    )(spec)
    peak = wave.abs().max().clamp_min(1e-8)
    return wave / peak * 0.9, sr
