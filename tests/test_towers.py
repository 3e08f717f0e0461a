"""Towers: token shapes, locality of the tokens, validation, and plugging in new towers."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from dan.errors import ConfigError, DataFormatError
from dan.models.towers import TOWERS, build_tower, register_tower
from dan.models.towers.freq_norm import RelaxedFreqNorm


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(TOWERS, "_builders", dict(TOWERS._builders))


@pytest.mark.parametrize(
    ("name", "shape", "tokens"),
    [
        ("image_cnn", (3, 1, 28, 28), 49),
        ("image_resnet", (3, 1, 28, 28), 49),
        ("audio_cnn", (3, 1, 40, 64), 16),
        ("audio_tcn", (3, 1, 40, 64), 32),
    ],
)
def test_builtin_towers_make_tokens_and_train(name: str, shape: tuple[int, ...], tokens: int) -> None:
    torch.manual_seed(0)
    kwargs = {"blocks": (1, 1, 1)} if name == "image_resnet" else {}
    tower = build_tower(name, dim=24, **kwargs)
    out = tower(torch.randn(*shape))
    assert out.shape == (3, tokens, 24) and tower.out_dim == 24
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


def test_image_grid_pools_to_fewer_tokens_and_keeps_locality() -> None:
    torch.manual_seed(0)
    tower = build_tower("image_cnn", dim=16, grid=4).eval()
    assert tower(torch.randn(2, 1, 28, 28)).shape == (2, 16, 16)
    tower = build_tower("image_cnn", dim=16).eval()
    x = torch.randn(1, 1, 28, 28)
    y = x.clone()
    y[..., 16:, 16:] += 3.0  # bottom-right corner only
    a, b = tower(x), tower(y)
    assert torch.equal(a[:, 0], b[:, 0])  # top-left token does not see that corner
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("name", ["audio_cnn", "audio_tcn"])
def test_audio_tokens_follow_time(name: str) -> None:
    torch.manual_seed(0)
    tower = build_tower(name, n_mels=40, dim=16).eval()
    x = torch.randn(1, 1, 40, 64)
    assert tower(torch.randn(1, 1, 40, 32)).shape[1] * 2 == tower(x).shape[1]
    y = x.clone()
    y[..., 40:] += 3.0  # late frames only
    a, b = tower(x), tower(y)
    assert torch.equal(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize(("readout", "pool"), [("freq_mean", torch.mean), ("freq_max", torch.amax)])
def test_audio_cnn_frequency_pooled_readout_pools_the_mel_axis_only(readout: str, pool) -> None:
    torch.manual_seed(0)
    tower = build_tower("audio_cnn", n_mels=40, dim=16, channels=(4, 8), readout=readout).eval()
    x = torch.randn(2, 1, 40, 32)
    fmap = tower.features(x)  # [2, 8, 10, 8]
    expected = tower.proj(pool(fmap, dim=2).transpose(1, 2))
    assert tower.proj.in_features == 8
    assert torch.allclose(tower(x), expected)
    assert tower(x).shape == (2, 8, 16)


def test_audio_tcn_accepts_three_dim_input() -> None:
    tower = build_tower("audio_tcn", n_mels=8, dim=8).eval()
    x = torch.randn(2, 1, 8, 20)
    assert torch.equal(tower(x), tower(x[:, 0]))


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("image_cnn", {}, (2, 3, 28, 28)),
        ("image_cnn", {}, (2, 28, 28)),
        ("image_resnet", {}, (2, 28, 28)),
        ("audio_cnn", {"n_mels": 40}, (2, 1, 20, 30)),
        ("audio_tcn", {"n_mels": 40}, (2, 20, 30)),
    ],
)
def test_bad_input_shape_raises_data_format_error(name: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    tower = build_tower(name, **kwargs)
    with pytest.raises(DataFormatError, match=rf"'{name}' expects input .*got shape {re.escape(str(shape))}"):
        tower(torch.randn(*shape))


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("image_cnn", {"channels": []}, "channels"),
        ("image_cnn", {"grid": 0}, "grid"),
        ("image_resnet", {"widths": (8, 16), "blocks": (1,)}, "same length"),
        ("audio_cnn", {"n_mels": 3}, "n_mels=3"),
        ("audio_cnn", {"freq_norm": 1.5}, "freq_norm is the RFN lambda in \\[0, 1\\]"),
        ("audio_cnn", {"readout": "flatten"}, "readout='flatten' is not valid; valid choices: column, freq_mean, freq_max"),
        ("audio_tcn", {"kernel_size": 4}, "kernel_size"),
        ("audio_tcn", {"pool": 0}, "pool"),
        ("image_cnn", {"colour": True}, "colour"),
        ("no_such_tower", {}, "valid choices: audio_cnn, audio_tcn, image_cnn, image_resnet"),
    ],
)
def test_bad_tower_config_raises_config_error(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_tower(name, **kwargs)


def test_decorator_registers_a_tower_from_outside(clean_registry: None) -> None:
    @register_tower("test_flat")
    class Flat(nn.Module):
        def __init__(self, features: int = 5, dim: int = 4) -> None:
            super().__init__()
            self.out_dim = dim
            self.lin = nn.Linear(features, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).unsqueeze(1)

    assert "test_flat" in TOWERS.names()
    assert build_tower("test_flat", dim=6)(torch.randn(2, 5)).shape == (2, 1, 6)
    with pytest.raises(ConfigError, match="registered twice"):
        register_tower("test_flat")(nn.Linear)


def test_entry_point_group_dan_towers_adds_an_installed_tower(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "dan_ep_plugin.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class MeanTower(nn.Module):
                def __init__(self, dim: int = 3) -> None:
                    super().__init__()
                    self.out_dim = dim
                    self.scale = nn.Parameter(torch.ones(dim))

                def forward(self, x):
                    return x.mean(dim=-1, keepdim=True).unsqueeze(1) * self.scale
            """
        )
    )
    dist = tmp_path / "dan_ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dan-ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dan.towers]\nep_mean = dan_ep_plugin:MeanTower\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(TOWERS, "_plugins_loaded", False)
    assert "ep_mean" in TOWERS.names()
    out = build_tower("ep_mean", dim=2)(torch.tensor([[1.0, 3.0]]))
    assert torch.equal(out, torch.full((1, 1, 2), 2.0))
    sys.modules.pop("dan_ep_plugin", None)


