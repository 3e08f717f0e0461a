"""Shared trunk: weight sharing, modality embedding, last layer for GradNorm, validation."""

from __future__ import annotations

import pytest
import torch

from dan.errors import ConfigError
from dan.models.trunk import TRUNKS, build_trunk


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_shared_body_plus_modality_embedding(name: str) -> None:
    torch.manual_seed(0)
    trunk = build_trunk(name, ["b", "a"], 16).eval()
    assert trunk.modalities == ["a", "b"] and trunk.body("a") is trunk.body("b")
    x = torch.randn(2, 5, 16)
    out_a, out_b = trunk(x, "a"), trunk(x, "b")
    assert out_a.shape == (2, 5, 16)
    assert torch.allclose(out_a, trunk.shared(x + trunk.embedding["a"]))
    assert not torch.allclose(out_a, out_b)  # the embedding tells the modalities apart


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_share_false_gives_one_body_per_modality(name: str) -> None:
    shared = build_trunk(name, ["a", "b", "c"], 16, share=True)
    separate = build_trunk(name, ["a", "b", "c"], 16, share=False)
    body = n_params(shared.shared)
    assert n_params(separate) - n_params(shared) == 2 * body
    assert separate.body("a") is not separate.body("b")
    assert len(separate.last_layer_parameters()) == 3 * len(shared.last_layer_parameters())


def test_mlp_is_tokenwise_transformer_mixes_tokens() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16)
    y = x.clone()
    y[:, 3] += torch.randn(16)
    mlp = build_trunk("mlp", ["a"], 16).eval()
    assert torch.equal(mlp(x, "a")[:, 0], mlp(y, "a")[:, 0])
    tr = build_trunk("transformer", ["a"], 16, heads=2).eval()
    assert not torch.allclose(tr(x, "a")[:, 0], tr(y, "a")[:, 0])


@pytest.mark.parametrize(
    ("name", "layer"), [("mlp", "blocks.1.fc2"), ("transformer", "encoder.layers.1.linear2")]
)
def test_last_layer_parameters_receive_every_modality_gradient(name: str, layer: str) -> None:
    trunk = (
        build_trunk(name, ["a", "b"], 8, depth=2, heads=2)
        if name == "transformer"
        else build_trunk(name, ["a", "b"], 8, depth=2)
    )
    params = trunk.last_layer_parameters()
    named = dict(trunk.shared.named_parameters())
    assert [p.shape for p in params] == [named[f"{layer}.weight"].shape, named[f"{layer}.bias"].shape]
    assert params[0] is named[f"{layer}.weight"]
    x = torch.randn(3, 2, 8)
    grad_a = torch.autograd.grad(trunk(x, "a").sum(), params[0])[0]
    grad_b = torch.autograd.grad(trunk(x, "b").sum(), params[0])[0]
    assert grad_a.abs().sum() > 0 and grad_b.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("transformer", {"heads": 3}, "not divisible by heads=3"),
        ("mlp", {"depth": 0}, "model.trunk.depth"),
        ("mlp", {"width": 3}, "width"),
        ("mlp", {"dim": 3}, "model.dim"),
        ("mlp", {"share": "yes"}, "share"),
        ("rnn", {}, "valid choices: mlp, transformer"),
    ],
)
def test_bad_trunk_config(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_trunk(name, ["a"], 16, **kwargs)


def test_registry_lists_builtins() -> None:
    assert {"mlp", "transformer"} <= set(TRUNKS.names())
