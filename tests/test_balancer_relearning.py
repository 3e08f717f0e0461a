"""Diagnosing & Re-learning (Wei, Li & Hu, ECCV 2024) against the authors' steps written out: clustering
purity of each modality's features on train and validation data, α = tanh(λ·gap), soft re-initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.preprocessing import MinMaxScaler
from test_balancers import MODS, StandIn, ctx, make_batch

from dan.engine.trainer import head_losses
from dan.losses import EpochContext, build_balancer
from dan.losses.balancers.relearning import purity


def test_purity_counts_each_clusters_majority_label() -> None:
    labels, clusters = np.array([0, 0, 1, 1, 1]), np.array([0, 0, 0, 1, 1])
    assert purity(labels, clusters) == pytest.approx(4 / 5)
    assert purity(labels, np.zeros(5, dtype=int)) == pytest.approx(3 / 5)


def reference_alpha(model: StandIn, train: list, val: list, m: str, strength: float = 3.0) -> float:
    """The authors' reinit_score for one modality."""
    model.eval()
    with torch.no_grad():
        pur = []
        for split in (train, val):
            feats = torch.cat([model(b).embeddings[m] for b in split]).numpy()
            labels = torch.cat([b["label"] for b in split]).numpy()
            scaled = MinMaxScaler(feature_range=(-1, 1)).fit_transform(feats)
            clusters = KMeans(n_clusters=int(labels.max()) + 1, random_state=0, n_init="auto").fit_predict(scaled)
            hits = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters))
            pur.append(hits / len(labels))
    model.train()
    return float(np.tanh(strength * abs(pur[0] - pur[1])))


def test_relearning_moves_each_encoder_back_by_its_alpha() -> None:
    torch.manual_seed(0)
    model = StandIn()
    train = [make_batch(40, seed=s) for s in range(3)]
    val = [make_batch(40, seed=10 + s) for s in range(2)]
    b = build_balancer({"name": "relearning", "every": 2, "times": 1}, MODS)
    epoch_ctx = EpochContext(0, model, loaders={"train": train, "val": val})
    b.on_epoch_start(epoch_ctx)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # stands for training
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    b.on_epoch_end(EpochContext(1, model, loaders={"train": train, "val": val}))
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())  # not a diagnosis epoch
    alpha = {m: reference_alpha(model, train, val, m) for m in MODS}
    b.on_epoch_end(EpochContext(2, model, loaders={"train": train, "val": val}))
    for n, p in model.named_parameters():
        tower = next((m for m in MODS if n.startswith(f"towers.{m}.")), None)
        if tower is None:
            assert torch.equal(p, trained[n]), n  # trunk and heads are not re-initialised
        else:
            a = alpha[tower]
            torch.testing.assert_close(p, a * initial[n] + (1 - a) * trained[n], msg=n)
    assert b.weights()[f"alpha/{MODS[0]}"] == pytest.approx(alpha[MODS[0]])
    assert any(a > 0 for a in alpha.values())
    # at most `times` diagnoses
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    b.on_epoch_end(EpochContext(4, model, loaders={"train": train, "val": val}))
    assert all(torch.equal(p, after[n]) for n, p in model.named_parameters())
    # a checkpoint keeps the initial parameters and the count
    fresh = build_balancer({"name": "relearning", "every": 2, "times": 1}, MODS)
    fresh.load_state_dict(b.state_dict())
    assert int(fresh.done) == 1 and torch.equal(fresh._initial["audio"][0], initial["towers.audio.weight"])


def test_towers_learn_from_the_fused_loss_only() -> None:
    torch.manual_seed(0)
    model, twin = StandIn(), StandIn()
    twin.load_state_dict(model.state_dict())
    batch = make_batch(16)
    b = build_balancer("relearning", MODS)
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    b.combine(fused, per, ctx(model, out, batch)).backward()
    F.cross_entropy(twin(batch).logits, batch["label"]).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        if not name.startswith("aux_heads."):
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert all(p.grad is not None for p in model.aux_heads.parameters())


def test_a_real_run_diagnoses_and_logs_its_strengths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 3, "logger": "none", "device": "cpu", "balancer.name": "relearning",
                          "balancer.every": 1, "balancer.times": 1})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=r"]))
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=False)["modules"]["balancer"]
    assert int(state["done"]) == 1 and state["_extra_state"]["initial"] is not None
    assert 0.0 <= float(state["alpha"].max()) < 1.0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["summary"]["test/acc"] > 0
