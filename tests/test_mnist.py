"""MNIST idx loading on the real test files, raw copies, corrupt files and official-file checks."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from dan.data import mnist
from dan.errors import ConfigError, DataFormatError, DataNotFoundError

REPO = Path(__file__).resolve().parents[1]
IMAGES = mnist.OFFICIAL_FILES["test"]["images"][0]
LABELS = mnist.OFFICIAL_FILES["test"]["labels"][0]
# Digit histogram of the official MNIST test set.
TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _raw_copy(shared_data: Path, tmp_path: Path) -> Path:
    """A data root with un-gzipped copies of the test files."""
    folder = mnist.mnist_dir(tmp_path / "raw")
    folder.mkdir(parents=True)
    for name in (IMAGES, LABELS):
        with (
            gzip.open(shared_data / "mnist" / name) as src,
            open(folder / name.removesuffix(".gz"), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    return tmp_path / "raw"


def test_official_table_comes_from_torchvision() -> None:
    names = {n for split in mnist.OFFICIAL_FILES.values() for n, _ in split.values()}
    assert names == {n for n, _ in torchvision.datasets.MNIST.resources}
    assert mnist.OFFICIAL_FILES["test"]["images"] == (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
    )
    assert mnist.MIRRORS == list(torchvision.datasets.MNIST.mirrors)


def test_manifest_matches_code() -> None:
    manifest = json.loads((REPO / "datasets" / "mnist.json").read_text())
    files = {f["name"]: f["md5"] for f in manifest["files"]}
    assert files == {n: md5 for split in mnist.OFFICIAL_FILES.values() for n, md5 in split.values()}
    assert {f["name"]: f["bytes"] for f in manifest["files"]} == mnist.OFFICIAL_BYTES
    assert manifest["mirrors"] == mnist.MIRRORS


def test_real_test_files_load(shared_data: Path) -> None:
    images, labels = mnist.load_mnist(shared_data, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == TEST_HISTOGRAM
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits


def test_raw_files_load_the_same(shared_data: Path, tmp_path: Path) -> None:
    root = _raw_copy(shared_data, tmp_path)
    images, labels = mnist.load_mnist(root, "test")
    ref_images, ref_labels = mnist.load_mnist(shared_data, "test")
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    assert [p.name for p in mnist.mnist_files(root, "test")] == [IMAGES[:-3], LABELS[:-3]]


def test_gz_is_not_decompressed_into_the_data_folder(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "ro"
    shutil.copytree(shared_data / "mnist", mnist.mnist_dir(root))
    before = sorted(p.name for p in mnist.mnist_dir(root).iterdir())
    mnist.mnist_dir(root).chmod(0o555)
    try:
        mnist.load_mnist(root, "test")
    finally:
        mnist.mnist_dir(root).chmod(0o755)
    assert sorted(p.name for p in mnist.mnist_dir(root).iterdir()) == before


def test_missing_files_say_what_where_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        mnist.load_mnist(tmp_path, "train")
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg
    assert "DAN_DATA" in msg and "dan data download mnist" in msg and "`dan train quickstart`" in msg


def test_unknown_split_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid base splits: train, test"):
        mnist.load_mnist(tmp_path, "val")


def test_bad_magic_names_file(shared_data: Path, tmp_path: Path) -> None:
    root = _raw_copy(shared_data, tmp_path)
    bad = mnist.mnist_dir(root) / IMAGES[:-3]
    data = bytearray(bad.read_bytes())
    data[2] = 0x0D  # float32 type code instead of unsigned byte
    bad.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=f"{bad}: bad magic number 0x00000d03"):
        mnist.load_mnist(root, "test")


def test_truncated_raw_file_names_file(shared_data: Path, tmp_path: Path) -> None:
    root = _raw_copy(shared_data, tmp_path)
    bad = mnist.mnist_dir(root) / IMAGES[:-3]
    bad.write_bytes(bad.read_bytes()[:-1000])
    with pytest.raises(DataFormatError, match=f"{bad}: truncated or corrupt"):
        mnist.load_mnist(root, "test")


def test_truncated_gzip_names_file(shared_data: Path, tmp_path: Path) -> None:
    folder = mnist.mnist_dir(tmp_path)
    folder.mkdir()
    shutil.copy(shared_data / "mnist" / LABELS, folder / LABELS)
    data = (shared_data / "mnist" / IMAGES).read_bytes()
    (folder / IMAGES).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=f"{folder / IMAGES}: truncated or corrupt idx file"):
        mnist.load_mnist(tmp_path, "test")


def test_count_mismatch_names_both_files(shared_data: Path, tmp_path: Path) -> None:
    root = _raw_copy(shared_data, tmp_path)
    labels_file = mnist.mnist_dir(root) / LABELS[:-3]
    body = labels_file.read_bytes()[8:-10]
    labels_file.write_bytes(b"\x00\x00\x08\x01" + len(body).to_bytes(4, "big") + body)
    with pytest.raises(DataFormatError, match="holds 10000 images but .* holds 9990 labels"):
        mnist.load_mnist(root, "test")


def test_non_digit_label_is_refused(shared_data: Path, tmp_path: Path) -> None:
    root = _raw_copy(shared_data, tmp_path)
    labels_file = mnist.mnist_dir(root) / LABELS[:-3]
    data = bytearray(labels_file.read_bytes())
    data[8] = 42
    labels_file.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="labels must be digits 0-9, found 42"):
        mnist.load_mnist(root, "test")


def test_any_mnist_format_files_load(tmp_path: Path) -> None:
    folder = mnist.mnist_dir(tmp_path)
    folder.mkdir()
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    header = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (3, 28, 28))
    (folder / "train-images-idx3-ubyte").write_bytes(header + images.numpy().tobytes())
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([4, 0, 9]))
    got_images, got_labels = mnist.load_mnist(tmp_path, "train")
    assert torch.equal(got_images, images) and got_labels.tolist() == [4, 0, 9]


def test_verify_reports_official_modified_missing(shared_data: Path, tmp_path: Path) -> None:
    folder = mnist.mnist_dir(tmp_path)
    folder.mkdir()
    shutil.copy(shared_data / "mnist" / IMAGES, folder / IMAGES)
    (folder / LABELS).write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    checks = {c.path.name: c for c in mnist.verify_mnist(tmp_path)}
    assert checks[IMAGES].status == "official" and checks[IMAGES].actual_md5 == checks[IMAGES].expected_md5
    assert checks[LABELS].status == "modified" and checks[LABELS].actual_md5 not in (
        None,
        checks[LABELS].expected_md5,
    )
    train = mnist.OFFICIAL_FILES["train"]["images"][0]
    assert checks[train].status == "missing" and checks[train].actual_md5 is None
    assert checks[train].path == folder / train
