"""Greedy learning (Wu et al., ICML 2022) against the authors' ``Bias_Mitigation_Strong`` written out: the
conditional learning speeds from the MMTM bypass and the towers' own gradients, the re-balancing windows
they open, the frozen excitation reaching the model; its state through a checkpoint; a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_mid_fusion import batch, mmtm_model

from dan.engine.trainer import head_losses
from dan.errors import ConfigError
from dan.losses import EpochContext, StepContext, build_balancer


class Reference:
    """The authors' callback for two modalities (0 = audio, 1 = image: dan's sorted order)."""

    def __init__(self, epsilon: float, window: int) -> None:
        self.epsilon, self.window = epsilon, window
        self.mb, self.mm = [0.0, 0.0], [0.0, 0.0]
        self.curation_mode, self.caring_modality, self.curation_step, self.d_BDR = False, 0, 0, 0.0

    def compute_bdr(self, model: torch.nn.Module) -> float:
        wn_main, wn_bypass, gn_main, gn_bypass = [0.0] * 2, [0.0] * 2, [0.0] * 2, [0.0] * 2
        for name, p in model.named_parameters():
            wn, gn = (p ** 2).sum().item(), (p.grad ** 2).sum().item() if p.grad is not None else 0.0
            if "mid_fusion" in name:
                shared = True
                for ind, modal in enumerate(["audio", "image"]):
                    if modal in name:
                        wn_bypass[ind] += wn
                        gn_bypass[ind] += gn
                        shared = False
                if shared:
                    for ind in range(2):
                        wn_bypass[ind] += wn
                        gn_bypass[ind] += gn
            else:
                for ind, branch in enumerate(["towers.audio", "towers.image"]):
                    if name.startswith(branch):
                        wn_main[ind] += wn
                        gn_main[ind] += gn
        for i in range(2):
            self.mb[i] += gn_bypass[i] / wn_bypass[i]
            self.mm[i] += gn_main[i] / wn_main[i]
        return float(np.log10(self.mb[0] / self.mm[0]) - np.log10(self.mb[1] / self.mm[1]))

    def on_backward_end(self, model: torch.nn.Module) -> None:
        if not self.curation_mode:
            self.d_BDR = self.compute_bdr(model)
            if abs(self.d_BDR) > self.epsilon:
                self.curation_mode, self.curation_step = True, 0
                self.caring_modality = 1 if np.sign(self.d_BDR) == -1 else 0
            else:
                self.curation_mode, self.caring_modality = False, 0
        else:
            self.curation_step += 1
            if self.curation_step == self.window:
                self.curation_mode = False


def test_speeds_and_windows_equal_the_reference() -> None:
    model = mmtm_model()
    balancer = build_balancer({"name": "greedy", "epsilon": 0.01, "window": 2, "start_epoch": 0}, model.modalities)
    balancer.check_model(model)
    ref = Reference(0.01, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    frozen = []
    for step in range(8):
        b = batch(seed=step)
        b["label"] = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(step))
        out = model(b)
        fused, per = head_losses(out, b["label"])
        c = StepContext(model, b, out, 0, step, optimizer=opt)
        opt.zero_grad(set_to_none=True)
        balancer.combine(fused, per, c).backward()
        was = model.mid_fusion.blocks["1"].frozen
        balancer.after_backward(c)
        if was is not None:  # the frozen excitation layer is left out of the step
            assert all(p.grad is None for p in model.mid_fusion.blocks["1"].excite[was].parameters())
        ref.on_backward_end(model)
        expected = ("audio", "image")[ref.caring_modality] if ref.curation_mode else None
        assert model.mid_fusion.blocks["1"].frozen == expected, step
        assert balancer.weights()["d_bdr"] == pytest.approx(abs(ref.d_BDR), rel=1e-6)
        frozen.append(expected)
        opt.step()
    assert any(f is not None for f in frozen) and None in frozen  # windows opened and closed


def test_before_start_epoch_it_only_measures() -> None:
    model = mmtm_model()
    balancer = build_balancer({"name": "greedy", "epsilon": 0.0}, model.modalities)  # start_epoch 2
    b = {**batch(), "label": torch.tensor([0, 1, 2, 3, 0, 1])}
    out = model(b)
    fused, per = head_losses(out, b["label"])
    balancer.combine(fused, per, StepContext(model, b, out, 1, 0)).backward()
    balancer.after_backward(StepContext(model, b, out, 1, 0))
    assert model.mid_fusion.blocks["1"].frozen is None and balancer.weights()["d_bdr"] > 0
    assert float(balancer.bypass.sum()) > 0 and float(balancer.main.sum()) > 0


def test_a_model_without_bypass_paths_is_refused_with_the_fix() -> None:
    from test_balancer_agm import tiny_model

    with pytest.raises(ConfigError, match="model.mid_fusion.name=mmtm"):
        build_balancer("greedy", ["audio", "image"]).check_model(tiny_model())
    with pytest.raises(ConfigError, match="balancer.window"):
        build_balancer({"name": "greedy", "window": 0}, ["audio", "image"])


def test_a_window_survives_a_checkpoint() -> None:
    model = mmtm_model()
    balancer = build_balancer({"name": "greedy", "epsilon": 0.0, "window": 3, "start_epoch": 0}, model.modalities)
    b = {**batch(), "label": torch.tensor([0, 1, 2, 3, 0, 1])}
    out = model(b)
    fused, per = head_losses(out, b["label"])
    balancer.combine(fused, per, StepContext(model, b, out, 0, 0)).backward()
    balancer.after_backward(StepContext(model, b, out, 0, 0))
    restored = build_balancer({"name": "greedy", "epsilon": 0.0, "window": 3, "start_epoch": 0}, model.modalities)
    restored.load_state_dict(balancer.state_dict())
    assert restored.weights() == balancer.weights()
    torch.testing.assert_close(restored.bypass, balancer.bypass)
    fresh = mmtm_model()
    restored.on_epoch_start(EpochContext(0, fresh))
    caring = [m for m in model.modalities if balancer.weights()[f"rebalancing/{m}"] == 1.0]
    assert len(caring) == 1 and fresh.mid_fusion.blocks["1"].frozen == caring[0]
    assert math.isfinite(restored.weights()["d_bdr"])


def test_a_real_run_with_mmtm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tiny_runs import tiny_run

    from dan.config import load_config
    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 2, "logger": "console", "device": "cpu", "balancer.name": "greedy",
                          "balancer.start_epoch": 0, "model.mid_fusion.name": "mmtm"})
    run_config(load_config("quickstart", [*overrides, f"output_dir={tmp_path}", "run_name=g"]))
    rows = [json.loads(line) for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("balancer/d_bdr", 0) > 0 for r in rows)
