"""Real `dan train` processes: SIGTERM and Ctrl-C write a checkpoint and exit cleanly with 128 + the signal's
number; two processes with the same seed and config give bit-identical metrics and weights (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from test_reliability_faults import TINY

from dan.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _interruptible() -> None:
    """In the child: Ctrl-C handled as in a terminal, even where the tests run as a background job (a shell
    starts those with SIGINT ignored, and dan rightly keeps an inherited ignore, as under ``nohup``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cmd: list[str], err: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err.open("w"), text=True, env=_env(), cwd=REPO,
        preexec_fn=_interruptible,
    )


def _signal_after_step(proc: subprocess.Popen[str], step: int, sig: int) -> str:
    """Send ``sig`` once the run has logged ``step``; returns everything it printed on stdout."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"step {step} "):
            proc.send_signal(sig)
            break
    seen.append(proc.stdout.read())
    proc.wait(timeout=120)
    return "".join(seen)


def test_sigterm_and_ctrl_c_write_a_checkpoint_then_exit_cleanly(tmp_path: Path) -> None:
    # many epochs, no periodic checkpoint: a last.pt can only come from the signal handling
    run = [*TINY, "train.epochs=200", "train.log_every=1", "train.checkpoint_every=0", "logger=console"]
    run.append("quiet=false")  # step lines on stdout tell when to signal
    by_cli = [sys.executable, "-m", "dan.cli", "train", "quickstart", *run]
    by_script = [sys.executable, "recipes/fusion.py", "--config", "quickstart", *run]
    cases = {
        "term": (by_cli, signal.SIGTERM, 143),
        "int": (by_script, signal.SIGINT, 130),
    }
    procs = {
        name: _start([*cmd, f"output_dir={tmp_path}", f"run_name={name}"], tmp_path / f"{name}.err")
        for name, (cmd, _, _) in cases.items()
    }
    with ThreadPoolExecutor(len(cases)) as pool:  # both runs at once, each signalled at its own step 3
        outs = dict(
            zip(cases, pool.map(lambda n: _signal_after_step(procs[n], 3, cases[n][1]), cases), strict=True)
        )
    for name, (_, sig, code) in cases.items():
        err = (tmp_path / f"{name}.err").read_text()
        assert procs[name].returncode == code, outs[name] + err
        last = tmp_path / name / "last.pt"
        assert f"stopped by {sig.name} at epoch " in err and f"resume={last}" in err
        assert "Traceback" not in err
        progress = load_checkpoint(last)["progress"]
        assert progress["step"] >= 3 and progress["step"] == 6 * progress["epoch"] + progress["batch"]
        # the message names the step the checkpoint holds
        assert f"epoch {progress['epoch']} step {progress['step']};" in err
        assert not (tmp_path / name / "results.json").exists()  # it stopped, it did not finish


def test_same_seed_and_config_give_bit_identical_runs_in_two_processes(tmp_path: Path) -> None:
    run = [*TINY, "train.epochs=2", "train.log_every=2", "model.modality_dropout=0.3", "quiet=true"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dan.cli",
                "train",
                "quickstart",
                *run,
                f"output_dir={tmp_path}",
                f"run_name={n}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        for n in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in "ab")
    assert a["history"] == b["history"]  # floats compared exactly
    for key in ("train_seconds", "train_samples_per_s"):
        a["summary"].pop(key), b["summary"].pop(key)
    a["summary"].pop("checkpoint"), b["summary"].pop("checkpoint")
    assert a["summary"] == b["summary"]
    steps = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in "ab"]
    timing = ("samples_per_s", "eta_s")
    strip = [[{k: v for k, v in r.items() if k not in timing} for r in s if "step" in r] for s in steps]
    assert strip[0] == strip[1] and len(strip[0]) > 4
    wa, wb = (load_checkpoint(tmp_path / n / "last.pt")["model"] for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_signal_handlers_are_restored_after_training() -> None:
    from dan.engine.trainer import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.name == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is before  # a second signal acts at once
    assert signal.getsignal(signal.SIGTERM) is before
