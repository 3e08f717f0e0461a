"""Training-time augmentation of batches, per modality, configured by the ``augment`` config section:

```yaml
augment:
  image: {shift: 2, rotate: 10, scale: 0.1,   # pixels, degrees, zoom fraction: a random affine per sample
          elastic: 12, elastic_sigma: 4}       # elastic distortion (Simard et al. 2003), pixels
  audio: {freq_mask: 8, time_mask: 10, masks: 2, noise: 0.1,   # SpecAugment masks, Gaussian noise
          freq_warp: 0.1, time_stretch: 0.1, time_shift: 4}     # new voices: vocal tract, speed, onset
```

Transforms run batched on the batch's device and draw from torch's seeded global RNG (restored on resume);
recipes apply them to training batches only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.errors import ConfigError

Batch = dict[str, Tensor]
IMAGE_KEYS = ("shift", "rotate", "scale", "elastic", "elastic_sigma")
AUDIO_KEYS = ("freq_mask", "time_mask", "masks", "noise", "freq_warp", "time_stretch", "time_shift")


def augment_images(
    x: Tensor, shift: float = 0.0, rotate: float = 0.0, scale: float = 0.0, elastic: float = 0.0,
    elastic_sigma: float = 4.0,
) -> Tensor:
    """Random affine and elastic distortion of each image of ``x [B, C, H, W]`` (same shape), batched on
    ``x``'s device, drawn from torch's seeded global RNG; borders are replicated.

    The affine translates by up to ``shift`` pixels, rotates by up to ``rotate`` degrees and zooms by a factor
    from [1 - scale, 1 + scale]. The elastic distortion is Simard, Steinkraus & Platt (ICDAR 2003, section 2):
    a displacement field drawn uniformly from [-1, 1] per pixel and axis, smoothed by a Gaussian of std
    ``elastic_sigma`` pixels and multiplied by ``elastic`` (their alpha, in pixels; the paper's MNIST setting
    is alpha 34, sigma 4). Both act in one resampling of the input.
    """
    b, _, h, w = x.shape
    angle = (torch.rand(b) * 2 - 1) * math.radians(rotate)
    cos, sin = angle.cos(), angle.sin()
    if scale:  # drawn only when asked, so configs without it keep their random stream
        zoom = 1 + (torch.rand(b) * 2 - 1) * scale
        cos, sin = cos / zoom, sin / zoom
    tx, ty = (torch.rand(b) * 2 - 1) * 2 * shift / w, (torch.rand(b) * 2 - 1) * 2 * shift / h
    displacement = elastic_displacement(b, h, w, elastic, elastic_sigma) if elastic else None
    return resample(x, cos, sin, tx, ty, displacement)


def resample(
    x: Tensor, cos: Tensor, sin: Tensor, tx: Tensor, ty: Tensor, displacement: Tensor | None = None
) -> Tensor:
    """``x [B, C, H, W]`` (same shape) resampled through sample ``i``'s affine map ``[[cos, -sin, tx], [sin,
    cos, ty]]`` (``[B]`` each; ``tx``, ``ty`` in ``affine_grid``'s units: 2 / W and 2 / H per pixel), plus
    ``displacement [B, H, W, 2]`` when given; bilinear, borders replicated."""
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement.to(x)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


def move_images(x: Tensor, dx: float = 0.0, dy: float = 0.0, degrees: float = 0.0) -> Tensor:
    """Every image of ``x [B, C, H, W]`` (same shape) rotated by ``degrees`` about its centre (counter-clockwise
    as displayed, rows running down) and moved by ``dx`` pixels right and ``dy`` pixels down: the deterministic
    counterpart of :func:`augment_images`'s affine (the same resampling)."""
    b, _, h, w = x.shape
    angle = torch.full((b,), math.radians(degrees))
    return resample(x, angle.cos(), angle.sin(), torch.full((b,), -2 * dx / w), torch.full((b,), -2 * dy / h))


def elastic_displacement(b: int, h: int, w: int, alpha: float, sigma: float) -> Tensor:
    """Smoothed random displacement fields ``[B, H, W, 2]`` in ``grid_sample``'s normalised units (x, y):
    uniform [-1, 1] noise per pixel and axis, smoothed by a normalised Gaussian of std ``sigma`` pixels (a
    separable kernel of 4 sigma either side, at most the image's size, reflected at the borders), scaled to
    ``alpha`` pixels. Draws from torch's seeded global RNG on the CPU, so a seed gives the same fields on
    every device."""
    field = torch.rand(b * 2, 1, h, w) * 2 - 1
    if sigma > 0:
        half = min(math.ceil(4 * sigma), min(h, w) - 1)
        kernel = torch.exp(-0.5 * (torch.arange(-half, half + 1) / sigma) ** 2)
        kernel = kernel / kernel.sum()
        field = F.pad(field, (half, half, half, half), mode="reflect")
        field = F.conv2d(F.conv2d(field, kernel.view(1, 1, -1, 1)), kernel.view(1, 1, 1, -1))
    field = field.view(b, 2, h, w) * alpha * torch.tensor([2 / w, 2 / h]).view(1, 2, 1, 1)
    return field.permute(0, 2, 3, 1)


def warp_spectrograms(x: Tensor, freq_warp: float = 0.0, time_stretch: float = 0.0, time_shift: float = 0.0) -> Tensor:
    """Per-sample warps of features ``x [B, C, F, T]`` (same shape), batched on ``x``'s device: the frequency
    axis scaled by a factor drawn from [1 - freq_warp, 1 + freq_warp] about the lowest band (vocal tract
    length perturbation, Jaitly & Hinton 2013, applied to the mel axis: a longer or shorter vocal tract moves
    every formant by one factor), the time axis by one from [1 - time_stretch, 1 + time_stretch] about the first
    frame (speaking rate; the feature-space counterpart of speed perturbation), then shifted by up to
    ``time_shift`` frames either way (onset). Edges repeat the border bins. Draws from torch's seeded global RNG."""
    b = x.shape[0]
    if not (freq_warp or time_stretch or time_shift):
        return x

    def draw(scale: float) -> Tensor:
        return (torch.rand(b) * 2 - 1) * scale

    return scale_axes(x, 1 + draw(freq_warp), 1 + draw(time_stretch), draw(time_shift))


def scale_axes(x: Tensor, freq: Tensor, time: Tensor, shift: Tensor | None = None) -> Tensor:
    """Features ``x [B, C, F, T]`` (same shape) with sample ``i``'s frequency axis scaled by ``freq[i]`` about
    the lowest band, its time axis by ``time[i]`` about the first frame, then shifted by ``shift[i]`` frames
    (``freq``, ``time``, ``shift``: ``[B]``); bilinear, edges repeat the border bins."""
    b, _, _, t = x.shape
    d = torch.zeros(b) if shift is None else shift * 2 / max(t - 1, 1)
    zero = torch.zeros(b)
    theta = torch.stack(
        [torch.stack([1 / time, zero, 1 / time - 1 - d], 1), torch.stack([zero, 1 / freq, 1 / freq - 1], 1)], 1
    )
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True, padding_mode="border")


