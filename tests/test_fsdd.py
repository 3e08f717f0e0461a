"""FSDD indexing, splits and WAV reading on the real recordings; bad files; archive download and extraction."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from http_server import LocalHTTPServer

from dan.data import fsdd
from dan.data.archive import extract_zip
from dan.errors import ConfigError, DataFormatError, DataNotFoundError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recordings(shared_data: Path) -> list[fsdd.Recording]:
    return fsdd.index_recordings(shared_data)


def _copy(shared_data: Path, folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(shared_data / "fsdd" / "recordings" / n, folder / n)
    return folder


def test_index_of_real_folder(recordings: list[fsdd.Recording]) -> None:
    assert len(recordings) == 2500
    assert Counter(r.speaker for r in recordings) == {
        s: 500 for s in ("george", "jackson", "lucas", "nicolas", "yweweler")
    }
    assert Counter(r.digit for r in recordings) == {d: 250 for d in range(10)}
    assert recordings[0] == fsdd.Recording(recordings[0].path, 0, "george", 0)
    assert recordings[0].path.name == "0_george_0.wav"
    keys = [(r.index, r.speaker, r.digit) for r in recordings]
    assert keys == sorted(keys)
    assert {r.index for r in recordings[:50]} == {0}  # 10 digits x 5 speakers share index 0


def test_root_fsdd_and_recordings_folders_all_resolve(shared_data: Path) -> None:
    rec = shared_data / "fsdd" / "recordings"
    assert fsdd.fsdd_dir(shared_data) == rec
    assert fsdd.fsdd_dir(shared_data / "fsdd") == rec
    assert fsdd.fsdd_dir(rec) == rec


def test_official_split(recordings: list[fsdd.Recording]) -> None:
    train = fsdd.select_recordings(recordings, "train")
    test = fsdd.select_recordings(recordings, "test")
    assert (len(train), len(test)) == (2250, 250)
    assert {r.index for r in test} == set(range(5)) and min(r.index for r in train) == 5
    val = fsdd.select_recordings(recordings, "train[:10%]")
    assert len(val) == 225 and {r.index for r in val} == set(range(5, 10))
    per_digit = Counter(r.digit for r in val)
    assert len(per_digit) == 10 and max(per_digit.values()) - min(per_digit.values()) <= 1  # stratified
    assert {r.index for r in val[:200]} == set(range(5, 9))  # 225 = indices 5-8 whole + half of index 9
    assert len({r.speaker for r in val}) == 5
    assert fsdd.select_recordings(recordings, "train[10%:]") == train[225:]


def test_speaker_disjoint_split(recordings: list[fsdd.Recording]) -> None:
    test = fsdd.select_recordings(recordings, "test", heldout_speakers=["lucas"])
    train = fsdd.select_recordings(recordings, "train", heldout_speakers=["lucas"])
    assert len(test) == 500 and {r.speaker for r in test} == {"lucas"}
    assert len(train) == 2000 and "lucas" not in {r.speaker for r in train}
    assert test == [r for r in recordings if r.speaker == "lucas"]


def test_unknown_heldout_speaker_lists_found(recordings: list[fsdd.Recording]) -> None:
    with pytest.raises(
        ConfigError, match="unknown speaker.*theo.*speakers found: george, jackson, lucas, nicolas, yweweler"
    ):
        fsdd.select_recordings(recordings, "test", heldout_speakers=["theo"])


def test_unknown_split_base(recordings: list[fsdd.Recording]) -> None:
    with pytest.raises(ConfigError, match="unknown base split 'val'"):
        fsdd.select_recordings(recordings, "val")


def test_unmatched_files_warn_once_with_count(shared_data: Path, tmp_path: Path) -> None:
    folder = _copy(shared_data, tmp_path / "rec", ["3_jackson_7.wav", "3_jackson_2.wav"])
    (folder / "README.md").write_text("x")
    (folder / "jackson_3.wav").write_text("x")
    (folder / ".DS_Store").write_text("x")
    with pytest.warns(UserWarning, match="ignored 2 file") as record:
        recs = fsdd.index_recordings(folder)
    assert len(record) == 1
    assert [(r.digit, r.speaker, r.index) for r in recs] == [(3, "jackson", 2), (3, "jackson", 7)]


def test_speaker_names_with_underscores(tmp_path: Path) -> None:
    sf.write(tmp_path / "4_mary_ann_12.wav", np.zeros(100, dtype=np.float32), 8000)
    (rec,) = fsdd.index_recordings(tmp_path)
    assert (rec.digit, rec.speaker, rec.index) == (4, "mary_ann", 12)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_folder(tmp_path: Path, make: str) -> None:
    if make == "empty":
        (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as err:
        fsdd.index_recordings(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "fsdd" / "recordings") in msg
    assert "DAN_DATA" in msg and "dan data download fsdd" in msg and "`dan train quickstart`" in msg


def test_read_real_wav(recordings: list[fsdd.Recording]) -> None:
    path = recordings[0].path
    wave = fsdd.read_wav(path, 8000)
    ref, rate = sf.read(path, dtype="int16")
    assert rate == 8000 and wave.dtype == torch.float32 and wave.shape == (len(ref),)
    assert torch.allclose(wave, torch.from_numpy(ref.astype(np.float32)) / 32768.0)
    assert -1.0 <= float(wave.min()) < 0.0 < float(wave.max()) <= 1.0


def test_resampling_16k_to_8k(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")
    wave = fsdd.read_wav(path, 8000)
    assert wave.shape == (8000,)
    spectrum = torch.fft.rfft(wave).abs()
    assert int(spectrum.argmax()) == 440  # 1 s at 8 kHz: bin k is k Hz
    assert abs(float(wave.abs().max()) - 0.5) < 0.02
    same, rate = fsdd.read_audio(path)
    assert rate == 16000 and same.shape == (16000,)


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    left = np.full(800, 0.5, dtype=np.float32)
    right = np.full(800, -0.25, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    wave = fsdd.read_wav(path, 8000)
    assert wave.shape == (800,) and torch.allclose(wave, torch.full((800,), 0.125))


def _bad_files(shared_data: Path, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "1_x_0.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")
    good = (shared_data / "fsdd" / "recordings" / "2_george_5.wav").read_bytes()
    truncated = folder / "2_x_0.wav"
    truncated.write_bytes(good[: len(good) // 2])
    text = folder / "3_x_0.wav"
    text.write_text("this is not audio\n")
    zero = folder / "4_x_0.wav"
    zero.write_bytes(b"")
    return {
        "holds no audio samples": empty,
        "is truncated": truncated,
        "not a readable": text,
        "not a readable ": zero,
    }


def test_bad_files_raise_naming_the_file(shared_data: Path, tmp_path: Path) -> None:
    for reason, path in _bad_files(shared_data, tmp_path).items():
        with pytest.raises(DataFormatError, match=reason.strip()) as err:
            fsdd.read_wav(path, 8000)
        assert str(path) in str(err.value)


def test_load_waveforms_raise_and_skip(shared_data: Path, tmp_path: Path) -> None:
    folder = _copy(shared_data, tmp_path / "rec", ["0_george_0.wav", "5_lucas_3.wav"])
    bad = _bad_files(shared_data, folder)
    recs = fsdd.index_recordings(folder)
    assert len(recs) == 6
    with pytest.raises(DataFormatError):
        fsdd.load_waveforms(recs, 8000)
    with pytest.warns(UserWarning, match="skipped 4 unreadable FSDD file") as record:
        waves, kept = fsdd.load_waveforms(recs, 8000, on_error="skip")
    assert len(record) == 1 and all(str(p) in str(record[0].message) for p in bad.values())
    assert [r.path.name for r in kept] == ["0_george_0.wav", "5_lucas_3.wav"]
    assert [w.shape for w in waves] == [fsdd.read_wav(r.path, 8000).shape for r in kept]
    with pytest.raises(ConfigError, match="valid: raise, skip"):
        fsdd.load_waveforms(recs, 8000, on_error="ignore")


def test_manifest_matches_code() -> None:
    release = json.loads((REPO / "datasets" / "fsdd.json").read_text())["release"]
    assert release["url"] == fsdd.FSDD_URL and release["sha256"] == fsdd.FSDD_SHA256
    assert release["version"] == fsdd.FSDD_VERSION and release["bytes"] == fsdd.FSDD_BYTES


def _release_zip(
    shared_data: Path, path: Path, names: list[str], extra: dict[str, bytes] | None = None
) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("free-spoken-digit-dataset-1.0.10/README.md", "FSDD")
        for n in names:
            zf.write(
                shared_data / "fsdd" / "recordings" / n, f"free-spoken-digit-dataset-1.0.10/recordings/{n}"
            )
        for n, data in (extra or {}).items():
            zf.writestr(n, data)
    return path


def test_download_fsdd_from_local_server(shared_data: Path, tmp_path: Path) -> None:
    names = ["0_george_0.wav", "7_nicolas_30.wav", "9_yweweler_49.wav"]
    served = tmp_path / "served"
    served.mkdir()
    archive = _release_zip(shared_data, served / "v1.0.10.zip", names)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with LocalHTTPServer(served) as server:
        out = fsdd.download_fsdd(tmp_path / "root", url=server.url("v1.0.10.zip"), sha256=sha, progress=False)
        assert out == tmp_path / "root" / "fsdd" / "recordings"
        assert sorted(p.name for p in out.iterdir()) == sorted(names)
        assert (out / names[1]).read_bytes() == (shared_data / "fsdd" / "recordings" / names[1]).read_bytes()
        assert len(fsdd.index_recordings(tmp_path / "root")) == 3
        with pytest.warns(UserWarning, match=f"its sha256 is {sha}"):
            fsdd.download_fsdd(tmp_path / "other", url=server.url("v1.0.10.zip"), progress=False)


def test_zip_with_path_traversal_is_refused(shared_data: Path, tmp_path: Path) -> None:
    archive = _release_zip(shared_data, tmp_path / "evil.zip", ["0_george_0.wav"], {"../../evil.wav": b"x"})
    with pytest.raises(DataFormatError, match=r"evil.zip: member '../../evil.wav' would be written outside"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.wav").exists()
    absolute = _release_zip(shared_data, tmp_path / "abs.zip", [], {"/tmp/evil.wav": b"x"})
    with pytest.raises(DataFormatError, match="would be written outside"):
        extract_zip(absolute, tmp_path / "out")


def test_corrupt_archive_is_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFormatError, match=f"{bad} is not a readable zip"):
        extract_zip(bad, tmp_path / "out")


def test_no_warning_for_clean_folder(recordings: list[fsdd.Recording], shared_data: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(fsdd.index_recordings(shared_data / "fsdd")) == len(recordings)


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("recordings/0_a_0.wav")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataFormatError, match="0_a_0.wav' is a symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_archive_without_recordings_is_refused(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "x.zip", "w") as zf:
        zf.writestr("something/else.txt", "x")
    with LocalHTTPServer(served) as server, pytest.raises(DataFormatError, match="holds no recordings/"):
        with pytest.warns(UserWarning, match="no sha256 pinned"):
            fsdd.download_fsdd(tmp_path / "root", url=server.url("x.zip"), sha256=None, progress=False)


def test_missing_and_non_finite_audio(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=f"audio file {tmp_path / 'nope.wav'} does not exist"):
        fsdd.read_wav(tmp_path / "nope.wav", 8000)
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(DataFormatError, match=f"{path} holds NaN"):
        fsdd.read_wav(path, 8000)
