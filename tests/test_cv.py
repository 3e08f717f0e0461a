"""``dan cv``: leave-one-group-out cross-validation runs every fold x seed as its own training process, tests
each on its held-out group only, and reports mean and standard deviation over the runs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from dan.cli import main

CONFIG = """
recipe: fusion
logger: none
quiet: true
data:
  name: manifest
  path: m.csv
  group: speaker
  val_fraction: 0.34
  modalities:
    tab: {reader: columns, columns: [a, b, c]}
model:
  num_classes: 3
  dim: 8
  towers:
    tab: {name: vector_mlp, features: 3, hidden: 16}
optimizer: {name: adamw, lr: 0.01}
train: {epochs: 10, batch_size: 16, num_threads: 1}
"""


def test_leave_one_speaker_out(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    lines = ["a,b,c,label,speaker"]
    for i in range(120):
        y = i % 3
        x = torch.randn(3, generator=g) * 0.3
        x[y] += 2.0
        lines.append(f"{x[0]:.4f},{x[1]:.4f},{x[2]:.4f},{'xyz'[y]},spk{i % 4}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "tab.yaml").write_text(CONFIG.replace("m.csv", str(tmp_path / "m.csv")))
    out = tmp_path / "cv"
    assert main(["cv", str(tmp_path / "tab.yaml"), "--seeds", "0,1", "--out", str(out)]) == 0
    report = json.loads((out / "cv.json").read_text())
    runs = report["runs"]["tab"]
    assert sorted({r["heldout"] for r in runs}) == ["spk0", "spk1", "spk2", "spk3"] and len(runs) == 8
    for r in runs:  # each fold was tested on its held-out speaker alone: 30 rows
        saved = json.loads((out / f"tab__heldout-{r['heldout']}__seed-{r['cell']['seed']}" / "results.json").read_text())
        assert saved["summary"]["test/acc"] == r["test/acc"]
        evaluated = torch.load(out / f"tab__heldout-{r['heldout']}__seed-{r['cell']['seed']}" / "best.pt", weights_only=True)
        assert evaluated["config"]["data"]["test_groups"] == [r["heldout"]]
    accs = [r["test/acc"] for r in runs]
    summary = report["summary"]["tab"]["test/acc"]
    assert summary["mean"] == statistics.fmean(accs) and summary["std"] == statistics.stdev(accs)
    assert summary["mean"] > 0.9  # the columns tell the classes apart for any speaker
    assert "| tab | 8 |" in capsys.readouterr().out
    # a second call reads the runs back instead of training again
    stamp = (out / "cv.json").stat().st_mtime_ns
    assert main(["cv", str(tmp_path / "tab.yaml"), "--seeds", "0,1", "--out", str(out)]) == 0
    assert json.loads((out / "cv.json").read_text())["summary"] == report["summary"]
    assert (out / "cv.json").stat().st_mtime_ns >= stamp


def test_groups_split_a_sweep(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--groups`` runs the named folds only; a later call without it trains the rest and reads all back."""
    g = torch.Generator().manual_seed(1)
    lines = ["a,b,c,label,speaker"]
    for i in range(60):
        x = torch.randn(3, generator=g)
        lines.append(f"{x[0]:.4f},{x[1]:.4f},{x[2]:.4f},{'xyz'[i % 3]},spk{i % 3}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    config = CONFIG.replace("m.csv", str(tmp_path / "m.csv")).replace("epochs: 10", "epochs: 1")
    (tmp_path / "tab.yaml").write_text(config)
    out = tmp_path / "cv"
    assert main(["cv", str(tmp_path / "tab.yaml"), "--groups", "spk2, spk0", "--out", str(out)]) == 0
    assert sorted(r["heldout"] for r in json.loads((out / "cv.json").read_text())["runs"]["tab"]) == ["spk0", "spk2"]
    assert not (out / "tab__heldout-spk1__seed-0").exists()
    stamp = (out / "tab__heldout-spk0__seed-0" / "results.json").stat().st_mtime_ns
    assert main(["cv", str(tmp_path / "tab.yaml"), "--out", str(out)]) == 0
    assert sorted(r["heldout"] for r in json.loads((out / "cv.json").read_text())["runs"]["tab"]) == ["spk0", "spk1", "spk2"]
    assert (out / "tab__heldout-spk0__seed-0" / "results.json").stat().st_mtime_ns == stamp  # read back, not re-run
    capsys.readouterr()


def test_unknown_group_names_the_ones_held(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    lines = ["a,b,c,label,speaker"] + [f"0,0,0,{'xyz'[i % 3]},spk{i % 2}" for i in range(12)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "tab.yaml").write_text(CONFIG.replace("m.csv", str(tmp_path / "m.csv")))
    assert main(["cv", str(tmp_path / "tab.yaml"), "--groups", "spk7", "--out", str(tmp_path / "cv")]) != 0
    err = capsys.readouterr().err
    assert "--groups 'spk7'" in err and "spk0, spk1" in err and "--groups spk0,spk1" in err
    assert not (tmp_path / "cv").exists() or not any((tmp_path / "cv").iterdir())
