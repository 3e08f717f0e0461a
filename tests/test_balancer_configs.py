"""Every balancer ships a method config (``recipes/configs/balancers/<name>.yaml``, applied with
``balancer=<name>``): it names its balancer, builds on the shipped AV-MNIST configs (with the fusion or mid
fusion the method needs) and passes the method's model check; other overrides still apply on top."""

from __future__ import annotations

import pytest
import torch

from dan.config import balancer_config_names, load_config
from dan.errors import ConfigError
from dan.losses import BALANCERS, build_balancer
from dan.models import build_model


def test_every_balancer_has_a_method_config() -> None:
    assert balancer_config_names() == sorted(BALANCERS.names())


@pytest.mark.parametrize("name", balancer_config_names())
@pytest.mark.parametrize("base", ["avmnist_concat_hard_offline", "avmnist_attention_hard_offline"])
def test_each_method_config_builds_and_passes_its_model_check(name: str, base: str) -> None:
    cfg = load_config(base, [f"balancer={name}"])
    assert cfg.balancer.name == name
    model = build_model(cfg.model)
    balancer = build_balancer(cfg.balancer, model.modalities)
    if name in {"mmcosine", "reconboost"} and base.startswith("avmnist_attention"):
        assert cfg.model.fusion.name == "concat"  # the method config sets the fusion it needs
    balancer.check_model(model)


def test_method_config_under_other_overrides() -> None:
    cfg = load_config("avmnist_concat_hard_offline", ["balancer=agm", "optimizer.lr=0.02", "balancer.alpha=2"])
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.balancer.alpha) == ("sgd", 0.02, 2)
    plain = load_config("avmnist_concat_hard_offline", ["balancer.name=agm"])
    assert plain.optimizer.name == "adamw"  # balancer.name=... keeps the recipe's optimizer


def test_an_unknown_method_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"balancer='nope'.*agm, gradient_blend"):
        load_config("quickstart", ["balancer=nope"])


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("name", balancer_config_names())
def test_each_method_config_trains_end_to_end(name: str, device: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One real (synthetic, tiny) epoch per method config, with its optimizer: a method config that cannot
    train (an empty optimizer, a diverging extra phase) fails here. On CUDA with AMP (the default there) as
    well, where the H200 run found AGM mixing a CPU score with its CUDA running means."""
    import json
    import math

    from tiny_runs import tiny_run

    from dan.engine.recipes import run_config

    overrides = tiny_run({"train.epochs": 1, "logger": "none", "device": device})
    cheaper = {"gradient_blend": ["balancer.estimate_epochs=1"], "umt": ["balancer.teacher_epochs=1"]}
    run_config(load_config("quickstart", [f"balancer={name}", *overrides, *cheaper.get(name, []),
                                          f"output_dir={tmp_path}", "run_name=r"]))
    summary = json.loads((tmp_path / "r" / "results.json").read_text())["summary"]
    assert math.isfinite(summary["test/loss"]) and 0.0 <= summary["test/acc"] <= 1.0
