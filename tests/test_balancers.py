"""Modality balancers, checked against each paper's formulas on constructed cases.

The model is a tiny stand-in honouring the DANModel contract (two linear towers, a shared linear trunk
layer, concat fusion + linear head with its OGM-GE contributions, auxiliary heads), so these tests do
not depend on dan.models.dan.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.losses import BALANCERS, Balancer, EpochContext, StepContext, build_balancer
from dan.losses.balancers import (
    GradNormBalancer,
    OGMGEBalancer,
    blend_weights,
    multibench_weights,
)
from dan.models.output import DANOutput

MODS = ("audio", "image")
CLASSES = 4


class Split(nn.Module):
    """The concat fusion's ``split`` over the stand-in's fused vector."""

    def __init__(self, modalities: list[str], d: int) -> None:
        super().__init__()
        self.modalities, self.d = modalities, d

    def split(self, fused: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.modalities, fused.split(self.d, dim=-1), strict=True))


class StandIn(nn.Module):
    """towers_m: Linear(IN_m, D) -> shared trunk layer Linear(D, D) -> concat -> Linear(2D, C) (or sum ->
    Linear(D, C)); aux heads."""

    def __init__(self, dims: dict[str, int] | None = None, d: int = 8, fusion: str = "concat") -> None:
        super().__init__()
        dims = dims or {"audio": 5, "image": 6}
        self.modalities = sorted(dims)
        self.dim, self.sum = d, fusion == "sum"
        self.towers = nn.ModuleDict({m: nn.Linear(n, d) for m, n in dims.items()})
        self.trunk = nn.Linear(d, d)
        self.head = nn.Linear(d if self.sum else d * len(dims), CLASSES)
        self.aux_heads = nn.ModuleDict({m: nn.Linear(d, CLASSES) for m in dims})
        self.fusion = Split(self.modalities, d)

    def forward(self, batch: dict[str, Tensor]) -> DANOutput:
        emb = {m: torch.relu(self.trunk(torch.relu(self.towers[m](batch[m])))) for m in self.modalities}
        fused = torch.cat([emb[m] for m in self.modalities], dim=1)
        blocks = self.head.weight.split(emb[self.modalities[0]].shape[1], dim=1)
        if self.sum:
            fused = torch.stack([emb[m] for m in self.modalities]).sum(0)
            blocks = (self.head.weight,) * len(self.modalities)
        bias = self.head.bias / len(self.modalities)
        contributions = {m: emb[m] @ w.T + bias for m, w in zip(self.modalities, blocks, strict=True)}
        return DANOutput(
            logits=self.head(fused),
            modality_logits={m: self.aux_heads[m](emb[m]) for m in self.modalities},
            embeddings=emb,
            fused=fused,
            contributions=contributions,
        )

    def tower_parameters(self, m: str) -> list[nn.Parameter]:
        return list(self.towers[m].parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())


def ctx(model, output, batch=None, epoch: int = 0) -> StepContext:  # type: ignore[no-untyped-def]
    """The step a balancer sees (no extra forward passes or optimizer)."""
    return StepContext(model, batch if batch is not None else {}, output, epoch)


def make_batch(n: int = 32, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    dims = dims or {"audio": 5, "image": 6}
    batch = {m: torch.randn(n, k, generator=g) for m, k in dims.items()}
    batch["label"] = torch.randint(0, CLASSES, (n,), generator=g)
    return batch


def head_losses(out: DANOutput, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    return F.cross_entropy(out.logits, labels), {
        m: F.cross_entropy(z, labels) for m, z in out.modality_logits.items()
    }


def train_step(
    balancer: Balancer, model: StandIn, opt: torch.optim.Optimizer, batch, epoch: int = 0, scale=None
):
    """One trainer step as the contract orders it; ``scale`` multiplies named modality losses."""
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    per = {m: v * (scale or {}).get(m, 1.0) for m, v in per.items()}
    loss = balancer.combine(fused, per, ctx(model, out, batch))
    opt.zero_grad()
    loss.backward()
    balancer.after_backward(ctx(model, out, batch, epoch))
    opt.step()
    return out, fused, per, loss


# --- registry and config -------------------------------------------------------------------------


def test_registry_lists_every_strategy_and_unknown_name_lists_choices() -> None:
    assert {"static", "uncertainty", "gradnorm", "gradient_blend", "ogm_ge"} <= set(BALANCERS.names())
    with pytest.raises(ConfigError, match="valid choices: .*gradient_blend.*ogm_ge"):
        build_balancer("nope", MODS)


def test_build_from_name_dict_and_omegaconf() -> None:
    assert build_balancer("static", MODS).modalities == MODS
    b = build_balancer({"name": "gradnorm", "alpha": 0.5}, ["image", "audio"])
    assert isinstance(b, GradNormBalancer) and b.alpha == 0.5 and b.heads == ("fused", "audio", "image")
    cfg = OmegaConf.create({"name": "ogm_ge", "alpha": 0.3, "end_epoch": 4})
    o = build_balancer(cfg, MODS)
    assert isinstance(o, OGMGEBalancer) and (o.alpha, o.end_epoch) == (0.3, 4)
    with pytest.raises(ConfigError, match="balancer.name"):
        build_balancer({"alpha": 1.0}, MODS)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "static", "weights": {"image": -1.0}}, "weights.image"),
        ({"name": "static", "weights": {"video": 1.0}}, "weights.video"),
        ({"name": "static", "weights": {"audio": "x"}}, "weights.audio"),
        ({"name": "uncertainty", "init": "big"}, "init"),
        ({"name": "gradnorm", "alpha": -0.1}, "alpha"),
        ({"name": "gradnorm", "lr": 0.0}, "lr"),
        ({"name": "gradient_blend", "every": 0}, "every"),
        ({"name": "gradient_blend", "every": 1.5}, "every"),
        ({"name": "gradient_blend", "form": "other"}, "form"),
        ({"name": "gradient_blend", "eps": -1}, "eps"),
        ({"name": "ogm_ge", "alpha": -1}, "alpha"),
        ({"name": "ogm_ge", "start_epoch": 5, "end_epoch": 2}, "end_epoch"),
        ({"name": "ogm_ge", "start_epoch": -1}, "start_epoch"),
        ({"name": "ogm_ge", "ge": "yes"}, "ge"),
        ({"name": "ogm_ge", "modulate": "adam"}, "balancer.modulate"),
        ({"name": "static", "wieghts": {}}, "wieghts"),
    ],
)
def test_bad_config_names_the_key(cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_balancer(cfg, MODS)


@pytest.mark.parametrize("mods", [[], "image", ["image", "image"], ["fused", "image"]])
def test_bad_modalities_rejected(mods) -> None:
    with pytest.raises(ConfigError, match="modalities"):
        build_balancer("static", mods)


def test_losses_for_unknown_modality_rejected() -> None:
    with pytest.raises(ConfigError, match="video"):
        build_balancer("static", MODS).combine(
            torch.tensor(1.0), {"video": torch.tensor(1.0)}, ctx(None, None)
        )


def test_only_gradient_blend_needs_heldout() -> None:
    assert {n: BALANCERS.get(n).needs_heldout for n in BALANCERS.names()} == {
        "agm": False,
        "gradient_blend": True,
        "gradnorm": False,
        "greedy": False,
        "inforeg": False,
        "mmcosine": False,
        "mla": False,
        "mmpareto": False,
        "relearning": False,
        "reconboost": False,
        "ogm_ge": False,
        "pmr": False,
        "static": False,
        "ume": False,
        "umt": False,
        "uncertainty": False,
    }


EXPECTED_KEYS = {
    "agm": {"fused", "audio", "image", "coeff/audio", "coeff/image", "score/audio", "score/image"},
    "static": {"fused", "audio", "image"},
    "uncertainty": {"fused", "audio", "image"},
    "ume": {"fused", "audio", "image"},
    "umt": {"fused", "audio", "image", "distill/audio", "distill/image"},
    "gradnorm": {"fused", "audio", "image"},
    "gradient_blend": {"fused", "audio", "image"},
    "inforeg": {"fused", "audio", "image", "beta/audio", "beta/image", "k/audio", "k/image", "trace/audio", "trace/image"},
    "ogm_ge": {"fused", "audio", "image", "k/audio", "k/image", "rho/audio", "rho/image"},
    "mmcosine": {"fused", "audio", "image"},
    "mla": {"fused", "audio", "image", "loss/audio", "loss/image"},
    "mmpareto": {"fused", "audio", "image", "k_fused/audio", "k_fused/image", "cos/audio", "cos/image"},
    "pmr": {"fused", "audio", "image", "beta/audio", "beta/image", "ratio/audio", "ratio/image"},
    "reconboost": {"fused", "audio", "image", "boosted/audio", "boosted/image", "boost_loss"},
    "relearning": {"fused", "audio", "image", "alpha/audio", "alpha/image", "purity_gap/audio", "purity_gap/image"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_weights_keys_are_stable_through_training(name: str) -> None:
    torch.manual_seed(0)
    model, b = StandIn(fusion="sum" if name == "mla" else "concat"), build_balancer(name, MODS)
    model.num_classes = CLASSES
    opt = torch.optim.SGD([*model.parameters(), *b.parameters()], lr=0.05)
    seen = [b.weights()]
    for epoch in range(3):
        for step in range(2):
            train_step(b, model, opt, make_batch(seed=step), epoch)
            seen.append(b.weights())
        loaders = {"train": [make_batch(seed=5)], "val": [make_batch(seed=6)]}
        b.on_epoch_end(EpochContext(epoch, model, {"fused": 1.0 - 0.1 * epoch, "audio": 1.2, "image": 0.9}, loaders))
        seen.append(b.weights())
    for w in seen:
        assert set(w) == EXPECTED_KEYS[name]
        assert all(isinstance(v, float) and math.isfinite(v) for v in w.values())


# --- static ------------------------------------------------------------------------------------------


def test_static_sums_exactly() -> None:
    b = build_balancer({"name": "static", "weights": {"image": 0.25}}, MODS)
    lf, la, li = torch.tensor(1.5), torch.tensor(2.0), torch.tensor(4.0)
    assert b.combine(lf, {"audio": la, "image": li}, ctx(None, None)).item() == 1.5 + 2.0 + 0.25 * 4.0
    assert b.combine(lf, {"image": li}, ctx(None, None)).item() == 1.5 + 1.0
    assert b.weights() == {"fused": 1.0, "audio": 1.0, "image": 0.25}


# --- uncertainty ----------------------------------------------------------------------------------


def test_uncertainty_objective_equals_formula() -> None:
    b = build_balancer("uncertainty", MODS)
    with torch.no_grad():
        b.log_vars.copy_(torch.tensor([0.3, -0.7, 1.2]))  # fused, audio, image
    losses = {"fused": 0.8, "audio": 2.5, "image": 0.1}
    got = b.combine(
        torch.tensor(0.8), {"audio": torch.tensor(2.5), "image": torch.tensor(0.1)}, ctx(None, None)
    )
    want = sum(math.exp(-s) * losses[h] + s for h, s in zip(b.heads, [0.3, -0.7, 1.2], strict=True))
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert b.weights()["audio"] == pytest.approx(math.exp(0.7), rel=1e-6)


def test_uncertainty_downweights_the_persistently_larger_loss() -> None:
    b = build_balancer("uncertainty", MODS)
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    losses = {"audio": torch.tensor(4.0), "image": torch.tensor(0.5)}
    before = b.weights()
    for _ in range(300):
        opt.zero_grad()
        b.combine(torch.tensor(1.0), losses, ctx(None, None)).backward()
        opt.step()
    after = b.weights()
    assert after["audio"] < before["audio"] and after["audio"] < after["fused"] < after["image"]
    # the stationary point of exp(-s) L + s is exp(-s) = 1 / L
    assert after["audio"] == pytest.approx(0.25, rel=0.05)
    assert after["image"] == pytest.approx(2.0, rel=0.05)


# --- gradnorm ---------------------------------------------------------------------------------------


def reference_weight_grad(
    b: GradNormBalancer, model: StandIn, fused: Tensor, per: dict[str, Tensor]
) -> Tensor:
    """The paper's L_grad differentiated through ∇_W(w_i L_i) with create_graph, for comparison."""
    losses = torch.stack([fused, *(per[m] for m in b.modalities)])
    w = b.loss_weights.detach().clone().requires_grad_(True)
    shared = model.shared_parameters()
    norms = []
    for i in range(len(losses)):
        grads = torch.autograd.grad(w[i] * losses[i], shared, retain_graph=True, create_graph=True)
        norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
    g = torch.stack(norms)
    ratio = losses.detach() / b.initial_losses
    target = (g.mean() * (ratio / ratio.mean()) ** b.alpha).detach()
    return torch.autograd.grad((g - target).abs().sum(), w)[0]


