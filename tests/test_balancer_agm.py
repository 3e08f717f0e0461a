"""AGM (Li et al., ICCV 2023) against the authors' steps written out: the Shapley shares of the fused output
from masked forwards, the mono scores, the ratio against the running mean, and backward hooks scaling each
share's gradient (the reference's ``GradMod``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dan.engine.trainer import head_losses
from dan.errors import ConfigError
from dan.losses import StepContext, build_balancer
from dan.models import build_model

CLASSES = 4


def tiny_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "num_classes": CLASSES, "dim": 8, "modality_dropout": dropout,
            "towers": {"image": {"name": "image_cnn", "channels": [4, 4]}, "audio": {"name": "audio_cnn", "n_mels": 8}},
            "trunk": {"name": "mlp", "share": True}, "fusion": {"name": "concat"},
        }
    )


def batch(seed: int, n: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(n, 1, 28, 28, generator=g),
        "audio": torch.randn(n, 1, 8, 20, generator=g),
        "label": torch.randint(0, CLASSES, (n,), generator=g),
    }


class Scale(nn.Module):
    """The reference's ``Modality_out``: identity whose backward hook multiplies the gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = 1.0
        self.register_full_backward_hook(lambda m, gin, gout: (gin[0] * self.scale,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def reference_step(model: nn.Module, b: dict, running: dict[str, float], iteration: int, alpha: float):
    """One step of the authors' ``train`` for two modalities (a = audio, v = image): gradients, the
    coefficients and the updated running scores."""
    total = model(b).logits
    model.eval()
    pad_visual_out = model({**b, "image_mask": torch.zeros(len(b["label"]), dtype=torch.bool)}).logits
    pad_audio_out = model({**b, "audio_mask": torch.zeros(len(b["label"]), dtype=torch.bool)}).logits
    model.train()
    hook_a, hook_v = Scale(), Scale()
    m_a = hook_a(0.5 * (total - pad_audio_out + pad_visual_out))
    m_v = hook_v(0.5 * (total - pad_visual_out + pad_audio_out))
    label = b["label"]
    score = {}
    for name, out in (("a", m_a), ("v", m_v)):
        p = F.softmax(out, 1)[torch.arange(len(label)), label]
        score[name] = float(torch.where(p < 1e-8, torch.full_like(p, -math.log(1e-8)), -torch.log(p)).mean().detach())
    mean = (score["a"] + score["v"]) / 2
    ratio = {k: math.exp((mean - s) * 2) for k, s in score.items()}
    mean_opt = (running["a"] + running["v"]) / 2
    optimal = {k: math.exp((mean_opt - s) * 2) for k, s in running.items()}
    coeff = {k: math.exp(alpha * (optimal[k] - ratio[k])) for k in ratio}
    new_running = {k: running[k] * iteration / (iteration + 1) + score[k] / (iteration + 1) for k in score}
    hook_a.scale, hook_v.scale = coeff["a"], coeff["v"]
    loss = F.cross_entropy(m_a + m_v, label)
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None], coeff, new_running, float(loss.detach())


def dan_step(model: nn.Module, balancer, b: dict, step: int):
    out = model(b)
    fused, per = head_losses(out, b["label"])
    ctx = StepContext(model, b, out, 0, step)
    loss = balancer.combine(fused, per, ctx)
    model.zero_grad()
    loss.backward()
    return out, loss, ctx


def test_gradients_and_coefficients_equal_the_reference_over_steps() -> None:
    alpha = 2.5
    ref_model, model = tiny_model(), tiny_model()
    balancer = build_balancer({"name": "agm", "alpha": alpha, "clip": None}, model.modalities)
    running = {"a": 0.0, "v": 0.0}
    aux = {p for h in model.aux_heads.values() for p in h.parameters()}
    for step in range(3):
        b = batch(step)
        ref_grads, coeff, running, ref_loss = reference_step(ref_model, b, running, step, alpha)
        out, loss, _ = dan_step(model, balancer, b, step)
        w = balancer.weights()
        assert w["coeff/audio"] == pytest.approx(coeff["a"], rel=1e-5)
        assert w["coeff/image"] == pytest.approx(coeff["v"], rel=1e-5)
        assert balancer.running.tolist() == pytest.approx([running["a"], running["v"]], rel=1e-6)
        grads = [p.grad for p in model.parameters() if p.grad is not None and p not in aux]
        assert len(grads) == len(ref_grads)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)
        aux_loss = sum(F.cross_entropy(model.aux_heads[m](out.embeddings[m].detach()), b["label"]) for m in model.modalities)
        assert float(loss.detach()) == pytest.approx(ref_loss + float(aux_loss.detach()), rel=1e-5)
        # both models take the same SGD step so later steps compare from the same weights
        with torch.no_grad():
            for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
                if q.grad is not None:
                    q -= 0.5 * q.grad
                if p.grad is not None and p not in aux:
                    p -= 0.5 * p.grad
    assert coeff["a"] != pytest.approx(1.0) and coeff["v"] != pytest.approx(1.0)


