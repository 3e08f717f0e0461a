"""Image towers: ``[B, C, H, W]`` images -> grid tokens ``[B, grid*grid, D]``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.models.towers.registry import check_input, positive_ints, register_tower
from dan.models.towers.staged import split_stages, stage_widths


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: ``[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_pool_stages(c_in: int, channels: Sequence[int], depth: int = 1) -> nn.Sequential:
    """Per width ``c``: ``depth`` x ``conv3x3-BN-ReLU``, then ``maxpool2``;
    ``[B, c_in, H, W] -> [B, channels[-1], H/2^S, W/2^S]``."""
    stages: list[nn.Module] = []
    for c in channels:
        for _ in range(depth):
            stages.append(conv_bn_relu(c_in, c))
            c_in = c
        stages.append(nn.MaxPool2d(2))
    return nn.Sequential(*stages)


def use_channels_last(tower: nn.Module, enabled: bool) -> bool:
    """Store ``tower``'s 4-D weights channels-last when ``enabled`` (its ``forward`` then converts the
    input with :func:`to_memory_format`); the math is unchanged, CPU and CUDA convolutions run faster."""
    if enabled:
        tower.to(memory_format=torch.channels_last)
    return bool(enabled)


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """``x [B, C, H, W]`` in channels-last memory layout when ``channels_last``, else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class GridTokens(nn.Module):
    """Feature map ``[B, C, H, W]`` -> tokens ``[B, grid*grid, dim]`` (1x1 projection, adaptive pool,
    learned position embedding)."""

    def __init__(self, channels: int, dim: int, grid: int) -> None:
        super().__init__()
        if grid < 1:
            raise ConfigError(f"tower grid must be >= 1, got {grid}; fix model.towers.<m>.grid")
        self.proj = nn.Conv2d(channels, dim, 1)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)

    def forward(self, fmap: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, grid*grid, dim]``."""
        return rearrange(self.pool(self.proj(fmap)), "b d h w -> b (h w) d") + self.pos


class FlattenTokens(nn.Module):
    """Feature map ``[B, C, H, W]`` -> flattened, dropout, one linear map -> ``[B, tokens, dim]``: every
    position keeps its own weights (what a plain CNN's fully connected layer does), nothing is averaged away."""

    def __init__(self, channels: int, height: int, width: int, dim: int, tokens: int, dropout: float) -> None:
        super().__init__()
        if tokens < 1:
            raise ConfigError(f"tower tokens must be >= 1, got {tokens}; fix model.towers.<m>.tokens")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"tower dropout must lie in [0, 1), got {dropout}; fix model.towers.<m>.dropout")
        self.tokens, self.dim = tokens, dim
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(channels * height * width, tokens * dim)

    def forward(self, fmap: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, tokens, dim]``."""
        return rearrange(self.proj(self.drop(fmap.flatten(1))), "b (n d) -> b n d", n=self.tokens)


READOUTS = ("grid", "flatten")


@register_tower("image_cnn")
class ImageCNN(nn.Module):
    """Small CNN: per stage ``depth`` x ``conv3x3-BN-ReLU``, then ``maxpool2``; then a readout to tokens.

    ``readout="grid"``: the feature map average-pooled to ``grid x grid`` tokens with a learned position
    embedding (``[B, grid², dim]``; two stages map 28x28 to 7x7, i.e. 49 tokens at ``grid=7``).
    ``readout="flatten"``: the whole feature map flattened (with ``dropout``) into ``tokens`` tokens by one
    linear map (``[B, tokens, dim]``; needs ``input_size``), as a plain CNN's fully connected layer: no
    position is averaged with another. ``channels_last`` stores the feature maps channels-last (same
    results, faster convolutions).
    """

    def __init__(
        self,
        dim: int = 64,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32),
        grid: int = 7,
        channels_last: bool = False,
        depth: int = 1,
        readout: str = "grid",
        tokens: int = 1,
        dropout: float = 0.0,
        input_size: int = 28,
    ) -> None:
        super().__init__()
        channels = positive_ints("image_cnn", "channels", channels)
        (depth,) = positive_ints("image_cnn", "depth", [depth])
        if readout not in READOUTS:
            raise ConfigError(f"tower 'image_cnn': readout={readout!r} is not valid; valid choices: {', '.join(READOUTS)}")
        self.in_channels = in_channels
        self.out_dim = dim
        self.features = conv_pool_stages(in_channels, channels, depth)
        if readout == "grid":
            self.tokens: nn.Module = GridTokens(channels[-1], dim, grid)
        else:
            side = input_size
            for _ in channels:
                side //= 2
            if side < 1:
                raise ConfigError(f"tower 'image_cnn': input_size {input_size} is too small for {len(channels)} stages")
            self.tokens = FlattenTokens(channels[-1], side, side, dim, tokens, dropout)
        self.channels_last = use_channels_last(self, channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, H, W]`` -> tokens ``[B, grid*grid, dim]``."""
        return self.readout(self.features(self.stem(x)))

    def stem(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, H, W]`` checked and laid out for the first stage."""
        check_input("image_cnn", x, "[B, in_channels, H, W]", 4, [(1, self.in_channels)])
        return to_memory_format(x, self.channels_last)

    def stages(self) -> list[nn.Module]:
        """The ``conv-BN-ReLU ... maxpool2`` stages, in order (a :class:`StagedTower`)."""
        return list(split_stages(self.features))

    def stage_channels(self) -> list[int]:
        """Output channels of each stage."""
        return stage_widths(split_stages(self.features))

    def readout(self, fmap: Tensor) -> Tensor:
        """The last stage's ``[B, C, h, w]`` -> tokens ``[B, N, dim]``."""
        return self.tokens(fmap)


@register_tower("image_resnet")
class ImageResNet(nn.Module):
    """ResNet-style tower: 3x3 stem, then one stage of torchvision ``BasicBlock``s per width (the first
    at stride 1, the rest at stride 2): ``[B, C, H, W] -> [B, grid², dim]``.

    ``widths=(32, 64, 128), blocks=(2, 2, 2)`` maps 28x28 to a 7x7 map (ResNet-14-like); deepen it with
    more blocks per stage.
    """

    def __init__(
        self,
        dim: int = 64,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        blocks: Sequence[int] = (2, 2, 2),
        grid: int = 7,
    ) -> None:
        from torchvision.models.resnet import BasicBlock  # torchvision costs seconds of import time

        super().__init__()
        widths = positive_ints("image_resnet", "widths", widths)
        blocks = positive_ints("image_resnet", "blocks", blocks)
        if len(widths) != len(blocks):
            raise ConfigError(
                f"tower 'image_resnet': widths {widths} and blocks {blocks} must have the same length"
            )
        self.in_channels = in_channels
        self.out_dim = dim
        layers: list[nn.Module] = [conv_bn_relu(in_channels, widths[0])]
        c_in = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if stride != 1 or c_in != width:
                    down = nn.Sequential(
                        nn.Conv2d(c_in, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
                    )
                layers.append(BasicBlock(c_in, width, stride=stride, downsample=down))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.tokens = GridTokens(c_in, dim, grid)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, H, W]`` -> tokens ``[B, grid*grid, dim]``."""
        check_input("image_resnet", x, "[B, in_channels, H, W]", 4, [(1, self.in_channels)])
        return self.tokens(self.features(x))