def test_gradnorm_weight_gradient_equals_create_graph_formulation() -> None:
    torch.manual_seed(1)
    model, b = StandIn(), build_balancer({"name": "gradnorm", "lr": 0.05}, MODS)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        train_step(b, model, opt, make_batch(seed=step), scale={"image": 3.0})
    out = model(make_batch(seed=7))
    fused, per = head_losses(out, make_batch(seed=7)["label"])
    b.combine(fused, per, ctx(model, out))
    torch.testing.assert_close(b._pending, reference_weight_grad(b, model, fused, per), rtol=1e-5, atol=1e-7)


def test_gradnorm_main_backward_does_not_touch_weights() -> None:
    torch.manual_seed(0)
    model, b = StandIn(), build_balancer("gradnorm", MODS)
    # the trainer may hand the balancer's parameters to its optimiser: they must still not move
    opt = torch.optim.SGD([*model.parameters(), *b.parameters()], lr=100.0)
    batch = make_batch()
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    b.combine(fused, per, ctx(model, out, batch)).backward()
    assert b.loss_weights.grad is None
    opt.step()
    assert b.weights() == {"fused": 1.0, "audio": 1.0, "image": 1.0}
    expected = b.loss_weights - b.lr * torch.sign(b._pending)  # Adam's first step moves each w by lr
    b.after_backward(ctx(model, out, batch, 0))
    expected = expected.clamp_min(1e-4) * 3 / expected.clamp_min(1e-4).sum()
    torch.testing.assert_close(b.loss_weights.detach(), expected)
    assert b.loss_weights.grad is None


