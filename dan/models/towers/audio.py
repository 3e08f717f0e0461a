"""Audio towers: log-mel spectrograms ``[B, 1, n_mels, T]`` -> time tokens ``[B, T', D]``."""

from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.models.towers.freq_norm import RelaxedFreqNorm, check_relaxation
from dan.models.towers.image import conv_pool_stages, to_memory_format, use_channels_last
from dan.models.towers.registry import check_input, positive_ints, register_tower
from dan.models.towers.staged import split_stages, stage_widths

AUDIO_READOUTS = ("column", "freq_mean", "freq_max")


@register_tower("audio_cnn")
class AudioCNN(nn.Module):
    """2-D CNN over the spectrogram: per stage ``conv3x3-BN-ReLU-maxpool2``, then one token per remaining
    time step.

    ``[B, in_channels, n_mels, T] -> [B, T // 2**S, dim]`` for ``S = len(channels)`` stages.
    ``readout="column"`` (the default) projects each time step's whole ``(channel, mel)`` column, so a
    token knows at which mel band a pattern lies; ``"freq_mean"`` and ``"freq_max"`` first pool the mel
    axis away (``[B, C, f, t] -> [B, C, t]``), so a pattern counts the same at any band, as a voice's
    formants move between speakers.
    ``channels_last`` stores the feature maps channels-last (same results, faster convolutions).
    ``freq_norm`` > 0 adds relaxed instance frequency-wise normalisation with that lambda at the end of each
    stage, after its pooling (:class:`RelaxedFreqNorm`; 0, the default, leaves the stages as they were,
    state-dict keys included).
    """

    def __init__(
        self,
        n_mels: int = 40,
        dim: int = 64,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32),
        channels_last: bool = False,
        freq_norm: float = 0.0,
        readout: str = "column",
    ) -> None:
        super().__init__()
        channels = positive_ints("audio_cnn", "channels", channels)
        if readout not in AUDIO_READOUTS:
            raise ConfigError(
                f"tower 'audio_cnn': readout={readout!r} is not valid; valid choices: {', '.join(AUDIO_READOUTS)}"
            )
        freq_norm = check_relaxation(freq_norm, "tower 'audio_cnn'")
        bins = n_mels // 2 ** len(channels)
        if bins < 1:
            raise ConfigError(
                f"tower 'audio_cnn': n_mels={n_mels} is too small for {len(channels)} pooling stages; "
                "raise n_mels or use fewer channels entries"
            )
        self.n_mels, self.in_channels, self.out_dim = n_mels, in_channels, dim
        self.features = conv_pool_stages(in_channels, channels)
        if freq_norm:
            self.features = with_freq_norm(self.features, freq_norm)
        self.readout_kind = readout
        self.proj = nn.Linear(channels[-1] * (bins if readout == "column" else 1), dim)
        self.channels_last = use_channels_last(self, channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, n_mels, T]`` -> time tokens ``[B, T // 2**S, dim]``."""
        return self.readout(self.features(self.stem(x)))

    def stem(self, x: Tensor) -> Tensor:
        """``x [B, in_channels, n_mels, T]`` checked and laid out for the first stage."""
        check_input(
            "audio_cnn", x, "[B, in_channels, n_mels, T]", 4, [(1, self.in_channels), (2, self.n_mels)]
        )
        return to_memory_format(x, self.channels_last)

    def stages(self) -> list[nn.Module]:
        """The ``conv-BN-ReLU-maxpool2`` stages, in order (a :class:`StagedTower`)."""
        return list(split_stages(self.features))

    def stage_channels(self) -> list[int]:
        """Output channels of each stage."""
        return stage_widths(split_stages(self.features))

    def readout(self, fmap: Tensor) -> Tensor:
        """The last stage's ``[B, C, f, t]`` -> time tokens ``[B, t, dim]``."""
        if self.readout_kind == "freq_mean":
            fmap = fmap.mean(dim=2, keepdim=True)
        elif self.readout_kind == "freq_max":
            fmap = fmap.amax(dim=2, keepdim=True)
        return self.proj(rearrange(fmap, "b c f t -> b t (c f)"))


def with_freq_norm(features: nn.Sequential, lam: float) -> nn.Sequential:
    """``conv_pool_stages``' layers with a :class:`RelaxedFreqNorm` of ``lam`` after each pooling layer."""
    layers: list[nn.Module] = []
    for module in features:
        layers.append(module)
        if isinstance(module, nn.MaxPool2d):
            layers.append(RelaxedFreqNorm(lam))
    return nn.Sequential(*layers)


@register_tower("audio_tcn")
class AudioTCN(nn.Module):
    """Temporal convolution network over mel frames: the mel bins are the input channels of a stack of
    residual dilated ``Conv1d-BN-ReLU`` blocks (dilation 1, 2, 4, ...), then a ``pool``-fold max-pool
    over time and a 1x1 projection.

    ``[B, 1, n_mels, T]`` (or ``[B, n_mels, T]``) ``-> [B, T // pool, dim]``.
    """

    def __init__(
        self,
        n_mels: int = 40,
        dim: int = 64,
        channels: int = 64,
        layers: int = 3,
        kernel_size: int = 3,
        pool: int = 2,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"tower 'audio_tcn': kernel_size must be odd and positive, got {kernel_size}")
        if layers < 0 or pool < 1 or channels < 1:
            raise ConfigError(
                f"tower 'audio_tcn': need layers >= 0, pool >= 1, channels >= 1; got {layers}, {pool}, {channels}"
            )
        self.n_mels, self.out_dim = n_mels, dim
        self.stem = nn.Sequential(
            nn.Conv1d(n_mels, channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(
                    channels,
                    channels,
                    kernel_size,
                    padding=2**i * (kernel_size // 2),
                    dilation=2**i,
                    bias=False,
                ),
                nn.BatchNorm1d(channels),
                nn.ReLU(inplace=True),
            )
            for i in range(layers)
        )
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()
        self.proj = nn.Conv1d(channels, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, 1, n_mels, T]`` or ``[B, n_mels, T]`` -> time tokens ``[B, T // pool, dim]``."""
        if x.dim() == 4:
            check_input("audio_tcn", x, "[B, 1, n_mels, T]", 4, [(1, 1), (2, self.n_mels)])
            x = rearrange(x, "b 1 f t -> b f t")
        check_input("audio_tcn", x, "[B, 1, n_mels, T] or [B, n_mels, T]", 3, [(1, self.n_mels)])
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return rearrange(self.proj(self.pool(h)), "b d t -> b t d")
