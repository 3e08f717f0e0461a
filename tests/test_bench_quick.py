"""The time-to-accuracy machinery of bench/ (timed child processes, shared by bench/ablation.py) and the
memory-format benchmark run end to end on the real data with --quick settings, so an interface change in one
script cannot leave another broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_quick(script: str, shared_data: Path, out: Path) -> dict:
    """Run ``bench/<script>`` with --quick on one thread on the real data; its result JSON."""
    env = {**os.environ, "DAN_DATA": str(shared_data)}
    subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "--threads", "1", "--out", str(out)],
        cwd=REPO, env=env, check=True, timeout=600,
    )
    return json.loads(out.read_text())


def test_ablation_quick_times_the_shipped_fast_config(shared_data: Path, tmp_path: Path) -> None:
    (row,) = run_quick("ablation.py", shared_data, tmp_path / "ablation.json")["variants"]
    assert row["variant"] == "fast (shipped)"
    assert row["config"] == "avmnist_fast"
    assert row["epochs_run"] == 1
    assert 0.1 < row["final_test_acc"] <= 1.0


def test_audio_cnn_ablation_config_is_avmnist_fast_but_for_its_audio_tower() -> None:
    from omegaconf import OmegaConf

    fast = OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / "configs" / "avmnist_fast.yaml"))
    variant = OmegaConf.to_container(OmegaConf.load(REPO / "bench" / "configs" / "avmnist_fast_audio_cnn.yaml"))
    assert variant["model"]["towers"].pop("audio")["name"] == "audio_cnn"
    assert fast["model"]["towers"].pop("audio")["name"] == "audio_tcn"
    assert variant == fast


def test_memory_format_quick_compares_layouts_from_the_same_weights(shared_data: Path, tmp_path: Path) -> None:
    (row,) = run_quick("memory_format.py", shared_data, tmp_path / "memory_format.json")["results"]
    assert row["case"] == "audio_only:audio" and row["batch_size"] == 16
    assert row["logits_max_abs_diff"] < 1e-4
    assert row["step_ms"]["contiguous"] > 0 and row["step_ms"]["channels_last"] > 0
    assert row["speedup"] == row["step_ms"]["contiguous"] / row["step_ms"]["channels_last"]
