"""Safe zip extraction: members with ``..``, absolute paths or symlinks are refused, never written, and no member
inflates past a size cap (a zip bomb is refused before a byte is extracted)."""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from dan.errors import DataFormatError


def check_member(archive: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path; DataFormatError for absolute paths, ``..`` parts or symlinks."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataFormatError(
            f"{archive}: member {info.filename!r} would be written outside the extraction folder; "
            "the archive is unsafe or corrupt: delete it and download it again from the official source"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataFormatError(
            f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract it"
        )
    return path


def extract_zip(
    archive: Path,
    dest: Path,
    select: Callable[[PurePosixPath], str | None] | None = None,
    max_member_bytes: int | None = None,
) -> list[Path]:
    """Extract ``archive`` into ``dest``; returns the files written.

    Every member is checked before anything is written, its declared size against ``max_member_bytes``
    too (and the bytes it really inflates to while it is copied). ``select(member_path)`` returns the relative output
    path of a member to keep (or None to skip it); by default every file keeps its own path.
    Raises DataFormatError for a corrupt archive or an unsafe member.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            chosen: list[tuple[zipfile.ZipInfo, Path]] = []
            for info in zf.infolist():
                member = check_member(archive, info)
                if info.is_dir():
                    continue
                target = select(member) if select is not None else str(member)
                if target is not None:
                    _check_size(archive, info.filename, info.file_size, max_member_bytes)
                    chosen.append((info, dest / check_member(archive, zipfile.ZipInfo(target))))
            written = []
            for info, out in chosen:
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".part")
                try:
                    with zf.open(info) as src, open(tmp, "wb") as dst:
                        copied = 0
                        while chunk := src.read(1 << 20):
                            copied += len(chunk)
                            _check_size(archive, info.filename, copied, max_member_bytes)
                            dst.write(chunk)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                os.replace(tmp, out)
                written.append(out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise DataFormatError(
            f"{archive} is not a readable zip archive ({exc}); delete it and download it again"
        ) from None
    return written


def _check_size(archive: Path, member: str, nbytes: int, cap: int | None) -> None:
    if cap is not None and nbytes > cap:
        raise DataFormatError(
            f"{archive}: member {member!r} inflates to {nbytes} bytes or more, past the {cap} this archive's "
            "files may hold; it is not the expected release (or a zip bomb): delete it and download it again"
        )
