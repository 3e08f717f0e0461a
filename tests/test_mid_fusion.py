"""MMTM mid fusion between the towers' stages: the towers' stage-by-stage run equals their forward, the
block's squeeze-excite arithmetic, exact masking, the frozen (re-balancing) excitation, clear errors."""

from __future__ import annotations

import pytest
import torch

from dan.errors import ConfigError
from dan.models import build_model
from dan.models.mid_fusion import MMTMBlock
from dan.models.towers import AudioCNN, ImageCNN

TOWERS = {"image": {"name": "image_cnn", "channels": [4, 8]}, "audio": {"name": "audio_cnn", "n_mels": 8, "channels": [4, 8]}}


def mmtm_model(**mid: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"num_classes": 4, "dim": 8, "towers": TOWERS, "mid_fusion": {"name": "mmtm", **mid}})


def batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 1, 28, 28, generator=g), "audio": torch.randn(n, 1, 8, 20, generator=g)}


@pytest.mark.parametrize(
    "tower",
    [ImageCNN(channels=(4, 8), depth=2), AudioCNN(n_mels=8, channels=(4, 8)), AudioCNN(n_mels=8, channels=(4, 8), freq_norm=0.5)],
)
def test_stage_by_stage_equals_forward(tower: torch.nn.Module) -> None:
    tower.eval()
    x = torch.randn(3, 1, 8 if isinstance(tower, AudioCNN) else 28, 20 if isinstance(tower, AudioCNN) else 28)
    h = tower.stem(x)
    for stage in tower.stages():
        h = stage(h)
    torch.testing.assert_close(tower.readout(h), tower(x))
    assert tower.stage_channels() == [4, 8]


def test_block_is_squeeze_then_per_modality_excitation() -> None:
    torch.manual_seed(0)
    block = MMTMBlock({"audio": 3, "image": 2}, ratio=2)
    block.eval()
    maps = {"audio": torch.randn(4, 3, 5, 6), "image": torch.randn(4, 2, 7, 7)}
    out = block(maps, {})
    squeeze = torch.cat([maps["audio"].mean((2, 3)), maps["image"].mean((2, 3))], 1)  # sorted: audio, image
    hidden = torch.relu(block.squeeze(squeeze))
    for m in maps:
        scale = torch.sigmoid(block.excite[m](hidden))
        torch.testing.assert_close(out[m], maps[m] * scale[:, :, None, None])
    assert block.squeeze.out_features == int(2 * 5 / 2)


def test_a_masked_modality_is_exactly_an_absent_one() -> None:
    model = mmtm_model()
    model.eval()
    b = batch()
    b["audio"][2] = float("nan")  # filler of a masked sample never leaks
    b["audio_mask"] = torch.tensor([True, True, False, True, True, True])
    masked = model(b).logits[2]
    alone = model({"image": b["image"][2:3]}).logits[0]
    torch.testing.assert_close(masked, alone)


def test_frozen_excitation_uses_the_running_mean_in_training_only() -> None:
    model = mmtm_model()
    model.train()
    for seed in range(3):
        model(batch(seed=seed))
    block = model.mid_fusion.blocks["1"]
    assert int(block.steps) == 3 and float(block.running("audio").abs().sum()) > 0
    model.mid_fusion.set_frozen("audio")
    maps = {"audio": torch.randn(2, 8, 2, 5), "image": torch.randn(2, 8, 7, 7)}
    out = block(maps, {})
    running = block.running("audio")  # updated with this batch first, as the reference's MMTM does
    torch.testing.assert_close(out["audio"], maps["audio"] * running[None, :, None, None])
    assert int(block.steps) == 4
    block.eval()
    unfrozen = block(maps, {})
    assert not torch.allclose(unfrozen["audio"], out["audio"])


def test_bad_configs_name_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="model.mid_fusion.stages"):
        mmtm_model(stages=[2])
    with pytest.raises(ConfigError, match=r"model.mid_fusion.*image_resnet|model.mid_fusion.*does not run stage by stage"):
        build_model({"num_classes": 4, "dim": 8, "towers": {**TOWERS, "image": {"name": "image_resnet"}},
                     "mid_fusion": {"name": "mmtm"}})
    with pytest.raises(ConfigError, match="valid keys: ratio, stages"):
        mmtm_model(bogus=1)
    with pytest.raises(ConfigError, match="same number of channels"):
        build_model({"num_classes": 4, "dim": 8, "towers": {**TOWERS, "image": {"name": "image_cnn", "channels": [4]}},
                     "mid_fusion": {"name": "mmtm"}})
