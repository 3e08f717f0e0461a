"""Your own data with no code: a CSV or JSONL manifest, one row per sample.

```yaml
data:
  name: manifest
  path: my_data/manifest.csv          # relative to data.root when set, else to the working folder
  label: label                        # the label column (names or integers)
  modalities:
    image: {reader: image, column: image_file, size: 28}
    audio: {reader: audio, column: wav, features: {sample_rate: 8000, n_mels: 40}}
    vector: {reader: tensor, column: npy_file}          # or {reader: tensor, array: x.npy, column: row}
    table: {reader: columns, columns: [age, height]}
  group: speaker                      # optional: splits never share a group
```

File cells are paths relative to the manifest's folder. An empty cell (or, with ``on_bad_file: skip``, a
file that cannot be read) makes that modality missing for that sample: its mask is False. A row left with
no modality is dropped with a counted warning. Splits come from a ``split`` column (train/val/test) when
the manifest has one, else from ``val_fraction``/``test_fraction`` of the groups (``group``; or the groups
named by ``val_groups``/``test_groups``), else of each class's samples, seeded by ``seed``.

Items read from files are cached on disk (one ``.npy`` per modality under ``$DAN_CACHE/manifest``), keyed
by the manifest's content, the reader config, and every file's size and modification time, and read back
memory-mapped; items of a ``tensor`` reader with ``array`` are read from that array memory-mapped. Batches
are normalised as they are gathered, so a dataset larger than RAM trains with bounded memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dan.data.cache import atomic_write_bytes, stable_hash
from dan.data.dataset import MISSING, Split
from dan.data.pairing import split_generator
from dan.data.readers import Reader, TensorReader, build_reader, reader_from_spec
from dan.data.registry import register_dataset
from dan.errors import ConfigError, DataFormatError, DataNotFoundError
from dan.paths import cache_root

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
ON_BAD_FILE = ("raise", "skip")


@dataclass
class Table:
    """A manifest read column-wise: ``columns {name: [cell, ...]}`` (cells are strings, "" when empty)."""

    path: Path
    columns: dict[str, list[str]]
    digest: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def column(self, name: str, key: str) -> list[str]:
        """Cells of column ``name``; a ConfigError naming ``key`` lists the columns otherwise."""
        if name not in self.columns:
            raise ConfigError(
                f"{key}={name!r}: {self.path} has no such column; its columns: {', '.join(self.columns)}"
            )
        return self.columns[name]


def read_table(path: Path) -> Table:
    """Read a ``.csv`` (header row) or ``.jsonl`` (one JSON object per line) manifest column-wise."""
    if not path.is_file():
        raise DataNotFoundError(f"manifest {path} does not exist; set data.path (and data.root) to your manifest")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    columns: dict[str, list[str]] = {}
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: not a JSON object ({exc.msg}); fix the line") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{lineno}: each line must be a JSON object, got {type(obj).__name__}")
            for k in obj:
                columns.setdefault(str(k), [""] * rows)
            for k, cells in columns.items():
                v = obj.get(k)
                cells.append("" if v is None else str(v))
            rows += 1
    elif path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.reader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = next(reader, None)
        if not header:
            raise DataFormatError(f"{path} is empty; a manifest needs a header row and one row per sample")
        names = [h.strip() for h in header]
        if len(set(names)) != len(names):
            raise DataFormatError(f"{path}: the header names a column twice: {names}")
        columns = {n: [] for n in names}
        cols = list(columns.values())
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(names):
                raise DataFormatError(
                    f"{path}:{lineno}: {len(row)} cells but the header has {len(names)} columns; fix the row"
                )
            for cells, cell in zip(cols, row, strict=True):
                cells.append(cell.strip())
    else:
        raise ConfigError(f"data.path={str(path)!r}: a manifest is a .csv, .tsv or .jsonl file")
    table = Table(path, columns, digest)
    if len(table) == 0:
        raise DataFormatError(f"{path} holds no sample rows; add one row per sample")
    return table


@dataclass
class ModalitySource:
    """How one modality is read: its reader and the manifest column(s) naming each sample's item."""

    name: str
    reader: Reader
    columns: list[str]

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> ModalitySource:
        key = f"data.modalities.{name}"
        if not isinstance(cfg, Mapping) or not isinstance(cfg.get("reader"), str):
            raise ConfigError(f"{key} needs a reader, e.g. {{reader: image, column: image_file}}")
        cfg = dict(cfg)
        kind = cfg.pop("reader")
        column = cfg.pop("column", None)
        reader = build_reader(kind, cfg, key)
        columns = list(getattr(reader, "columns", None) or ([] if column is None else [str(column)]))
        if not columns:
            raise ConfigError(f"{key}.column is missing: name the manifest column that holds this modality")
        return cls(name, reader, columns)


