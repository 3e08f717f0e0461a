"""One folder per run: a re-run never overwrites an earlier run, two runs never share a folder, a run folder
that cannot be written stops the run before any data is read, and ``run_name`` stays a plain name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import tiny_run

from dan.cli import main
from dan.engine.run_folder import claim_run_folder
from dan.errors import ConfigError

TINY = tiny_run({"train.epochs": 1})


def _train(tmp_path: Path, *extra: str) -> int:
    return main(["train", "quickstart", *TINY, f"output_dir={tmp_path}", *extra])


def test_a_rerun_gets_its_own_folder_and_keeps_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path, "run_name=a") == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file()}
    capsys.readouterr()
    assert _train(tmp_path, "run_name=a", "seed=1") == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'a'} holds an earlier run, so this one writes to {tmp_path / 'a-2'}" in out
    assert f"resume={tmp_path / 'a' / 'last.pt'} continues that run; overwrite=true replaces it" in out
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file()} == first
    second = json.loads((tmp_path / "a-2" / "results.json").read_text())
    assert second["seed"] == 1 and second["summary"]["checkpoint"] == str(tmp_path / "a-2" / "best.pt")


def test_overwrite_replaces_the_earlier_run(tmp_path: Path) -> None:
    assert _train(tmp_path, "run_name=a") == 0
    assert _train(tmp_path, "run_name=a", "seed=1", "overwrite=true") == 0
    assert not (tmp_path / "a-2").exists()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["seed"] == 1
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "summary" in r]) == 1  # the first run's log was replaced, not appended to


def test_resume_continues_in_the_checkpoint_folder(tmp_path: Path) -> None:
    assert _train(tmp_path, "run_name=a") == 0
    last = tmp_path / "a" / "last.pt"
    assert _train(tmp_path, "run_name=other", "train.epochs=2", f"resume={last}") == 0
    assert not (tmp_path / "other").exists() and not (tmp_path / "a-2").exists()
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["summary"]["epochs"] == 2 and Path(res["summary"]["checkpoint"]).exists()


def test_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    held = claim_run_folder(tmp_path, "a")
    try:
        (held.path / "last.pt").write_bytes(b"")
        with pytest.raises(ConfigError, match=r"run folder .*a is in use by a run that is still training \(pid \d+"):
            claim_run_folder(tmp_path, "a", resume=str(held.path / "last.pt"))
        assert claim_run_folder(tmp_path, "a").path == tmp_path / "a-2"  # a new run goes beside it
    finally:
        held.release()
    claim_run_folder(tmp_path, "a", resume=str(held.path / "last.pt")).release()  # free again once released


def test_two_runs_started_together_never_share_a_folder(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dan.cli", "train", "quickstart", *TINY, f"output_dir={tmp_path}", "run_name=r"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == ["r", "r-2"]
    for name in folders:
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert res["run_dir"] == str(tmp_path / name)
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert len([r for r in rows if "summary" in r]) == 1  # one run's log, not two interleaved


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", ".."])
def test_run_name_must_be_a_plain_name(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path, f"run_name={name}") == 2
    err = capsys.readouterr().err
    assert "is not a plain folder name" in err and "run_name=my_run output_dir=runs" in err
    assert not any(tmp_path.iterdir()) and not (tmp_path.parent / "escaped").exists()


def test_output_dir_below_a_file_stops_before_any_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["train", "quickstart", *TINY, f"output_dir={tmp_path / 'file' / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the run folder" in err and "nothing was trained" in err
    assert "set output_dir= to a writable folder" in err


FULL_DISK = """
import resource, signal, sys, tempfile
tempfile.gettempdir()  # imports that want a temp folder find it before the disk fills up
import torch, matplotlib.pyplot, dan.engine.train_command, dan.recipes.fusion
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
from dan.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_disk_that_takes_no_bytes_stops_before_any_data(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "train", "quickstart", *TINY, f"output_dir={tmp_path / 'runs'}"],
        capture_output=True, text=True, env={**os.environ, "DAN_CACHE": str(cache)}, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot write the run folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not cache.exists()  # stopped before the data was built


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_stops_before_any_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert main(["train", "quickstart", *TINY, f"output_dir={ro}"]) == 2
    assert "cannot write the run folder" in capsys.readouterr().err


@pytest.mark.parametrize("output_dir", ["/", "//", "/tmp/.."])
def test_the_filesystem_root_is_refused_as_output_dir(output_dir: str) -> None:
    with pytest.raises(ConfigError, match="is the filesystem root; .* choose a folder for runs, e.g. output_dir=runs"):
        claim_run_folder(output_dir, "r")
