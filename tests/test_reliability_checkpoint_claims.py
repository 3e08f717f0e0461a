"""A small checkpoint that claims a huge model or absurd preprocessing is refused before anything is
allocated: the stored config is built on the meta device and matched with the stored weights first, and the
stored preprocessing is bounded like a config's. Measured in a fresh process: exit 2 within seconds, peak
memory within 300 MB of an honest checkpoint's eval (the claims cost 3.9-4.7 GB before the fix)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_runs import tiny_run

from dan.cli import main
from dan.engine.checkpoint import load_checkpoint, save_checkpoint

PEAK = """
import resource, sys
from dan.cli import main
code = main(sys.argv[1:])
print("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(code)
"""


def _hostile(tmp_path: Path, change: Any) -> Path:
    state = load_checkpoint(tmp_path / "ok" / "best.pt")
    state.pop("format")
    state = copy.deepcopy(state)
    change(state)
    out = tmp_path / "hostile.pt"
    save_checkpoint(out, state)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("claims")
    assert main(["train", "quickstart", *tiny_run({"train.epochs": 1}), f"output_dir={tmp}", "run_name=ok"]) == 0
    return tmp


def _set(path: list[str], value: Any) -> Any:
    def change(state: dict[str, Any]) -> None:
        node = state
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["config", "model", "dim"], 20000, "does not fit this model"),
        (["preprocessing", "modalities", "audio", "features", "sample_rate"], 10**9, "stored preprocessing is invalid"),
        (["preprocessing", "modalities", "image", "size"], 200000, "stored preprocessing is invalid"),
    ],
)
def test_a_checkpoint_claiming_too_much_is_refused_cheaply(
    trained: Path, tmp_path: Path, path: list[str], value: Any, message: str
) -> None:
    (tmp_path / "ok").symlink_to(trained / "ok")
    hostile = _hostile(tmp_path, _set(path, value))
    code, err, peak = _eval_peak(hostile)
    assert code == 2 and "Traceback" not in err, err
    assert message in err, err
    _, _, honest = _eval_peak(trained / "ok" / "best.pt")
    assert peak < honest + 300, (peak, honest)  # the claims would need several GB more than an honest eval


def _eval_peak(checkpoint: Path) -> tuple[int, str, int]:
    """``dan eval CHECKPOINT`` in a fresh process: exit status, stderr and peak RSS in MB."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, "eval", str(checkpoint), "eval.noise_levels=[0]"],
        capture_output=True, text=True, timeout=300,
    )
    return proc.returncode, proc.stderr, int(proc.stdout.split("peak_mb")[1])
