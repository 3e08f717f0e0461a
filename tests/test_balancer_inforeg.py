"""InfoReg (Huang et al., CVPR 2025) against the authors' ``train_epoch`` written out: the fused loss plus the
head-share unimodal losses, the pull of the dominant encoder towards its epoch-start weights, the Fisher
traces and the prime-window indicator k; the regulated encoder moving less than its twin under SGD and
AdamW; its state through a checkpoint; a real run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_balancer_agm import batch, tiny_model
from test_balancers import MODS, StandIn, ctx, dominant_image_output, make_batch
from torch import nn

from dan.engine.trainer import head_losses
from dan.errors import ConfigError
from dan.losses import EpochContext, StepContext, build_balancer
from dan.losses.balancers.ogm_ge import modulated_weights

STRENGTH = {"audio": 0.95, "image": 0.1}  # the reference's constants (audio, visual)


def encoder(model: nn.Module, m: str) -> list[nn.Parameter]:
    return [*model.towers[m].parameters(), *model.proj[m].parameters()]


def reference_step(model: nn.Module, anchor: nn.Module, b: dict, k: float) -> None:
    """The authors' step for two modalities (a = audio, v = image), gradients left in ``model``."""
    model.zero_grad()
    out = model(b)
    w, bias = model.head.weight, model.head.bias
    a, v = out.fused[:, :8], out.fused[:, 8:]
    out_a = a @ w[:, :8].T + bias / 2
    out_v = v @ w[:, 8:].T + bias / 2
    label = b["label"]
    (F.cross_entropy(out_v, label) + F.cross_entropy(out_a, label) + F.cross_entropy(out.logits, label)).backward()
    score_a = torch.softmax(out_a.detach(), 1).gather(1, label[:, None]).sum()
    score_v = torch.softmax(out_v.detach(), 1).gather(1, label[:, None]).sum()
    beta = beta2 = 0.0
    if score_a > score_v and k > 0.05:
        beta = 0.95 * math.exp(math.tanh(float(score_a - score_v)))
    elif score_a < score_v and k > 0.05:
        beta2 = 0.1 * math.exp(math.tanh(float(score_v - score_a)))
    with torch.no_grad():
        for m, coeff in (("audio", beta), ("image", beta2)):
            for p, p0 in zip(encoder(model, m), encoder(anchor, m), strict=True):
                p.grad += coeff * (p - p0)


def fisher_trace(grads: list[list[torch.Tensor]]) -> float:
    """The reference's trace: per weight, the mean of the summed squared gradients; summed over weights."""
    return sum(float(torch.stack([g[i] ** 2 for g in grads]).sum(0).mean()) for i in range(len(grads[0])))


def test_gradients_traces_and_window_equal_the_reference() -> None:
    ours, ref = tiny_model(), tiny_model()
    balancer = build_balancer({"name": "inforeg", "strength": STRENGTH}, ours.modalities)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    traces: dict[str, list[float]] = {m: [0.0] * 10 for m in MODS}
    pulled = 0
    for epoch in range(3):
        anchor = copy.deepcopy(ref)
        k = 1.0 if epoch == 0 else (sum(traces["audio"][-10:]) - sum(traces["audio"][-11:-1])) / sum(traces["audio"][-10:])
        balancer.on_epoch_start(EpochContext(epoch, ours))
        assert balancer.weights()["k/audio"] == pytest.approx(k, rel=1e-6)
        grads: dict[str, list[list[torch.Tensor]]] = {m: [] for m in MODS}
        for step in range(3):
            b = batch(10 * epoch + step)
            out = ours(b)
            fused, per = head_losses(out, b["label"])
            c = StepContext(ours, b, out, epoch, step, optimizer=opt_o)
            opt_o.zero_grad()
            balancer.combine(fused, per, c).backward()
            balancer.after_backward(c)
            reference_step(ref, anchor, b, k)
            for m in MODS:
                for p, r in zip(encoder(ours, m), encoder(ref, m), strict=True):
                    # atol 1e-6: fp32 sums in another order differ by 1.2e-7 on the H200 host's CPU
                    torch.testing.assert_close(p.grad, r.grad, rtol=1e-5, atol=1e-6)
                grads[m].append([p.grad.clone() for p in modulated_weights(ref, m)])
            pulled += sum(balancer.weights()[f"beta/{m}"] > 0 for m in MODS)
            opt_o.step()
            opt_r.step()
        balancer.on_epoch_end(EpochContext(epoch, ours))
        for m in MODS:
            traces[m].append(fisher_trace(grads[m]))
            assert balancer.weights()[f"trace/{m}"] == pytest.approx(traces[m][-1], rel=1e-5)
    assert pulled > 0
    for (name, p), r in zip(ours.named_parameters(), ref.parameters(), strict=True):
        if not name.startswith("aux_heads"):  # dan's auxiliary heads learn on detached features; the reference has none
            torch.testing.assert_close(p, r, rtol=1e-4, atol=1e-6)


