"""MMPareto (Wei & Hu, ICML 2024) against the authors' update written out independently: per encoder, the
cosine of the fused and unimodal gradients, equal or min-norm weights, the boosted per-tensor rescaling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_balancer_agm import batch, tiny_model
from test_balancers import MODS, StandIn, ctx, make_batch

from dan.engine.trainer import head_losses
from dan.losses import StepContext, build_balancer
from dan.losses.balancers.mmpareto import pareto_weights


def test_agreeing_gradients_weigh_half_each() -> None:
    assert pareto_weights(torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.4])) == (0.5, 0.5)


def test_conflicting_gradients_take_the_min_norm_point() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-0.5, 1.0])
    k1, k2 = pareto_weights(g1, g2)
    assert k1 + k2 == pytest.approx(1.0) and k1 == pytest.approx(1.75 / 3.25)
    # the min-norm point of the segment is orthogonal to the segment
    point = k1 * g1 + k2 * g2
    assert float(point @ (g1 - g2)) == pytest.approx(0.0, abs=1e-6)
    # a vanished unimodal gradient: the reference's clamp to 0.001
    assert pareto_weights(g1, torch.zeros(2)) == pytest.approx((0.001, 0.999))


def reference_grads(model: StandIn, batch: dict, gamma: float = 1.5) -> dict[str, torch.Tensor]:
    """The authors' train_epoch step on the stand-in: every parameter's gradient after their rewrite."""
    out = model(batch)
    y = batch["label"]
    l_f = F.cross_entropy(out.logits, y)
    l_m = {m: F.cross_entropy(out.modality_logits[m], y) for m in MODS}
    names = dict(model.named_parameters())
    total = torch.autograd.grad(l_f + sum(l_m.values()), list(names.values()), retain_graph=True, allow_unused=True)
    grads = {n: g if g is not None else torch.zeros_like(p) for (n, p), g in zip(names.items(), total, strict=True)}
    for m in MODS:
        tower = [(n, p) for n, p in names.items() if n.startswith(f"towers.{m}.")]
        params = [p for _, p in tower]
        g_f = torch.autograd.grad(l_f, params, retain_graph=True)
        g_m = torch.autograd.grad(l_m[m], params, retain_graph=True)
        flat_f, flat_m = torch.cat([g.flatten() for g in g_f]), torch.cat([g.flatten() for g in g_m])
        if F.cosine_similarity(flat_f, flat_m, dim=0) > 0:
            k = (0.5, 0.5)
        else:
            v11, v12, v22 = flat_f @ flat_f, flat_f @ flat_m, flat_m @ flat_m
            c = float((v22 - v12) / (v11 + v22 - 2 * v12))
            k = (c, 1 - c)
        for (n, _), a, b in zip(tower, g_f, g_m, strict=True):
            new = 2 * k[0] * a + 2 * k[1] * b
            diff = grads[n].norm() / new.norm()
            grads[n] = diff * new * gamma if diff > 1 else new * gamma
    return grads


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gradients_match_the_authors_update(seed: int) -> None:
    torch.manual_seed(seed)
    model, twin = StandIn(), StandIn()
    twin.load_state_dict(model.state_dict())
    batch = make_batch(24, seed=seed)
    expected = reference_grads(twin, batch)
    b = build_balancer("mmpareto", MODS)
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    loss = b.combine(fused, per, ctx(model, out, batch))
    loss.backward()
    b.after_backward(ctx(model, out, batch))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)
    w = b.weights()
    assert set(w) == {"fused", "audio", "image", "k_fused/audio", "k_fused/image", "cos/audio", "cos/image"}
    assert all(0 < w[f"k_fused/{m}"] < 1 for m in MODS)


def boosted_step(optimizer: str, gamma: float) -> float:
    """How far the image encoder moves in one MMPareto step with magnitude boost ``gamma``."""
    model = tiny_model()
    balancer = build_balancer({"name": "mmpareto", "gamma": gamma}, model.modalities)
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.003))
    before = [p.detach().clone() for p in model.tower_parameters("image")]
    b = batch(0)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    c = StepContext(model, b, out, 0, 0, optimizer=opt)
    opt.zero_grad()
    balancer.combine(fused, per, c).backward()
    balancer.after_backward(c)
    opt.step()
    return float(torch.cat([(p.detach() - q).flatten() for p, q in zip(model.tower_parameters("image"), before,
                                                                      strict=True)]).norm())


def test_the_boost_moves_the_encoder_further_under_sgd_and_adam_cancels_it() -> None:
    """The paper's SGD (``balancer=mmpareto``'s optimizer) turns gamma into a longer step; Adam's first step
    is the same length whatever gamma, which is why the method config trains with SGD."""
    assert boosted_step("sgd", 1.5) / boosted_step("sgd", 1.0) == pytest.approx(1.5, rel=1e-3)
    assert boosted_step("adamw", 1.5) / boosted_step("adamw", 1.0) == pytest.approx(1.0, abs=1e-3)
