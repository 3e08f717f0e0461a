"""Fuzzing the readers of untrusted files (hypothesis): the WAV reader (``read_audio``, ``read_wav``) and the
idx reader (``read_idx``, ``load_mnist``). Whatever the bytes, the only outcomes allowed are data of the
documented shape or a DanError naming the file; never another exception, never a hang.

CI runs 300 examples per reader. For a long run, e.g. 10,000 per reader:

    DAN_FUZZ_EXAMPLES=10000 .venv/bin/pytest -q -p no:cacheprovider tests/test_fuzz_readers.py
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import pytest
import torch
from fuzzing import FUZZ, outcome, watchdog
from hypothesis import event, given
from hypothesis import strategies as st

from dan.data import fsdd, mnist
from dan.errors import DanError

# ---------------------------------------------------------------- WAV
U16 = st.one_of(st.sampled_from([0, 1, 2, 3, 8, 16, 24, 32, 64, 0xFFFE, 0xFFFF]), st.integers(0, 0xFFFF))
U32 = st.one_of(
    st.sampled_from([0, 1, 8000, 16000, 44100, 0x7FFFFFFF, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF)
)
RATES = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), st.integers(1, 400_000))
SOMETIMES = st.integers(0, 7).map(lambda x: x == 0)  # true one time in eight


def maybe_lie(draw: st.DrawFn, honest: int, lie: st.SearchStrategy[int]) -> int:
    """``honest``, or one time in eight whatever ``lie`` draws."""
    return draw(lie) if draw(SOMETIMES) else honest


@st.composite
def wav_bytes(draw: st.DrawFn) -> bytes:
    """A well-formed PCM or float RIFF/WAVE file where each header field may lie (one time in eight),
    a stray chunk may sit before the data, bytes may be overwritten and the file may be cut short."""
    fmt_tag, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]))
    channels = draw(st.integers(1, 3))
    rate = draw(RATES)
    align = channels * bits // 8
    body = draw(st.binary(min_size=align, max_size=4096))
    body = body[: len(body) - len(body) % align]
    fmt = struct.pack(
        "<HHIIHH",
        maybe_lie(draw, fmt_tag, U16),
        maybe_lie(draw, channels, U16),
        maybe_lie(draw, rate, U32),
        maybe_lie(draw, rate * align, U32),
        maybe_lie(draw, align, U16),
        maybe_lie(draw, bits, U16),
    )
    chunks = [b"fmt " + struct.pack("<I", maybe_lie(draw, len(fmt), U32)) + fmt]
    if draw(SOMETIMES):
        extra = draw(st.binary(max_size=40))
        chunks.append(draw(st.binary(min_size=4, max_size=4)) + struct.pack("<I", len(extra)) + extra)
    chunks.append(b"data" + struct.pack("<I", maybe_lie(draw, len(body), U32)) + body)
    payload = b"WAVE" + b"".join(chunks)
    ident = draw(st.sampled_from([b"RIFX", b"RF64"])) if draw(SOMETIMES) else b"RIFF"
    raw = bytearray(ident + struct.pack("<I", maybe_lie(draw, len(payload), U32)) + payload)
    if draw(SOMETIMES):
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(SOMETIMES):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


ANY_FILE = st.one_of(wav_bytes(), wav_bytes(), wav_bytes(), st.binary(max_size=2048))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=ANY_FILE)
def test_fuzz_read_audio(scratch: Path, data: bytes) -> None:
    path = scratch / "x.wav"
    path.write_bytes(data)
    result = outcome(lambda: fsdd.read_audio(path), path)
    if result is not None:
        wave, rate = result
        assert wave.dtype == torch.float32 and wave.ndim == 1 and wave.numel() > 0
        assert bool(torch.isfinite(wave).all()) and float(wave.abs().max()) <= 1.0
        assert isinstance(rate, int) and rate > 0


@FUZZ
@given(data=ANY_FILE, target=st.sampled_from([8000, 16000]))
def test_fuzz_read_wav(scratch: Path, data: bytes, target: int) -> None:
    path = scratch / "y.wav"
    path.write_bytes(data)
    wave = outcome(lambda: fsdd.read_wav(path, target), path)
    if wave is not None:
        assert wave.dtype == torch.float32 and wave.ndim == 1
        assert bool(torch.isfinite(wave).all()) and float(wave.abs().max()) <= 1.0


# ---------------------------------------------------------------- idx
def idx_file(draw: st.DrawFn, dims: list[int], body: bytes) -> bytes:
    """The idx encoding of ``dims`` and ``body`` where magic, dims and body length may each lie (one time in
    eight), bytes may be overwritten and the file may be cut short."""
    dtype = maybe_lie(draw, 0x08, st.sampled_from([0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0xFF]))
    nd = maybe_lie(draw, len(dims), st.integers(0, 255))
    dims = [maybe_lie(draw, d, U32) for d in dims]
    dims = (dims + [draw(st.integers(0, 9)) for _ in range(nd - len(dims))])[: min(nd, 6)]
    if draw(SOMETIMES):
        body = draw(st.binary(max_size=600))
    raw = bytearray(bytes([0, 0, dtype, nd]) + b"".join(struct.pack(">I", d) for d in dims) + body)
    if draw(SOMETIMES) and raw:
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(SOMETIMES):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


@st.composite
def idx_bytes(draw: st.DrawFn, ndim: int) -> bytes:
    """An idx file of ``ndim`` dimensions (sizes 0-6), honest or lying (see :func:`idx_file`)."""
    dims = [draw(st.integers(0, 6)) for _ in range(ndim)]
    return idx_file(draw, dims, draw(st.binary(min_size=math.prod(dims), max_size=math.prod(dims))))


@st.composite
def mnist_pair(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Images ``[n, h, w]`` and digit labels ``[n]`` that match, before either file may lie."""
    n, h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6)), draw(st.integers(0, 6))
    images = idx_file(draw, [n, h, w], draw(st.binary(min_size=n * h * w, max_size=n * h * w)))
    labels = bytes(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    return images, idx_file(draw, [n], labels)


def _write(path: Path, data: bytes, gz: str) -> Path:
    """``gz``: ``raw`` file, ``gzip`` of the bytes (``.gz``), or the bytes themselves named ``.gz``."""
    if gz == "raw":
        path.write_bytes(data)
        return path
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(data, mtime=0) if gz == "gzip" else data)
    return out


