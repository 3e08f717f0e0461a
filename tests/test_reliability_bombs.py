"""Memory and time bombs: a small gzip idx that inflates to gigabytes, a long WAV of which one second is used, a
zip member that inflates far past a recording's size, a mirror that trickles one byte at a time and one that
never stops sending. The readers run in a fresh process whose address space is capped a little above what it
has mapped after import (``resource.setrlimit``): each bomb is refused (or, for the long WAV, read) within a
second and without reaching the cap."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from http_server import LocalHTTPServer

from dan.data import fsdd, mnist
from dan.data.archive import extract_zip
from dan.data.download import download_file, part_path
from dan.errors import DataFormatError, DownloadError

HEADROOM_MB = 256
BOUNDED = """
import json, resource, sys, time
from dan.errors import DanError
{imports}
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
cap = vm + {headroom} * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
start = time.perf_counter()
try:
    out = {call}
    result = {{"outcome": "data", "shape": list(out.shape)}}
except DanError as exc:
    result = {{"outcome": type(exc).__name__, "message": str(exc)}}
except MemoryError:
    result = {{"outcome": "MemoryError"}}
result["seconds"] = time.perf_counter() - start
print(json.dumps(result))
"""


def bounded(imports: str, call: str) -> dict[str, object]:
    """Run ``call`` in a fresh Python whose address space may grow only HEADROOM_MB past its size after
    ``imports``; its outcome (``data`` with a shape, or an error type and message) and the seconds it took."""
    code = BOUNDED.format(imports=imports, call=call, headroom=HEADROOM_MB)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def idx_header(dims: list[int]) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def zeros_member(nbytes: int) -> bytes:
    return gzip.compress(bytes(nbytes), compresslevel=9, mtime=0)


@pytest.fixture(scope="module")
def idx_bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """gzip idx files whose header says 10,000 test images (7.8 MB) but whose stream inflates to 1 GB more:
    ``trailer`` as they come (the gzip trailer records the real size), ``forged`` with a last member sized so
    that the trailer agrees with the header."""
    folder = tmp_path_factory.mktemp("idx-bombs")
    honest = gzip.compress(idx_header([10000, 28, 28]) + bytes(10000 * 784), mtime=0)
    block = zeros_member(64 << 20)
    assert len(block) < 1 << 20 and len(zlib.decompress(block, 31)) == 64 << 20
    bombs = {"trailer": honest + block * 16, "forged": honest + block * 16 + zeros_member(16 + 10000 * 784)}
    paths = {}
    for name, data in bombs.items():
        paths[name] = folder / f"{name}-images-idx3-ubyte.gz"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("kind", ["trailer", "forged"])
def test_gzip_idx_inflating_to_a_gigabyte_is_refused_at_once(idx_bombs: dict[str, Path], kind: str) -> None:
    path = idx_bombs[kind]
    assert path.stat().st_size < 3 << 20
    result = bounded("from dan.data.mnist import read_idx", f"read_idx({str(path)!r}, 3)")
    assert result["outcome"] == "DataFormatError", result
    assert str(path) in str(result["message"]) and "download it again" in str(result["message"])
    assert float(result["seconds"]) < 1.0, result


def test_idx_header_claiming_exabytes_is_refused_before_reading(tmp_path: Path) -> None:
    for name, data in {
        "raw-idx3-ubyte": idx_header([2**31, 2**31, 2**31]) + bytes(64),
        "gz-idx3-ubyte.gz": gzip.compress(idx_header([2**31, 2**31, 2**31]) + bytes(64)),
    }.items():
        (tmp_path / name).write_bytes(data)
        result = bounded("from dan.data.mnist import read_idx", f"read_idx({str(tmp_path / name)!r}, 3)")
        assert result["outcome"] == "DataFormatError" and "header says shape" in str(result["message"]), result
        assert float(result["seconds"]) < 1.0, result


def test_real_mnist_still_reads_whole(shared_data: Path) -> None:
    images = mnist.read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz", 3)
    labels = mnist.read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz", 1)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def _long_wav(path: Path, rate: int, samples: int) -> Path:
    """A 16-bit mono WAV declaring ``samples`` samples: a real tone for the first 5 s, then silence stored as
    a sparse file (the size on disk stays small)."""
    tone = (torch.sin(torch.arange(5 * rate) * 2 * torch.pi * 440 / rate) * 8000).short()
    data = samples * 2
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16
    ) + b"data" + struct.pack("<I", data)
    with open(path, "wb") as f:
        f.write(header + tone.numpy().tobytes())
        f.truncate(len(header) + data)
    return path


def test_a_512_mb_wav_is_read_only_as_far_as_used(tmp_path: Path) -> None:
    path = _long_wav(tmp_path / "long.wav", 48000, (1 << 28) - 48000)  # 512 MB of samples, under MAX_SAMPLES
    result = bounded(
        "from dan.data.readers import AudioReader",
        f"AudioReader(features={{'duration_s': 1.0}}).read({str(path)!r})",
    )
    assert result == {**result, "outcome": "data", "shape": [1, 40, 63]}, result
    assert float(result["seconds"]) < 1.0, result
    short = _long_wav(tmp_path / "short.wav", 48000, 6 * 48000)  # the same file, 6 s long: read whole
    whole = fsdd.read_wav(short, 8000)
    head = fsdd.read_wav(path, 8000, max_seconds=1.0)
    assert head.shape[0] == 3 * 8000 and torch.equal(head[:8000], whole[:8000])


def test_zip_member_inflating_past_the_cap_is_refused_before_writing(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fsdd/recordings/0_a_0.wav", bytes(64 << 20))
    assert archive.stat().st_size < 1 << 20
    start = time.perf_counter()
    with pytest.raises(DataFormatError, match=r"bomb.zip: member 'fsdd/recordings/0_a_0.wav' inflates to 67108864 bytes"):
        extract_zip(archive, tmp_path / "out", max_member_bytes=fsdd.MAX_RECORDING_BYTES)
    assert time.perf_counter() - start < 1.0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_zip_member_whose_header_lies_about_its_size_is_stopped(tmp_path: Path) -> None:
    """A member declaring 1 kB that inflates to 64 MB: the copy stops at the declared size (zipfile) and the
    CRC-32 fails, so nothing is kept."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("recordings/0_a_0.wav", bytes(64 << 20))
    data = bytearray(buf.getvalue())
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig)
        data[at + size_at : at + size_at + 4] = struct.pack("<I", 1024)
    archive = tmp_path / "liar.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="liar.zip"):
        extract_zip(archive, tmp_path / "out", max_member_bytes=fsdd.MAX_RECORDING_BYTES)
    assert not any((tmp_path / "out").rglob("*.wav"))


