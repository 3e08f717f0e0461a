"""Exceptions raised by dan. Every message names the file or key at fault and the fix."""

from __future__ import annotations


class DanError(Exception):
    """Base class of every error dan raises on purpose."""


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
