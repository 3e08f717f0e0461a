"""DANModel and its builders: outputs, gradients, missing modalities, determinism, config errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import tiny_model_cfg
from torch import nn

from dan.errors import ConfigError, DataFormatError
from dan.models import DANModel, build_model, create_model, model_config
from dan.models.fusion import pool

FUSIONS = ["attention", "concat", "film", "gated", "sum"]


def tiny_cfg(**model: object) -> dict:
    defaults = {"trunk": {"name": "mlp", "share": True}, "fusion": {"name": "concat"}, "head": {"hidden": 0}}
    return {"model": tiny_model_cfg(**{**defaults, **model})}


def make_batch(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(b, 1, 28, 28, generator=g),
        "audio": torch.randn(b, 1, 16, 24, generator=g),
        "label": torch.randint(0, 5, (b,), generator=g),
    }


def build(seed: int = 0, **model: object) -> DANModel:
    torch.manual_seed(seed)
    return build_model(tiny_cfg(**model))


def test_forward_outputs_and_ignored_keys() -> None:
    model = build().eval()
    batch = make_batch()
    out = model(batch)
    assert model.modalities == ["audio", "image"]
    assert out.logits.shape == (6, 5) and out.fused.shape == (6, 32)
    assert set(out.modality_logits) == set(out.embeddings) == {"audio", "image"}
    assert out.embeddings["image"].shape == (6, 16)
    for m in model.modalities:
        torch.testing.assert_close(out.modality_logits[m], model.aux_heads[m](out.embeddings[m]))
    # the linear head over concat decomposes into per-modality contributions W_m φ_m + b/M
    assert out.contributions is not None
    torch.testing.assert_close(sum(out.contributions.values()), out.logits)
    w, b = model.head.weight, model.head.bias
    torch.testing.assert_close(out.contributions["audio"], out.fused[:, :16] @ w[:, :16].T + b / 2)


@pytest.mark.parametrize(("fusion", "head"), [("attention", {"hidden": 0}), ("concat", {"hidden": 8})])
def test_contributions_none_when_head_not_decomposable(fusion: str, head: dict) -> None:
    model = build(fusion={"name": fusion}, head=head).eval()
    assert model(make_batch()).contributions is None


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("trunk", ["mlp", "transformer"])
def test_gradients_reach_every_tower_parameter(fusion: str, trunk: str) -> None:
    model = build(
        fusion={"name": fusion},
        trunk={"name": trunk, "heads": 2} if trunk == "transformer" else {"name": trunk},
    )
    out = model(make_batch())
    (nn.functional.cross_entropy(out.logits, make_batch()["label"])).backward(retain_graph=True)
    for m in model.modalities:
        for p in model.tower_parameters(m):
            assert p.grad is not None and p.grad.abs().sum() > 0, (m, p.shape)
    for p in model.shared_parameters():
        assert p.grad.abs().sum() > 0


def test_masked_sample_equals_its_modality_absent() -> None:
    for fusion in FUSIONS:
        model = build(fusion={"name": fusion}).eval()
        batch = make_batch()
        mask = torch.tensor([True, False, True, False, True, True])
        batch["audio"][~mask] = 0.0
        out = model(dict(batch, audio_mask=mask))
        only_image = model({"image": batch["image"]})
        torch.testing.assert_close(out.logits[~mask], only_image.logits[~mask], rtol=0, atol=1e-5)
        assert not torch.allclose(out.logits[mask], only_image.logits[mask])
        assert set(only_image.modality_logits) == {"image"}


def test_batch_missing_a_key_and_contributions_follow_present_modalities() -> None:
    model = build().eval()
    out = model({"audio": make_batch()["audio"]})
    assert set(out.contributions) == {"audio"} and out.logits.shape == (6, 5)
    torch.testing.assert_close(out.fused[:, 16:], model.fusion.missing["image"].detach().expand(6, 16))


def test_key_order_and_config_order_do_not_matter() -> None:
    a = build(seed=3).eval()
    cfg = tiny_cfg()
    cfg["model"]["towers"] = dict(reversed(list(cfg["model"]["towers"].items())))
    torch.manual_seed(3)
    b = build_model(cfg).eval()
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    batch = make_batch()
    reordered = {k: batch[k] for k in ["label", "image", "audio"]}
    assert torch.equal(a(batch).logits, b(reordered).logits)


def test_sharing_on_off_parameter_counts() -> None:
    shared, separate = build(), build(trunk={"name": "mlp", "share": False})
    body = sum(p.numel() for p in shared.trunk.shared.parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate) - count(shared) == body  # two modalities: one extra body
    assert len(separate.shared_parameters()) == 2 * len(shared.shared_parameters())


def test_tower_and_shared_parameters() -> None:
    model = build(
        towers={
            "image": {"name": "image_cnn", "channels": [4], "dim": 8},
            "audio": {"name": "audio_tcn", "n_mels": 16},
        }
    )
    assert isinstance(model.proj["image"], nn.Linear) and isinstance(model.proj["audio"], nn.Identity)
    image = {id(p) for p in model.tower_parameters("image")}
    assert image == {id(p) for p in [*model.towers["image"].parameters(), *model.proj["image"].parameters()]}
    assert not image & {id(p) for p in model.tower_parameters("audio")}
    assert [id(p) for p in model.shared_parameters()] == [
        id(p) for p in model.trunk.shared.blocks[-1].fc2.parameters()
    ]
    with pytest.raises(ConfigError, match="no tower for modality 'video'"):
        model.tower_parameters("video")


def test_modality_dropout_never_drops_every_modality() -> None:
    model = build(modality_dropout=0.5)
    torch.manual_seed(0)
    n = 40_000
    present = {"audio": torch.ones(n, dtype=torch.bool), "image": torch.rand(n) < 0.5}
    kept = model.drop_modalities(present)
    assert (kept["audio"] | kept["image"]).all()
    assert not (kept["image"] & ~present["image"]).any()
    both = present["image"]
    # both present: P(image dropped) = P(only image dropped) + P(both dropped) / 2 = 0.375
    assert abs((~kept["image"][both]).float().mean().item() - 0.375) < 0.02
    assert abs((~kept["audio"][~both]).float().mean().item()) == 0.0  # its only modality stays


def test_modality_dropout_only_in_training() -> None:
    model = build(modality_dropout={"image": 0.9})
    batch = make_batch(b=64)
    model.train()
    fused = model(batch).fused
    missing = model.fusion.missing["image"].detach()
    dropped = (fused[:, 16:] == missing).all(dim=1)
    assert 40 < int(dropped.sum()) < 64
    assert not (fused[:, :16] == model.fusion.missing["audio"].detach()).all(dim=1).any()
    model.eval()
    assert not (model(batch).fused[:, 16:] == missing).all(dim=1).any()


def test_embeddings_are_pooled_trunk_tokens() -> None:
    model = build().eval()
    batch = make_batch()
    tokens = model.trunk(model.proj["image"](model.towers["image"](batch["image"])), "image")
    torch.testing.assert_close(model(batch).embeddings["image"], pool(tokens))


def test_learns_a_small_task() -> None:
    model = build()
    batch = make_batch(b=32)
    batch["label"] = (batch["image"].mean(dim=(1, 2, 3)) > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(batch).logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({"label": torch.zeros(2)}, r"holds none of the model's modalities \['audio', 'image'\]"),
        (
            {"image": torch.randn(2, 1, 28, 28), "image_mask": torch.tensor([True, False])},
            r"samples \[1\] have no modality",
        ),
        ({"image": torch.randn(2, 1, 28, 28), "image_mask": torch.ones(3, dtype=torch.bool)}, "image_mask"),
        (
            {"audio": torch.randn(2, 1, 16, 8), "image": torch.randn(3, 1, 28, 28)},
            r"batch\['audio'\] has 2 samples but batch\['image'\] has 3",
        ),
        ({"image": torch.randn(2, 28, 28)}, "image_cnn"),
    ],
)
def test_bad_batches(batch: dict, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        build().eval()(batch)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"colour": 1}, r"unknown model keys \['colour'\]"),
        (
            {"towers": {"image": {"name": "img"}}},
            "model.towers.image: unknown towers 'img'; valid choices: audio_cnn",
        ),
        ({"towers": {"image": {"name": "image_cnn", "chanels": [4]}}}, "model.towers.image.*chanels"),
        ({"towers": {"image": {"channels": [4]}}}, "model.towers.image.name is missing"),
        ({"towers": {}}, "model.towers is empty"),
        ({"trunk": {"name": "lstm"}}, "model.trunk: unknown trunks 'lstm'; valid choices: mlp, transformer"),
        ({"fusion": {"name": "concat", "heads": 2}}, "model.fusion.*heads"),
        ({"fusion": {"name": "mean"}}, "valid choices: attention, concat, film, gated, sum"),
        ({"head": {"hidden": 0, "layers": 2}}, r"unknown model.head keys \['layers'\]"),
        ({"head": {"hidden": -1}}, "model.head.hidden"),
        ({"modality_dropout": 1.0}, r"modality_dropout for 'audio' must be in \[0, 1\)"),
        ({"modality_dropout": {"video": 0.1}}, r"unknown modalities \['video'\]"),
        ({"dim": 0}, "model.dim must be a positive int"),
        ({"num_classes": 0}, "model.num_classes must be at least 2"),
    ],
)
def test_config_errors(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(**change)


def test_missing_num_classes_and_tower_without_out_dim() -> None:
    cfg = tiny_cfg()
    del cfg["model"]["num_classes"]
    with pytest.raises(ConfigError, match="model.num_classes must be an int"):
        build_model(cfg)
    model = build()
    with pytest.raises(ConfigError, match="has no int attribute out_dim"):
        DANModel({"audio": nn.Linear(2, 2), "image": model.towers["image"]}, model.trunk, model.fusion, 5)
    with pytest.raises(ConfigError, match="model.trunk was built for modalities"):
        DANModel({"x": model.towers["image"]}, model.trunk, model.fusion, 5)


def test_build_from_omegaconf_yaml_and_create_model() -> None:
    cfg = OmegaConf.create(
        """
        model:
          num_classes: 3
          dim: 16
          towers:
            image: {name: image_cnn, channels: [4, 8]}
            audio: {name: audio_tcn, n_mels: 16, channels: 8}
          trunk: {name: transformer, depth: 1, heads: 2}
          fusion: {name: gated}
          modality_dropout: {image: 0.1}
        """
    )
    model = build_model(cfg)
    assert model.num_classes == 3 and model.modality_dropout == {"audio": 0.0, "image": 0.1}
    assert model(make_batch()).logits.shape == (6, 3)
    preset = create_model("avmnist_dan", num_classes=4, **{"fusion.name": "sum", "towers.audio.n_mels": 16})
    assert preset.num_classes == 4 and type(preset.fusion).__name__ == "SumFusion"
    assert preset.towers["audio"].n_mels == 16 and preset.towers["image"].out_dim == 64
    assert model_config("avmnist_dan_attention").fusion.name == "attention"
    with pytest.raises(ConfigError, match="unknown models 'resnet50'"):
        create_model("resnet50")