@pytest.fixture
def served(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    for name, _ in mnist.OFFICIAL_FILES["test"].values():
        (folder / name).write_bytes((shared_data / "mnist" / name).read_bytes())
    return folder


def test_a_trickling_mirror_meets_the_deadline(served: Path, tmp_path: Path) -> None:
    name, md5 = mnist.OFFICIAL_FILES["test"]["labels"]
    dest = tmp_path / "data" / name
    with LocalHTTPServer(served) as server:
        server.trickle = 0.2  # one byte every 0.2 s: 4,542 bytes would take 15 minutes
        start = time.perf_counter()
        with pytest.raises(DownloadError, match=r"no complete file within the 1\.5 s deadline"):
            download_file([server.url(name)], dest, md5=md5, progress=False, timeout=0.5, deadline_s=1.5)
        assert time.perf_counter() - start < 3.0
    assert not dest.exists() and not part_path(dest).exists()


@pytest.mark.parametrize("how", ["endless", "claims_more"])
def test_a_body_longer_than_the_file_is_cut_off_and_deleted(served: Path, tmp_path: Path, how: str) -> None:
    root = tmp_path / "data"
    with LocalHTTPServer(served) as server:
        server.endless = how == "endless"
        server.claim_length = 300 << 20 if how == "claims_more" else None
        start = time.perf_counter()
        with pytest.raises(DownloadError, match=r"images-idx3-ubyte.gz: the server sent more than 1648877 bytes, the file's known size"):
            mnist.download_mnist(root, splits=["test"], mirrors=[server.url()], progress=False)
        assert time.perf_counter() - start < 5.0
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) == 0


def test_known_sizes_match_the_real_files(shared_data: Path) -> None:
    for name in mnist.OFFICIAL_FILES["test"].values():
        assert (shared_data / "mnist" / name[0]).stat().st_size == mnist.OFFICIAL_BYTES[name[0]]


def test_unknown_size_is_capped(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dan.data import download

    monkeypatch.setattr(download, "MAX_UNKNOWN_BYTES", 1 << 20)
    with LocalHTTPServer(served) as server:
        server.endless = True
        with pytest.raises(DownloadError, match="sent more than 1048576 bytes, the cap on a file of unknown size"):
            download_file([server.url("x")], tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists() and not part_path(tmp_path / "x").exists()
