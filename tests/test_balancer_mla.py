"""MLA (Zhang et al., CVPR 2024) against the authors' ``train_epoch`` (``gs_flag``) and ``GSPlugin`` written out:
alternating unimodal turns through the shared head, the head's gradient projected; the projection keeping
the head's answer on earlier features; the turns dropping the idle encoder's gradients; a real run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_balancer_agm import batch
from test_balancers import MODS, StandIn, ctx, make_batch

from dan.engine.trainer import head_losses
from dan.errors import ConfigError
from dan.losses import StepContext, build_balancer
from dan.models import build_model


def sum_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "num_classes": 4, "dim": 8,
            "towers": {"image": {"name": "image_cnn", "channels": [4, 4]}, "audio": {"name": "audio_cnn", "n_mels": 8}},
            "trunk": {"name": "mlp", "share": True}, "fusion": {"name": "sum"},
        }
    )


class Plugin:
    """The authors' ``GSPlugin`` (projection replacing the gradient), for one head weight."""

    def __init__(self, d: int) -> None:
        self.P, self.count = torch.eye(d), 0

    def before_update(self, weight: torch.nn.Parameter, feats: torch.Tensor, b: int, n: int) -> None:
        alpha = 1.0 * 0.1 ** (b / n + 1)
        if self.count != 0:
            r = torch.mean(feats, 0, True)
            k = torch.mm(self.P, torch.t(r))
            self.P = torch.sub(self.P, torch.mm(k, torch.t(k)) / (alpha + torch.mm(k, r)))
            self.P = self.P / torch.norm(self.P, p="fro")
            weight.grad.data = torch.mm(weight.grad.data, torch.t(self.P))
        self.count += 1


def test_turns_and_projection_equal_the_reference() -> None:
    ours, ref = sum_model(), sum_model()
    balancer = build_balancer("mla", ours.modalities)
    balancer.check_model(ours)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    plugin = Plugin(8)
    n = 3
    for step in range(2 * n):  # the reference's batch b trains audio then image; dan's step t trains turn t
        b = batch(step // 2)
        m = ("audio", "image")[step % 2]
        out = ours(b)
        fused, per = head_losses(out, b["label"])
        c = StepContext(ours, b, out, 0, step, optimizer=opt_o, batch_index=step // 2, batches=n)
        opt_o.zero_grad(set_to_none=True)
        balancer.combine(fused, per, c).backward()
        balancer.after_backward(c)
        feats = ref(b).embeddings[m]
        opt_r.zero_grad(set_to_none=True)
        F.cross_entropy(ref.head(feats), b["label"]).backward()
        plugin.before_update(ref.head.weight, feats.detach(), step // 2, n)
        other = "image" if m == "audio" else "audio"
        assert all(p.grad is None for p in ours.modality_parameters(other))
        for (name, p), r in zip(ours.named_parameters(), ref.parameters(), strict=True):
            if name.startswith(("towers." + m, "proj." + m, "trunk.shared", "trunk.embedding." + m, "head")):
                torch.testing.assert_close(p.grad, r.grad, rtol=1e-5, atol=1e-7, msg=f"{name} at step {step}")
        opt_o.step()
        opt_r.step()
    for (name, p), r in zip(ours.named_parameters(), ref.parameters(), strict=True):
        if not name.startswith("aux_heads"):  # dan's auxiliary heads learn on detached features
            torch.testing.assert_close(p, r, rtol=1e-4, atol=1e-6, msg=name)


def head_drift(optimizer: str, project: bool, steps: int = 12) -> float:
    """How far the shared head's answer on audio's mean feature moves while image trains after audio."""
    torch.manual_seed(0)
    model = StandIn(fusion="sum")
    balancer = build_balancer({"name": "mla", "project": project}, MODS)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    )
    drift = []
    for step in range(steps):
        b = make_batch(seed=step)
        out = model(b)
        fused, per = head_losses(out, b["label"])
        c = ctx(model, out, b)
        c.step, c.optimizer, c.batch_index, c.batches = step, opt, step, steps
        opt.zero_grad(set_to_none=True)
        balancer.combine(fused, per, c).backward()
        balancer.after_backward(c)
        if c.step % 2 == 1:  # an image turn: how much does it change the answer on audio's features?
            r = out.embeddings["audio"].detach().mean(0)
            before = model.head(r).detach()
            opt.step()
            drift.append(float((model.head(r).detach() - before).norm()))
        else:
            opt.step()
    return sum(drift)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_projection_keeps_the_heads_answer_on_the_other_modalitys_features(optimizer: str) -> None:
    ratio = head_drift(optimizer, True) / head_drift(optimizer, False)  # measured 0.76 (SGD), 0.50 (AdamW)
    assert ratio < 0.85, f"{optimizer}: the projected head's answer moved {ratio:.2f}x the unprojected twin's"


def test_a_head_not_shared_by_the_modalities_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="model.fusion.name=sum model.head.hidden=0"):
        build_balancer("mla", MODS).check_model(StandIn())
    with pytest.raises(ConfigError, match="balancer.project"):
        build_balancer({"name": "mla", "project": "yes"}, MODS)


def test_the_projector_survives_a_checkpoint() -> None:
    model = sum_model()
    balancer = build_balancer("mla", model.modalities)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        b = batch(step)
        out = model(b)
        fused, per = head_losses(out, b["label"])
        c = StepContext(model, b, out, 0, step, optimizer=opt, batch_index=step, batches=3)
        opt.zero_grad(set_to_none=True)
        balancer.combine(fused, per, c).backward()
        balancer.after_backward(c)
        opt.step()
    restored = build_balancer("mla", model.modalities)
    restored.load_state_dict(balancer.state_dict())
    assert restored.projector.shape == (8, 8) and int(restored.updates) == 3
    torch.testing.assert_close(restored.projector, balancer.projector)


def test_a_real_run_with_sum_fusion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 1, "logger": "console", "device": "cpu", "balancer.name": "mla",
                          "model.fusion.name": "sum"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=r"]))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("balancer/loss/audio", 0) > 0 and r.get("balancer/loss/image", 0) > 0 for r in rows)
    with pytest.raises(ConfigError, match="mla"):
        run_config(load_config("quickstart", [*tiny_run({"logger": "none", "balancer.name": "mla"}),
                                              f"output_dir={tmp_path}", "run_name=c"]))