@pytest.mark.parametrize(("name", "shape"), [("image_cnn", (3, 1, 28, 28)), ("audio_cnn", (3, 1, 40, 64))])
def test_channels_last_changes_layout_not_results(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    plain = build_tower(name, dim=8)
    fast = build_tower(name, dim=8, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(*shape)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    fast(x).square().mean().backward()
    assert all(p.grad is not None for p in fast.parameters())


def test_relaxed_freq_norm_removes_each_rows_statistics_and_keeps_layer_norm_share() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7) * 4 + 1
    ifn = RelaxedFreqNorm(1.0)(x)
    torch.testing.assert_close(ifn.mean(dim=(1, 3)), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(ifn.var(dim=(1, 3), correction=0), torch.ones(2, 5), atol=1e-3, rtol=0)
    # a per-row gain and offset (a voice's spectral colouring) does not reach IFN's output
    coloured = x * torch.rand(1, 1, 5, 1).add(0.5) + torch.randn(1, 1, 5, 1) * 3
    torch.testing.assert_close(RelaxedFreqNorm(1.0)(coloured), ifn, atol=1e-4, rtol=1e-4)
    ln = nn.functional.layer_norm(x, list(x.shape[1:]), eps=1e-5)
    torch.testing.assert_close(RelaxedFreqNorm(0.0)(x), ln, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(RelaxedFreqNorm(0.3)(x), 0.3 * ifn + 0.7 * ln, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="RelaxedFreqNorm: freq_norm is the RFN lambda in \\[0, 1\\].*got -0.1"):
        RelaxedFreqNorm(-0.1)


def test_audio_cnn_freq_norm_ends_each_stage_after_its_pooling() -> None:
    torch.manual_seed(0)
    plain = build_tower("audio_cnn", dim=8, channels=(4, 8))
    assert not any(isinstance(m, RelaxedFreqNorm) for m in plain.modules())
    tower = build_tower("audio_cnn", dim=8, channels=(4, 8), freq_norm=0.5)
    kinds = [type(m).__name__ for m in tower.features]
    assert kinds == ["Sequential", "MaxPool2d", "RelaxedFreqNorm"] * 2
    assert [[type(m).__name__ for m in stage][1:] for stage in tower.stages()] == [["MaxPool2d", "RelaxedFreqNorm"]] * 2
    x = torch.randn(3, 1, 40, 64)
    tower(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())
