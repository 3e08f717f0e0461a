"""Test-time augmentation: a model's predictions averaged over fixed views of each batch, configured by
``eval.tta`` and used wherever ``eval.*`` applies (the test at the end of training, ``dan eval``,
``dan predict``), never in training or validation:

```yaml
eval:
  tta:
    audio: {freq_warp: [0.95, 1.0, 1.05]}   # mel-axis scale factors, one view each (1.0: the batch as is)
    image: {shift: [-0.5, 0, 0.5],           # pixels: each value a view moved right and one moved down
            rotate: [-5, 5]}                 # degrees: one view each
```

``freq_warp`` scales the frequency axis of ``[C, F, T]`` inputs (:func:`dan.data.augment.scale_axes`, the
deterministic counterpart of training's ``augment.<m>.freq_warp``, vocal tract length perturbation);
``shift`` and ``rotate`` move ``[C, H, W]`` inputs (:func:`dan.data.augment.move_images`, the counterpart of
``augment.<m>.shift`` and ``rotate``). A modality's views are those of each of its keys, the unchanged batch
once (``1.0``, ``0``); with several modalities listed every combination is a view. The views'
log-probabilities are averaged (the normalised geometric mean of their probabilities), for the fused head and
each modality's head alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from dan.batch import Transform
from dan.data.augment import move_images, scale_axes
from dan.errors import ConfigError
from dan.models.output import DANOutput

# key -> (what a value is, an example that validates, lowest, highest)
TTA_KEYS: dict[str, tuple[str, str, float, float]] = {
    "freq_warp": ("scale factors", "[0.95,1.0,1.05]", 0.5, 2.0),
    "shift": ("pixel offsets", "[-0.5,0,0.5]", -8.0, 8.0),
    "rotate": ("angles in degrees", "[-5,0,5]", -45.0, 45.0),
}


@dataclass(frozen=True)
class View:
    """One deterministic view of a ``[B, C, H, W]`` batch: the frequency (height) axis scaled by ``freq``,
    then the image rotated by ``degrees`` and moved by ``dx``, ``dy`` pixels; the default is the batch as is."""

    freq: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    degrees: float = 0.0

    def __call__(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> the view, same shape."""
        b = x.shape[0]
        if self.freq != 1.0:
            x = scale_axes(x, torch.full((b,), self.freq), torch.ones(b))
        if self.dx or self.dy or self.degrees:
            x = move_images(x, self.dx, self.dy, self.degrees)
        return x


def check_tta(cfg: Mapping[str, Any] | None) -> dict[str, list[View]]:
    """``eval.tta`` -> ``{modality: [View]}`` (the unchanged view once, where a key lists it); a ConfigError
    names a bad key or value and a value that validates."""
    out: dict[str, list[View]] = {}
    for m, spec in dict(cfg or {}).items():
        if not spec:
            continue
        spec = {k: v for k, v in spec.items() if v is not None}
        unknown = sorted(set(spec) - set(TTA_KEYS))
        if unknown:
            key = f"eval.tta.{m}.{unknown[0]}"
            raise ConfigError(f"unknown key {key}; valid keys: {', '.join(TTA_KEYS)}; drop it with {key}=null")
        found: list[View] = []
        for key, values in spec.items():
            what, example, low, high = TTA_KEYS[key]
            if not isinstance(values, Sequence) or isinstance(values, str) or not values:
                raise ConfigError(f"eval.tta.{m}.{key} is a list of {what}, e.g. eval.tta.{m}.{key}={example}; got {values!r}")
            if any(isinstance(v, bool) or not isinstance(v, int | float) or not low <= float(v) <= high for v in values):
                raise ConfigError(
                    f"eval.tta.{m}.{key}: every value must lie in [{low:g}, {high:g}], got {list(values)}; "
                    f"e.g. eval.tta.{m}.{key}={example}"
                )
            for v in map(float, values):
                if key == "freq_warp":
                    found.append(View(freq=v))
                elif key == "shift":
                    found += [View(dx=v), View(dy=v)]
                else:
                    found.append(View(degrees=v))
        if found:
            out[m] = list(dict.fromkeys(found))
    return out


