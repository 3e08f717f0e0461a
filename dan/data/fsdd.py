"""Free Spoken Digit Dataset: indexing ``{digit}_{speaker}_{index}.wav``, reading WAVs, splits, download.

No speaker list is fixed anywhere: speakers are whatever the folder holds. Recordings are ordered by
``(index, speaker, digit)`` so a leading slice of a split (``train[:10%]``) takes the lowest recording
indices of every speaker and digit.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from dan.data.archive import extract_zip
from dan.data.download import download_file, file_hash
from dan.data.features import MAX_RATE, MIN_RATE
from dan.data.files import regular_file
from dan.data.splits import parse_split
from dan.errors import ConfigError, DataFormatError, DataNotFoundError

FSDD_SPLITS = ("train", "test")
TEST_INDICES = range(0, 5)
ON_ERROR = ("raise", "skip")
MAX_SAMPLES = 1 << 28  # per file, all channels (1 GiB as float32): hours of audio
READ_MARGIN_S = 2.0  # past the used duration: covers torchaudio's resampling filter and block at any allowed rate
MAX_RECORDING_BYTES = 16 << 20  # an archive member inflating past this is no spoken digit (FSDD's largest: 40 kB)
MAX_RESAMPLE_KERNEL = 1 << 24  # reduced rate ratio p x q; 44100->8000 is 441 x 80, a coprime 7919 Hz is 7919 x 8000
FSDD_VERSION = "v1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{FSDD_VERSION}.zip"
# Observed by a third-party audit of the codeload archive; see datasets/fsdd.json.
FSDD_BYTES = 16_419_872
FSDD_SHA256: str | None = "c680098f5d2355ba7cc4bd8b0ca9e0a24c00ebe3b4c552208889a4d28d4fbc2b"
NAME_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>.+)_(?P<index>\d+)\.wav$", re.IGNORECASE)
NOT_FOUND_FIX = (
    "set DAN_DATA (or data.root=PATH) to a folder holding fsdd/recordings/, run `dan data download fsdd`, "
    "or train on the synthetic set, which needs no files: `dan train quickstart`"
)


@dataclass(frozen=True)
class Recording:
    """One FSDD file: its path, spoken digit, speaker name and recording index (0-49 in the release)."""

    path: Path
    digit: int
    speaker: str
    index: int


def fsdd_dir(root: Path) -> Path:
    """The recordings folder for ``root``: a data root (``root/fsdd/recordings``), ``root/recordings``,
    or ``root`` itself when it already holds the WAVs."""
    root = Path(root)
    for cand in (root / "fsdd" / "recordings", root / "recordings"):
        if cand.is_dir():
            return cand
    if root.is_dir() and any(NAME_PATTERN.match(p.name) for p in root.iterdir()):
        return root
    return root / "fsdd" / "recordings"


def index_recordings(folder: Path) -> list[Recording]:
    """Every ``{digit}_{speaker}_{index}.wav`` under ``folder`` (see :func:`fsdd_dir`), sorted by
    ``(index, speaker, digit)``. Other files are ignored with one counted warning; hidden files silently.
    Raises DataNotFoundError when the folder is missing or holds no recording."""
    folder = fsdd_dir(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"FSDD recordings not found: no folder {folder}. Fix: {NOT_FOUND_FIX}")
    recordings, ignored = [], []
    for p in folder.iterdir():
        m = NAME_PATTERN.match(p.name)
        if m and p.is_file():
            recordings.append(Recording(p, int(m["digit"]), m["speaker"], int(m["index"])))
        elif not p.name.startswith("."):
            ignored.append(p.name)
    if ignored:
        warnings.warn(
            f"{folder}: ignored {len(ignored)} file(s) not named {{digit}}_{{speaker}}_{{index}}.wav: "
            f"{', '.join(sorted(ignored)[:5])}{' ...' if len(ignored) > 5 else ''}",
            stacklevel=2,
        )
    if not recordings:
        raise DataNotFoundError(
            f"FSDD recordings not found: {folder} holds no {{digit}}_{{speaker}}_{{index}}.wav file. Fix: {NOT_FOUND_FIX}"
        )
    seen: dict[tuple[int, str, int], Path] = {}
    for rec in sorted(recordings, key=lambda r: r.path.name):
        key = (rec.digit, rec.speaker, rec.index)
        if key in seen:  # 2_george_07.wav and 2_george_7.wav, or .wav and .WAV: one recording, twice
            raise DataFormatError(
                f"{seen[key].name} and {rec.path.name} in {folder} name the same recording (digit {rec.digit}, "
                f"speaker {rec.speaker}, index {rec.index}); it could land in two splits at once: remove one"
            )
        seen[key] = rec.path
    return sorted(recordings, key=lambda r: (r.index, r.speaker, r.digit))


def _riff_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file, why its ``data`` chunk is cut short (None when whole or not RIFF)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = f.read(4), int.from_bytes(f.read(4), "little")
            if chunk_id == b"data":
                if chunk_size not in (0, 0xFFFFFFFF) and offset + 8 + chunk_size > size:
                    return (
                        f"its data chunk declares {chunk_size} bytes but only {size - offset - 8} are present"
                    )
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return None


def read_audio(path: Path, max_seconds: float | None = None) -> tuple[Tensor, int]:
    """Any soundfile-readable audio file -> mono float32 waveform ``[T]`` in [-1, 1] at its own rate, and that rate.

    Channels are averaged. With ``max_seconds`` only the first ``max_seconds`` + ``READ_MARGIN_S`` seconds are
    read (what a fixed-duration feature uses, with room for the resampler's filter), whatever the file's
    length. Raises DataNotFoundError for a missing file and DataFormatError naming the file for corrupt,
    truncated, empty or non-audio files.
    """
    path = regular_file(path, missing=f"audio file {path} does not exist; check the path or the data root (DAN_DATA)")
    truncated = _riff_truncation(path)
    if truncated:
        raise DataFormatError(
            f"{path} is truncated: {truncated}; replace it with a complete copy or delete it"
        )
    try:
        with sf.SoundFile(path) as f:
            rate = _check_header(path, f.samplerate, f.frames * f.channels)
            frames = -1 if max_seconds is None else math.ceil((max_seconds + READ_MARGIN_S) * rate)
            data = f.read(frames, dtype="float32", always_2d=True)
    except DataFormatError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError, MemoryError) as exc:
        raise DataFormatError(
            f"{path} is not a readable WAV/audio file ({exc or type(exc).__name__}); replace or delete it"
        ) from None
    if data.shape[0] == 0:
        raise DataFormatError(f"{path} holds no audio samples (empty recording); replace or delete it")
    if not np.isfinite(data).all():
        raise DataFormatError(f"{path} holds NaN or infinite samples; replace or delete it")
    return torch.from_numpy(data).mean(dim=1).clamp_(-1.0, 1.0), int(rate)


def _check_header(path: Path, rate: int, samples: int) -> int:
    """``rate`` when the header's sample rate and sample count are plausible; DataFormatError otherwise
    (a hostile header must not make the reader allocate gigabytes)."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DataFormatError(
            f"{path} declares a sample rate of {rate} Hz, outside {MIN_RATE}-{MAX_RATE} Hz; the header is "
            "corrupt: replace or delete the file"
        )
    if samples > MAX_SAMPLES:
        raise DataFormatError(
            f"{path} declares {samples} samples, more than the {MAX_SAMPLES} dan reads from one file; "
            "the header is corrupt or the recording far too long: cut it into clips"
        )
    return int(rate)


