"""Safe zip extraction: members with ``..``, absolute paths or symlinks are refused, never written."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
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
    archive: Path, dest: Path, select: Callable[[PurePosixPath], str | None] | None = None
) -> list[Path]:
    """Extract ``archive`` into ``dest``; returns the files written.

    Every member is checked before anything is written. ``select(member_path)`` returns the relative output
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
                    chosen.append((info, dest / check_member(archive, zipfile.ZipInfo(target))))
            written = []
            for info, out in chosen:
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".part")
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, out)
                written.append(out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataFormatError(
            f"{archive} is not a readable zip archive ({exc}); delete it and download it again"
        ) from None
    return written
