"""UMT and UME (Du et al., ICML 2023): teachers trained on one modality alone, the fused loss plus
feature distillation written out (BalanceBenchmark's UMT step), and UME's unimodal-only gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_balancer_agm import batch, tiny_model

from dan.engine.trainer import head_losses
from dan.losses import EpochContext, StepContext, build_balancer


def epoch_ctx(model) -> EpochContext:  # type: ignore[no-untyped-def]
    return EpochContext(
        0, model, loaders={"train": [batch(s) for s in range(3)]},
        new_optimizer=lambda params: torch.optim.AdamW(params, lr=0.01),
    )


def test_each_teacher_learns_its_modality_alone_and_the_loss_is_the_reference() -> None:
    model = tiny_model()
    balancer = build_balancer({"name": "umt", "scaling": 3.0, "teacher_epochs": 2}, model.modalities)
    balancer.on_epoch_start(epoch_ctx(model))
    teachers = balancer.teachers(model)
    for m, other in (("image", "audio"), ("audio", "image")):
        mine = [(p - q).abs().max() for p, q in zip(teachers[m].towers[m].parameters(), model.towers[m].parameters(), strict=True)]
        theirs = [(p - q).abs().max() for p, q in zip(teachers[m].towers[other].parameters(), model.towers[other].parameters(), strict=True)]
        assert max(mine) > 0 and max(theirs) == 0  # never given the other modality
        assert not any(p.requires_grad for p in teachers[m].parameters())
    b = batch(9)
    b["audio_mask"] = torch.tensor([True] * 9 + [False] * 3)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    loss = balancer.combine(fused, per, StepContext(model, b, out, 0, 0))
    with torch.no_grad():
        t_audio = teachers["audio"]({"audio": b["audio"][:9]}).embeddings["audio"]
        t_image = teachers["image"]({"image": b["image"]}).embeddings["image"]
    distill = F.mse_loss(out.embeddings["audio"][:9], t_audio) + F.mse_loss(out.embeddings["image"], t_image)
    aux = F.cross_entropy(model.aux_heads["audio"](out.embeddings["audio"][:9].detach()), b["label"][:9])
    aux = aux + F.cross_entropy(model.aux_heads["image"](out.embeddings["image"].detach()), b["label"])
    torch.testing.assert_close(loss, fused + 3.0 * distill + aux)
    assert balancer.weights()["distill/audio"] == pytest.approx(float(F.mse_loss(out.embeddings["audio"][:9].detach(), t_audio)))


def test_teachers_survive_a_checkpoint_round_trip() -> None:
    model = tiny_model()
    balancer = build_balancer({"name": "umt", "teacher_epochs": 1}, model.modalities)
    balancer.on_epoch_start(epoch_ctx(model))
    state = balancer.state_dict()
    restored = build_balancer({"name": "umt", "teacher_epochs": 1}, model.modalities)
    restored.load_state_dict(state)
    restored.on_epoch_start(epoch_ctx(model))  # a resumed run does not train new teachers
    for m in model.modalities:
        new, old = restored.teachers(model)[m].state_dict(), balancer.teachers(model)[m].state_dict()
        assert all(torch.equal(new[k], old[k]) for k in old)


def test_ume_towers_learn_from_their_own_losses_and_the_head_from_detached_features() -> None:
    model = tiny_model()
    b = batch(4)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    loss = build_balancer("ume", model.modalities).combine(fused, per, StepContext(model, b, out, 0, 0))
    loss.backward(retain_graph=True)
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    (per["audio"] + per["image"] + F.cross_entropy(model.head(out.fused.detach()), b["label"])).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(ours[n], p.grad if p.grad is not None else torch.zeros_like(p), msg=n)
    assert float(ours["fusion.missing.audio"].abs().max()) == 0.0


def test_a_real_umt_run_keeps_its_teachers_in_the_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": "cpu", "balancer.name": "umt",
                          "balancer.teacher_epochs": 1})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=u"]))
    state = torch.load(tmp_path / "u" / "last.pt", weights_only=False)["modules"]["balancer"]["_extra_state"]
    assert sorted(state["teachers"]) == ["audio", "image"]
