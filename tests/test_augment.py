"""Training-time augmentation (``augment`` config): seeded, batched, per modality; bad keys named."""

from __future__ import annotations

import math
import re

import pytest
import torch

from dan.data.augment import augment_images, build_augment, elastic_displacement, warp_spectrograms
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


def test_image_affine_without_new_keys_keeps_its_random_stream() -> None:
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(0)
    a = augment_images(x, shift=2, rotate=10, scale=0.0, elastic=0.0)
    after = torch.rand(1)
    torch.manual_seed(0)
    angle, tx, ty = torch.rand(8), torch.rand(8), torch.rand(8)  # what the affine draws, in order
    assert torch.equal(torch.rand(1), after)  # nothing else was drawn
    rad = (angle * 2 - 1) * math.radians(10)
    theta = torch.stack([torch.stack([rad.cos(), -rad.sin(), (tx * 2 - 1) * 4 / 28], 1),
                         torch.stack([rad.sin(), rad.cos(), (ty * 2 - 1) * 4 / 28], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, [8, 1, 28, 28], align_corners=False)
    assert torch.allclose(a, torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border"), atol=1e-6)


def test_image_zoom_scales_about_the_centre_by_the_drawn_factor() -> None:
    x = torch.zeros(256, 1, 28, 28)
    x[:, :, 9:19, 9:19] = 1.0  # a 10-pixel square about the centre
    torch.manual_seed(0)
    out = augment_images(x, scale=0.3)
    side = (out[:, 0, 14] > 0.5).sum(dim=1).float()  # the square's width along its middle row
    assert side.min() >= 10 * 0.7 - 1 and side.max() <= 10 * 1.3 + 1 and side.std() > 1.0


def test_elastic_fields_are_smooth_seeded_and_scaled_by_alpha() -> None:
    torch.manual_seed(0)
    a = elastic_displacement(64, 28, 28, alpha=34, sigma=4)
    torch.manual_seed(0)
    b = elastic_displacement(64, 28, 28, alpha=17, sigma=4)
    assert a.shape == (64, 28, 28, 2) and torch.allclose(a, 2 * b)
    pixels = a * 14  # normalised units -> pixels on a 28-pixel side
    neighbour = (pixels[:, 1:] - pixels[:, :-1]).abs().mean()
    assert 0.5 < pixels.std() < 4.0 and neighbour < 0.25 * pixels.abs().mean()  # smooth, a few pixels
    rough = elastic_displacement(64, 28, 28, alpha=34, sigma=0) * 14
    assert (rough[:, 1:] - rough[:, :-1]).abs().mean() > 10 * neighbour


def test_elastic_smoothing_is_the_normalised_gaussian_blur() -> None:
    from torchvision.transforms.v2.functional import gaussian_blur

    torch.manual_seed(5)
    ours = elastic_displacement(16, 28, 28, alpha=1.0, sigma=3.0)
    torch.manual_seed(5)
    noise = torch.rand(16, 2, 28, 28) * 2 - 1
    blurred = gaussian_blur(noise, [25, 25], [3.0, 3.0]) * (2 / 28)  # 4 sigma either side, reflected
    assert torch.allclose(ours, blurred.permute(0, 2, 3, 1), atol=1e-6)


def test_elastic_distortion_moves_strokes_and_keeps_their_ink() -> None:
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0
    torch.manual_seed(3)
    out = build_augment({"image": {"elastic": 34, "elastic_sigma": 4}})({"image": x})["image"]
    moved = (out - x).abs().flatten(1).sum(dim=1)
    assert (moved > 1.0).all()  # every sample is distorted
    ink = out.flatten(1).sum(dim=1) / x.flatten(1).sum(dim=1)  # stretched and squeezed, kept on average
    assert 0.85 < ink.mean() < 1.15 and ink.min() > 0.4


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


def test_utterance_scale_gives_every_recording_unit_contrast() -> None:
    t = torch.arange(8000) / 8000
    burst = torch.sin(2 * torch.pi * 440 * t) * (t < 0.5)
    noise = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    waves = torch.stack([burst + 0.1 * noise, burst + 0.001 * noise])  # a noisy and a clean background
    cfg = FeatureConfig(utterance_norm=True, utterance_scale=True)
    plain, scaled = compute_features(waves, FeatureConfig(utterance_norm=True)), compute_features(waves, cfg)
    assert plain[1].std() > 2 * plain[0].std()
    torch.testing.assert_close(scaled.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(scaled, plain / plain.std(dim=(1, 2, 3), keepdim=True))
    assert "utterance_scale" not in FeatureConfig(utterance_norm=True).to_dict()  # old configs keep their hash
    assert cfg.to_dict()["utterance_scale"] is True


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"image": {"shfit": 2}}, "unknown key augment.image.shfit; valid keys: shift, rotate, scale, elastic, elastic_sigma (images)"),
        ({"audio": {"freq_mask": -1}}, "augment.audio: every value must be >= 0"),
        ({"audio": {"freq_warp": 1.2}}, "augment.audio: freq_warp and time_stretch are fractions"),
        ({"image": {"scale": 1.0}}, "augment.image.scale is a zoom fraction in [0, 1)"),
    ],
)
def test_bad_keys_are_named(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_augment(cfg)


def _ridge(band: int, frame: int) -> torch.Tensor:
    x = torch.zeros(64, 1, 40, 63)
    x[:, :, band, :] += 1.0
    x[:, :, :, frame] += 1.0
    return x


def _peaks(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the band of the horizontal ridge and the frame of the vertical one."""
    return out.mean(dim=3)[:, 0].argmax(dim=1), out.mean(dim=2)[:, 0].argmax(dim=1)


def test_warps_move_bands_and_frames_by_the_drawn_factors() -> None:
    x = _ridge(band=30, frame=20)
    assert warp_spectrograms(x) is x
    torch.manual_seed(0)
    bands, frames = _peaks(warp_spectrograms(x, freq_warp=0.15))
    # a band b of the output reads input band b / a: the ridge at 30 lands at 30 * a, a in [0.85, 1.15]
    assert bands.min() >= 25 and bands.max() <= 35 and len(set(bands.tolist())) >= 5
    assert torch.equal(frames, torch.full_like(frames, 20))
    torch.manual_seed(0)
    bands, frames = _peaks(warp_spectrograms(x, time_shift=4))
    assert torch.equal(bands, torch.full_like(bands, 30))
    assert frames.min() >= 16 and frames.max() <= 24 and len(set(frames.tolist())) >= 5
    torch.manual_seed(0)
    _, frames = _peaks(warp_spectrograms(x, time_stretch=0.2))
    assert frames.min() >= 16 and frames.max() <= 25 and len(set(frames.tolist())) >= 4


def test_warps_are_anchored_at_the_lowest_band_and_first_frame() -> None:
    x = torch.zeros(32, 1, 40, 63)
    x[:, :, 0, :] = 1.0
    x[:, :, :, 0] = 1.0
    torch.manual_seed(3)
    out = warp_spectrograms(x, freq_warp=0.2, time_stretch=0.2)
    assert torch.allclose(out[:, :, 0, :], x[:, :, 0, :], atol=1e-5)
    assert torch.allclose(out[:, :, :, 0], x[:, :, :, 0], atol=1e-5)


def test_audio_augment_with_warps_is_seeded() -> None:
    aug = build_augment({"audio": {"freq_warp": 0.1, "time_stretch": 0.1, "time_shift": 3, "freq_mask": 4}})
    x = torch.randn(8, 1, 40, 63)
    torch.manual_seed(5)
    a = aug({"audio": x})["audio"]
    torch.manual_seed(5)
    b = aug({"audio": x})["audio"]
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)


def test_a_modality_set_to_null_is_not_augmented_and_draws_nothing() -> None:
    """``augment.audio=null`` (the only override that removes a shipped config's audio augmentation: a dict
    override merges) leaves the audio batch as it is and draws nothing from the RNG."""
    from dan.config import load_config

    cfg = load_config("audio_only", ["augment.audio=null"])
    batch = {"audio": torch.randn(4, 1, 40, 32)}
    torch.manual_seed(0)
    out = build_augment(cfg.augment)(batch)
    assert torch.equal(out["audio"], batch["audio"])
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # the RNG is where the seed left it


def test_augment_naming_no_modality_of_the_data_is_refused_and_the_fix_validates() -> None:
    """A typo such as ``augment.imgae`` was silently left alone, training without the augmentation."""
    from dan.config import load_config

    with pytest.raises(ConfigError, match=r"augment.imgae names no modality of the data \(audio, image\).*augment.imgae=null"):
        load_config("avmnist_concat_offline", ["augment.imgae={shift: 2}"])
    load_config("avmnist_concat_offline", ["augment.imgae={shift: 2}", "augment.imgae=null"])
