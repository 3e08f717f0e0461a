"""The DAN model exports with torch.export (inference) and compiles without graph breaks."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model_cfg
from torch.export import Dim

from dan.models import build_model


def tiny_model(fusion: str, trunk: str = "mlp") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tiny_model_cfg(
        num_classes=4,
        trunk={"name": trunk, **({"heads": 2, "depth": 1} if trunk == "transformer" else {})},
        fusion={"name": fusion, **({"heads": 2} if fusion == "attention" else {})},
    )
    return build_model(cfg).eval()


def batch(b: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(b, 1, 28, 28, generator=g),
        "audio": torch.randn(b, 1, 16, 24, generator=g),
        "audio_mask": torch.rand(b, generator=g) < 0.6,
    }


@pytest.mark.parametrize(("fusion", "trunk"), [("concat", "mlp"), ("attention", "transformer")])
def test_torch_export_matches_eager(fusion: str, trunk: str) -> None:
    model = tiny_model(fusion, trunk)
    b = Dim("batch", min=2, max=1024)
    shapes = {"batch": {"image": {0: b}, "audio": {0: b}, "audio_mask": {0: b}}}
    program = torch.export.export(model, (batch(4, 0),), dynamic_shapes=shapes)
    exported = program.module()
    for size, seed in [(4, 1), (7, 2)]:
        inputs = batch(size, seed)
        inputs["audio_mask"][0] = False  # one sample without audio
        got, want = exported(inputs), model(inputs)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.fused, want.fused, rtol=1e-5, atol=1e-5)
        assert set(got.modality_logits) == {"audio", "image"}
        assert (got.contributions is None) == (fusion != "concat")


def test_torch_compile_has_no_graph_breaks() -> None:
    model = tiny_model("concat")
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    inputs = batch(4, 0)
    torch.testing.assert_close(compiled(inputs).logits, model(inputs).logits)


@pytest.mark.slow
def test_torch_compile_inductor_training_step() -> None:
    model = tiny_model("attention", "transformer").train()
    compiled = torch.compile(model)
    inputs = batch(4, 0)
    out = compiled(inputs)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.tower_parameters("image"))
