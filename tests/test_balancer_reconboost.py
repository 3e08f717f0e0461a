"""ReconBoost (Hua et al., ICML 2024) against the authors' ``train.py`` written out: the boosting loss of one
modality's learner (its share of the fused head) against the others' ensemble, memory consolidation, the
round-robin stages, the boosting phase training that learner alone; a real run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_balancer_agm import CLASSES, batch, tiny_model

from dan.errors import ConfigError
from dan.losses import EpochContext, build_balancer
from dan.models import build_model


def reference_loss(model: torch.nn.Module, b: dict, w1: float, w2: float, alpha: float) -> torch.Tensor:
    """The authors' phase-1 loss for the audio learner (a), the image learner (v) being the ensemble of the
    others and the previous stage's learner; ``f = a W_a^T + b/2`` as dan's shares of the concat head."""
    out = model(b)
    w, bias = model.head.weight, model.head.bias
    out_obj = out.fused[:, :8] @ w[:, :8].T + bias / 2
    out_join = out.fused[:, 8:] @ w[:, 8:].T + bias / 2
    target = torch.zeros(len(b["label"]), CLASSES).scatter_(1, b["label"].view(-1, 1), 1)
    boosting = -w1 * (target * out_obj.log_softmax(1)).mean(-1) + w2 * (
        target * out_join.detach().softmax(1) * out_obj.log_softmax(1)
    ).mean(-1)
    ga = F.mse_loss(out_obj.detach().softmax(1), out_join.detach().softmax(1))  # detached there: no gradient
    return (boosting + alpha * ga).mean()


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_boosting_loss_equals_the_reference(alpha: float) -> None:
    ours, ref = tiny_model(), tiny_model()
    ours.eval(), ref.eval()
    b = batch(3)
    balancer = build_balancer({"name": "reconboost", "alpha": alpha}, ours.modalities)
    loss = balancer.boosting_loss(ours(b), b["label"], "audio", "image")
    expected = reference_loss(ref, b, 5.0, 1.0, alpha)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert all(float(g.abs().max()) == 0 for n, g in grads.items() if n.startswith("towers.image"))
    ref_grads = dict(ref.named_parameters())
    for name, g in grads.items():
        if alpha == 0.0:  # with alpha > 0 dan's consolidation term has a gradient, the references' none
            torch.testing.assert_close(g, ref_grads[name].grad, msg=name)


def test_samples_without_the_modality_are_left_out() -> None:
    model = tiny_model()
    model.eval()
    b = batch(4)
    b["audio_mask"] = torch.tensor([True] * 8 + [False] * 4)
    balancer = build_balancer({"name": "reconboost", "alpha": 0.0}, model.modalities)
    masked = balancer.boosting_loss(model(b), b["label"], "audio", None)
    kept = {k: v[:8] for k, v in b.items() if k != "audio_mask"}
    torch.testing.assert_close(masked, balancer.boosting_loss(model(kept), kept["label"], "audio", None))


def test_stages_go_round_robin_and_boost_one_learner_alone() -> None:
    model = tiny_model()
    balancer = build_balancer("reconboost", model.modalities)
    assert [balancer.stage(e) for e in range(3)] == [("audio", None), ("image", "audio"), ("audio", "image")]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    ctx = EpochContext(
        0, model, loaders={"train": [batch(5), batch(6)]},
        new_optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    )
    balancer.on_epoch_start(ctx)
    after = dict(model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("towers.audio") for k in changed)
    assert not any(k.startswith(("towers.image", "proj.image", "aux_heads")) for k in changed), sorted(changed)
    assert balancer.weights()["boosted/audio"] == 1.0 and balancer.weights()["boosted/image"] == 0.0
    assert balancer.weights()["boost_loss"] > 0


def test_a_head_that_does_not_split_is_refused_with_the_fix() -> None:
    model = build_model(
        {"num_classes": 4, "dim": 8, "towers": {"image": {"name": "image_cnn", "channels": [4, 4]},
         "audio": {"name": "audio_cnn", "n_mels": 8}}, "trunk": {"name": "mlp"}, "fusion": {"name": "attention"}}
    )
    with pytest.raises(ConfigError, match="model.fusion.name=concat model.head.hidden=0"):
        build_balancer("reconboost", model.modalities).check_model(model)
    build_balancer("reconboost", tiny_model().modalities).check_model(tiny_model())


def test_a_real_run_boosts_each_modality_in_turn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 2, "logger": "console", "device": "cpu", "balancer.name": "reconboost"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=r"]))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    boosted = [(r["epoch"], r["balancer/boosted/audio"], r["balancer/boosted/image"]) for r in rows
               if "balancer/boosted/audio" in r]
    assert set(boosted) == {(1, 1.0, 0.0), (2, 0.0, 1.0)}, boosted  # logged epochs count from 1


def test_the_boosting_phase_runs_at_the_runs_current_learning_rate() -> None:
    """Not at the optimizer's base (peak) rate: at lr 0 where the run's schedule is, nothing moves."""
    model = tiny_model()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    run = torch.optim.SGD(model.parameters(), lr=0.0)
    ctx = EpochContext(
        0, model, loaders={"train": [batch(5)]}, optimizer=run,
        new_optimizer=lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9),
    )
    build_balancer("reconboost", model.modalities).on_epoch_start(ctx)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    build_balancer({"name": "reconboost", "boost_lr": 0.1}, model.modalities).on_epoch_start(ctx)
    assert not torch.equal(before["towers.audio.features.0.0.weight"], model.towers.audio.features[0][0].weight)
