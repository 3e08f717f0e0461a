"""Modality readers: a file or table cell -> the tower's input, and the normalisation fitted on training data.

Readers register by kind in :data:`READERS` (entry-point group ``dan.readers`` for installed packages), as
towers do in ``TOWERS``. A reader is built from its config keys; it reads one item in its *storage* form
(:meth:`Reader.read`), turns a batch of stored items into normalised model inputs (:meth:`Reader.normalise`),
fits its statistics on the training split only (:meth:`Reader.fit`) and describes itself, statistics
included, as a JSON-able spec that checkpoints store (:meth:`Reader.spec`, :func:`reader_from_spec`). The
same reader then prepares inputs for ``dan.load``, ``dan predict`` and ``dan eval``.

Shipped kinds: ``image`` (image files), ``audio`` (WAV and other soundfile formats -> log-mel or MFCC),
``tensor`` (``.npy``/``.pt`` files, or rows of one memory-mapped ``.npy`` array) and ``columns`` (numeric
table columns).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from dan.data.files import regular_file
from dan.errors import ConfigError, DataFormatError
from dan.registry import Registry

READERS: Registry[Reader] = Registry("readers")
Value = Any  # a path, a table cell, a tensor, or (for audio) a (waveform, sample_rate) pair
STD_FLOOR = 1e-5


def register_reader(name: str) -> Callable[[type[Reader]], type[Reader]]:
    """Decorator: ``@register_reader("kind")`` on a :class:`Reader` subclass."""
    return READERS.register(name)  # type: ignore[return-value]


def fit_moments(
    items: Tensor,
    keep: Sequence[int],
    to_float: Callable[[Tensor], Tensor],
    rows: Tensor | None = None,
    chunk: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) std of ``items [N, *shape]`` (only ``rows [K]`` of it, when given) over every axis
    but the item axes in ``keep``.

    Streams ``chunk`` rows at a time in float64, so a memory-mapped table is never loaded whole. Returns two
    float32 tensors of shape ``[shape[k] for k in keep]``; the std is floored at 1e-5.
    """
    n = items.shape[0] if rows is None else rows.shape[0]
    if n == 0:
        raise DataFormatError("cannot fit normalisation statistics on an empty training split")
    total = total_sq = None
    count = 0
    for start in range(0, n, chunk):
        part = items[start : start + chunk] if rows is None else items[rows[start : start + chunk]]
        x = to_float(part).double()
        dims = [0] + [d + 1 for d in range(x.dim() - 1) if d not in keep]
        s, s2 = x.sum(dims), x.square().sum(dims)
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        count += math.prod(x.shape[d] for d in dims)
    assert total is not None and total_sq is not None
    mean = total / count
    var = (total_sq - count * mean.square()).clamp_min(0) / max(count - 1, 1)
    return mean.float(), var.sqrt().clamp_min(STD_FLOOR).float()


def _stat(value: Any) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float32)


