"""Training-time augmentation of batches, per modality, configured by the ``augment`` config section:

```yaml
augment:
  image: {shift: 2, rotate: 10}     # pixels, degrees: a random affine per sample
```

Transforms run batched on the batch's device and draw from torch's seeded global RNG (restored on resume);
recipes apply them to training batches only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.errors import ConfigError

Batch = dict[str, Tensor]
IMAGE_KEYS = ("shift", "rotate")


def augment_images(x: Tensor, shift: float = 0.0, rotate: float = 0.0) -> Tensor:
    """Random translation (up to ``shift`` pixels) and rotation (up to ``rotate`` degrees) of each image of
    ``x [B, C, H, W]`` (same shape), drawn from torch's seeded global RNG; borders are replicated."""
    b, _, h, w = x.shape
    angle = (torch.rand(b) * 2 - 1) * math.radians(rotate)
    cos, sin = angle.cos(), angle.sin()
    tx, ty = (torch.rand(b) * 2 - 1) * 2 * shift / w, (torch.rand(b) * 2 - 1) * 2 * shift / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


def build_augment(cfg: Mapping[str, Any] | None) -> Callable[[Mapping[str, Tensor]], Batch]:
    """``augment`` config ``{modality: {...}}`` -> a transform of training batches (identity when empty).

    Only image modalities (``[B, C, H, W]`` inputs) take ``shift``/``rotate`` today; a ConfigError names
    any other key.
    """
    transforms: dict[str, Callable[[Tensor], Tensor]] = {}
    for m, spec in dict(cfg or {}).items():
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(IMAGE_KEYS))
        if unknown:
            raise ConfigError(f"unknown key augment.{m}.{unknown[0]}; valid keys: {', '.join(IMAGE_KEYS)}")
        shift, rotate = float(spec.get("shift", 0.0)), float(spec.get("rotate", 0.0))
        if shift < 0 or rotate < 0:
            raise ConfigError(f"augment.{m}: shift and rotate must be >= 0, got {shift}, {rotate}")
        transforms[m] = lambda x, s=shift, r=rotate: augment_images(x, s, r)

    def apply(batch: Mapping[str, Tensor]) -> Batch:
        out = dict(batch)
        for m, fn in transforms.items():
            if m in out:
                if out[m].dim() != 4:
                    raise ConfigError(f"augment.{m} applies to image batches [B, C, H, W]; {m} is {list(out[m].shape)}")
                out[m] = fn(out[m])
        return out

    return apply
