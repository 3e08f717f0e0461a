"""Shared fixtures. Real-data tests use ../shared/data (or $DAN_DATA) and skip with a reason where absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for cand in (os.environ.get("DAN_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real offline data folder (mnist/, fsdd/recordings/); skips the test where absent."""
    root = _shared_data()
    if root is None:
        pytest.skip("real data not found: set DAN_DATA to a folder with mnist/ and fsdd/ (../shared/data)")
    return root


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep caches and W&B files of every test inside its tmp_path; one thread for determinism."""
    monkeypatch.setenv("DAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_compile_cache() -> Iterator[None]:
    """Forget torch.compile's per-function shape history, so one test's compiled sizes never change another's graph."""
    yield
    torch._dynamo.reset()