def moved(optimizer: str, strength: float, steps: int = 20) -> float:
    """How far the image tower moves in ``steps`` InfoReg steps, image made dominant (window open)."""
    torch.manual_seed(0)
    model = StandIn()
    balancer = build_balancer({"name": "inforeg", "strength": strength}, MODS)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    )
    balancer.on_epoch_start(EpochContext(0, model))
    start = model.towers["image"].weight.detach().clone()
    for step in range(steps):
        b = make_batch(seed=step)
        out = model(b)
        fused, per = head_losses(out, b["label"])
        opt.zero_grad()
        balancer.combine(fused, per, ctx(model, out, b)).backward()
        scoring = ctx(model, dominant_image_output(b["label"]), b)
        scoring.optimizer, scoring.step = opt, step
        balancer.after_backward(scoring)
        opt.step()
    return float((model.towers["image"].weight.detach() - start).norm())


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_regulated_encoder_moves_less_than_its_twin(optimizer: str) -> None:
    ratio = moved(optimizer, strength=0.95) / moved(optimizer, strength=0.0)
    assert ratio < 0.8, f"{optimizer}: the regulated tower moved {ratio:.2f}x its unregulated twin"


def test_the_decoupled_pull_moves_the_weights_by_lr_beta_before_the_step() -> None:
    torch.manual_seed(0)
    model = StandIn()
    balancer = build_balancer({"name": "inforeg", "pull": "decoupled"}, MODS)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    balancer.on_epoch_start(EpochContext(0, model))
    with torch.no_grad():
        model.towers["image"].weight.add_(1.0)
    before = model.towers["image"].weight.detach().clone()
    b = make_batch()
    out = model(b)
    fused, per = head_losses(out, b["label"])
    balancer.combine(fused, per, ctx(model, out, b)).backward()
    scoring = ctx(model, dominant_image_output(b["label"]), b)
    scoring.optimizer = opt
    balancer.after_backward(scoring)
    beta = balancer.weights()["beta/image"]
    assert beta == pytest.approx(0.95 * math.e)  # image's score gap over 32 samples saturates the tanh
    # the decoupled pull moved the weights by lr * beta * (w - anchor) before the step, gradients untouched
    torch.testing.assert_close(before - model.towers["image"].weight.detach(), 0.01 * beta * torch.ones_like(before))
    assert balancer.weights()["beta/audio"] == 0.0


def test_a_closed_window_does_not_pull() -> None:
    balancer = build_balancer({"name": "inforeg", "threshold": 2.0}, MODS)  # k <= 1 < 2: never open
    model = StandIn()
    balancer.on_epoch_start(EpochContext(0, model))
    b = make_batch()
    out = model(b)
    fused, per = head_losses(out, b["label"])
    balancer.combine(fused, per, ctx(model, out, b)).backward()
    balancer.after_backward(ctx(model, dominant_image_output(b["label"]), b))
    assert balancer.weights()["beta/image"] == 0.0


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="balancer.pull"):
        build_balancer({"name": "inforeg", "pull": "sideways"}, MODS)
    with pytest.raises(ConfigError, match=r"\['video'\].*balancer.strength"):
        build_balancer({"name": "inforeg", "strength": {"video": 1.0}}, MODS)
    with pytest.raises(ConfigError, match="balancer.history"):
        build_balancer({"name": "inforeg", "history": 0}, MODS)


def test_state_survives_a_checkpoint() -> None:
    model = tiny_model()
    balancer = build_balancer("inforeg", model.modalities)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(2):
        balancer.on_epoch_start(EpochContext(epoch, model))
        b = batch(epoch)
        out = model(b)
        fused, per = head_losses(out, b["label"])
        c = StepContext(model, b, out, epoch, 0, optimizer=opt)
        opt.zero_grad()
        balancer.combine(fused, per, c).backward()
        balancer.after_backward(c)
        opt.step()
        if epoch == 0:
            balancer.on_epoch_end(EpochContext(epoch, model))
    restored = build_balancer("inforeg", model.modalities)
    restored.load_state_dict(balancer.state_dict())
    assert restored.weights()["k/audio"] == balancer.weights()["k/audio"]
    assert restored.weights()["trace/image"] == balancer.weights()["trace/image"] > 0
    restored.on_epoch_end(EpochContext(1, model))
    balancer.on_epoch_end(EpochContext(1, model))
    assert restored.weights() == balancer.weights()


def test_a_real_run_logs_the_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 2, "logger": "console", "device": "cpu", "balancer.name": "inforeg"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=r"]))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    keys = {k for row in rows for k in row}
    assert {"balancer/k/audio", "balancer/trace/image"} <= keys, sorted(keys)
