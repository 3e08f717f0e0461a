"""Mixup (train.mixup): the batch transform against the paper's definition, its loss, and the config checks
that keep it away from balancers and recipes that cannot use mixed targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_runs import tiny_run

from dan.cli import main
from dan.data.mixup import TARGET, Mixup, targets
from dan.losses.masked import masked_cross_entropy


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(n, 1, 4, 4, generator=g),
        "audio": torch.randn(n, 1, 3, 5, generator=g),
        "audio_mask": torch.tensor([True, False] + [True] * (n - 2)),
        "label": torch.arange(n) % 3,
    }


def test_mixup_mixes_every_modality_with_one_draw_and_permutation() -> None:
    batch = _batch()
    torch.manual_seed(5)
    out = Mixup(0.4, ["image", "audio"], 3)(batch)
    torch.manual_seed(5)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    j = torch.randperm(8)
    assert 0.0 < lam < 1.0 and not torch.equal(j, torch.arange(8))
    for m in ("image", "audio"):
        assert torch.allclose(out[m], lam * batch[m] + (1 - lam) * batch[m][j])
    hot = F.one_hot(batch["label"], 3).float()
    assert torch.allclose(out[TARGET], lam * hot + (1 - lam) * hot[j])
    assert torch.allclose(out[TARGET].sum(1), torch.ones(8))
    assert torch.equal(out["label"], batch["label"])  # each sample keeps its own class
    assert torch.equal(out["audio_mask"], batch["audio_mask"] & batch["audio_mask"][j])
    partner_of_silent = int((j == 1).nonzero())  # the sample that sample 1 (no audio) was mixed into
    assert partner_of_silent != 1 and not bool(out["audio_mask"][partner_of_silent])


def test_alpha_zero_changes_nothing_and_draws_nothing() -> None:
    batch = _batch()
    torch.manual_seed(3)
    out = Mixup(0.0, ["image", "audio"], 3)(batch)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))
    assert out.keys() == batch.keys() and all(torch.equal(out[k], batch[k]) for k in batch)
    assert torch.equal(targets(out), batch["label"])


def test_the_loss_is_the_papers_mixture_of_two_cross_entropies() -> None:
    batch = _batch()
    torch.manual_seed(7)
    out = Mixup(1.0, ["image"], 3)(batch)
    torch.manual_seed(7)
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    j = torch.randperm(8)
    logits = torch.randn(8, 3)
    y = batch["label"]
    paper = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[j])
    assert torch.allclose(masked_cross_entropy(logits, targets(out), None), paper)
    keep = batch["audio_mask"]
    ce = lam * F.cross_entropy(logits, y, reduction="none") + (1 - lam) * F.cross_entropy(logits, y[j], reduction="none")
    assert torch.allclose(masked_cross_entropy(logits, targets(out), keep), ce[keep].mean())


def test_a_mixup_run_trains_and_repeats_with_its_seed(tmp_path: Path) -> None:
    run = tiny_run({"train.mixup": 0.4, "device": "cpu"})
    for name in ("a", "b"):
        assert main(["train", "quickstart", *run, f"output_dir={tmp_path}", f"run_name={name}"]) == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in "ab")
    assert a["history"] == b["history"] and a["config"]["train"]["mixup"] == 0.4
    plain = tiny_run({"device": "cpu"})
    assert main(["train", "quickstart", *plain, f"output_dir={tmp_path}", "run_name=c"]) == 0
    c = json.loads((tmp_path / "c" / "results.json").read_text())
    assert c["history"][0]["train/loss_fused"] != a["history"][0]["train/loss_fused"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.mixup=-0.2"], "train.mixup is mixup's Beta(alpha, alpha) parameter, a finite number >= 0 (0 = off), got -0.2"),
        (["train.mixup=nan"], "train.mixup is mixup's Beta(alpha, alpha) parameter"),
        (
            ["train.mixup=0.2", "balancer.name=ogm_ge"],
            "train.mixup=0.2 trains on mixed labels, but balancer 'ogm_ge' reads the batch's labels itself. Use a "
            "balancer that sees them only through the head losses (gradnorm, mmpareto, static, uncertainty), e.g. "
            "balancer.name=static, or set train.mixup=0",
        ),
    ],
)
def test_bad_mixup_is_named(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "quickstart", *overrides, f"output_dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("fix", "expected"), [("balancer.name=static", ("static", 0.2)), ("train.mixup=0", ("ogm_ge", 0.0))]
)
def test_the_balancer_hint_works_when_pasted(fix: str, expected: tuple[str, float]) -> None:
    from dan.config import load_config

    cfg = load_config("quickstart", ["train.mixup=0.2", "balancer.name=ogm_ge", fix])
    assert (cfg.balancer.name, cfg.train.mixup) == expected


@pytest.mark.parametrize("recipe", ["mnist_siamese_pair_bce", "avmnist_crossmodal"])
def test_metric_recipes_refuse_mixup_and_the_hint_works(
    recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dan.config import load_config

    assert main(["train", recipe, "train.mixup=0.3", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "train.mixup=0.3 mixes class targets, which the" in err and "set train.mixup=0" in err
    load_config(recipe, ["train.mixup=0.3", "train.mixup=0"])
