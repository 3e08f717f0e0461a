"""``train.adversary``: the gradient reversal, DANN's schedule, the group classifier's loss and gradients,
the groups AV-MNIST and manifests give, each bad setting named with a fix that works, and a run on real
files that trains and logs the adversary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_manifest_walkthrough import doc_blocks, write_dataset, write_manifest

from dan.cli import main
from dan.config import load_config, validate
from dan.data.dataset import Split
from dan.errors import ConfigError
from dan.losses.adversary import GroupAdversary, build_adversary, dann_coefficient, reverse_gradient
from dan.models import DANOutput


def test_reverse_gradient_is_the_identity_forward_and_negates_the_gradient_scaled() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    w = torch.randn(4, 3)
    (y * w).sum().backward()
    assert torch.equal(x.grad, -0.25 * w)


def test_dann_coefficient_follows_the_paper() -> None:
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_coefficient(1.5) == dann_coefficient(1.0) and dann_coefficient(-1.0) == 0.0
    values = [dann_coefficient(p / 10) for p in range(11)]
    assert values == sorted(values)


def output(feats: torch.Tensor, present: torch.Tensor | None = None) -> DANOutput:
    b = feats.shape[0]
    return DANOutput(
        logits=torch.zeros(b, 3), modality_logits={}, embeddings={"audio": feats}, fused=feats,
        present=None if present is None else {"audio": present},
    )


def test_loss_and_gradients_are_those_of_the_group_classifier() -> None:
    torch.manual_seed(0)
    groups = torch.tensor([0, 1, 3, 4, 4, 3, 1, 0, 3])  # ids need not be contiguous: 4 groups
    adv = GroupAdversary(6, groups, "audio", weight=0.5, hidden=5)
    assert adv.num_groups == 4
    feats = torch.randn(5, 6, requires_grad=True)
    index = torch.tensor([2, 0, 4, 8, 1])
    present = torch.tensor([True, True, False, True, True])
    loss = adv(output(feats, present), index, progress=0.3)
    target = torch.tensor([2, 0, 3, 2, 1])  # groups [3, 0, 4, 3, 1] as classes of [0, 1, 3, 4]
    logits = adv.classifier(feats)
    expected = 0.5 * F.cross_entropy(logits[present], target[present])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    lam = dann_coefficient(0.3)
    assert adv.last_lambda == lam
    hits = (logits.argmax(-1) == target)[present].float().mean().item()
    assert adv.last_acc == pytest.approx(hits)

    loss.backward()
    feat_grad = torch.autograd.grad(expected, feats, retain_graph=True)[0]
    param_grads = torch.autograd.grad(expected, list(adv.classifier.parameters()))
    assert torch.allclose(feats.grad, -lam * feat_grad, atol=1e-7)  # the features ascend the loss
    assert feats.grad[2].abs().sum() == 0  # a sample without audio plays no part
    for p, g in zip(adv.classifier.parameters(), param_grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-7)  # the classifier descends it


def test_a_batch_without_the_modality_gives_zero_loss_and_zero_gradients() -> None:
    adv = GroupAdversary(4, torch.tensor([0, 1, 0, 1]), "audio", hidden=0)
    out = DANOutput(logits=torch.zeros(2, 3), modality_logits={}, embeddings={}, fused=torch.zeros(2, 4))
    loss = adv(out, torch.tensor([0, 1]), progress=0.5)
    loss.backward()
    assert loss.item() == 0.0 and math.isnan(adv.last_acc)
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in adv.parameters())


def test_one_group_or_no_groups_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="needs at least two groups.*train.adversary.weight=0"):
        GroupAdversary(4, torch.zeros(5, dtype=torch.long), "audio")
    split = Split.aligned("train", {"audio": torch.zeros(3, 2)}, torch.zeros(3, dtype=torch.long), manifest_hash="",
                          preprocessing={}, source="synthetic")
    cfg = {"weight": 1.0, "modality": "audio", "hidden": 8, "gamma": 10.0}
    with pytest.raises(ConfigError, match="data.name=synthetic gives none.*data.group=COLUMN.*train.adversary.weight=0"):
        build_adversary(cfg, split, 4)
    assert build_adversary({**cfg, "weight": 0.0}, split, 4) is None


@pytest.mark.parametrize(
    ("overrides", "message", "fix"),
    [
        (["train.adversary.weight=1"], "needs train.adversary.modality.*e.g. train.adversary.modality=audio",
         "train.adversary.modality=audio"),
        (["train.adversary.weight=1", "train.adversary.modality=video"],
         "train.adversary.modality='video' is not valid; valid choices: audio, image", "train.adversary.modality=audio"),
        (["train.adversary.weight=-1"], "train.adversary.weight must be a finite number >= 0", "train.adversary.weight=0"),
        (["train.adversary.weight=1", "train.adversary.modality=audio", "train.mixup=0.2"],
         "a mixed sample belongs to two groups; set train.mixup=0", "train.mixup=0"),
        (["train.adversary.weight=1", "train.adversary.modality=audio", "balancer.name=ogm_ge"],
         "shapes the gradients itself. Use static, uncertainty, e.g. balancer.name=static", "balancer.name=static"),
    ],
)
def test_bad_settings_are_named_and_the_fix_validates(overrides: list[str], message: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(load_config("quickstart", overrides))
    validate(load_config("quickstart", [*overrides, fix]))


@pytest.mark.parametrize("recipe", ["mnist_siamese_triplet", "avmnist_crossmodal"])
def test_metric_recipes_refuse_the_adversary_and_the_fix_validates(recipe: str) -> None:
    with pytest.raises(ConfigError, match="belongs to the fusion recipe.*set train.adversary.weight=0"):
        validate(load_config(recipe, ["train.adversary.weight=1"]))
    validate(load_config(recipe, ["train.adversary.weight=1", "train.adversary.weight=0"]))


def test_a_run_on_a_manifest_of_speakers_trains_and_logs_the_adversary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = doc_blocks()
    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path / "my_data" / "manifest.csv", write_dataset(tmp_path / "my_data"))
    (tmp_path / "my_data.yaml").write_text(config)
    torch.set_num_threads(1)
    args = [
        "train", "my_data.yaml", "train.epochs=3",
        "train.log_every=1", "train.adversary.weight=1", "train.adversary.modality=audio",
        f"output_dir={tmp_path / 'runs'}", "run_name=adv", "quiet=true",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "runs" / "adv" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss_adversary" in r]
    assert steps and all(math.isfinite(r["train/loss_adversary"]) for r in steps)
    assert all(0.0 <= r["adversary/acc"] <= 1.0 for r in steps if not math.isnan(r["adversary/acc"]))
    lambdas = [r["adversary/lambda"] for r in steps]
    assert lambdas == sorted(lambdas) and 0.0 <= lambdas[0] < lambdas[-1] < 1.0
    state = torch.load(tmp_path / "runs" / "adv" / "last.pt", weights_only=True)
    assert any(k.startswith("classifier.") for k in state["modules"]["adversary"])
