import math

import pytest
import torch

from dan.data.features import FeatureConfig, Standardizer, add_noise_at_snr, compute_features, pad_or_trim
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
