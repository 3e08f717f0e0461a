"""Fuzzing ``dan.load`` with mutated real checkpoints (hypothesis). A checkpoint of a real training run is
damaged two ways: its bytes (bit flips, overwritten, cut, deleted, inserted or repeated bytes: bit-rot and
truncation, which the archive's CRC-32s catch), or one archive member with the archive rebuilt around it with
valid CRC-32s (a damaged pickle or tensor that only the unpickler, the structure checks and the per-tensor
checksums can catch). The only outcomes allowed are a model whose weights are exactly the original's or a
CheckpointError naming the file; never another exception, never a hang, never altered weights.

CI runs 300 examples per mode (``DAN_FUZZ_EXAMPLES`` changes it; docs/reliability.md has the long run).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from fuzzing import FUZZ, outcome
from hypothesis import given
from hypothesis import strategies as st
from tiny_runs import tiny_run

import dan
from dan.cli import main
from dan.errors import CheckpointError


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, dict[str, torch.Tensor]]:
    """A real checkpoint (``best.pt`` of a short quickstart run), its bytes and its weights."""
    tmp = tmp_path_factory.mktemp("fuzz-ckpt")
    assert main(["train", "quickstart", *tiny_run({"train.epochs": 1}), f"output_dir={tmp}", "run_name=r"]) == 0
    path = tmp / "r" / "best.pt"
    return tmp, path.read_bytes(), dan.load(path).model.state_dict()


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to three damages: bits flipped, bytes overwritten, deleted, inserted or repeated, or
    the end cut off."""
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "repeat", "cut"]))
        if kind == "flip":
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            raw[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "repeat":
            raw[at:at] = raw[at : at + draw(st.integers(1, 64))]
        else:
            raw = raw[:at]
    return bytes(raw)


def rebuilt(data: bytes, name: str, member: bytes) -> bytes:
    """The archive ``data`` with member ``name`` replaced by ``member``, every CRC-32 valid."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename), member if info.filename == name else src.read(info))
    return out.getvalue()


def check(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Load ``path``: a CheckpointError naming it, or a model with exactly ``weights``."""
    loaded = outcome(lambda: dan.load(path), path, CheckpointError)
    if loaded is not None:
        got = loaded.model.state_dict()
        assert got.keys() == weights.keys()
        assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in weights.items()), "altered weights loaded"


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_checkpoint_bytes(original: tuple[Path, bytes, dict[str, torch.Tensor]], data: st.DataObject) -> None:
    tmp, raw, weights = original
    path = tmp / "bytes.pt"
    path.write_bytes(data.draw(damaged(raw)))
    check(path, weights)


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_member_valid_archive(
    original: tuple[Path, bytes, dict[str, torch.Tensor]], data: st.DataObject
) -> None:
    tmp, raw, weights = original
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        names = archive.namelist()
        pickle_name = next(n for n in names if n.endswith("data.pkl"))
        name = pickle_name if data.draw(st.booleans()) else data.draw(st.sampled_from(names))
        member = archive.read(name)
    path = tmp / "member.pt"
    path.write_bytes(rebuilt(raw, name, data.draw(damaged(member))))
    check(path, weights)


def test_every_malformed_file_is_a_checkpoint_error(original: tuple[Path, bytes, dict[str, torch.Tensor]]) -> None:
    """The cases the issue found: a text file named .pt, and the exception types that escaped (KeyError,
    IndexError, TypeError, struct.error) before the archive and the pickle were checked."""
    tmp, raw, weights = original
    text = tmp / "notes.pt"
    text.write_text("epoch 3: loss 0.12, acc 0.98\n")
    with pytest.raises(CheckpointError, match="notes.pt"):
        dan.load(text)
    pk = tmp / "pk.pt"
    pk.write_bytes(b"PK\x03\x04" + b"e" * 400)  # a zip signature and nothing zip after it
    with pytest.raises(CheckpointError, match="pk.pt: unreadable or truncated"):
        dan.load(pk)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        pickled = archive.read(name)
    flipped = bytearray(raw)
    flipped[raw.index(pickled) + len(pickled) // 2] ^= 0x10
    rot = tmp / "rot.pt"
    rot.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="rot.pt: corrupt checkpoint .*data.pkl.* CRC-32"):
        dan.load(rot)


def test_a_changed_tensor_in_a_valid_archive_fails_its_checksum(
    original: tuple[Path, bytes, dict[str, torch.Tensor]],
) -> None:
    """Bit-rot repaired into a valid archive (e.g. re-zipped by a sync tool) is still caught: each tensor's
    checksum, recorded at save, is checked at load."""
    tmp, raw, _ = original
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        name = next(n for n in archive.namelist() if "/data/" in n and archive.getinfo(n).file_size >= 64)
        member = bytearray(archive.read(name))
    member[7] ^= 0x01
    path = tmp / "recrc.pt"
    path.write_bytes(rebuilt(raw, name, bytes(member)))
    with pytest.raises(CheckpointError, match="recrc.pt: corrupt checkpoint: 1 tensors do not match the checksums"):
        dan.load(path)
