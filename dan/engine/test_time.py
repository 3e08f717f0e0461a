"""Test-time augmentation: a model's predictions averaged over fixed views of each batch, configured by
``eval.tta`` and used wherever ``eval.*`` applies (the test at the end of training, ``dan eval``,
``dan predict``), never in training or validation:

```yaml
eval:
  tta:
    audio: {freq_warp: [0.95, 1.0, 1.05]}   # mel-axis scale factors, one view each (1.0: the batch as is)
```

Each view scales the modality's frequency axis by one factor (:func:`dan.data.augment.scale_axes`: the
deterministic counterpart of training's ``augment.<m>.freq_warp``, vocal tract length perturbation); with
several modalities listed every combination is a view. The views' log-probabilities are averaged (the
normalised geometric mean of their probabilities), for the fused head and each modality's head alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from dan.batch import Transform
from dan.data.augment import scale_axes
from dan.errors import ConfigError
from dan.models.output import DANOutput

TTA_KEYS = ("freq_warp",)


def check_tta(cfg: Mapping[str, Any] | None) -> dict[str, list[float]]:
    """``eval.tta`` -> ``{modality: [freq_warp factors]}``; a ConfigError names a bad key or factor."""
    factors: dict[str, list[float]] = {}
    for m, spec in dict(cfg or {}).items():
        if not spec:
            continue
        unknown = sorted(set(spec) - set(TTA_KEYS))
        if unknown:
            raise ConfigError(f"unknown key eval.tta.{m}.{unknown[0]}; valid keys: {', '.join(TTA_KEYS)}")
        values = spec.get("freq_warp")
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ConfigError(f"eval.tta.{m}.freq_warp is a list of scale factors, e.g. [0.95,1.0,1.05]; got {values!r}")
        if any(not isinstance(v, int | float) or not 0.5 <= float(v) <= 2.0 for v in values):
            raise ConfigError(f"eval.tta.{m}.freq_warp: every factor must lie in [0.5, 2], got {list(values)}")
        factors[m] = [float(v) for v in values]
    return factors


def no_frequency_axis(m: str, found: str) -> ConfigError:
    """The error for ``eval.tta.<m>`` on inputs without a ``[C, F, T]`` layout, with the override that drops it."""
    return ConfigError(f"eval.tta.{m} scales the frequency axis of [C, F, T] inputs; {found}: drop it with eval.tta.{m}=null")


def check_tta_inputs(cfg: Mapping[str, Any] | None, split: Any, modalities: Sequence[str]) -> None:
    """Before training: every ``eval.tta`` modality is one of the model's ``modalities`` and ``split``'s
    samples of it (``split`` None: unchecked) are ``[C, F, T]``; a ConfigError names the key and how to drop it otherwise."""
    for m in check_tta(cfg):
        if m not in modalities:
            raise ConfigError(
                f"eval.tta.{m}: the model has no {m} tower (towers: {', '.join(modalities)}); "
                f"drop it with eval.tta.{m}=null"
            )
        if split is not None and m in split.modalities:
            shape = list(split.batch(torch.arange(1))[m].shape[1:])
            if len(shape) != 3:
                raise no_frequency_axis(m, f"{m} samples are {shape}")


def views(factors: Mapping[str, Sequence[float]]) -> list[Transform]:
    """One batch transform per combination of the modalities' factors (``[B, C, F, T]`` inputs); none for
    no factors (a plain forward)."""
    names = list(factors)
    if not names:
        return []

    def view(combo: tuple[float, ...]) -> Transform:
        def apply(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            out = dict(batch)
            for m, f in zip(names, combo, strict=True):
                if m in out and f != 1.0:
                    x = out[m]
                    if x.dim() != 4:
                        raise no_frequency_axis(m, f"{m} batches are {list(x.shape)}")
                    out[m] = scale_axes(x, torch.full((x.shape[0],), f), torch.ones(x.shape[0]))
            return out

        return apply

    return [view(combo) for combo in itertools.product(*(factors[m] for m in names))]


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
