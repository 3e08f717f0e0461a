"""W&B logging: a real offline run read back from its ``.wandb`` file, and failures that never stop training."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
from tiny_runs import tiny_run
from wandb.proto import wandb_internal_pb2 as pb

from dan.cli import main
from dan.logging.wandb_logger import confusion_lists, resolve_mode

TINY = tiny_run({"logger": "wandb", "wandb.log_misclassified": 3})
BLOCK = 32768


def read_records(path: Path) -> Iterator[pb.Record]:
    """Records of a ``.wandb`` file (W&B's leveldb-style log: 7-byte file header, 32 KiB blocks of
    ``<crc32, length, type>`` chunks; type 1 = full record, 2/3/4 = first/middle/last piece)."""
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(items) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_offline_run_logs_config_steps_validation_and_artifacts(tmp_path: Path) -> None:
    assert main(["train", "quickstart", *TINY, f"output_dir={tmp_path}", "run_name=w"]) == 0
    results = json.loads((tmp_path / "w" / "results.json").read_text())["summary"]
    (run_file,) = (tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")
    records = list(read_records(run_file))
    kinds = [r.WhichOneof("record_type") for r in records]

    config = _items(next(r for r in records if kinds[records.index(r)] == "run").run.config.update)
    assert config["recipe"] == "fusion" and config["optimizer"]["lr"] == 0.003
    assert config["data"]["n_train"] == 120

    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    steps = [h for h in history if "train/loss" in h]
    assert [h["_step"] for h in steps] == [2, 4, 6, 8, 10, 12]
    for key in (
        "train/loss_fused",
        "train/loss_image",
        "train/loss_audio",
        "balancer/fused",
        "balancer/image",
        "balancer/audio",
        "lr",
        "samples_per_s",
    ):
        assert key in steps[0], key
    assert steps[0]["balancer/image"] == 1.0  # static balancer
    vals = [h for h in history if "val/acc" in h]
    assert len(vals) == 2 and {"val/acc_image", "val/acc_audio"} <= set(vals[0])
    assert vals[0]["val/confusion_matrix_table/_type"] == "table-file"
    assert vals[0]["val/misclassified/nrows"] == 3
    assert vals[-1]["val/acc"] == pytest.approx(
        json.loads((tmp_path / "w" / "results.json").read_text())["history"][-1]["val/acc"]
    )

    summary: dict[str, object] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert summary["test/acc"] == pytest.approx(results["test/acc"]) and summary["steps"] == 12
    assert summary["manifest_hash"] == results["manifest_hash"] and len(str(summary["manifest_hash"])) == 64

    # the end of the run: test scalars, confusion matrix, dan eval's removal and noise curves, the run's PNGs
    (test,) = [h for h in history if "test/acc" in h]
    assert test["test/acc"] == pytest.approx(results["test/acc"])
    for key in ("test/acc_image", "test/acc_audio", "test/acc_without_image", "test/acc_without_audio", "test/loss"):
        assert test[key] == pytest.approx(results[key]), key
    for table in ("test/confusion_matrix_table", "test/removal_table", "test/noise_curves_table"):
        assert test[f"{table}/_type"] == "table-file", table
    assert test["test/noise_curves_table/nrows"] == 2 * 5  # two modalities x five noise levels
    figures = {k.split("/")[1] for h in history for k in h if k.startswith("plots/")}
    assert figures == {"curves", "confusion", "per_class_error", "noise"}

    # the model artifact: uploaded when validation improves, file named as its alias, epochs counted as the metrics count them
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    model = [a for a in artifacts if a.type == "model"]
    improved = [e for e in results_history(tmp_path / "w") if e["improved"]]
    assert len(model) == len(improved) >= 1
    for art, entry in zip(model, improved, strict=True):
        assert [c.path for c in art.manifest.contents] == ["best.pt"] and "best" in art.aliases
        meta = json.loads(art.metadata)
        assert (meta["epoch"], meta["step"]) == (entry["epoch"], entry["step"])
        assert f"epoch-{entry['epoch']}" in art.aliases
    assert [v["epoch"] for v in vals] == [e["epoch"] for e in results_history(tmp_path / "w")] == [1, 2]
    table = next(a for a in artifacts if "misclassified" in a.name)
    paths = [c.path for c in table.manifest.contents]
    assert sum(p.endswith(".png") for p in paths) == 3 and sum(p.endswith(".wav") for p in paths) == 3


def results_history(run_dir: Path) -> list[dict[str, object]]:
    """``results.json``'s history, each entry marked ``improved`` where its val/acc beat every earlier one."""
    history = json.loads((run_dir / "results.json").read_text())["history"]
    best = -1.0
    for entry in history:
        entry["improved"] = entry["val/acc"] > best
        best = max(best, entry["val/acc"])
    return history


def test_wandb_init_failure_falls_back_to_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    with pytest.warns(UserWarning, match="W&B could not start .*no network.*console only"):
        assert (
            main(["train", "quickstart", *TINY, "train.epochs=1", f"output_dir={tmp_path}", "run_name=f"])
            == 0
        )
    assert (tmp_path / "f" / "results.json").exists()
    assert '"val/acc"' in (tmp_path / "f" / "metrics.jsonl").read_text()


def test_wandb_failure_mid_run_warns_once_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_init = wandb.init

    def init(**kwargs):  # type: ignore[no-untyped-def]
        run = real_init(**kwargs)

        def log(*a, **k):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

        monkeypatch.setattr(run, "log", log)
        return run

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(UserWarning) as caught:
        assert (
            main(["train", "quickstart", *TINY, "train.epochs=1", f"output_dir={tmp_path}", "run_name=m"])
            == 0
        )
    failures = [w for w in caught if "disk full" in str(w.message)]
    assert len(failures) == 1 and "console logger goes on" in str(failures[0].message)
    lines = (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()
    assert sum('"train/loss"' in x for x in lines) == 3  # console kept every step


def test_mode_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("offline") == "offline"


def test_confusion_lists_expand_counts() -> None:
    y, p = confusion_lists([[2, 1], [0, 3]])
    assert y == [0, 0, 0, 1, 1, 1] and p == [0, 0, 1, 1, 1, 1]
