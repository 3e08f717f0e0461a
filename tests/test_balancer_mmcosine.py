"""MMCosine (Xu et al., ICASSP 2023) against the authors' training step written out: per-modality cosine
logits of the concat head's weight blocks, scaled and summed, the only loss the towers see."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_balancer_agm import batch, tiny_model

from dan.engine.trainer import head_losses
from dan.errors import ConfigError
from dan.losses import StepContext, build_balancer
from dan.models import build_model


def test_loss_and_gradients_equal_the_reference() -> None:
    model = tiny_model()
    b = batch(0)
    b["audio_mask"] = torch.tensor([True] * 10 + [False] * 2)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    balancer = build_balancer({"name": "mmcosine", "scaling": 15}, model.modalities)
    loss = balancer.combine(fused, per, StepContext(model, b, out, 0, 0))
    # the reference: a, v the two slots the concat head reads (audio first, as the fusion's sorted order)
    a, v = out.fused[:, :8], out.fused[:, 8:]
    w = model.head.weight
    out_a = torch.mm(F.normalize(a, dim=1), F.normalize(torch.transpose(w[:, :8], 0, 1), dim=0)) * 15
    out_v = torch.mm(F.normalize(v, dim=1), F.normalize(torch.transpose(w[:, 8:], 0, 1), dim=0)) * 15
    reference = F.cross_entropy(out_a + out_v, b["label"])
    aux = sum(
        F.cross_entropy(model.aux_heads[m](out.embeddings[m][keep].detach()), b["label"][keep])
        for m, keep in (("audio", b["audio_mask"]), ("image", torch.ones(12, dtype=torch.bool)))
    )
    torch.testing.assert_close(loss, reference + aux)
    loss.backward(retain_graph=True)
    assert float(model.head.bias.grad.abs().max()) == 0.0
    ours = [p.grad.clone() for p in model.towers.parameters()]
    model.zero_grad()
    reference.backward()
    for g, r in zip(ours, [p.grad for p in model.towers.parameters()], strict=True):
        torch.testing.assert_close(g, r)


def test_outside_the_window_it_is_the_plain_fused_loss() -> None:
    model = tiny_model()
    b = batch(1)
    out = model(b)
    fused, per = head_losses(out, b["label"])
    balancer = build_balancer({"name": "mmcosine", "start_epoch": 2}, model.modalities)
    loss = balancer.combine(fused, per, StepContext(model, b, out, 1, 0))
    aux = sum(F.cross_entropy(model.aux_heads[m](out.embeddings[m].detach()), b["label"]) for m in model.modalities)
    torch.testing.assert_close(loss, fused + aux)


def test_attention_fusion_is_refused_with_the_fix() -> None:
    model = build_model(
        {"num_classes": 4, "dim": 8, "towers": {"image": {"name": "image_cnn", "channels": [4, 4]},
         "audio": {"name": "audio_cnn", "n_mels": 8}}, "trunk": {"name": "mlp"}, "fusion": {"name": "attention"}}
    )
    with pytest.raises(ConfigError, match="model.fusion.name=concat"):
        build_balancer("mmcosine", model.modalities).check_model(model)
    with pytest.raises(ConfigError, match="end_epoch"):
        build_balancer({"name": "mmcosine", "start_epoch": 2, "end_epoch": 1}, model.modalities)


def test_a_real_run_with_attention_fusion_stops_before_training(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": "cpu", "balancer.name": "mmcosine",
                          "model.fusion.name": "attention"})
    with pytest.raises(ConfigError, match="mmcosine"):
        run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=c"]))
    assert not (tmp_path / "c" / "last.pt").exists()
    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": "cpu", "balancer.name": "mmcosine"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=d"]))
    assert (tmp_path / "d" / "last.pt").exists()
