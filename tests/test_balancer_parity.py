"""Balancers against their references where the review of issue 13 found them apart: OGM-GE under AdamW,
on the fused loss only, on weights only, scored without modality-dropped samples; auxiliary losses that
skip masked samples; uncertainty's log-variances outside weight decay and the learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_balancers import CLASSES, MODS, StandIn, ctx, dominant_image_output, make_batch
from tiny_runs import tiny_run

from dan.config import load_config
from dan.engine.recipes import run_config
from dan.engine.trainer import head_losses
from dan.errors import CheckpointError
from dan.losses import build_balancer
from dan.losses.balancers.ogm_ge import modulated_weights
from dan.models import build_model
from dan.models.output import DANOutput


def moved(optimizer: str, alpha: float, modulate: str = "auto", steps: int = 5) -> float:
    """How far the image tower's weight moves in ``steps`` OGM-GE steps, image made dominant."""
    torch.manual_seed(0)
    model = StandIn()
    b = build_balancer({"name": "ogm_ge", "alpha": alpha, "ge": False, "modulate": modulate}, MODS)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    )
    start = model.towers["image"].weight.detach().clone()
    for step in range(steps):
        batch = make_batch(seed=step)
        out = model(batch)
        fused, per = head_losses(out, batch["label"])
        opt.zero_grad()
        b.combine(fused, per, ctx(model, out, batch)).backward()
        scoring = ctx(model, dominant_image_output(batch["label"]), batch)
        scoring.optimizer, scoring.step = opt, step
        b.after_backward(scoring)
        opt.step()
        b.after_step(scoring)
    return float((model.towers["image"].weight.detach() - start).norm())


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_ogm_modulated_tower_moves_less_than_its_unmodulated_twin(optimizer: str) -> None:
    k = 1 - torch.tanh(torch.tensor(0.2 * 4 * torch.e**5 / (torch.e**5 + 3))).item()  # alpha 0.2, rho ~ 3.9
    ratio = moved(optimizer, alpha=0.2) / moved(optimizer, alpha=0.0)
    assert ratio < 0.6, f"{optimizer}: modulated tower moved {ratio:.2f}x its twin (k = {k:.2f})"


def test_adam_cancels_a_gradient_scale_which_is_why_auto_scales_the_step() -> None:
    forced = moved("adamw", alpha=0.2, modulate="gradient") / moved("adamw", alpha=0.0, modulate="gradient")
    auto = moved("adamw", alpha=0.2) / moved("adamw", alpha=0.0)
    assert forced > 0.8 and auto < 0.6, (forced, auto)


def test_ogm_first_step_under_adamw_is_exactly_k_times_the_twins() -> None:
    one = moved("adamw", alpha=0.2, steps=1) / moved("adamw", alpha=0.0, steps=1)
    labels = make_batch(seed=0)["label"]
    p = torch.softmax(5.0 * F.one_hot(labels, CLASSES).float(), 1)[0].max().item()
    k = 1 - torch.tanh(torch.tensor(0.2 * p * CLASSES)).item()
    assert one == pytest.approx(k, rel=1e-4)


def test_ogm_towers_learn_from_the_fused_loss_only_and_aux_heads_still_learn() -> None:
    torch.manual_seed(1)
    model, b = StandIn(), build_balancer({"name": "ogm_ge", "ge": False}, MODS)
    batch = make_batch(n=16)
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    model.zero_grad()
    b.combine(fused, per, ctx(model, out, batch)).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused_only, _ = head_losses(model(batch), batch["label"])
    fused_only.backward()
    for name, p in model.named_parameters():
        if name.startswith(("towers.", "trunk.", "head.")):
            torch.testing.assert_close(got[name], p.grad, msg=name)
    assert all(got[f"aux_heads.{m}.weight"].abs().sum() > 0 for m in MODS)


def small_dan(fusion: str = "concat", dropout: float = 0.0):  # type: ignore[no-untyped-def]
    return build_model(
        {
            "num_classes": CLASSES,
            "dim": 16,
            "towers": {
                "image": {"name": "image_cnn", "channels": [4, 8], "readout": "flatten", "grid": 2},
                "audio": {"name": "audio_cnn", "n_mels": 8},
            },
            "trunk": {"name": "mlp", "share": True},
            "fusion": {"name": fusion},
            "modality_dropout": dropout,
        }
    )


