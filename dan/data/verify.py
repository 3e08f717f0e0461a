"""``dan data verify``: check a dataset's files before training on them.

MNIST files are compared with their published md5; every FSDD recording is opened and read; any registered
dataset (a manifest, a folder tree, AV-MNIST, a plugin) is built split by split, so an unreadable file, a
missing split or an empty class shows up here and not an hour into a run. A dataset class may add its own
file checks with a ``verify() -> list[Check]`` method.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dan.errors import DanError


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked (a file, a speaker, a split), whether it passed, and the detail."""

    subject: str
    ok: bool
    detail: str
    absent: bool = False  # a file the data root simply lacks (not a failure: the dataset may not need it)


def verify_mnist_files(root: Path) -> list[Check]:
    """Each official MNIST ``.gz`` under ``root/mnist`` against its published md5 (an absent file is reported,
    not failed: the offline data holds only the test files)."""
    from dan.data.mnist import verify_mnist

    checks = []
    for c in verify_mnist(root):
        if c.status == "missing":
            checks.append(Check(str(c.path), True, "absent; `dan data download mnist` fetches it", absent=True))
        else:
            checks.append(Check(str(c.path), c.status == "official", f"{c.status} (md5 {c.actual_md5}, expected {c.expected_md5})"))
    return checks


def verify_fsdd_files(root: Path) -> list[Check]:
    """Every FSDD recording under ``root`` opened and read: one check per unreadable file, and one per
    speaker with its recording count and digits."""
    from dan.data import fsdd

    try:
        recs = fsdd.index_recordings(fsdd.fsdd_dir(root))
    except DanError as exc:
        return [Check(str(fsdd.fsdd_dir(root)), False, str(exc))]
    checks: list[Check] = []
    good: Counter[str] = Counter()
    digits: dict[str, set[int]] = {}
    rates: Counter[int] = Counter()
    for rec in recs:
        try:
            wave, rate = fsdd.read_audio(rec.path)
        except DanError as exc:
            checks.append(Check(str(rec.path), False, str(exc)))
            continue
        good[rec.speaker] += 1
        digits.setdefault(rec.speaker, set()).add(rec.digit)
        rates[rate] += 1
    for speaker in sorted(good):
        missing = sorted(set(range(10)) - digits[speaker])
        detail = f"{good[speaker]} readable recordings, digits 0-9" + (f" except {missing}" if missing else "")
        checks.append(Check(f"speaker {speaker}", not missing, detail))
    rate_text = ", ".join(f"{n} at {r} Hz" for r, n in sorted(rates.items()))
    checks.append(Check(str(fsdd.fsdd_dir(root)), True, f"{len(recs)} recordings, {sum(good.values())} readable ({rate_text})"))
    return checks


def verify_dataset(cfg: Mapping[str, Any]) -> list[Check]:
    """The dataset a ``data`` config names: its own file checks (where it has a ``verify`` method), then
    every split built, with its size, classes and the samples each modality is present in."""
    from dan.data.registry import build_dataset

    dataset = build_dataset(cfg)
    own = getattr(dataset, "verify", None)
    checks: list[Check] = list(own()) if callable(own) else []
    try:
        splits = dataset.build()
    except DanError as exc:
        return [*checks, Check(f"data.name={cfg.get('name', 'avmnist')}", False, str(exc))]
    for name, split in splits.items():
        counts = Counter(split.labels.tolist())
        present = ", ".join(f"{m} in {int((split.rows[m] >= 0).sum())}" for m in split.modalities)
        classes = len(counts)
        empty = [c for c in range(len(split.preprocessing.get("classes", []) or [])) if c not in counts]
        detail = f"{len(split)} samples, {classes} classes (fewest {min(counts.values(), default=0)}), {present}"
        if empty and name == "train":
            detail += f"; classes {empty} have no training sample"
        checks.append(Check(f"split {name}", len(split) > 0 and not (empty and name == "train"), detail))
    return checks
