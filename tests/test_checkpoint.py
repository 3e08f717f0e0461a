"""Checkpoints: atomic writes, safe loading (malicious pickles refused), truncation, mismatched models."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from dan.engine.checkpoint import (
    FORMAT,
    CheckpointManager,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dan.errors import CheckpointError
from dan.models import build_model

TINY = {"num_classes": 10, "dim": 8, "towers": {"image": {"name": "image_cnn"}}}


class _Payload:
    """Unpickling this runs ``exec``: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_roundtrip_holds_tensors_and_values(tmp_path: Path) -> None:
    model = build_model(TINY)
    path = save_checkpoint(
        tmp_path / "a" / "c.pt",
        {"model": model.state_dict(), "progress": {"step": 3}, "config": {"x": [1, 2]}},
    )
    state = load_checkpoint(path)
    assert state["format"] == FORMAT and state["progress"]["step"] == 3 and state["config"] == {"x": [1, 2]}
    other = build_model(TINY)
    load_model_state(other, state["model"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temp file left behind


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"progress": {"step": 1}})
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        save_checkpoint(path, {"progress": {"step": 2}, "bad": lambda: 0})
    assert load_checkpoint(path)["progress"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("form", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused(tmp_path: Path, form: str) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "model": _Payload(marker)}
    if form == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # the payload is real: plain unpickling of the same kind of file runs it
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.read_text() == "pwned"
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load.*exec"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"model": build_model(TINY).state_dict()})
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: unreadable or truncated"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a dan checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_model_names_keys() -> None:
    small = build_model(TINY).state_dict()
    wide = build_model({**TINY, "dim": 12})
    with pytest.raises(
        CheckpointError, match=r"shape mismatches .*aux_heads\.image\.weight \(10, 8\) vs \(10, 12\)"
    ):
        load_model_state(wide, small, source="c.pt")
    two = build_model({**TINY, "towers": {"image": {"name": "image_cnn"}, "audio": {"name": "audio_cnn"}}})
    with pytest.raises(CheckpointError, match=r"c.pt does not fit this model: missing keys .*towers\.audio"):
        load_model_state(two, small, source="c.pt")


def test_manager_keeps_last_and_best(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, mode="max")
    assert mgr.save({"progress": {"epoch": 0}}, 0.5) is True
    assert mgr.save({"progress": {"epoch": 1}}, 0.4) is False
    assert mgr.save({"progress": {"epoch": 2}}, None) is False
    assert load_checkpoint(mgr.best_path)["progress"]["epoch"] == 0
    last = load_checkpoint(mgr.last_path)
    assert last["progress"]["epoch"] == 2 and last["best_metric"] == 0.5
    assert mgr.save({"progress": {"epoch": 3}}, 0.9) is True
    assert load_checkpoint(mgr.last_path)["best_metric"] == 0.9


def test_rng_state_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    random.seed(1)
    path = save_checkpoint(tmp_path / "r.pt", {"rng": rng_state()})
    expected = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert os.listdir(tmp_path) == ["r.pt"]


def test_a_checkpoint_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    """Not mkstemp's private 0600: a group sharing a runs folder can read the checkpoints."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.pt", {"progress": {"step": 1}})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
