"""Training-time augmentation (``augment`` config): seeded, batched, per modality; bad keys named."""

from __future__ import annotations

import pytest
import torch

from dan.data.augment import build_augment
from dan.data.features import FeatureConfig, compute_features
from dan.errors import ConfigError


def test_image_affine_is_seeded_and_moves_pixels() -> None:
    aug = build_augment({"image": {"shift": 3, "rotate": 15}})
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    torch.manual_seed(0)
    a = aug({"image": x, "label": torch.zeros(8)})["image"]
    torch.manual_seed(0)
    b = aug({"image": x, "label": torch.zeros(8)})["image"]
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape


def test_spectrogram_masks_cover_whole_bands_and_spans() -> None:
    aug = build_augment({"audio": {"freq_mask": 6, "time_mask": 9, "masks": 1}})
    torch.manual_seed(1)
    out = aug({"audio": torch.ones(16, 1, 40, 63)})["audio"]
    masked = out == 0
    rows = masked.all(dim=3).sum(dim=2).squeeze(1)  # fully masked mel rows per sample
    cols = masked.all(dim=2).sum(dim=2).squeeze(1)  # fully masked frames per sample
    assert rows.max() <= 6 and cols.max() <= 9 and (rows + cols).sum() > 0


def test_utterance_norm_removes_each_recordings_mean_over_time() -> None:
    t = torch.arange(8000) / 8000
    waves = torch.stack([0.2 * torch.sin(2 * torch.pi * 440 * t), 0.9 * torch.sin(2 * torch.pi * 440 * t)])
    plain = compute_features(waves, FeatureConfig())
    normed = compute_features(waves, FeatureConfig(utterance_norm=True))
    assert normed.mean(dim=-1).abs().max() < 1e-3
    # the louder copy differs from the quiet one by a constant in dB: CMN removes it
    assert (plain[1] - plain[0]).abs().mean() > 1.0 and (normed[1] - normed[0]).abs().mean() < 0.1


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"image": {"shfit": 2}}, "unknown key augment.image.shfit; valid keys: shift, rotate (images)"),
        ({"audio": {"freq_mask": -1}}, "augment.audio: every value must be >= 0"),
    ],
)
def test_bad_keys_are_named(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_augment(cfg)