def augment_spectrograms(
    x: Tensor, freq_mask: int = 0, time_mask: int = 0, masks: int = 1, noise: float = 0.0,
    freq_warp: float = 0.0, time_stretch: float = 0.0, time_shift: float = 0.0,
) -> Tensor:
    """Augmentation of features ``x [B, C, F, T]`` (same shape): first :func:`warp_spectrograms`, then
    SpecAugment: ``masks`` frequency bands of up to ``freq_mask`` rows and ``masks`` time spans of up to
    ``time_mask`` frames set to the mean (0 for standardised features), each drawn per sample (torchaudio's
    ``mask_along_axis_iid``), then Gaussian noise of std ``noise`` (standardised units). Draws from torch's
    seeded global RNG."""
    import torchaudio.functional as AF

    x = warp_spectrograms(x, freq_warp, time_stretch, time_shift)

    for _ in range(masks):
        if freq_mask:
            x = AF.mask_along_axis_iid(x, freq_mask, 0.0, axis=2)
        if time_mask:
            x = AF.mask_along_axis_iid(x, time_mask, 0.0, axis=3)
    if noise:
        x = x + noise * torch.randn(x.shape, device=x.device, dtype=x.dtype)
    return x


def _transform(m: str, spec: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    keys = AUDIO_KEYS if any(k in spec for k in AUDIO_KEYS) else IMAGE_KEYS
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        valid = f"{', '.join(IMAGE_KEYS)} (images) or {', '.join(AUDIO_KEYS)} (spectrograms)"
        raise ConfigError(f"unknown key augment.{m}.{unknown[0]}; valid keys: {valid}")
    if any(float(v) < 0 for v in spec.values()):
        raise ConfigError(f"augment.{m}: every value must be >= 0, got {spec}")
    if keys == AUDIO_KEYS:
        f, t = int(spec.get("freq_mask", 0)), int(spec.get("time_mask", 0))
        n, noise = int(spec.get("masks", 1)), float(spec.get("noise", 0.0))
        warps = {k: float(spec.get(k, 0.0)) for k in ("freq_warp", "time_stretch", "time_shift")}
        if warps["freq_warp"] >= 1 or warps["time_stretch"] >= 1:
            raise ConfigError(f"augment.{m}: freq_warp and time_stretch are fractions in [0, 1), got {spec}")
        return lambda x: augment_spectrograms(x, f, t, n, noise, **warps)
    image = {k: float(spec[k]) for k in IMAGE_KEYS if k in spec}
    if image.get("scale", 0.0) >= 1:
        raise ConfigError(f"augment.{m}.scale is a zoom fraction in [0, 1), got {spec}")
    return lambda x: augment_images(x, **image)


def build_augment(cfg: Mapping[str, Any] | None) -> Callable[[Mapping[str, Tensor]], Batch]:
    """``augment`` config ``{modality: {...}}`` -> a transform of training batches (identity when empty; a
    modality set to null or ``{}`` is left alone: ``augment.audio=null`` turns off a shipped config's audio
    augmentation, which a dict override cannot, since overrides merge into the config's dict).

    A modality takes image keys (``shift``, ``rotate``, ``scale``: a random affine; ``elastic``,
    ``elastic_sigma``: an elastic distortion; :func:`augment_images`) or spectrogram keys
    (``freq_mask``, ``time_mask``, ``masks``, ``noise``: SpecAugment; ``freq_warp``, ``time_stretch``,
    ``time_shift``: :func:`warp_spectrograms`); both act on ``[B, C, H, W]`` inputs.
    A ConfigError names any other key. Masked samples (``<m>_mask`` False) are transformed too: the model
    ignores them.
    """
    transforms = {m: _transform(m, dict(spec)) for m, spec in dict(cfg or {}).items() if spec}

    def apply(batch: Mapping[str, Tensor]) -> Batch:
        out = dict(batch)
        for m, fn in transforms.items():
            if m in out:
                if out[m].dim() != 4:
                    raise ConfigError(f"augment.{m} applies to image batches [B, C, H, W]; {m} is {list(out[m].shape)}")
                out[m] = fn(out[m])
        return out

    return apply


def check_augment(cfg: Mapping[str, Any] | None, modalities: Collection[str]) -> None:
    """The ``augment`` config's keys (:func:`build_augment`) and its modalities: one with a spec that the data
    does not give (a typo, ``augment.imgae``) would be silently left alone; a ConfigError names it instead."""
    build_augment(cfg)
    refuse_unused_augment(cfg, modalities, "the data")


def refuse_unused_augment(cfg: Mapping[str, Any] | None, modalities: Collection[str], of: str) -> None:
    """A ConfigError naming the first ``augment.<m>`` spec whose ``m`` is not in ``modalities`` (those of
    ``of``: the data, the model's towers), with the override that drops it."""
    unknown = sorted(m for m, spec in dict(cfg or {}).items() if spec and m not in modalities)
    if unknown:
        raise ConfigError(
            f"augment.{unknown[0]} names no modality of {of} ({', '.join(sorted(modalities))}): fix the name "
            f"or drop it with augment.{unknown[0]}=null"
        )
