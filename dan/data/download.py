"""Resumable, atomic, checksummed downloads with a progress bar (stdlib urllib, no extra dependency).

A download streams into ``dest + ".part"``. A dropped connection keeps the ``.part`` and the next attempt
asks for the rest with an HTTP ``Range`` header; a server that ignores the range (answers 200) is read from
the start again. Only a complete file whose checksum matches is moved onto ``dest`` (``os.replace``), so
``dest`` exists only when it is whole and verified.

Nothing a server sends can run forever or fill the disk: each URL gets an overall deadline (``deadline_s``; a
socket read waits at most ``timeout``), and a body longer than the expected size (``size``, else
``MAX_UNKNOWN_BYTES``) is cut off and deleted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from dan.errors import DownloadError

CHUNK_BYTES = 1 << 16
RESUMES_PER_URL = 2
DEADLINE_S = 1800.0
MAX_UNKNOWN_BYTES = 4 << 30  # the cap on a file whose size is not known in advance
OFFLINE_FIX = (
    "check the network connection (and any proxy), or copy the files into the data root by hand "
    "(set DAN_DATA or data.root=PATH to the folder holding them), or train on the synthetic set, which needs no files: `dan train quickstart`"
)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """One attempt at one URL failed; the message says why."""


class _Refused(_Interrupted):
    """A URL answered with something that resuming cannot mend (too long, too slow)."""


def file_hash(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes (``algorithm``: ``md5`` or ``sha256``), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None when every given checksum matches, else a message with expected and actual sums."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_hash(path, algorithm)
            if actual.lower() != expected.lower():
                return f"{algorithm} mismatch: expected {expected.lower()}, got {actual}"
    return None


def part_path(dest: Path) -> Path:
    """Where an unfinished download of ``dest`` is kept: ``dest`` + ``.part``."""
    return dest.with_name(dest.name + ".part")


def download_file(
    urls: Sequence[str],
    dest: Path,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30,
    size: int | None = None,
    deadline_s: float = DEADLINE_S,
) -> Path:
    """Fetch ``dest`` from the first of ``urls`` (mirrors, tried in order) that delivers it whole and verified.

    An existing ``dest`` whose checksums match (or that has none to check) is returned untouched. ``size`` is
    the expected byte count: a longer body is cut off at once and deleted (unknown size: ``MAX_UNKNOWN_BYTES``).
    Each URL has ``deadline_s`` seconds in all, resumes included. Raises DownloadError naming the file, the URLs
    tried and the fix; a checksum mismatch names the expected and actual sums and deletes the bad ``.part``.
    """
    dest = Path(dest)
    if not urls:
        raise DownloadError(f"no URL to download {dest.name} from; {OFFLINE_FIX}")
    if dest.is_file() and _checksum_problem(dest, md5, sha256) is None:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create {dest.parent} to download {dest.name} into: {exc}; "
            "choose a writable data root (DAN_DATA or data.root=PATH)"
        ) from None
    part = part_path(dest)
    limit = _Limit(size if size is not None else MAX_UNKNOWN_BYTES, size is not None, deadline_s, timeout)
    failures: list[str] = []
    for url in urls:
        try:
            _fetch_with_resume(url, part, dest.name, progress, limit.start())
        except _Refused as exc:
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {exc} (the download was deleted)")
            continue
        except _Interrupted as exc:
            failures.append(f"{url}: {exc}")
            continue
        problem = _checksum_problem(part, md5, sha256)
        if problem is not None:
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {problem} (the download was deleted)")
            continue
        os.replace(part, dest)
        return dest
    kept = f"; the partial file {part} is kept and the next run resumes it" if part.exists() else ""
    raise DownloadError(
        f"could not download {dest.name} into {dest.parent}:\n  "
        + "\n  ".join(failures)
        + f"{kept}\nFix: {OFFLINE_FIX}"
    )


class _Limit:
    """The bounds on one URL's download: at most ``max_bytes`` (``exact``: the size the file must have), and
    ``deadline_s`` from :meth:`start`; a socket read waits at most ``timeout`` and never past the deadline."""

    def __init__(self, max_bytes: int, exact: bool, deadline_s: float, timeout: float) -> None:
        self.max_bytes, self.exact, self.deadline_s, self.timeout = max_bytes, exact, deadline_s, timeout
        self.ends = 0.0

    def start(self) -> _Limit:
        self.ends = time.monotonic() + self.deadline_s
        return self

    def wait(self) -> float:
        """Seconds the next socket operation may block; _Refused once the deadline has passed."""
        left = self.ends - time.monotonic()
        if left <= 0:
            raise _Refused(f"no complete file within the {self.deadline_s:g} s deadline (server too slow)")
        return min(self.timeout, left)

    def check_size(self, nbytes: int) -> None:
        """_Refused when ``nbytes`` exceeds the cap."""
        if nbytes > self.max_bytes:
            what = "the file's known size" if self.exact else "the cap on a file of unknown size"
            raise _Refused(f"the server sent more than {self.max_bytes} bytes, {what}")


def _fetch_with_resume(url: str, part: Path, label: str, progress: bool, limit: _Limit) -> None:
    """Fetch ``url`` into ``part``, resuming after dropped connections while each attempt makes progress."""
    for attempt in range(RESUMES_PER_URL + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_once(url, part, label, progress, limit)
            return
        except _Refused:
            raise
        except _Interrupted:
            after = part.stat().st_size if part.exists() else 0
            if attempt == RESUMES_PER_URL or after <= before:
                raise


def _fetch_once(url: str, part: Path, label: str, progress: bool, limit: _Limit) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "dan-downloader"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=limit.wait())
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # the .part already holds everything; the checksum decides
        raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _Interrupted(_reason(exc)) from None
    with response:
        start = _resume_offset(response, have)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        if total is not None:
            limit.check_size(total)
        try:
            with (
                open(part, "r+b" if start else "wb") as f,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    desc=label,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                f.seek(start)
                f.truncate()
                written = start
                while True:
                    _set_read_timeout(response, limit.wait())
                    chunk = response.read1(CHUNK_BYTES)  # what has arrived, so a trickle cannot outlast the deadline
                    if not chunk:
                        break
                    written += len(chunk)
                    limit.check_size(written)
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise _Interrupted(f"connection dropped: {_reason(exc)}") from None
    if total is not None and part.stat().st_size < total:
        raise _Interrupted(f"connection dropped after {part.stat().st_size} of {total} bytes")


def _set_read_timeout(response: http.client.HTTPResponse, seconds: float) -> None:
    sock = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(sock, "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _resume_offset(response: http.client.HTTPResponse, have: int) -> int:
    """Byte offset the body starts at: ``have`` for a matching 206 answer, else 0 (restart)."""
    if response.status != 206:
        return 0
    m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if m is None or int(m[1]) != have:
        raise _Interrupted(f"server answered a range request with a bad Content-Range {m and m[0]!r}")
    return have


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
