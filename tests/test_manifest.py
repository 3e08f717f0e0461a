"""The manifest dataset on real files it writes: missing cells are masked modalities, unreadable files
stop or are skipped by config, splits are group-disjoint, items are cached and read memory-mapped, and
every bad manifest gets an error that names the row, the column or the file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dan.data import build_data, build_dataset
from dan.errors import ConfigError, DataFormatError, DataNotFoundError


def write_images(root: Path, n: int) -> list[str]:
    (root / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        x = np.full((10, 10), 20 * (i % 10), dtype=np.uint8)
        Image.fromarray(x).save(root / "img" / f"{i}.png")
        names.append(f"img/{i}.png")
    return names


def manifest(root: Path, header: list[str], rows: list[list[object]], name: str = "m.csv") -> Path:
    path = root / name
    path.write_text("\n".join([",".join(header), *(",".join(str(c) for c in r) for r in rows)]) + "\n")
    return path


def cfg(path: Path, **extra: object) -> dict:
    return {
        "name": "manifest",
        "path": str(path),
        "modalities": {
            "image": {"reader": "image", "column": "image", "size": 8},
            "tab": {"reader": "columns", "columns": ["a", "b"]},
        },
        **extra,
    }


def test_missing_cells_are_masked_modalities(tmp_path: Path) -> None:
    images = write_images(tmp_path, 12)
    rows = [[images[i] if i % 4 != 1 else "", i, 2 * i if i % 4 != 2 else "", ("x", "y")[i % 2], ("train", "val", "test")[i % 3 == 0 and 2 or 0]] for i in range(12)]
    path = manifest(tmp_path, ["image", "a", "b", "label", "split"], rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = build_data(cfg(path))
    assert sorted(splits) == ["test", "train"]
    train = splits["train"]
    batch = train.batch(torch.arange(len(train)))
    rows_of = [i for i in range(12) if not i % 3 == 0]
    assert batch["image_mask"].tolist() == [i % 4 != 1 for i in rows_of]
    assert batch["tab_mask"].tolist() == [i % 4 != 2 for i in rows_of]
    assert (batch["image"][~batch["image_mask"]] == 0).all()  # filler, masked out of the model
    assert train.preprocessing["classes"] == ["x", "y"]
    # the tabular columns are standardised with the training rows' statistics
    tab = batch["tab"][batch["tab_mask"]]
    assert tab.mean(0).abs().max() < 1e-5


def test_a_row_with_no_modality_is_dropped_with_a_warning(tmp_path: Path) -> None:
    images = write_images(tmp_path, 6)
    rows = [[images[i] if i else "", i if i else "", i if i else "", "x" if i % 2 else "y"] for i in range(6)]
    path = manifest(tmp_path, ["image", "a", "b", "label"], rows)
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\) with no readable modality \(rows 2\)"):
        splits = build_data(cfg(path, val_fraction=0.0, test_fraction=0.0))
    assert len(splits["train"]) == 5


def test_unreadable_file_stops_or_counts_as_missing(tmp_path: Path) -> None:
    images = write_images(tmp_path, 6)
    (tmp_path / "img" / "2.png").write_bytes(b"not a png")
    rows = [[images[i], i, i, "x" if i % 2 else "y"] for i in range(6)]
    path = manifest(tmp_path, ["image", "a", "b", "label"], rows)
    plain = cfg(path, val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(DataFormatError) as info:
        build_data(plain)
    assert "2.png: not a readable image" in str(info.value) and "data.on_bad_file=skip" in str(info.value)
    with pytest.warns(UserWarning, match=r"1 unreadable image item\(s\) treated as missing: img/2.png"):
        split = build_data({**plain, "on_bad_file": "skip"})["train"]
    assert split.batch(torch.arange(6))["image_mask"].tolist() == [True, True, False, True, True, True]
    write_images(tmp_path, 3)  # 2.png readable again
    (tmp_path / "img" / "4.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"img/4.png: no such file"):
        build_data(plain)


def test_group_disjoint_splits_by_fraction_and_by_name(tmp_path: Path) -> None:
    rows = [[i, i % 5, "abc"[i % 3], f"spk{i % 7}"] for i in range(70)]
    path = manifest(tmp_path, ["a", "b", "label", "speaker"], rows)
    tab_only = {"name": "manifest", "path": str(path), "modalities": {"tab": {"reader": "columns", "columns": ["a", "b"]}}}
    splits = build_data({**tab_only, "group": "speaker", "val_fraction": 0.15, "test_fraction": 0.3})
    groups = {k: set(s.info["groups"]) for k, s in splits.items()}
    assert [len(groups[k]) for k in ("train", "val", "test")] == [4, 1, 2]
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    named = build_data({**tab_only, "group": "speaker", "val_groups": ["spk1"], "test_groups": ["spk2", "spk3"]})
    assert named["test"].info["groups"] == ["spk2", "spk3"] and named["val"].info["groups"] == ["spk1"]
    with pytest.raises(ConfigError, match="data.test_groups names 'spk9', not a value of column 'speaker'"):
        build_data({**tab_only, "group": "speaker", "test_groups": ["spk9"]})


def test_array_rows_are_read_memory_mapped_and_normalised_per_batch(tmp_path: Path) -> None:
    arr = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(40, 4, 4))
    arr[:] = np.arange(40, dtype=np.uint8)[:, None, None]
    arr.flush()
    rows = [[i, "ab"[i % 2]] for i in range(40)]
    path = manifest(tmp_path, ["row", "label"], rows)
    data = {"name": "manifest", "path": str(path), "modalities": {"x": {"reader": "tensor", "array": "x.npy", "column": "row"}}}
    splits = build_data({**data, "val_fraction": 0.25, "test_fraction": 0.25})
    train = splits["train"]
    assert isinstance(train.items["x"], torch.Tensor) and train.items["x"].dtype == torch.uint8
    assert train.items["x"].shape == (40, 4, 4)  # the whole array, never copied
    x = train.batch(torch.arange(len(train)))["x"]
    assert x.dtype == torch.float32 and x.mean().abs() < 1e-5  # statistics of the training rows only
    val = splits["val"].batch(torch.arange(len(splits["val"])))["x"]
    assert val.abs().mean() > 0.1
    bad = manifest(tmp_path, ["row", "label"], [[0, "a"], [40, "b"]], "bad.csv")
    with pytest.raises(DataFormatError, match="bad.csv row 3: row 40 of x.npy does not exist"):
        build_data({**data, "path": str(bad), "val_fraction": 0.0, "test_fraction": 0.0})


def test_items_are_cached_and_rebuilt_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = write_images(tmp_path, 8)
    path = manifest(tmp_path, ["image", "label"], [[images[i], "ab"[i % 2]] for i in range(8)])
    data = {"name": "manifest", "path": str(path), "modalities": {"image": {"reader": "image", "column": "image", "size": 8}}, "val_fraction": 0.0, "test_fraction": 0.0}
    first = build_data(data)["train"]
    (cached,) = (tmp_path / "cache" / "manifest").glob("*-image.npy")
    stamp = cached.stat().st_mtime_ns
    import dan.data.readers as readers

    def no_reads(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a cached item was read again")

    with monkeypatch.context() as m:
        m.setattr(readers.ImageReader, "read", no_reads)
        again = build_data(data)["train"]
    assert cached.stat().st_mtime_ns == stamp
    assert torch.equal(first.batch(torch.arange(8))["image"], again.batch(torch.arange(8))["image"])
    Image.fromarray(np.full((10, 10), 255, dtype=np.uint8)).save(tmp_path / images[3])
    changed = build_data(data)["train"]
    assert len(list((tmp_path / "cache" / "manifest").glob("*-image.npy"))) == 2
    assert not torch.equal(first.batch(torch.arange(8))["image"], changed.batch(torch.arange(8))["image"])


def test_jsonl_manifest_and_npy_files(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    lines = []
    for i in range(10):
        np.save(tmp_path / "v" / f"{i}.npy", np.full(3, float(i), dtype=np.float32))
        lines.append(json.dumps({"vec": f"v/{i}.npy", "y": i % 2}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    data = {"name": "manifest", "path": str(tmp_path / "m.jsonl"), "label": "y", "modalities": {"vec": {"reader": "tensor", "column": "vec"}}, "val_fraction": 0.2, "test_fraction": 0.2}
    splits = build_data(data)
    assert sum(len(s) for s in splits.values()) == 10 and splits["train"].preprocessing["classes"] == ["0", "1"]
    assert splits["train"].input_shape("vec") == [3]


@pytest.mark.parametrize(
    ("header", "rows", "extra", "message"),
    [
        (["a", "b", "label"], [[1, 2, "x"], [1, "two", "y"]], {}, "column 'b': 'two' is not a number"),
        (["a", "b", "label"], [[1, 2, "x"], [1, 2]], {}, "m.csv:3: 2 cells but the header has 3 columns"),
        (["a", "b", "label"], [[1, 2, "x"], [1, 2, ""]], {}, "m.csv row 3: an empty label"),
        (["a", "b", "label", "split"], [[1, 2, "x", "train"], [1, 2, "y", "dev"]], {}, "m.csv row 3: split 'dev' is not one of train, val, test"),
        (["a", "b", "label"], [[1, 2, "x"]], {"label": "class"}, "data.label='class': "),
        (["a", "b", "label"], [[1, 2, "x"], [1, 2, "z"]], {"classes": ["x", "y"]}, "m.csv row 3: label 'z', which is not a known class"),
    ],
)
def test_bad_manifests_are_named(tmp_path: Path, header: list[str], rows: list, extra: dict, message: str) -> None:
    path = manifest(tmp_path, header, rows)
    data = {"name": "manifest", "path": str(path), "modalities": {"t": {"reader": "columns", "columns": ["a", "b"]}}, "val_fraction": 0.0, "test_fraction": 0.0, **extra}
    with pytest.raises((ConfigError, DataFormatError)) as info:
        build_data(data)
    assert message in str(info.value)


def test_config_errors_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.path is required for data.name=manifest"):
        build_dataset({"name": "manifest", "modalities": {"t": {"reader": "columns", "columns": ["a"]}}})
    with pytest.raises(ConfigError, match="unknown key data.modalities.img.sizes for readers 'image'; valid keys: "):
        build_dataset({"name": "manifest", "path": "x.csv", "modalities": {"img": {"reader": "image", "column": "c", "sizes": 3}}})
    with pytest.raises(ConfigError, match="unknown readers 'video'; valid choices: audio, columns, image, tensor"):
        build_dataset({"name": "manifest", "path": "x.csv", "modalities": {"v": {"reader": "video", "column": "c"}}})
    with pytest.raises(ConfigError, match="unknown key data.pathh for datasets 'manifest'"):
        build_dataset({"name": "manifest", "pathh": "x.csv"})
    shapes = build_dataset({"name": "manifest", "path": "x.csv", "modalities": {"img": {"reader": "image", "column": "c", "size": 12}}}).input_shapes()
    assert shapes == {"img": [1, 12, 12]}
