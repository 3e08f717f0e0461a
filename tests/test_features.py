import math

import pytest
import torch

from dan.data.features import (
    PCEN,
    FeatureConfig,
    Standardizer,
    add_noise_at_snr,
    compute_features,
    pad_or_trim,
)
from dan.errors import ConfigError


def test_pad_or_trim() -> None:
    out = pad_or_trim([torch.ones(3), torch.arange(10.0)], 5)
    assert out.tolist() == [[1, 1, 1, 0, 0], [0, 1, 2, 3, 4]]


def test_logmel_shape_and_peak_at_tone_frequency() -> None:
    cfg = FeatureConfig()
    t = torch.arange(cfg.num_samples) / cfg.sample_rate
    low = torch.sin(2 * math.pi * 300 * t)
    high = torch.sin(2 * math.pi * 3000 * t)
    feats = compute_features(torch.stack([low, high]), cfg)
    assert feats.shape == (2, 1, cfg.n_mels, cfg.num_frames)
    peak = feats[:, 0, :, 10:50].mean(-1).argmax(-1)
    assert peak[0] < peak[1]


def test_mfcc_shape() -> None:
    cfg = FeatureConfig(kind="mfcc", n_mfcc=13)
    feats = compute_features(torch.randn(3, cfg.num_samples), cfg)
    assert feats.shape == (3, 1, 13, cfg.num_frames)


def test_pcen_closed_forms_and_a_tone_over_a_noise_floor() -> None:
    """Wang et al. (2017) eq. 1 with librosa's defaults: librosa's smoothing coefficient for a 0.4 s time
    constant, the closed form on a constant input (the smoother starts at its steady state), gain
    normalisation (ten times louder moves the output by 10**0.02), and a stationary floor suppressed
    against an onset above it."""
    pcen = PCEN(frames_per_second=62.5)
    t = 0.4 * 62.5
    assert pcen.s == pytest.approx((math.sqrt(1 + 4 * t * t) - 1) / (2 * t * t)) and pcen.s == pytest.approx(0.0392, abs=1e-4)
    e = torch.full((2, 3, 20), 1e-4)
    expected = ((1e-4 * 2.0**31) ** 0.02 + 2) ** 0.5 - 2**0.5  # E / E^0.98 = E^0.02 (eps negligible)
    assert torch.allclose(pcen(e), torch.full_like(e, expected), rtol=1e-5)
    def gain(x: torch.Tensor) -> torch.Tensor:  # E / M^alpha back from the output
        return (pcen(x) + 2**0.5) ** 2 - 2

    assert torch.allclose(gain(e * 10) / gain(e), torch.full_like(e, 10**0.02), rtol=1e-4)
    floor = torch.full((1, 20), 1e-3)
    floor[0, 10:] = 1e-1  # a tone 40 dB over the floor from frame 10
    out = pcen(floor)[0]
    assert out[10] > 5 * out[9] and out[-1] < out[10]  # the onset stands out, then adapts


def test_pcen_features_of_a_recording() -> None:
    cfg = FeatureConfig(kind="pcen")
    t = torch.arange(cfg.num_samples) / cfg.sample_rate
    feats = compute_features(torch.stack([torch.sin(2 * math.pi * 300 * t), 0.01 * torch.sin(2 * math.pi * 300 * t)]), cfg)
    assert feats.shape == (2, 1, cfg.n_mels, cfg.num_frames) and torch.isfinite(feats).all()
    assert feats[0, 0, :, 10:50].mean(-1).argmax() == feats[1, 0, :, 10:50].mean(-1).argmax()
    assert feats[1].mean() / feats[0].mean() > 0.8  # 40 dB quieter, nearly the same features


def test_noise_hits_requested_snr() -> None:
    g = torch.Generator().manual_seed(0)
    signal = torch.sin(torch.linspace(0, 2000, 8000)).repeat(4, 1)
    noisy = add_noise_at_snr(signal, 10.0, g, torch.full((4,), 8000))
    noise = noisy - signal
    snr = 10 * torch.log10(signal.pow(2).mean() / noise.pow(2).mean())
    assert abs(float(snr) - 10.0) < 0.3


def test_standardizer_uses_given_stats() -> None:
    feats = torch.randn(50, 1, 4, 7) * 3 + 2
    std = Standardizer.fit(feats)
    z = std(feats)
    assert torch.allclose(z.mean(dim=(0, 1, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 1, 3)), torch.ones(4), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"kind": "cqt"}, "kind"), ({"n_mels": 0}, "n_mels"), ({"duration_s": -1}, "duration_s"), ({"kind": "mfcc", "n_mfcc": 80}, "n_mfcc")],
)
def test_bad_feature_config(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        FeatureConfig(**kwargs)
