"""Folder-tree datasets written out from real MNIST digits and FSDD recordings."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dan.data.folder import load_folder_tree
from dan.data.images import read_image
from dan.errors import DataFormatError, DataNotFoundError


def _write_mnist_tree(root: Path, shared_data: Path, per_class: int = 3) -> torch.Tensor:
    from dan.data.mnist import load_mnist

    images, labels = load_mnist(shared_data, "test")
    for c in range(3):
        (root / f"digit_{c}").mkdir(parents=True)
        for k, i in enumerate((labels == c).nonzero().squeeze(1)[:per_class].tolist()):
            Image.fromarray(images[i].numpy()).save(root / f"digit_{c}" / f"{k}.png")
    return images


def test_image_tree(tmp_path: Path, shared_data: Path) -> None:
    images = _write_mnist_tree(tmp_path, shared_data)
    (tmp_path / "digit_0" / "notes.txt").write_text("ignored")
    ds = load_folder_tree(tmp_path, "image")
    assert ds.classes == ["digit_0", "digit_1", "digit_2"]
    assert ds.items.shape == (9, 1, 28, 28) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    from dan.data.mnist import load_mnist

    _, labels = load_mnist(shared_data, "test")
    first_zero = images[(labels == 0).nonzero()[0, 0]].float() / 255
    assert torch.allclose(ds.items[0, 0], first_zero, atol=1 / 255)


def test_audio_tree(tmp_path: Path, shared_data: Path) -> None:
    rec = shared_data / "fsdd" / "recordings"
    for d in (3, 4):
        (tmp_path / str(d)).mkdir()
        for k in range(2):
            shutil.copy(rec / f"{d}_george_{k}.wav", tmp_path / str(d))
    ds = load_folder_tree(tmp_path, "audio")
    assert ds.items.shape == (4, 1, 40, 63) and ds.labels.tolist() == [0, 0, 1, 1]


def test_light_background_and_colour_images_are_normalised(tmp_path: Path) -> None:
    img = Image.new("RGB", (100, 60), "white")
    for x in range(40, 60):
        for y in range(10, 50):
            img.putpixel((x, y), (0, 0, 0))
    img.save(tmp_path / "photo.jpg")
    x = read_image(tmp_path / "photo.jpg")
    assert x.shape == (1, 28, 28) and x[0, 0].mean() < 0.1 and x[0, 14, 14] > 0.8


def test_bad_files_named_or_skipped(tmp_path: Path, shared_data: Path) -> None:
    _write_mnist_tree(tmp_path, shared_data, per_class=2)
    bad = tmp_path / "digit_1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataFormatError, match="broken.png"):
        load_folder_tree(tmp_path, "image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = load_folder_tree(tmp_path, "image", on_error="skip")
    assert len(ds.labels) == 6


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_folder_tree(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no image files"):
        load_folder_tree(tmp_path)


def test_symlink_escaping_root_is_refused(tmp_path: Path, shared_data: Path) -> None:
    outside = tmp_path / "outside"
    _write_mnist_tree(outside, shared_data, per_class=1)
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    os.symlink(outside / "digit_0" / "0.png", root / "cls" / "x.png")
    with pytest.raises(DataFormatError, match="outside"):
        load_folder_tree(root)


def test_empty_class_folder_stops_or_is_dropped(tmp_path: Path, shared_data: Path) -> None:
    _write_mnist_tree(tmp_path, shared_data, per_class=2)
    (tmp_path / "a_empty").mkdir()
    with pytest.raises(DataNotFoundError, match="a_empty holds no image files"):
        load_folder_tree(tmp_path, "image")
    with pytest.warns(UserWarning, match="dropped 1 class"):
        ds = load_folder_tree(tmp_path, "image", on_error="skip")
    assert ds.classes == ["digit_0", "digit_1", "digit_2"] and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
