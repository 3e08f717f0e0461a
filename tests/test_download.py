"""download_file and download_mnist against a local HTTP server serving the real MNIST test files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from http_server import LocalHTTPServer, closed_port_url

from dan.data import mnist
from dan.data.download import RESUMES_PER_URL, download_file, part_path
from dan.errors import DownloadError

IMAGES, IMAGES_MD5 = mnist.OFFICIAL_FILES["test"]["images"]
LABELS, LABELS_MD5 = mnist.OFFICIAL_FILES["test"]["labels"]


@pytest.fixture
def served(shared_data: Path, tmp_path: Path) -> Path:
    """A folder holding copies of the real MNIST test files, for the server."""
    folder = tmp_path / "served"
    folder.mkdir()
    for name in (IMAGES, LABELS):
        shutil.copy(shared_data / "mnist" / name, folder / name)
    return folder


@pytest.fixture
def server(served: Path):
    with LocalHTTPServer(served) as srv:
        yield srv


def test_good_download_matches_md5_for_both_files(server: LocalHTTPServer, tmp_path: Path) -> None:
    dest = tmp_path / "root"
    paths = mnist.download_mnist(dest, splits=("test",), mirrors=[server.url()], progress=False)
    assert [p.name for p in paths] == [IMAGES, LABELS]
    assert hashlib.md5(paths[0].read_bytes()).hexdigest() == IMAGES_MD5
    assert hashlib.md5(paths[1].read_bytes()).hexdigest() == LABELS_MD5
    assert not any(p.name.endswith(".part") for p in (dest / "mnist").iterdir())
    assert [c.status for c in mnist.verify_mnist(dest)] == ["missing", "missing", "official", "official"]
    images, labels = mnist.load_mnist(dest, "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    # a second run keeps the verified files and does not fetch again
    n = len(server.requests)
    mnist.download_mnist(dest, splits=("test",), mirrors=[server.url()], progress=False)
    assert len(server.requests) == n


def test_checksum_mismatch_deletes_part_and_names_sums(server: LocalHTTPServer, tmp_path: Path) -> None:
    dest = tmp_path / "x" / IMAGES
    wrong = "0" * 32
    with pytest.raises(DownloadError) as err:
        download_file([server.url(IMAGES)], dest, md5=wrong, progress=False)
    msg = str(err.value)
    assert IMAGES in msg and wrong in msg and IMAGES_MD5 in msg and "mismatch" in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_dropped_connection_resumes_within_one_call(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.drop_after, server.drops = 500_000, 1
    dest = download_file([server.url(IMAGES)], tmp_path / IMAGES, md5=IMAGES_MD5, progress=False)
    assert hashlib.md5(dest.read_bytes()).hexdigest() == IMAGES_MD5
    assert server.requests == [(IMAGES, None), (IMAGES, "bytes=500000-")]


def test_dropped_connection_keeps_part_then_next_run_resumes(server: LocalHTTPServer, tmp_path: Path) -> None:
    dest = tmp_path / IMAGES
    server.drop_after, server.drops = 300_000, -1  # every response is cut after 300 kB
    with pytest.raises(DownloadError, match="kept and the next run resumes"):
        download_file([server.url(IMAGES)], dest, md5=IMAGES_MD5, progress=False)
    assert not dest.exists()
    have = (RESUMES_PER_URL + 1) * 300_000  # the first try and each resume add 300 kB
    assert part_path(dest).stat().st_size == have
    server.drop_after = None
    download_file([server.url(IMAGES)], dest, md5=IMAGES_MD5, progress=False)
    assert hashlib.md5(dest.read_bytes()).hexdigest() == IMAGES_MD5
    assert server.requests[-1] == (IMAGES, f"bytes={have}-")
    assert not part_path(dest).exists()


def test_server_ignoring_range_restarts_from_zero(
    server: LocalHTTPServer, tmp_path: Path, served: Path
) -> None:
    dest = tmp_path / IMAGES
    part_path(dest).write_bytes(b"garbage that is not the start of the file")
    server.ignore_range = True
    download_file([server.url(IMAGES)], dest, md5=IMAGES_MD5, progress=False)
    assert dest.read_bytes() == (served / IMAGES).read_bytes()
    assert server.requests[0][1] is not None  # a Range was asked, a 200 was answered


def test_server_down_fails_fast_with_fix(tmp_path: Path) -> None:
    url = closed_port_url(IMAGES)
    with pytest.raises(DownloadError) as err:
        download_file([url], tmp_path / IMAGES, md5=IMAGES_MD5, progress=False, timeout=5)
    msg = str(err.value)
    assert IMAGES in msg and url in msg and "DAN_DATA" in msg and "`dan train quickstart`" in msg
    assert not (tmp_path / IMAGES).exists()


def test_mirror_fallback_after_404(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.missing = {f"a/{LABELS}"}
    mirrors = [server.url("a/"), server.url("")]
    (dest,) = [
        p
        for p in mnist.download_mnist(tmp_path, ("test",), mirrors=mirrors, progress=False)
        if p.name == LABELS
    ]
    assert hashlib.md5(dest.read_bytes()).hexdigest() == LABELS_MD5
    assert (f"a/{LABELS}", None) in server.requests and (LABELS, None) in server.requests


def test_all_mirrors_failing_names_each(server: LocalHTTPServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        download_file(
            [server.url("nope.gz"), closed_port_url()], tmp_path / "nope.gz", progress=False, timeout=5
        )
    assert "HTTP 404" in str(err.value) and "nope.gz" in str(err.value)


def test_existing_modified_file_is_replaced(server: LocalHTTPServer, tmp_path: Path, served: Path) -> None:
    dest = tmp_path / LABELS
    dest.write_bytes(b"not the labels")
    download_file([server.url(LABELS)], dest, md5=LABELS_MD5, progress=False)
    assert dest.read_bytes() == (served / LABELS).read_bytes()


def test_sha256_is_checked(server: LocalHTTPServer, tmp_path: Path, served: Path) -> None:
    good = hashlib.sha256((served / LABELS).read_bytes()).hexdigest()
    download_file([server.url(LABELS)], tmp_path / "ok", sha256=good, progress=False)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_file([server.url(LABELS)], tmp_path / "bad", sha256="f" * 64, progress=False)


def test_cli_download_with_network_down_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dan.cli import main

    monkeypatch.setattr(mnist, "MIRRORS", [closed_port_url("")])
    assert main(["data", "download", "mnist", "--root", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dan data: error: could not download train-images-idx3-ubyte.gz")
    assert "Traceback" not in err and "`dan train quickstart`" in err
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_no_url_and_unwritable_folder(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no URL to download a.gz"):
        download_file([], tmp_path / "a.gz", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DownloadError, match="cannot create .*file/sub.*writable data root"):
        download_file(["http://127.0.0.1:9/a.gz"], blocker / "sub" / "a.gz", progress=False)