def dan_batch(n: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(n, 1, 28, 28, generator=g),
        "audio": torch.randn(n, 1, 8, 20, generator=g),
        "label": torch.randint(0, CLASSES, (n,), generator=g),
    }


def test_ogm_modulates_conv_and_linear_weights_not_norms_biases_or_embeddings() -> None:
    model = small_dan()
    chosen = {id(p) for p in modulated_weights(model, "image")}
    names = {n for n, p in model.named_parameters() if id(p) in chosen}
    assert names and all(n.startswith(("towers.image.", "proj.image.")) and n.endswith("weight") for n in names)
    for n, p in model.named_parameters():
        if n.startswith("towers.image.") and p.dim() >= 2:
            assert n in names, n  # every conv and linear weight
        if n.startswith("towers.image.") and p.dim() < 2:
            assert n not in names, n  # biases, BatchNorm


def test_sum_fusion_contributions_add_up_to_the_logits() -> None:
    model = small_dan("sum").eval()
    out = model(dan_batch())
    assert out.contributions is not None
    torch.testing.assert_close(sum(out.contributions.values()), out.logits, rtol=1e-5, atol=1e-5)


def test_modality_dropout_is_in_the_output_and_the_aux_losses_skip_dropped_samples() -> None:
    torch.manual_seed(0)
    model = small_dan(dropout=0.5).train()
    batch = dan_batch(n=64)
    out = model(batch)
    assert out.present is not None
    dropped = ~out.present["image"]
    assert 0 < int(dropped.sum()) < 64
    _, per = head_losses(out, batch["label"])
    ce = F.cross_entropy(out.modality_logits["image"], batch["label"], reduction="none")
    torch.testing.assert_close(per["image"], ce[~dropped].mean())


def test_ogm_scores_leave_out_modality_dropped_samples() -> None:
    b = build_balancer({"name": "ogm_ge", "ge": False}, MODS)
    labels = torch.tensor([0, 1, 2, 3])
    out = dominant_image_output(labels, audio_strength=5.0)
    out.contributions["image"][2:] = 0.0
    dropped = DANOutput(**{**out.__dict__, "present": {"image": torch.ones(4, dtype=torch.bool),
                                                        "audio": torch.tensor([False, False, True, True])}})
    b.after_backward(ctx(StandIn(), dropped, {"label": labels}, 0))
    assert b.weights()["k/image"] == 1.0 and b.weights()["rho/audio"] > 1.0


def test_uncertainty_log_vars_have_no_weight_decay_and_no_schedule(tmp_path: Path) -> None:
    overrides = tiny_run(
        {"train.epochs": 1, "logger": "none", "device": "cpu", "balancer.name": "uncertainty",
         "optimizer.weight_decay": 0.5, "scheduler.name": "onecycle"}
    )
    cfg = load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=u"])
    run_config(cfg)
    state = torch.load(tmp_path / "u" / "last.pt", weights_only=False)
    groups = state["module_optimizer"]["param_groups"]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)  # not annealed by the one-cycle schedule
    assert state["optimizer"]["param_groups"][0]["lr"] < cfg.optimizer.lr / 2  # the model's group is annealed


def test_resume_refuses_a_balancer_state_of_another_version(tmp_path: Path) -> None:
    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": "cpu", "balancer.name": "gradient_blend",
                          "balancer.every": 1, "balancer.estimate_epochs": 1})
    cfg = load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=g"])
    run_config(cfg)
    last = tmp_path / "g" / "last.pt"
    state = torch.load(last, weights_only=False)
    # what gradient_blend checkpointed before it estimated from copies: its window in extra state
    state["modules"]["balancer"]["_extra_state"] = {"anchor": None}
    torch.save(state, last)
    again = load_config("quickstart", [*overrides, "train.epochs=2", f"output_dir={tmp_path}", "run_name=g2",
                                       f"resume={last}"])
    with pytest.raises(CheckpointError, match=r"balancer state does not fit this version's GradientBlendBalancer"
                       r".*start a new run without resume="):
        run_config(again)