class Reader:
    """Base class of modality readers. Subclasses are dataclasses of their config keys.

    Class attributes: ``kind`` (the registry name) and ``stat_keys`` (the fitted statistics in the spec).
    """

    kind: ClassVar[str] = "reader"
    stat_keys: ClassVar[tuple[str, ...]] = ("mean", "std")

    def item_shape(self) -> tuple[int, ...] | None:
        """The stored item shape when the config fixes it, else None (taken from the first item read)."""
        return None

    def storage_dtype(self) -> torch.dtype:
        """dtype of stored items (uint8 keeps image caches 4x smaller)."""
        return torch.float32

    def read(self, value: Value, base: Path | None = None) -> Tensor:
        """One manifest cell (a path relative to ``base``, or a value) -> one stored item ``[*shape]``."""
        raise NotImplementedError

    def prepare(self, value: Value) -> Tensor:
        """A user's input (file path, tensor, ...) -> one stored item ``[*shape]`` (for predict)."""
        if isinstance(value, Tensor):
            return value
        return self.read(value)

    def to_float(self, x: Tensor) -> Tensor:
        """Stored items ``[B, *shape]`` -> float32 in the units statistics are fitted in."""
        return x.float()

    def moments_keep(self) -> Sequence[int] | None:
        """Item axes the statistics are kept per (``()`` = one scalar); None = no normalisation."""
        return ()

    def fit(self, items: Tensor, rows: Tensor | None = None) -> None:
        """Fit the statistics on the training split's stored items: ``items [N, *shape]``, or only its
        ``rows [K]`` (streamed, never gathered whole)."""
        keep = self.moments_keep()
        if keep is not None:
            mean, std = fit_moments(items, keep, self.to_float, rows)
            self._stats = {"mean": mean, "std": std}

    def normalise(self, x: Tensor) -> Tensor:
        """Stored items ``[B, *shape]`` -> normalised float model inputs ``[B, *shape]``."""
        x = self.to_float(x)
        keep = self.moments_keep()
        if keep is None:
            return x
        stats = getattr(self, "_stats", None)
        if stats is None:
            raise RuntimeError(f"{self.kind} reader used before its statistics were fitted")
        shape = [1] * x.dim()
        for k in keep:
            shape[k + 1] = x.shape[k + 1]
        mean = stats["mean"].to(x.device).view(shape)
        std = stats["std"].to(x.device).view(shape)
        return (x - mean) / std

    def config(self) -> dict[str, Any]:
        """The reader's config keys (a dataclass's fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def spec(self) -> dict[str, Any]:
        """JSON-able ``{"reader": kind, **config, **statistics}``, as checkpoints store it."""
        out: dict[str, Any] = {"reader": self.kind, **_plain(self.config())}
        stats = getattr(self, "_stats", None)
        if stats:
            out.update({k: v.tolist() for k, v in stats.items()})
        return out

    def set_stats(self, mean: Any, std: Any) -> None:
        """Use statistics computed elsewhere (a dataset that normalises its own storage)."""
        self._stats = {"mean": _stat(mean).reshape(-1), "std": _stat(std).reshape(-1)}

    def load_stats(self, spec: Mapping[str, Any]) -> None:
        """Take fitted statistics from a stored spec."""
        if self.moments_keep() is None:
            return
        missing = [k for k in self.stat_keys if k not in spec]
        if missing:
            raise DataFormatError(
                f"{self.kind} preprocessing spec lacks {missing}; the checkpoint's preprocessing is incomplete"
            )
        self._stats = {k: _stat(spec[k]) for k in self.stat_keys}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_reader(kind: str, config: Mapping[str, Any], key: str = "reader") -> Reader:
    """The reader registered as ``kind`` built from ``config``; unknown keys are a ConfigError naming ``key``."""
    READERS.check_kwargs(kind, config, key)
    return READERS.build(kind, **config)


def reader_from_spec(spec: Mapping[str, Any], modality: str = "") -> Reader:
    """A fitted reader from a spec written by :meth:`Reader.spec` (the statistics are restored)."""
    spec = dict(spec)
    kind = spec.pop("reader", None)
    if kind is None:  # checkpoints of dan 0.1 stored image and audio specs without a kind
        kind = "audio" if "features" in spec else "image"
    cls = READERS.get(str(kind))
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    reader = cls(**{k: v for k, v in spec.items() if k in names})
    reader.load_stats(_legacy_stats(kind, spec))
    return reader


def modality_specs(preprocessing: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{m: reader spec}`` of a split's or checkpoint's preprocessing (dan 0.1 kept ``image``/``audio`` at the
    top level)."""
    if "modalities" in preprocessing:
        return dict(preprocessing["modalities"])
    return {m: preprocessing[m] for m in ("audio", "image") if isinstance(preprocessing.get(m), Mapping)}


