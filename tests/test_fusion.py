"""Fusion modules: exact masking, sorted-key determinism, and each method's own behaviour."""

from __future__ import annotations

import pytest
import torch

from dan.errors import ConfigError
from dan.models.fusion import FUSIONS, build_fusion, pool

NAMES = ["attention", "concat", "film", "gated", "sum"]
D = 8


def make_tokens(names: list[str], batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, 2 + k, D, generator=g) for k, m in enumerate(names)}


def build(name: str, modalities: list[str]) -> torch.nn.Module:
    torch.manual_seed(0)
    fusion = build_fusion(name, modalities, D, **({"heads": 2} if name == "attention" else {}))
    for p in fusion.parameters():  # move off the identity / zero initialisations
        p.data.add_(torch.randn_like(p) * 0.3)
    return fusion.eval()


def test_registry_holds_every_fusion() -> None:
    assert set(NAMES) <= set(FUSIONS.names())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("names", [["a"], ["a", "b"], ["a", "b", "c"]])
def test_output_width(name: str, names: list[str]) -> None:
    fusion = build(name, names)
    out = fusion(make_tokens(names), {})
    expected = len(names) * D if name == "concat" else D
    assert out.shape == (4, expected) and fusion.out_dim == expected and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c"]])
def test_masked_sample_equals_modality_absent(name: str, names: list[str]) -> None:
    fusion = build(name, names)
    tokens = make_tokens(names)
    present = {m: torch.ones(4, dtype=torch.bool) for m in names}
    present["b"] = torch.tensor([False, True, False, True])
    tokens["b"][~present["b"]] = float("nan")  # filler of absent samples must never leak
    out = fusion(tokens, present)
    assert torch.isfinite(out).all()
    without_b = {m: t for m, t in tokens.items() if m != "b"}
    ref = fusion(without_b, {m: p for m, p in present.items() if m != "b"})
    torch.testing.assert_close(out[~present["b"]], ref[~present["b"]], rtol=0, atol=1e-6)
    assert not torch.allclose(out[present["b"]], ref[present["b"]])