def test_shares_sum_to_the_fused_output_and_an_absent_modality_has_none() -> None:
    from dan.losses.balancers.agm import shapley_shares

    model = tiny_model()
    b = batch(3)
    b["audio_mask"] = torch.tensor([True, False] * 6)
    model.eval()  # the subsets are forwarded in eval mode: compare with an eval-mode full output
    out = model(b)
    shares = shapley_shares(model, b, out, model.modalities)
    torch.testing.assert_close(shares["audio"] + shares["image"], out.logits)
    torch.testing.assert_close(shares["audio"][1::2], torch.zeros(6, CLASSES))


def test_outside_the_window_the_loss_is_unmodulated_and_clip_applies() -> None:
    model = tiny_model()
    balancer = build_balancer({"name": "agm", "end_epoch": 0, "clip": 1e-3}, model.modalities)
    b = batch(0)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    ctx = StepContext(model, b, out, 1, 0)
    balancer.combine(fused, per, ctx).backward()
    assert balancer.weights()["coeff/audio"] == 1.0 and balancer.weights()["coeff/image"] == 1.0
    balancer.after_backward(ctx)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert float(norm) == pytest.approx(1e-3, rel=1e-4)


def test_agm_config_errors() -> None:
    with pytest.raises(ConfigError, match="end_epoch"):
        build_balancer({"name": "agm", "start_epoch": 3, "end_epoch": 1}, ["audio", "image"])
    with pytest.raises(ConfigError, match="balancer.clip"):
        build_balancer({"name": "agm", "clip": 0}, ["audio", "image"])


def test_a_real_run_keeps_its_running_scores_in_the_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": "cpu", "balancer.name": "agm"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=a"]))
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["modules"]["balancer"]
    assert state["seen"].tolist() == [6.0, 6.0]  # 120 samples in batches of 20: six steps
    assert all(0 < s < -math.log(1e-8) for s in state["running"].tolist())


def easy_image_batch(step: int, n: int = 24) -> dict[str, torch.Tensor]:
    """A bright band per class in the image (easy), noise for audio."""
    g = torch.Generator().manual_seed(step)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    img = torch.randn(n, 1, 28, 28, generator=g) * 0.3
    for i, c in enumerate(y.tolist()):
        img[i, 0, 7 * c:7 * c + 7, :] += 2.0
    return {"image": img, "audio": torch.randn(n, 1, 8, 20, generator=g), "label": y}


def first_step(optimizer: str, alpha: float, modulate: str = "auto") -> tuple[dict[str, float], dict[str, float]]:
    """Each modality's encoder-weight update norm over one AGM step, and the coefficients it used."""
    from dan.losses.balancers.ogm_ge import modulated_weights

    model = tiny_model()
    warm = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(1, 21):  # BatchNorm's running statistics settle, so eval-mode subsets match the batch
        b = easy_image_batch(step)
        warm.zero_grad()
        F.cross_entropy(model(b).logits, b["label"]).backward()
        warm.step()
    balancer = build_balancer({"name": "agm", "alpha": alpha, "clip": None, "modulate": modulate}, model.modalities)
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.003))
    before = {m: [p.detach().clone() for p in modulated_weights(model, m)] for m in model.modalities}
    b = easy_image_batch(0)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    c = StepContext(model, b, out, 0, 0, optimizer=opt)
    opt.zero_grad()
    balancer.combine(fused, per, c).backward()
    balancer.after_backward(c)
    opt.step()
    balancer.after_step(c)
    moved = {m: float(torch.cat([(p.detach() - q).flatten() for p, q in zip(modulated_weights(model, m), before[m],
                                                                           strict=True)]).norm())
             for m in model.modalities}
    return moved, {m: balancer.weights()[f"coeff/{m}"] for m in model.modalities}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_damped_encoder_moves_less_than_its_unmodulated_twin(optimizer: str) -> None:
    moved, coeffs = first_step(optimizer, alpha=2.5)
    twin, _ = first_step(optimizer, alpha=0.0)
    damped = min(coeffs, key=coeffs.get)
    assert coeffs[damped] < 0.9, coeffs
    ratio = moved[damped] / twin[damped]
    assert ratio < 0.95, f"{optimizer}: {damped} (c = {coeffs[damped]:.2f}) moved {ratio:.2f}x its twin"
    if optimizer == "adamw":  # the step itself is scaled: exactly c
        assert ratio == pytest.approx(coeffs[damped], rel=1e-4)


def test_adam_cancels_the_gradient_scale_which_is_why_auto_scales_the_step() -> None:
    moved, coeffs = first_step("adamw", alpha=2.5, modulate="gradient")
    twin, _ = first_step("adamw", alpha=0.0, modulate="gradient")
    damped = min(coeffs, key=coeffs.get)
    assert moved[damped] / twin[damped] > 0.95, (coeffs, moved, twin)