def read_wav(path: Path, sample_rate: int, max_seconds: float | None = None) -> Tensor:
    """A WAV file -> mono float32 waveform ``[T]`` in [-1, 1] at ``sample_rate`` (resampled when it differs).
    With ``max_seconds`` only the start of a long file is read (see :func:`read_audio`); the first
    ``max_seconds`` of the result equal those of the whole file's.

    Raises DataFormatError naming the file for corrupt, truncated, empty or non-WAV files, and for a rate
    whose ratio to ``sample_rate`` reduces to numbers so large that resampling would take gigabytes.
    """
    wave, rate = read_audio(path, max_seconds)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        if (rate // g) * (sample_rate // g) > MAX_RESAMPLE_KERNEL:
            raise DataFormatError(
                f"{path} is sampled at {rate} Hz, which has no small ratio to {sample_rate} Hz (resampling "
                f"would need a {rate // g} x {sample_rate // g} filter bank); convert it to a standard rate "
                f"first, e.g. `sox {path.name} -r {sample_rate} out.wav`"
            )
        wave = torchaudio.functional.resample(wave, rate, sample_rate).clamp_(-1.0, 1.0)
    return wave


def load_waveforms(
    recordings: Iterable[Recording], sample_rate: int, on_error: str = "raise", max_seconds: float | None = None
) -> tuple[list[Tensor], list[Recording]]:
    """Read every recording at ``sample_rate`` (at most the first ``max_seconds`` of each, see :func:`read_wav`):
    waveforms ``[T_i]`` and the recordings kept.

    ``on_error="raise"`` stops at the first unreadable file; ``"skip"`` drops such files and warns once
    with their count and names. Any other value is a ConfigError.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"data.on_bad_file={on_error!r} is unknown; valid: {', '.join(ON_ERROR)}")
    waves, kept, bad = [], [], []
    for rec in recordings:
        try:
            waves.append(read_wav(rec.path, sample_rate, max_seconds))
        except (DataFormatError, DataNotFoundError):
            if on_error == "raise":
                raise
            bad.append(rec.path)
            continue
        kept.append(rec)
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable FSDD file(s): {', '.join(str(p) for p in bad[:10])}"
            f"{' ...' if len(bad) > 10 else ''}",
            stacklevel=2,
        )
    return waves, kept


def select_recordings(
    recordings: Sequence[Recording], split: str, heldout_speakers: Sequence[str] | None = None
) -> list[Recording]:
    """The recordings of a split spec (``train``, ``test``, ``train[:10%]``), order preserved.

    Without ``heldout_speakers`` (None or empty): the official split, ``test`` = index 0-4, ``train`` =
    index 5 and up. With them (speaker-disjoint): ``test`` = those speakers, ``train`` = every other.
    Raises ConfigError for an unknown split or speaker.
    """
    spec = parse_split(split, FSDD_SPLITS)
    if heldout_speakers:
        found = sorted({r.speaker for r in recordings})
        unknown = [s for s in heldout_speakers if s not in found]
        if unknown:
            raise ConfigError(
                f"data.heldout_speakers: unknown speaker(s) {', '.join(map(str, unknown))}; "
                f"speakers found: {', '.join(found)}"
            )
        held = set(heldout_speakers)
        base = [r for r in recordings if (r.speaker in held) == (spec.base == "test")]
    else:
        base = [r for r in recordings if (r.index in TEST_INDICES) == (spec.base == "test")]
    return [base[i] for i in spec.resolve(len(base))]


def download_fsdd(
    root: Path, url: str | None = None, sha256: str | None = None, progress: bool = True
) -> Path:
    """Download the pinned FSDD release archive into ``root/fsdd`` and extract ``root/fsdd/recordings/*.wav``.

    ``url``/``sha256`` default to the pinned release; with a custom ``url`` only a given ``sha256`` is
    checked. Without any checksum, the archive's sha256 is reported in a warning so it can be pinned.
    Returns the recordings folder. Raises DownloadError (network, checksum) or DataFormatError (bad archive,
    unsafe member, no recordings inside).
    """
    size = None
    if url is None:
        url, sha256, size = FSDD_URL, sha256 or FSDD_SHA256, FSDD_BYTES
    folder = Path(root) / "fsdd"
    archive = download_file(
        [url], folder / f"fsdd-{PurePosixPath(url).name}", sha256=sha256, progress=progress, size=size
    )
    if not sha256:
        warnings.warn(
            f"{archive}: no sha256 pinned for {url}, so it was not verified; its sha256 is "
            f"{file_hash(archive, 'sha256')} (pin it in datasets/fsdd.json)",
            stacklevel=2,
        )

    def pick(member: PurePosixPath) -> str | None:
        keep = len(member.parts) >= 2 and member.parts[-2] == "recordings" and NAME_PATTERN.match(member.name)
        return f"recordings/{member.name}" if keep else None

    if not extract_zip(archive, folder, pick, max_member_bytes=MAX_RECORDING_BYTES):
        raise DataFormatError(
            f"{archive} holds no recordings/{{digit}}_{{speaker}}_{{index}}.wav; it is not an FSDD release: "
            "delete it and download again"
        )
    return folder / "recordings"
