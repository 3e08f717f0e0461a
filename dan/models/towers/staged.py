"""Towers whose convolution stages can be run one at a time, so a mid-fusion module (MMTM) can exchange
information between the modalities' feature maps between stages."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from dan.models.towers.freq_norm import RelaxedFreqNorm


@runtime_checkable
class StagedTower(Protocol):
    """A tower as ``readout(stage_S(... stage_1(stem(x))))``.

    ``stem``: the raw input checked and laid out for the first stage; ``stages()``: the stages in order,
    each ``[B, C_in, ...] -> [B, C_i, ...]`` (channels first); ``stage_channels()``: ``C_i`` per stage;
    ``readout``: the last feature map to tokens ``[B, N, D]``.
    """

    def stem(self, x: Tensor) -> Tensor: ...

    def stages(self) -> list[nn.Module]: ...

    def stage_channels(self) -> list[int]: ...

    def readout(self, fmap: Tensor) -> Tensor: ...


def split_stages(features: nn.Sequential) -> list[nn.Sequential]:
    """``conv_pool_stages``' flat ``Sequential`` cut after each pooling layer (and the
    :class:`RelaxedFreqNorm` that may follow it): one ``Sequential`` per stage (the same modules, so
    parameters and state-dict keys are unchanged)."""
    stages: list[nn.Sequential] = []
    current: list[nn.Module] = []
    for module in features:
        if current and isinstance(current[-1], (nn.MaxPool2d, RelaxedFreqNorm)) and not isinstance(module, RelaxedFreqNorm):
            stages.append(nn.Sequential(*current))
            current = []
        current.append(module)
    if current:
        stages.append(nn.Sequential(*current))
    return stages


def stage_widths(stages: list[nn.Sequential]) -> list[int]:
    """The output channels of each stage: its last convolution's ``out_channels``."""
    widths = []
    for stage in stages:
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        widths.append(convs[-1].out_channels)
    return widths
