"""Shared by the fuzzers: how many examples, hypothesis settings, a hang watchdog, and the allowed outcomes
(data, or a DanError that names the file)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings

from dan.errors import DanError

EXAMPLES = int(os.environ.get("DAN_FUZZ_EXAMPLES", "300"))
HANG_SECONDS = 20
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timing is the watchdog's job; a slow CI machine is not a failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class Hang(Exception):
    """A reader ran longer than HANG_SECONDS on one input."""


@contextmanager
def watchdog(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise Hang in the main thread when the block runs past ``seconds`` (POSIX interval timer)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(read: Callable[[], Any], path: Path, error: type[DanError] = DanError) -> Any:
    """``read()``'s data, or None after an ``error`` that names ``path``; anything else fails the test."""
    with watchdog():
        try:
            result = read()
        except error as exc:
            assert str(path) in str(exc), f"error does not name the file: {exc}"
            event(f"outcome: {type(exc).__name__}")
            return None
    event("outcome: data")
    return result
