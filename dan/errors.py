"""Exceptions raised by dan. Every message names the file or key at fault and the fix."""

from __future__ import annotations


class DanError(Exception):
    """Base class of every error dan raises on purpose."""


def describe(exc: BaseException) -> str:
    """One line on ``exc`` for a dan error message: a DanError's own message, any other exception as
    ``Type: first line of its message`` (or ``Type`` alone)."""
    if isinstance(exc, DanError):
        return str(exc)
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines and lines[0] else type(exc).__name__


class ConfigError(DanError, ValueError):
    """A config key is unknown, has the wrong type, or is out of range."""


class DataNotFoundError(DanError, FileNotFoundError):
    """A dataset was looked for and not found."""


class DataFormatError(DanError, ValueError):
    """A data file exists but is corrupt, truncated or of the wrong format."""


class DownloadError(DanError, OSError):
    """A download failed: network down, connection dropped, or checksum mismatch."""


class CheckpointError(DanError, ValueError):
    """A checkpoint is unsafe, truncated, or does not fit the model."""
