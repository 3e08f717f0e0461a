"""Mid fusion: modules that exchange information between the towers' feature maps *between* their stages
(before the trunk and the late fusion). Configured as ``model.mid_fusion: {name: mmtm, ...}``.

``mmtm``: the multimodal transfer module (Joze, Shaban, Iuzzolino & Koishida, CVPR 2020), as the greedy
learning paper uses it (Wu, Jastrzębski, Cho & Geras, ICML 2022; nyukat/greedy_multimodal_learning
``src/balanced_mmtm.py``): after a chosen stage every modality's feature map is squeezed to its channel
means, the squeezes of all modalities are concatenated, mapped by one shared layer (ReLU), and each
modality's channels are rescaled by ``sigmoid(excite_m(·))``. These cross-modal connections are the
*bypass* paths whose learning speed the ``greedy`` balancer compares with the towers' own.

Missing modalities: an absent modality's squeeze is zero (its slot enters through ``torch.where``), so a
sample whose modality is masked gets the same output as one in a batch without that modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.models.towers.staged import StagedTower
from dan.registry import Registry

MID_FUSIONS: Registry[nn.Module] = Registry("mid fusions")


class MMTMBlock(nn.Module):
    """One MMTM between the modalities' maps ``{m: [B, C_m, ...]}`` after one stage.

    Attributes:
        frozen: a modality whose excitation is replaced, in training, by the running mean of its
            excitations so far (greedy learning's re-balancing step: that modality gets no cross-modal
            information); ``None`` for the normal forward.
    """

    def __init__(self, channels: Mapping[str, int], ratio: float = 4) -> None:
        super().__init__()
        self.modalities = sorted(channels)
        self.channels = {m: int(channels[m]) for m in self.modalities}
        total = sum(self.channels.values())
        hidden = int(2 * total / ratio)
        if hidden < 1:
            raise ConfigError(f"model.mid_fusion.ratio={ratio} leaves no hidden units for {total} channels; lower it")
        self.squeeze = nn.Linear(total, hidden)
        self.excite = nn.ModuleDict({m: nn.Linear(hidden, c) for m, c in self.channels.items()})
        for m, c in self.channels.items():
            self.register_buffer(f"running_{m}", torch.zeros(c))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.frozen: str | None = None

    def running(self, m: str) -> Tensor:
        """The mean excitation ``[C_m]`` of modality ``m`` over every training forward so far."""
        return getattr(self, f"running_{m}")

    def forward(self, maps: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: [B, C_m, ...]}``, ``{m: bool [B]}`` -> the maps rescaled per channel, same shapes."""
        ref = next(iter(maps.values()))
        squeezes = []
        for m in self.modalities:
            if m in maps:
                s = maps[m].flatten(2).mean(-1)
                keep = present.get(m)
                squeezes.append(s if keep is None else torch.where(keep[:, None], s, torch.zeros_like(s)))
            else:
                squeezes.append(ref.new_zeros(ref.shape[0], self.channels[m]))
        hidden = torch.relu(self.squeeze(torch.cat(squeezes, dim=1)))
        out = {}
        step = int(self.steps)
        for m, x in maps.items():
            scale = torch.sigmoid(self.excite[m](hidden))
            if self.training:
                keep = present.get(m)
                rows = scale.detach() if keep is None else scale.detach()[keep]
                if rows.shape[0]:
                    self.running(m).copy_((rows.mean(0) + self.running(m) * step) / (step + 1))
                if m == self.frozen:  # 0 * scale keeps excite[m] in the graph (zero gradient), as DDP requires
                    scale = self.running(m).to(scale.dtype).expand_as(scale) + 0.0 * scale
            out[m] = x * scale.reshape(scale.shape + (1,) * (x.dim() - 2))
        if self.training:
            self.steps += 1
        return out


@MID_FUSIONS.register("mmtm")
class MMTM(nn.Module):
    """MMTM blocks after the chosen stages of every modality's staged tower.

    Args:
        towers: ``{m: tower}``, each a :class:`~dan.models.towers.staged.StagedTower` with the same number
            of stages.
        stages: 0-based stage indices followed by a block (default: every stage but the first, as the
            reference places MMTM after ResNet layers 2-4 of 4).
        ratio: the squeeze layer's reduction: ``hidden = 2 * Σ_m C_m / ratio`` (default 4).
    """

    def __init__(self, towers: Mapping[str, nn.Module], stages: Sequence[int] | None = None, ratio: float = 4) -> None:
        super().__init__()
        self.modalities = sorted(towers)
        if len(self.modalities) < 2:
            raise ConfigError("model.mid_fusion needs at least two modalities to exchange information between")
        counts = {}
        for m in self.modalities:
            tower = towers[m]
            if not isinstance(tower, StagedTower):
                raise ConfigError(
                    f"the tower of {m!r} ({type(tower).__name__}) does not run stage by stage "
                    "(stem/stages/stage_channels/readout); use image_cnn or audio_cnn, or remove model.mid_fusion"
                )
            counts[m] = len(tower.stage_channels())
        if len(set(counts.values())) != 1:
            raise ConfigError(
                f"the towers have different numbers of stages {counts}; give them the same "
                "number of channels entries"
            )
        n = next(iter(counts.values()))
        chosen = list(range(1, n)) if stages is None else [int(i) for i in stages]
        if not chosen or any(i < 0 or i >= n for i in chosen) or len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"model.mid_fusion.stages={stages!r} must be distinct indices in [0, {n - 1}] (the towers have {n} "
                f"stages); e.g. model.mid_fusion.stages=[{n - 1}]"
            )
        widths = {m: towers[m].stage_channels() for m in self.modalities}
        self.stages = sorted(chosen)
        self.blocks = nn.ModuleDict(
            {str(i): MMTMBlock({m: widths[m][i] for m in self.modalities}, ratio) for i in self.stages}
        )

    def set_frozen(self, modality: str | None) -> None:
        """Freeze ``modality``'s excitation to its running mean in every block (``None``: none)."""
        for block in self.blocks.values():
            block.frozen = modality

    def forward(
        self, towers: Mapping[str, nn.Module], inputs: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Run the towers of ``inputs``' modalities stage by stage with the blocks between: ``{m: raw
        input}`` -> ``{m: tokens [B, N_m, D_m]}``."""
        maps = {m: towers[m].stem(x) for m, x in inputs.items()}
        stages = {m: towers[m].stages() for m in maps}
        for i in range(len(next(iter(stages.values())))):
            maps = {m: stages[m][i](x) for m, x in maps.items()}
            if i in self.stages:
                maps = self.blocks[str(i)](maps, present)
        return {m: towers[m].readout(x) for m, x in maps.items()}


def build_mid_fusion(name: str, towers: Mapping[str, nn.Module], **kwargs: Any) -> nn.Module:
    """The mid fusion registered as ``name`` over ``towers``; unknown names or keys raise ConfigError."""
    MID_FUSIONS.check_kwargs(name, kwargs, "model.mid_fusion", reserved=("towers",))
    return MID_FUSIONS.build(name, towers=towers, **kwargs)
