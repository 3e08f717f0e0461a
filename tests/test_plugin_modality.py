"""A third modality plugged in from outside dan: registered by decorator in a user module, named in
YAML, trained with the built-in image and audio towers."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dan.models import build_model
from dan.models.towers import TOWERS

PLUGIN = '''
"""A user's tabular tower: features [B, F] -> one token per feature group [B, groups, dim]."""
from einops import rearrange
from torch import Tensor, nn

from dan.models.towers import register_tower


@register_tower("tabular_mlp")
class TabularTower(nn.Module):
    def __init__(self, features: int, dim: int = 32, groups: int = 2) -> None:
        super().__init__()
        self.out_dim = dim
        self.groups = groups
        self.net = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, groups * dim))

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.net(x), "b (g d) -> b g d", g=self.groups)
'''

CONFIG = """
model:
  num_classes: 3
  dim: 16
  towers:
    image: {name: image_cnn, channels: [4, 8], grid: 2}
    audio: {name: audio_tcn, n_mels: 8, channels: 8, layers: 1}
    tabular: {name: tabular_mlp, features: 6, groups: 2}
  trunk: {name: mlp, share: true}
  fusion: {name: concat}
  head: {hidden: 0}
"""


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Import a tower module that lives outside the dan package; undo its registration afterwards."""
    monkeypatch.setattr(TOWERS, "_builders", dict(TOWERS._builders))
    (tmp_path / "my_tabular_tower.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("my_tabular_tower")
    yield
    sys.modules.pop("my_tabular_tower", None)


def test_three_modality_model_from_yaml_learns(plugin: None) -> None:
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(CONFIG))
    assert model.modalities == ["audio", "image", "tabular"]
    assert model.fusion.out_dim == 3 * 16

    g = torch.Generator().manual_seed(1)
    n = 48
    tabular = torch.randn(n, 6, generator=g)
    labels = (tabular @ torch.randn(6, 3, generator=g)).argmax(dim=1)  # learnable from the tabular input
    batch = {
        "image": torch.randn(n, 1, 28, 28, generator=g),
        "audio": torch.randn(n, 1, 8, 16, generator=g),
        "tabular": tabular,
        "label": labels,
    }
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        out = model(batch)
        loss = torch.nn.functional.cross_entropy(out.logits, labels)
        loss = loss + sum(torch.nn.functional.cross_entropy(z, labels) for z in out.modality_logits.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.tower_parameters("tabular"))

    model.eval()
    out = model(batch)
    assert set(out.modality_logits) == {"audio", "image", "tabular"}
    accuracy = (out.modality_logits["tabular"].argmax(1) == labels).float().mean()
    assert accuracy > 0.8
    # the plugged-in modality can be missing per sample like any other
    mask = torch.arange(n) % 2 == 0
    masked = model(dict(batch, tabular_mask=mask)).logits
    without = model({k: v for k, v in batch.items() if k != "tabular"}).logits
    torch.testing.assert_close(masked[~mask], without[~mask], rtol=0, atol=1e-5)
