"""PMR (Fan et al., CVPR 2023) against the authors' steps written out: class prototypes from the first tenth
of the training batches with momentum, Euclidean prototypical logits, the prototypical cross-entropy added
for the modality whose prototypical score trails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_balancers import CLASSES, MODS, StandIn, ctx, make_batch

from dan.engine.trainer import head_losses
from dan.errors import ConfigError
from dan.losses import EpochContext, build_balancer


def model_and_loader(n_batches: int = 20) -> tuple[StandIn, list]:
    torch.manual_seed(0)
    model = StandIn()
    model.num_classes = CLASSES
    return model, [make_batch(16, seed=s) for s in range(n_batches)]


def reference_prototypes(model: StandIn, batches: list, m: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        feats = torch.cat([model(b).embeddings[m] for b in batches])
        labels = torch.cat([b["label"] for b in batches])
    model.train()
    return torch.stack([feats[labels == c].mean(0) for c in range(CLASSES)])


def nudge(model: StandIn) -> None:
    """Stands for an epoch of training."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)


def test_prototypes_are_class_means_of_the_first_tenth_then_smoothed() -> None:
    model, loader = model_and_loader(20)
    b = build_balancer({"name": "pmr", "momentum": 0.2}, MODS)
    b.on_epoch_start(EpochContext(0, model, loaders={"train": loader}))
    first = {m: reference_prototypes(model, loader[:2], m) for m in MODS}
    for m in MODS:
        torch.testing.assert_close(b.prototypes[m], first[m])
    nudge(model)
    b.on_epoch_end(EpochContext(0, model, loaders={"train": loader}))  # after epoch 0: no smoothing
    second = {m: reference_prototypes(model, loader[:2], m) for m in MODS}
    for m in MODS:
        torch.testing.assert_close(b.prototypes[m], second[m])
    nudge(model)
    b.on_epoch_end(EpochContext(1, model, loaders={"train": loader}))
    for m in MODS:
        new = reference_prototypes(model, loader[:2], m)
        torch.testing.assert_close(b.prototypes[m], 0.8 * new + 0.2 * second[m])


def test_the_trailing_modality_gets_the_prototypical_loss() -> None:
    model, loader = model_and_loader(10)
    b = build_balancer({"name": "pmr", "alpha": 0.7}, MODS)
    b.on_epoch_start(EpochContext(0, model, loaders={"train": loader}))
    batch = make_batch(32, seed=99)
    out = model(batch)
    fused, per = head_losses(out, batch["label"])
    loss = b.combine(fused, per, ctx(model, out, batch))
    y = batch["label"]
    sims = {m: -torch.cdist(out.embeddings[m], b.prototypes[m]) for m in MODS}
    scores = {m: F.softmax(sims[m], 1)[torch.arange(len(y)), y].sum() for m in MODS}
    weak = min(MODS, key=lambda m: float(scores[m].detach()))
    aux = sum(F.cross_entropy(model.aux_heads[m](out.embeddings[m].detach()), y) for m in MODS)
    expected = F.cross_entropy(out.logits, y) + aux + 0.7 * F.cross_entropy(sims[weak], y)
    torch.testing.assert_close(loss, expected)
    w = b.weights()
    assert w[f"beta/{weak}"] == 0.7 and sum(w[f"beta/{m}"] for m in MODS) == 0.7
    assert w[f"ratio/{weak}"] < 1 < w[f"ratio/{next(m for m in MODS if m != weak)}"]


def test_pmr_config_errors() -> None:
    with pytest.raises(ConfigError, match="momentum must lie in"):
        build_balancer({"name": "pmr", "momentum": 1.5}, MODS)
    model, _ = model_and_loader(1)
    with pytest.raises(ConfigError, match=r"loaders\['train'\]"):
        build_balancer("pmr", MODS).on_epoch_start(EpochContext(0, model))


def test_a_real_run_keeps_its_prototypes_in_the_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 2, "logger": "none", "device": "cpu", "balancer.name": "pmr"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=p"]))
    state = torch.load(tmp_path / "p" / "last.pt", weights_only=False)["modules"]["balancer"]["_extra_state"]
    protos = state["prototypes"]
    assert set(protos) == {"audio", "image"} and all(p.shape[0] == 10 and torch.isfinite(p).all() for p in protos.values())