GZ = st.sampled_from(["raw", "gzip", "gzip", "bogus"])


@FUZZ
@given(data=st.data(), ndim=st.sampled_from([1, 3]), gz=GZ)
def test_fuzz_read_idx(scratch: Path, data: st.DataObject, ndim: int, gz: str) -> None:
    for old in scratch.glob("z-idx*"):
        old.unlink()
    raw = data.draw(st.one_of(idx_bytes(ndim), idx_bytes(ndim), idx_bytes(ndim), st.binary(max_size=600)))
    path = _write(scratch / "z-idx", raw, gz)
    x = outcome(lambda: mnist.read_idx(path, ndim), path)
    if x is not None:
        assert x.dtype == torch.uint8 and x.ndim == ndim


@FUZZ
@given(files=mnist_pair(), gz=GZ)
def test_fuzz_load_mnist(scratch: Path, files: tuple[bytes, bytes], gz: str) -> None:
    images, labels = files
    folder = scratch / "root" / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    image_file = _write(folder / "t10k-images-idx3-ubyte", images, gz)
    label_file = _write(folder / "t10k-labels-idx1-ubyte", labels, gz)
    with watchdog():
        try:
            x, y = mnist.load_mnist(folder.parent, "test")
        except DanError as exc:
            assert str(image_file) in str(exc) or str(label_file) in str(exc), str(exc)
            event(f"outcome: {type(exc).__name__}")
            return
    event("outcome: data")
    assert x.dtype == torch.uint8 and x.ndim == 3 and y.dtype == torch.int64 and y.shape == (x.shape[0],)
    assert y.numel() == 0 or int(y.max()) <= 9