def _legacy_stats(kind: str, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    if kind == "audio" and "standardize" in spec and "mean" not in spec:
        return spec["standardize"]
    return spec


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """``"image"`` or ``"audio"`` by the file's suffix (the suffixes the image and audio readers take); None
    for any other file."""
    from dan.data.folder import AUDIO_SUFFIXES
    from dan.data.images import IMAGE_SUFFIXES

    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None


def resolve_path(value: Value, base: Path | None) -> Path:
    """A cell naming a file -> its path (relative paths against ``base``). Anything but an existing regular
    file is a DataNotFoundError / DataFormatError naming it."""
    path = Path(os.path.expanduser(str(value).strip()))
    if base is not None and not path.is_absolute():
        path = base / path
    return regular_file(path)


@register_reader("image")
@dataclass
class ImageReader(Reader):
    """Image files of any size or colour mode -> ``[channels, size, size]`` (stored uint8).

    ``channels`` 1 (grayscale; dark-on-light images are inverted to MNIST polarity when
    ``invert_light_background``) or 3 (RGB). Statistics: mean and std per channel, in [0, 1] units.
    """

    kind: ClassVar[str] = "image"
    size: int = 28
    channels: int = 1
    invert_light_background: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 1 <= self.size <= 4096:
            raise ConfigError(f"image reader: size must be an int in [1, 4096], got {self.size!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"image reader: channels must be 1 or 3, got {self.channels!r}")

    def item_shape(self) -> tuple[int, ...]:
        return (self.channels, self.size, self.size)

    def storage_dtype(self) -> torch.dtype:
        return torch.uint8

    def read(self, value: Value, base: Path | None = None) -> Tensor:
        from dan.data.images import read_image

        x = read_image(
            resolve_path(value, base), self.size, self.invert_light_background, channels=self.channels
        )
        return (x * 255).round().to(torch.uint8)

    def prepare(self, value: Value) -> Tensor:
        """A file, or a float tensor ``[C, H, W]``/``[H, W]`` in [0, 1] (bright strokes on dark)."""
        if not isinstance(value, Tensor):
            return self.read(value)
        x = value.float().reshape(1, -1, *value.shape[-2:])
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x[0]

    def to_float(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def moments_keep(self) -> Sequence[int]:
        return (0,)

    def load_stats(self, spec: Mapping[str, Any]) -> None:
        super().load_stats(spec)  # dan 0.1 stored one float mean/std: a single channel
        self._stats = {k: v.reshape(-1) for k, v in self._stats.items()}


@register_reader("audio")
@dataclass
class AudioReader(Reader):
    """Recordings (WAV, FLAC, OGG; any rate, any channel count) -> features ``[1, bins, frames]``.

    ``features``: :class:`dan.data.features.FeatureConfig` keys (``sample_rate``, ``kind`` logmel|pcen|mfcc,
    ``duration_s``, ``n_fft``, ``hop_length``, ``n_mels``, ``n_mfcc``, ``top_db``); recordings are resampled
    to ``sample_rate``, averaged to mono and padded or cut to ``duration_s``. Statistics: mean and std per
    feature row (mel band), over the training split.
    """

    kind: ClassVar[str] = "audio"
    features: Any = None

    def __post_init__(self) -> None:
        from dan.data.features import FeatureConfig

        self.features = FeatureConfig.from_config(self.features, "features")

    def config(self) -> dict[str, Any]:
        return {"features": asdict(self.features)}

    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape)

    def read(self, value: Value, base: Path | None = None) -> Tensor:
        from dan.data.fsdd import read_wav

        return self.waveform(read_wav(resolve_path(value, base), self.features.sample_rate, self.features.duration_s))

    def waveform(self, wave: Tensor, sample_rate: int | None = None) -> Tensor:
        """A waveform ``[L]`` or ``[channels, L]`` at ``sample_rate`` (default: the configured one) -> ``[1, F, T]``."""
        import torchaudio

        from dan.data.features import compute_features, pad_or_trim

        cfg = self.features
        wave = wave.float()
        if wave.dim() == 2:
            wave = wave.mean(dim=0)
        if wave.dim() != 1 or wave.numel() == 0:
            raise DataFormatError(
                f"audio must be a non-empty waveform [L] or [channels, L], got shape {tuple(wave.shape)}"
            )
        if sample_rate is not None and sample_rate != cfg.sample_rate:
            wave = torchaudio.functional.resample(wave, sample_rate, cfg.sample_rate)
        return compute_features(pad_or_trim([wave], cfg.num_samples), cfg)[0]

    def prepare(self, value: Value) -> Tensor:
        """A file, a ``(waveform, sample_rate)`` pair, or ready features ``[1, F, T]``."""
        if isinstance(value, tuple):
            return self.waveform(value[0], int(value[1]))
        return super().prepare(value)

    def moments_keep(self) -> Sequence[int]:
        return (1,)


TENSOR_NORMALIZE = ("feature", "global", "none")


@register_reader("tensor")
@dataclass
class TensorReader(Reader):
    """``.npy`` / ``.pt`` files of one fixed-shape array each, or, with ``array``, rows of one ``.npy`` array
    read memory-mapped (the manifest cell is then the row number).

    ``normalize``: ``feature`` (mean/std per element over the training split), ``global`` (one mean/std)
    or ``none``. ``shape``: the expected item shape (optional; else taken from the first item).
    """

    kind: ClassVar[str] = "tensor"
    array: str | None = None
    normalize: str = "feature"
    shape: list[int] | None = None

    def __post_init__(self) -> None:
        if self.normalize not in TENSOR_NORMALIZE:
            raise ConfigError(
                f"tensor reader: normalize={self.normalize!r} is not valid; valid choices: "
                f"{', '.join(TENSOR_NORMALIZE)}"
            )
        if self.shape is not None:
            self.shape = [int(s) for s in self.shape]

    def item_shape(self) -> tuple[int, ...] | None:
        return None if self.shape is None else tuple(self.shape)

    def open_array(self, base: Path | None) -> Tensor:
        """The ``array`` file as a tensor over a read-only (copy-on-write) memory map ``[N, *shape]``."""
        assert self.array is not None
        path = resolve_path(self.array, base)
        try:
            arr = np.load(path, mmap_mode="c", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataFormatError(f"{path}: not a readable .npy array ({exc}); re-save it with numpy.save") from None
        if arr.ndim < 1 or arr.dtype.kind not in "biuf":
            raise DataFormatError(f"{path}: a numeric array of rows is needed, got dtype {arr.dtype} shape {arr.shape}")
        return torch.from_numpy(arr)

    def read(self, value: Value, base: Path | None = None) -> Tensor:
        path = resolve_path(value, base)
        if path.suffix.lower() == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataFormatError(f"{path}: not a readable .npy file ({exc}); re-save it with numpy.save") from None
            if arr.dtype.kind not in "biuf":
                raise DataFormatError(f"{path}: numeric data needed, got dtype {arr.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(arr)).float()
        elif path.suffix.lower() == ".pt":
            try:
                x = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise DataFormatError(f"{path}: not a readable tensor file ({type(exc).__name__}); re-save it with torch.save") from None
            if not isinstance(x, Tensor):
                raise DataFormatError(f"{path}: holds a {type(x).__name__}, not one tensor; save a single tensor")
            x = x.float()
        else:
            raise DataFormatError(f"{path}: the tensor reader reads .npy and .pt files, not {path.suffix or 'no suffix'}")
        if self.shape is not None and list(x.shape) != self.shape:
            raise DataFormatError(f"{path}: shape {list(x.shape)} differs from the configured shape {self.shape}")
        return x

    def moments_keep(self) -> Sequence[int] | None:
        if self.normalize == "none":
            return None
        if self.normalize == "global":
            return ()
        return tuple(range(len(self.shape))) if self.shape is not None else None

    def fit(self, items: Tensor, rows: Tensor | None = None) -> None:
        if self.shape is None:
            self.shape = list(items.shape[1:])
        super().fit(items, rows)


@register_reader("columns")
@dataclass
class ColumnsReader(Reader):
    """Numeric table columns -> a float vector ``[len(columns)]``; statistics per column."""

    kind: ClassVar[str] = "columns"
    columns: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.columns or not all(isinstance(c, str) for c in self.columns):
            raise ConfigError("columns reader: columns must be a non-empty list of column names")
        self.columns = list(self.columns)

    def item_shape(self) -> tuple[int, ...]:
        return (len(self.columns or []),)

    def read(self, value: Value, base: Path | None = None) -> Tensor:
        """``value``: the row's cells for :attr:`columns`, in order."""
        cells = list(value.values()) if isinstance(value, Mapping) else list(value)
        out = []
        for name, cell in zip(self.columns or [], cells, strict=True):
            try:
                number = float(cell)
            except (TypeError, ValueError):
                raise DataFormatError(f"column {name!r}: {cell!r} is not a number") from None
            if not math.isfinite(number):
                raise DataFormatError(f"column {name!r}: {cell!r} is not a finite number")
            out.append(number)
        return torch.tensor(out, dtype=torch.float32)

    def prepare(self, value: Value) -> Tensor:
        if isinstance(value, Tensor):
            return value.float().reshape(-1)
        if isinstance(value, Mapping):
            value = [value[c] for c in self.columns or []]
        if isinstance(value, str):
            value = value.split(",")
        return self.read(value)

    def moments_keep(self) -> Sequence[int]:
        return (0,)