def no_spatial_axes(m: str, found: str) -> ConfigError:
    """The error for ``eval.tta.<m>`` on inputs that are not ``[C, H, W]`` or ``[C, F, T]``, with the override
    that drops it."""
    return ConfigError(
        f"eval.tta.{m} views need [C, H, W] or [C, F, T] inputs; {found}: drop it with eval.tta.{m}=null"
    )


def check_tta_inputs(cfg: Mapping[str, Any] | None, split: Any, modalities: Sequence[str]) -> None:
    """Before training: every ``eval.tta`` modality is one of the model's ``modalities`` and ``split``'s
    samples of it (``split`` None: unchecked) are ``[C, H, W]``; a ConfigError names the key and how to drop
    it otherwise."""
    for m in check_tta(cfg):
        if m not in modalities:
            raise ConfigError(
                f"eval.tta.{m}: the model has no {m} tower (towers: {', '.join(modalities)}); "
                f"drop it with eval.tta.{m}=null"
            )
        if split is not None and m in split.modalities:
            shape = list(split.batch(torch.arange(1))[m].shape[1:])
            if len(shape) != 3:
                raise no_spatial_axes(m, f"{m} samples are {shape}")


def views(per_modality: Mapping[str, Sequence[View]]) -> list[Transform]:
    """One batch transform per combination of the modalities' views (``[B, C, H, W]`` inputs); none for no
    views (a plain forward)."""
    names = list(per_modality)
    if not names:
        return []

    def transform(combo: tuple[View, ...]) -> Transform:
        def apply(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            out = dict(batch)
            for m, v in zip(names, combo, strict=True):
                if m in out and v != View():
                    if out[m].dim() != 4:
                        raise no_spatial_axes(m, f"{m} batches are {list(out[m].shape)}")
                    out[m] = v(out[m])
            return out

        return apply

    return [transform(combo) for combo in itertools.product(*(per_modality[m] for m in names))]


def mean_log_probs(logits: Sequence[Tensor]) -> Tensor:
    """The mean over views of ``log_softmax(logits)``, ``[B, C]`` each -> ``[B, C]`` (float32)."""
    return torch.stack([lg.float().log_softmax(-1) for lg in logits]).mean(0)


class TestTimeAugmented(nn.Module):
    """``model`` whose output averages its outputs over ``views`` of the batch (see the module docstring).
    ``logits`` and ``modality_logits`` are the mean log-probabilities; ``embeddings``, ``fused`` and
    ``present`` are the first view's; ``contributions`` is None (an average of log-probabilities does not
    decompose per modality)."""

    def __init__(self, model: nn.Module, transforms: Sequence[Transform]) -> None:
        super().__init__()
        self.model = model
        self.transforms = list(transforms)

    def forward(self, batch: Mapping[str, Tensor]) -> DANOutput:
        """``{m: [B, ...]}`` -> :class:`DANOutput` with ``logits [B, C]`` averaged over the views."""
        return averaged_output(self.model, self.transforms, batch)


def averaged_output(model: nn.Module, transforms: Sequence[Transform], batch: Mapping[str, Tensor]) -> DANOutput:
    """``model``'s :class:`DANOutput` on ``batch`` ``{m: [B, ...]}`` averaged over the views ``transforms``
    (as :class:`TestTimeAugmented`); a plain forward when there are none."""
    if not transforms:
        return model(batch)
    outs = [model(t(dict(batch))) for t in transforms]
    first = outs[0]
    return replace(
        first,
        logits=mean_log_probs([o.logits for o in outs]),
        modality_logits={m: mean_log_probs([o.modality_logits[m] for o in outs]) for m in first.modality_logits},
        contributions=None,
    )


def with_tta(model: nn.Module, cfg: Mapping[str, Any] | None) -> nn.Module:
    """``model`` wrapped in :class:`TestTimeAugmented` for ``eval.tta`` ``cfg``; ``model`` itself when empty."""
    factors = check_tta(cfg)
    return TestTimeAugmented(model, views(factors)) if factors else model