def test_gradnorm_shifts_weight_away_from_the_scaled_loss_and_keeps_sum() -> None:
    torch.manual_seed(0)
    model, b = StandIn(), build_balancer({"name": "gradnorm", "lr": 0.02}, MODS)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    for step in range(40):
        train_step(b, model, opt, make_batch(seed=step % 4), scale={"image": 10.0})
        assert sum(b.weights().values()) == pytest.approx(3.0, rel=1e-5)
    w = b.weights()
    # image's loss (×10) has by far the largest gradient on W: its weight falls, the others rise
    assert w["image"] < 0.5 < 1.0 < w["audio"]
    assert w["fused"] > 1.0


class RateModel(nn.Module):
    """L_i = W_i + c_i: every loss has gradient norm 1 on W, the c_i set the loss values."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.w]


def test_gradnorm_favours_the_loss_that_falls_slower() -> None:
    model, b = RateModel(), build_balancer("gradnorm", MODS)

    def step(values: list[float]) -> None:
        losses = model.w + torch.tensor(values)
        b.combine(losses[0], {"audio": losses[1], "image": losses[2]}, ctx(model, None))
        b.after_backward(ctx(model, None, {}, 0))

    step([2.0, 2.0, 2.0])  # L(0); all ratios equal, so G_i == target and nothing moves
    assert b.weights() == pytest.approx({"fused": 1.0, "audio": 1.0, "image": 1.0})
    for _ in range(5):
        step([1.4, 1.0, 1.8])  # audio fell fastest, image slowest
    w = b.weights()
    assert w["image"] > w["fused"] > w["audio"]
    assert sum(w.values()) == pytest.approx(3.0)


def test_gradnorm_skips_update_outside_training() -> None:
    torch.manual_seed(0)
    model, b = StandIn(), build_balancer("gradnorm", MODS)
    batch = make_batch()
    with torch.no_grad():
        out = model(batch)
        fused, per = head_losses(out, batch["label"])
        value = b.combine(fused, per, ctx(model, out, batch))
    b.after_backward(ctx(model, out, batch, 0))
    assert value.item() == pytest.approx((fused + per["audio"] + per["image"]).item())
    assert torch.isnan(b.initial_losses).all() and b.weights()["audio"] == 1.0


def test_gradnorm_needs_shared_parameters() -> None:
    model = StandIn()
    model.trunk.requires_grad_(False)
    out = model(make_batch())
    fused, per = head_losses(out, make_batch()["label"])
    with pytest.raises(ConfigError, match="shared_parameters"):
        build_balancer("gradnorm", MODS).combine(fused, per, ctx(model, out))


def test_gradnorm_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model, b = StandIn(), build_balancer("gradnorm", MODS)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        train_step(b, model, opt, make_batch(seed=step), scale={"image": 5.0})
    fresh = build_balancer("gradnorm", MODS)
    fresh.load_state_dict(b.state_dict())
    assert fresh.weights() == b.weights()
    torch.testing.assert_close(fresh.initial_losses, b.initial_losses)
    assert fresh._optimizer.state_dict()["state"][0]["step"] == 3


# --- gradient_blend ---------------------------------------------------------------------------------

# heads in order fused, audio, image
T_N, V_N = [1.0, 1.2, 0.9], [1.2, 1.3, 1.0]
T_NK, V_NK = [0.5, 0.95, 0.3], [0.9, 1.1, 0.9]


def as_dict(values: list[float]) -> dict[str, float]:
    return dict(zip(("fused", "audio", "image"), values, strict=True))


def test_blend_weights_is_the_papers_formula() -> None:
    w = blend_weights(*(torch.tensor(v, dtype=torch.float64) for v in (T_N, V_N, T_NK, V_NK)))
    # G = (0.3, 0.2, 0.1); O = (0.2, 0.05, 0.5); G / O² = (7.5, 80, 0.4)
    raw = torch.tensor([7.5, 80.0, 0.4], dtype=torch.float64)
    torch.testing.assert_close(w, raw / raw.sum())
    assert w.sum().item() == pytest.approx(1.0)


def test_blend_takes_the_absolute_gain_as_the_reference_codes() -> None:
    t = torch.tensor
    # audio's held-out loss rose by 0.1 (G = -0.1), with O = 0.3: |G| / O² as MultiBench (delta) and
    # BalanceBenchmark compute it, not a zero weight
    w = blend_weights(t([1.0, 1.0, 1.0]), t([1.2, 1.2, 1.2]), t([0.8, 0.8, 0.8]), t([1.1, 1.3, 1.1]))
    raw = t([0.1 / 0.1**2, 0.1 / 0.3**2, 0.1 / 0.1**2])
    torch.testing.assert_close(w, raw / raw.sum())
    # image improved without any overfitting growth (O = 0): finite, dominant
    w = blend_weights(t([1.0, 1.0, 1.0]), t([1.2, 1.2, 1.2]), t([0.8, 0.8, 0.9]), t([1.1, 1.1, 1.1]))
    assert torch.isfinite(w).all() and w[2] > 0.99
    # a head never measured (NaN) gets 0
    w = blend_weights(t([float("nan"), 1.0]), t([1.2, 1.2]), t([0.8, 0.8]), t([1.1, 1.1]))
    assert w.tolist() == [0.0, 1.0]


def test_multibench_form_floors_a_negative_gap() -> None:
    train, heldout = torch.tensor(T_NK), torch.tensor(V_NK)
    raw = [0.9 / 0.4**2, 1.1 / 0.15**2, 0.9 / 0.6**2]
    torch.testing.assert_close(multibench_weights(train, heldout), torch.tensor(raw) / sum(raw))
    # fused: held-out below train (V - T = -0.2) is MultiBench's 1e-4, not 0.2 squared
    w = multibench_weights(torch.tensor([0.9, 0.5]), torch.tensor([0.7, 0.9]))
    raw = [0.7 / 1e-4**2, 0.9 / 0.4**2]
    torch.testing.assert_close(w, torch.tensor(raw) / sum(raw))


def heads_mean_loss(model: nn.Module, batches: list[dict[str, Tensor]]) -> dict[str, float]:
    """Each head's mean cross-entropy over ``batches`` in eval mode (the recipe's measure)."""
    model.eval()
    with torch.no_grad():
        outs = [(model(b), b["label"]) for b in batches]
    model.train()
    n = sum(len(y) for _, y in outs)
    fused = sum(F.cross_entropy(o.logits, y, reduction="sum") for o, y in outs) / n
    per = {m: sum(F.cross_entropy(o.modality_logits[m], y, reduction="sum") for o, y in outs) / n for m in MODS}
    return {"fused": float(fused), **{m: float(v) for m, v in per.items()}}


def reference_blend(model: StandIn, train: list, heldout: list, epochs: int, lr: float) -> list[float]:
    """The paper's online estimate written out: per head, a copy trained on that head alone with SGD."""
    raw = []
    for head in ("fused", "audio", "image"):
        copy_ = StandIn()
        copy_.load_state_dict(model.state_dict())
        t_n, v_n = heads_mean_loss(copy_, train)[head], heads_mean_loss(copy_, heldout)[head]
        opt = torch.optim.SGD(copy_.parameters(), lr=lr)
        for _ in range(epochs):
            for b in train:
                out = copy_(b)
                logits = out.logits if head == "fused" else out.modality_logits[head]
                loss = F.cross_entropy(logits, b["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
        t_k, v_k = heads_mean_loss(copy_, train)[head], heads_mean_loss(copy_, heldout)[head]
        raw.append(abs(v_n - v_k) / ((v_k - t_k) - (v_n - t_n)) ** 2)
    return [r / sum(raw) for r in raw]


def blend_context(model: StandIn, epoch: int, lr: float = 0.5) -> tuple[EpochContext, list, list]:
    train = [make_batch(16, seed=s) for s in range(3)]
    heldout = [make_batch(16, seed=10 + s) for s in range(2)]
    ctx_ = EpochContext(
        epoch,
        model,
        loaders={"train": train, "heldout": heldout},
        measure=heads_mean_loss,
        new_optimizer=lambda params: torch.optim.SGD(params, lr=lr),
    )
    return ctx_, train, heldout


def test_gradient_blend_estimates_from_copies_trained_on_one_head_each() -> None:
    torch.manual_seed(0)
    model = StandIn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b = build_balancer({"name": "gradient_blend", "every": 2}, MODS)
    ctx_, train, heldout = blend_context(model, epoch=0)
    b.on_epoch_start(ctx_)
    expected = reference_blend(model, train, heldout, epochs=2, lr=0.5)
    assert b.weights() == pytest.approx(as_dict(expected), rel=1e-5)
    assert sum(b.weights().values()) == pytest.approx(1.0)
    # the joint model is untouched: only the copies trained
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # no feedback: the weights in force do not enter the estimate
    b.head_weights.copy_(torch.tensor([0.9, 0.05, 0.05]))
    b.on_epoch_start(ctx_)
    assert b.weights() == pytest.approx(as_dict(expected), rel=1e-5)


def test_gradient_blend_schedule_and_objective() -> None:
    torch.manual_seed(0)
    model = StandIn()
    b = build_balancer({"name": "gradient_blend", "every": 2, "estimate_epochs": 1}, MODS)
    ctx_, _, _ = blend_context(model, epoch=1)
    b.on_epoch_start(ctx_)  # inside a super-epoch: nothing estimated
    assert b.weights() == pytest.approx(as_dict([1 / 3] * 3))
    ctx_.epoch = 2
    b.on_epoch_start(ctx_)
    w = b.weights()
    assert w != pytest.approx(as_dict([1 / 3] * 3))
    assert torch.isfinite(b.last_losses).all()
    got = b.combine(torch.tensor(1.0), {"audio": torch.tensor(2.0), "image": torch.tensor(3.0)}, ctx(None, None))
    assert got.item() == pytest.approx(w["fused"] + 2 * w["audio"] + 3 * w["image"], rel=1e-6)
    fresh = build_balancer({"name": "gradient_blend", "every": 2, "estimate_epochs": 1}, MODS)
    fresh.load_state_dict(b.state_dict())
    assert fresh.weights() == pytest.approx(w)


def test_gradient_blend_needs_heldout_data_and_a_measure() -> None:
    b = build_balancer("gradient_blend", MODS)
    with pytest.raises(ConfigError, match=r"missing: \['heldout', 'measure', 'new_optimizer'\].*needs_heldout"):
        b.on_epoch_start(EpochContext(0, StandIn(), loaders={"train": [make_batch()]}))


# --- ogm_ge -------------------------------------------------------------------------------------------


def dominant_image_output(labels: Tensor, audio_strength: float = 0.0) -> DANOutput:
    """Image contributions put logit 5 on the true class; audio's are flat (or ``audio_strength``)."""
    onehot = F.one_hot(labels, CLASSES).float()
    contributions = {"image": 5.0 * onehot, "audio": audio_strength * onehot}
    return DANOutput(
        logits=onehot, modality_logits={}, embeddings={}, fused=onehot, contributions=contributions
    )


def grads_after(b: OGMGEBalancer, model: StandIn, batch, epoch: int, output=None) -> tuple[dict, dict]:
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    model.zero_grad()
    b.combine(fused, per, ctx(model, out, batch)).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    b.after_backward(ctx(model, output if output is not None else out, batch, epoch))
    return before, {n: p.grad.clone() for n, p in model.named_parameters()}


def expected_image_k(labels: Tensor, alpha: float) -> tuple[float, float]:
    p = math.exp(5) / (math.exp(5) + CLASSES - 1)
    rho = (len(labels) * p) / (len(labels) / CLASSES)
    return 1 - math.tanh(alpha * rho), rho


def test_ogm_scales_dominant_tower_by_exactly_k_and_leaves_the_other() -> None:
    torch.manual_seed(0)
    model, b = StandIn(), build_balancer({"name": "ogm_ge", "alpha": 0.1, "ge": False}, MODS)
    batch = make_batch(n=8)
    before, after = grads_after(b, model, batch, 0, dominant_image_output(batch["label"]))
    k, rho = expected_image_k(batch["label"], 0.1)
    assert 0 < k < 1
    w = b.weights()
    assert w["k/image"] == pytest.approx(k) and w["rho/image"] == pytest.approx(rho)
    assert w["k/audio"] == 1.0 and w["rho/audio"] == pytest.approx(1 / rho)
    for name in before:
        if name == "towers.image.weight":  # the reference scales weights only: the bias keeps its gradient
            torch.testing.assert_close(after[name], before[name] * k)
        else:  # image bias, audio tower, shared trunk, heads: untouched
            assert torch.equal(after[name], before[name]), name


def test_ogm_scores_come_from_the_models_contributions() -> None:
    torch.manual_seed(3)
    model, b = StandIn(), build_balancer({"name": "ogm_ge", "ge": False}, MODS)
    batch = make_batch(n=16)
    out = model(batch)
    # the stand-in honours W_m φ_m + b/M
    torch.testing.assert_close(sum(out.contributions.values()), out.logits)
    s = {m: torch.softmax(out.contributions[m], 1)[torch.arange(16), batch["label"]].sum() for m in MODS}
    grads_after(b, model, batch, 0)
    assert b.weights()["rho/image"] == pytest.approx((s["image"] / s["audio"]).item(), rel=1e-5)
    dominant = max(MODS, key=lambda m: s[m].item())
    assert b.weights()[f"k/{dominant}"] == pytest.approx(1 - math.tanh(0.8 * b.weights()[f"rho/{dominant}"]))


def test_ogm_ratio_against_mean_of_others_for_three_modalities() -> None:
    b = build_balancer({"name": "ogm_ge", "alpha": 0.5}, ["a", "b", "c"])
    coeffs, ratios = b.coefficients({"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(3.0)})
    assert ratios == pytest.approx({"a": 1 / 2.5, "b": 1.0, "c": 2.0})
    assert coeffs == pytest.approx({"a": 1.0, "b": 1.0, "c": 1 - math.tanh(1.0)})


def test_ogm_respects_start_and_end_epoch() -> None:
    torch.manual_seed(0)
    model = StandIn()
    b = build_balancer({"name": "ogm_ge", "start_epoch": 2, "end_epoch": 3, "ge": False}, MODS)
    batch = make_batch(n=8)
    k, rho = expected_image_k(batch["label"], 0.8)
    for epoch, active in [(0, False), (1, False), (2, True), (3, True), (4, False)]:
        before, after = grads_after(b, model, batch, epoch, dominant_image_output(batch["label"]))
        factor = k if active else 1.0
        torch.testing.assert_close(after["towers.image.weight"], before["towers.image.weight"] * factor)
        assert b.weights()["k/image"] == pytest.approx(factor)
        assert b.weights()["rho/image"] == pytest.approx(rho)


def test_ogm_ge_noise_has_the_gradients_std() -> None:
    torch.manual_seed(0)
    dims = {"audio": 64, "image": 64}
    model = StandIn(dims, d=64)
    b = build_balancer({"name": "ogm_ge", "alpha": 0.1}, MODS)
    batch = make_batch(n=8, dims=dims)
    before, after = grads_after(b, model, batch, 0, dominant_image_output(batch["label"]))
    k = b.weights()["k/image"]
    for m, factor in (("image", k), ("audio", 1.0)):  # as in the reference code, both towers get noise
        g = before[f"towers.{m}.weight"]
        noise = after[f"towers.{m}.weight"] - factor * g
        assert noise.abs().sum() > 0
        assert noise.std().item() == pytest.approx(g.std().item(), rel=0.1)
        assert abs(noise.mean().item()) < 0.1 * g.std().item()
    assert torch.equal(after["trunk.weight"], before["trunk.weight"])


def test_ogm_falls_back_to_aux_logits_with_one_warning() -> None:
    torch.manual_seed(0)
    model, b = StandIn(), build_balancer({"name": "ogm_ge", "ge": False}, MODS)
    batch = make_batch(n=8)
    out = model(batch)
    labels = batch["label"]
    aux = {"image": 5.0 * F.one_hot(labels, CLASSES).float(), "audio": torch.zeros(8, CLASSES)}
    no_contrib = DANOutput(out.logits, aux, out.embeddings, out.fused, None)
    with pytest.warns(UserWarning, match="contributions is None"):
        grads_after(b, model, batch, 0, no_contrib)
    assert b.weights()["k/image"] == pytest.approx(expected_image_k(labels, 0.8)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads_after(b, model, batch, 0, no_contrib)


def test_ogm_ignores_masked_samples() -> None:
    b = build_balancer({"name": "ogm_ge", "ge": False}, MODS)
    labels = torch.tensor([0, 1, 2, 3])
    out = dominant_image_output(labels, audio_strength=5.0)
    out.contributions["image"][2:] = 0.0  # image is right only where audio is masked out
    batch = {"label": labels, "audio_mask": torch.tensor([False, False, True, True])}
    b.after_backward(ctx(StandIn(), out, batch, 0))
    p = math.exp(5) / (math.exp(5) + 3)
    assert b.weights()["rho/audio"] == pytest.approx(2 * p / 0.5)
    assert b.weights()["k/image"] == 1.0


def test_ogm_needs_labels() -> None:
    b = build_balancer("ogm_ge", MODS)
    with pytest.raises(ConfigError, match=r"batch\['label'\]"):
        b.after_backward(ctx(StandIn(), dominant_image_output(torch.tensor([0, 1])), {}, 0))