@pytest.mark.parametrize("name", NAMES)
def test_single_sample_absent_equals_sample_run_alone(name: str) -> None:
    names = ["a", "b", "c"]
    fusion = build(name, names)
    tokens = make_tokens(names)
    present = {"a": torch.tensor([True, False, True, True]), "c": torch.tensor([True, True, False, True])}
    out = fusion(tokens, present)
    for i, kept in enumerate([["a", "b", "c"], ["b", "c"], ["a", "b"], ["a", "b", "c"]]):
        alone = fusion({m: tokens[m][i : i + 1] for m in kept}, {})
        torch.testing.assert_close(out[i : i + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_key_order_does_not_matter(name: str) -> None:
    fusion = build(name, ["c", "a", "b"])
    assert fusion.modalities == ["a", "b", "c"]
    tokens = make_tokens(["a", "b", "c"])
    reordered = {m: tokens[m] for m in ["c", "b", "a"]}
    assert torch.equal(fusion(tokens, {}), fusion(reordered, {}))


def test_concat_slots_are_sorted_pooled_features_or_learned_missing() -> None:
    fusion = build("concat", ["image", "audio"])
    tokens = make_tokens(["image", "audio"])
    mask = torch.tensor([True, False, True, False])
    out = fusion(tokens, {"image": mask})
    assert torch.equal(out[:, :D], pool(tokens["audio"]))  # "audio" < "image"
    assert torch.equal(out[mask, D:], pool(tokens["image"])[mask])
    assert torch.equal(out[~mask, D:], fusion.missing["image"].detach().expand(2, D))
    only_audio = fusion({"audio": tokens["audio"]}, {})
    assert torch.equal(only_audio[:, D:], fusion.missing["image"].detach().expand(4, D))
    assert fusion.missing["image"].abs().sum() > 0  # not a zero fill
    parts = fusion.split(out)
    assert list(parts) == ["audio", "image"] and torch.equal(parts["image"], out[:, D:])


def test_sum_adds_present_pooled_features() -> None:
    fusion = build("sum", ["a", "b"])
    tokens = make_tokens(["a", "b"])
    mask = torch.tensor([True, False, True, True])
    out = fusion(tokens, {"b": mask})
    expected = pool(tokens["a"]) + torch.where(mask[:, None], pool(tokens["b"]), 0.0)
    torch.testing.assert_close(out, expected)


def test_gated_weights_are_a_softmax_over_present_modalities() -> None:
    fusion = build("gated", ["a", "b", "c"])
    tokens = make_tokens(["a", "b", "c"])
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, True], [True, True, False]])
    feats = torch.stack([pool(tokens[m]) for m in "abc"], dim=1)
    gates = fusion.gate_weights(feats, mask, ["a", "b", "c"])
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(4))
    assert torch.equal(gates[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(gates[2], torch.tensor([0.0, 0.0, 1.0]))
    out = fusion(tokens, {m: mask[:, k] for k, m in enumerate("abc")})
    torch.testing.assert_close(out, (gates.unsqueeze(-1) * feats).sum(dim=1))
    assert torch.equal(out[2], feats[2, 2])  # one present modality: its own features


def test_film_starts_at_identity_and_conditions_on_the_other_modality() -> None:
    torch.manual_seed(0)
    fusion = build_fusion("film", ["a", "b"], D)
    tokens = make_tokens(["a", "b"])
    torch.testing.assert_close(fusion(tokens, {}), (pool(tokens["a"]) + pool(tokens["b"])) / 2)
    fusion = build("film", ["a", "b"])
    changed = dict(tokens, b=tokens["b"] + 1.0)
    mask_b = torch.tensor([True, True, False, False])
    out, out_changed = fusion(tokens, {"b": mask_b}), fusion(changed, {"b": mask_b})
    assert torch.equal(out[~mask_b], pool(tokens["a"])[~mask_b])  # no context: identity
    assert not torch.allclose(out[mask_b], out_changed[mask_b])


def test_attention_alone_is_self_pooling_and_attends_across_modalities() -> None:
    fusion = build("attention", ["a", "b"])
    tokens = make_tokens(["a", "b"])
    alone = fusion({"a": tokens["a"]}, {})
    torch.testing.assert_close(alone, pool(fusion.norm["a"](tokens["a"])))
    # a's attended features depend on b's tokens exactly where b is present
    mask_b = torch.tensor([True, False, True, False])
    mask_a = torch.ones(4, dtype=torch.bool)
    base = fusion(tokens, {"a": mask_a, "b": mask_b})
    moved = fusion(dict(tokens, b=tokens["b"] * 2.0), {"a": mask_a, "b": mask_b})
    assert torch.equal(base[~mask_b], moved[~mask_b])
    assert (base[mask_b] - moved[mask_b]).abs().min() > 0


def test_fusion_gradients_reach_every_parameter() -> None:
    for name in NAMES:
        fusion = build(name, ["a", "b", "c"]).train()
        tokens = {m: t.requires_grad_() for m, t in make_tokens(["a", "b", "c"]).items()}
        fusion(tokens, {}).square().sum().backward()
        assert all(t.grad.abs().sum() > 0 for t in tokens.values()), name
        for pname, p in fusion.named_parameters():
            if name == "concat":  # missing embeddings get gradient only from absent samples
                continue
            assert p.grad is not None and p.grad.abs().sum() > 0, (name, pname)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_fusion("mean", ["a"], D), "valid choices: attention, concat, film, gated, sum"),
        (lambda: build_fusion("attention", ["a"], 6, heads=4), "divisible by heads=4"),
        (lambda: build_fusion("sum", ["a"], D, scale=2), "scale"),
        (lambda: build_fusion("sum", ["a"], D, dim=3), "model.fusion.dim"),
        (lambda: build_fusion("sum", [], D), "at least one modality"),
        (lambda: build_fusion("sum", ["a"], D)(make_tokens(["z"]), {}), r"got tokens for \['z'\]"),
        (lambda: build_fusion("sum", ["a"], D)({}, {}), "needs one of"),
    ],
)
def test_fusion_errors(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()