@register_dataset("manifest")
@dataclass
class ManifestDataset:
    """A CSV/JSONL manifest of samples (see the module docstring for every key)."""

    path: str | None = None
    modalities: dict[str, Any] = field(default_factory=dict)
    label: str = "label"
    classes: list[Any] | None = None
    root: str | None = None
    split_column: str = "split"
    group: str | None = None
    val_groups: list[Any] | None = None
    test_groups: list[Any] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    on_bad_file: str = "raise"
    cache_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("data.path is required for data.name=manifest: the .csv or .jsonl manifest file")
        if not isinstance(self.modalities, Mapping) or not self.modalities:
            raise ConfigError(
                "data.modalities is empty; name each modality's reader and column, e.g. "
                "data.modalities.image={reader: image, column: image_file}"
            )
        self.sources = {m: ModalitySource.from_config(m, c) for m, c in sorted(self.modalities.items())}
        if self.on_bad_file not in ON_BAD_FILE:
            raise ConfigError(f"data.on_bad_file={self.on_bad_file!r} is not valid; valid choices: raise, skip")
        for key in ("val_fraction", "test_fraction"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ConfigError(f"data.{key} must lie in [0, 1), got {getattr(self, key)!r}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("data.val_fraction + data.test_fraction must be below 1: the rest is training data")

    def group_folds(self) -> dict[str, dict[str, Any]]:
        """Leave one group out: ``{group: {"test_groups": [group]}}`` for every value of the ``group`` column
        (validation groups are then drawn from the others by ``val_fraction``)."""
        if self.group is None:
            raise ConfigError("set data.group (e.g. speaker) to cross-validate over groups of the manifest")
        cells = read_table(self.manifest_path()).column(self.group, "data.group")
        return {g: {"test_groups": [g], "val_groups": None} for g in sorted(set(cells))}

    def input_shapes(self) -> dict[str, list[int] | None]:
        """``{m: item shape}`` where the reader config fixes it (None where it is read from the data)."""
        return {m: (list(s) if (s := src.reader.item_shape()) is not None else None) for m, src in self.sources.items()}

    def manifest_path(self) -> Path:
        """The manifest file: ``path``, relative to ``root`` when that is set."""
        path = Path(os.path.expanduser(str(self.path)))
        if self.root and not path.is_absolute():
            path = Path(os.path.expanduser(self.root)) / path
        return path

    def build(
        self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None
    ) -> dict[str, Split]:
        table = read_table(self.manifest_path())
        base = table.path.parent
        classes = self._classes(table, preprocessing)
        labels = self._labels(table, classes)
        assign, groups, group_names = self._assign(table, labels)
        wanted = [s for s in SPLITS if (only is None or s in only) and bool((assign == SPLITS.index(s)).any())]
        if only is not None and not wanted:
            raise ConfigError(f"{table.path} has no sample in split(s) {list(only)}; it holds {self._present(assign)}")
        if preprocessing is not None:
            self._load_specs(preprocessing)
        elif "train" not in self._present(assign):
            raise DataFormatError(f"{table.path}: no sample is in the train split; statistics are fitted on it")
        needed = torch.zeros(len(table), dtype=torch.bool)
        for s in (*wanted, *(["train"] if preprocessing is None else [])):
            needed |= assign == SPLITS.index(s)
        items, rows = {}, {}
        for m, src in self.sources.items():
            items[m], rows[m] = self._load_modality(table, src, needed, base)
        present = torch.stack([r >= 0 for r in rows.values()], 1).any(1)
        empty = (needed & ~present).nonzero().flatten()
        if len(empty):
            warnings.warn(
                f"{table.path}: dropped {len(empty)} row(s) with no readable modality (rows "
                f"{', '.join(str(int(i) + 2) for i in empty[:10])}{' ...' if len(empty) > 10 else ''})",
                stacklevel=2,
            )
        if preprocessing is None:
            train_idx = ((assign == 0) & present).nonzero().flatten()
            for m, src in self.sources.items():
                used = rows[m][train_idx]
                used = used[used >= 0].unique()
                if len(used) == 0:
                    raise DataFormatError(
                        f"{table.path}: no training sample has modality {m!r}; its statistics cannot be fitted"
                    )
                src.reader.fit(items[m], used)
        spec = {
            "modalities": {m: src.reader.spec() for m, src in self.sources.items()},
            "classes": [str(c) for c in classes],
        }
        manifest_hash = stable_hash({"manifest": table.digest, "config": self._key_config()})
        out = {}
        for s in wanted:
            idx = ((assign == SPLITS.index(s)) & present).nonzero().flatten()
            out[s] = Split(
                name=s,
                items=items,
                rows={m: r[idx] for m, r in rows.items()},
                labels=labels[idx],
                manifest_hash=manifest_hash,
                preprocessing=spec,
                source="manifest",
                info={"manifest": str(table.path), "rows": len(idx), "groups": sorted({group_names[g] for g in groups[idx].tolist()}) if group_names else []},
                normalisers={m: src.reader.normalise for m, src in self.sources.items()},
                groups=groups[idx] if group_names else None,
            )
        return out

    # ------------------------------------------------------------------ labels and splits
    def _classes(self, table: Table, preprocessing: Mapping[str, Any] | None) -> list[str]:
        if preprocessing is not None and preprocessing.get("classes"):
            return [str(c) for c in preprocessing["classes"]]
        if self.classes:
            return [str(c) for c in self.classes]
        found = {c for c in table.column(self.label, "data.label") if c != ""}
        if all(c.lstrip("-").isdigit() for c in found):
            return sorted(found, key=int)
        return sorted(found)

    def _labels(self, table: Table, classes: list[str]) -> Tensor:
        index = {c: i for i, c in enumerate(classes)}
        out = []
        for lineno, cell in enumerate(table.column(self.label, "data.label"), 2):
            if cell not in index:
                what = "an empty label" if cell == "" else f"label {cell!r}, which is not a known class"
                raise DataFormatError(
                    f"{table.path} row {lineno}: {what}; classes: {', '.join(classes[:20])}"
                    + (" (set data.classes to list them all)" if self.classes is None else "")
                )
            out.append(index[cell])
        return torch.tensor(out, dtype=torch.long)

    def _assign(self, table: Table, labels: Tensor) -> tuple[Tensor, Tensor, list[str]]:
        """Split index per row ``[P]`` (0 train, 1 val, 2 test), group id per row ``[P]`` and group names."""
        n = len(table)
        group_names: list[str] = []
        groups = torch.zeros(n, dtype=torch.long)
        if self.group is not None:
            cells = table.column(self.group, "data.group")
            group_names = sorted(set(cells))
            gid = {g: i for i, g in enumerate(group_names)}
            groups = torch.tensor([gid[c] for c in cells], dtype=torch.long)
        if self.split_column in table.columns:
            index = {s: i for i, s in enumerate(SPLITS)}
            out = []
            for lineno, cell in enumerate(table.columns[self.split_column], 2):
                if cell not in index:
                    raise DataFormatError(
                        f"{table.path} row {lineno}: split {cell!r} is not one of {', '.join(SPLITS)}; fix the "
                        f"cell, or rename the column so data.split_column={self.split_column!r} does not apply"
                    )
                out.append(index[cell])
            return torch.tensor(out, dtype=torch.long), groups, group_names
        g = split_generator(self.seed, "manifest")
        assign = torch.zeros(n, dtype=torch.long)
        if self.group is not None:
            named = {1: self.val_groups, 2: self.test_groups}
            if any(v is not None for v in named.values()):
                for s, chosen in named.items():
                    for name in chosen or []:
                        if str(name) not in group_names:
                            raise ConfigError(
                                f"data.{SPLITS[s]}_groups names {name!r}, not a value of column {self.group!r}; "
                                f"values: {', '.join(group_names[:20])}"
                            )
                        assign[groups == group_names.index(str(name))] = s
                if self.val_groups is None:  # validation groups drawn from the rest by val_fraction
                    rest = [i for i in range(len(group_names)) if not bool((assign[groups == i] == 2).any())]
                    order = torch.randperm(len(rest), generator=g).tolist()
                    for k in order[: round(len(rest) * self.val_fraction)]:
                        assign[groups == rest[k]] = 1
                return assign, groups, group_names
            order = torch.randperm(len(group_names), generator=g)
            n_test = round(len(group_names) * self.test_fraction)
            n_val = round(len(group_names) * self.val_fraction)
            if n_test + n_val >= len(group_names):
                raise ConfigError(
                    f"{len(group_names)} groups in column {self.group!r} cannot give train, val and test groups; "
                    "lower data.val_fraction/test_fraction or name data.val_groups/test_groups"
                )
            for k, gi in enumerate(order.tolist()):
                if k < n_test:
                    assign[groups == gi] = 2
                elif k < n_test + n_val:
                    assign[groups == gi] = 1
            return assign, groups, group_names
        for c in labels.unique().tolist():  # stratified: each class split by the same fractions
            idx = (labels == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_test, n_val = round(len(idx) * self.test_fraction), round(len(idx) * self.val_fraction)
            assign[idx[:n_test]] = 2
            assign[idx[n_test : n_test + n_val]] = 1
        return assign, groups, group_names

    @staticmethod
    def _present(assign: Tensor) -> list[str]:
        return [s for i, s in enumerate(SPLITS) if bool((assign == i).any())]

    # ------------------------------------------------------------------ items
    def _load_specs(self, preprocessing: Mapping[str, Any]) -> None:
        stored = preprocessing.get("modalities", {})
        for m, src in self.sources.items():
            if m not in stored:
                raise ConfigError(
                    f"data.modalities.{m}: the checkpoint has no preprocessing for modality {m!r} "
                    f"(it has {sorted(stored)}); evaluate with the modalities it was trained on"
                )
            src.reader = reader_from_spec(stored[m], m)

    def _key_config(self) -> dict[str, Any]:
        return {
            "modalities": {m: {"reader": s.reader.kind, "columns": s.columns, **s.reader.config()} for m, s in self.sources.items()},
            "label": self.label,
            "classes": self.classes,
            "split": [self.split_column, self.group, self.val_groups, self.test_groups, self.val_fraction, self.test_fraction, self.seed],
        }

    def _load_modality(self, table: Table, src: ModalitySource, needed: Tensor, base: Path) -> tuple[Tensor, Tensor]:
        """Storage ``[U, *shape]`` of modality ``src`` and each row's index into it ``[P]`` (-1 = missing)."""
        cells = [table.column(c, f"data.modalities.{src.name}.column") for c in src.columns]
        reader = src.reader
        if isinstance(reader, TensorReader) and reader.array is not None:
            return self._array_rows(table, src, cells[0], needed, base)
        keys: list[str] = []
        index: dict[str, int] = {}
        rows = torch.full((len(table),), MISSING, dtype=torch.long)
        for i, row_cells in enumerate(zip(*cells, strict=True)):
            if not needed[i] or any(c == "" for c in row_cells):
                continue
            key = "\x1f".join(row_cells)
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
            rows[i] = index[key]
        storage, bad = self._read_items(src, keys, base, table)
        if bad:
            bad_rows = torch.tensor(sorted(bad), dtype=torch.long)
            rows[torch.isin(rows, bad_rows)] = MISSING
            keep = torch.ones(len(keys), dtype=torch.bool)
            keep[bad_rows] = False
            remap = torch.cumsum(keep.long(), 0) - 1
            rows = torch.where(rows >= 0, remap[rows.clamp_min(0)], rows)
            storage = storage[keep]
        return storage, rows

    def _array_rows(self, table: Table, src: ModalitySource, cells: list[str], needed: Tensor, base: Path) -> tuple[Tensor, Tensor]:
        assert isinstance(src.reader, TensorReader)
        array = src.reader.open_array(base)
        try:
            values = np.array([int(c) if c != "" else MISSING for c in cells], dtype=np.int64)
        except ValueError:
            raise DataFormatError(
                f"{table.path}: column {src.columns[0]!r} must hold row numbers of {src.reader.array}"
            ) from None
        rows = torch.from_numpy(values)
        rows[~needed] = MISSING
        bad = (rows >= array.shape[0]) | (rows < MISSING)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise DataFormatError(
                f"{table.path} row {i + 2}: row {int(rows[i])} of {src.reader.array} does not exist (it has "
                f"{array.shape[0]} rows); fix the cell of column {src.columns[0]!r}"
            )
        if src.reader.shape is not None and list(array.shape[1:]) != src.reader.shape:
            raise DataFormatError(f"{src.reader.array}: rows of shape {list(array.shape[1:])}, configured {src.reader.shape}")
        return array, rows

    def _read_items(self, src: ModalitySource, keys: list[str], base: Path, table: Table) -> tuple[Tensor, set[int]]:
        """Read (or load from the cache) every distinct item ``keys``; returns storage and unreadable indices."""
        multi = len(src.columns) > 1
        stats = []
        if not multi:
            for k in keys:
                p = Path(os.path.expanduser(k))
                p = p if p.is_absolute() else base / p
                try:
                    st = p.stat()
                    stats.append([k, st.st_size, st.st_mtime_ns])
                except OSError:
                    stats.append([k, None, None])
        key = stable_hash(
            {"v": CACHE_VERSION, "manifest": table.digest, "reader": src.reader.kind, "config": src.reader.config(), "keys": keys if multi else stats, "on_bad_file": self.on_bad_file}
        )
        folder = cache_root(self.cache_dir) / "manifest"
        data_file, meta_file = folder / f"{key[:24]}-{src.name}.npy", folder / f"{key[:24]}-{src.name}.json"
        if self.use_cache and data_file.is_file() and meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text())
                arr = np.load(data_file, mmap_mode="c", allow_pickle=False)
                log.info("manifest modality %s loaded from cache %s", src.name, data_file)
                return torch.from_numpy(arr), set(meta["bad"])
            except (OSError, ValueError, KeyError) as exc:
                warnings.warn(f"cache {data_file} is unreadable ({exc}); rebuilding it", stacklevel=2)
        shape = src.reader.item_shape()
        dtype = src.reader.storage_dtype()
        bad: set[int] = set()
        out: Any = None
        tmp = data_file.with_name(f".{data_file.name}.{os.getpid()}.tmp.npy")
        for i, k in enumerate(keys):
            value: Any = k.split("\x1f") if multi else k
            try:
                x = src.reader.read(value, base)
            except (DataFormatError, DataNotFoundError) as exc:
                if self.on_bad_file == "raise":
                    raise type(exc)(
                        f"{exc} (manifest {table.path}, modality {src.name!r}); fix or remove it, or set "
                        "data.on_bad_file=skip to treat unreadable items as missing"
                    ) from None
                bad.add(i)
                continue
            if shape is None:
                shape = tuple(x.shape)
            if tuple(x.shape) != tuple(shape):
                raise DataFormatError(
                    f"{k}: item of shape {list(x.shape)} but modality {src.name!r} has shape {list(shape)}; "
                    "every item of a modality needs the same shape"
                )
            if out is None:
                if self.use_cache:
                    folder.mkdir(parents=True, exist_ok=True)
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=_np_dtype(dtype), shape=(len(keys), *shape))
                else:
                    out = np.zeros((len(keys), *shape), dtype=_np_dtype(dtype))
            out[i] = x.to(dtype).numpy()
        if bad:
            warnings.warn(
                f"{table.path}: {len(bad)} unreadable {src.name} item(s) treated as missing: "
                + ", ".join(keys[i].replace("\x1f", ",") for i in sorted(bad)[:5])
                + (" ..." if len(bad) > 5 else ""),
                stacklevel=2,
            )
        if out is None:
            raise DataFormatError(f"{table.path}: no {src.name} item could be read; check column(s) {src.columns}")
        if self.use_cache:
            out.flush()
            del out
            os.replace(tmp, data_file)
            atomic_write_bytes(meta_file, json.dumps({"bad": sorted(bad), "keys": len(keys)}).encode())
            return torch.from_numpy(np.load(data_file, mmap_mode="c", allow_pickle=False)), bad
        return torch.from_numpy(out), bad


def _np_dtype(dtype: torch.dtype) -> Any:
    return np.uint8 if dtype == torch.uint8 else np.float32
