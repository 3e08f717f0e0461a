"""Split syntax shared by every dataset: ``train``, ``test[:7000]``, ``test[7000:8000]``, ``train[:90%]``.

A spec names a base split and an optional half-open slice of it. Bounds are item counts or
percentages of the base split's length; negative counts count from the end, as in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dan.errors import ConfigError

_SPEC = re.compile(r"^\s*(?P<base>[A-Za-z_][\w-]*)\s*(?:\[(?P<start>[^:\]]*):(?P<stop>[^:\]]*)\])?\s*$")
_BOUND = re.compile(r"^\s*(?P<num>-?\d+(?:\.\d+)?)\s*(?P<pct>%)?\s*$")


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split: base split name and raw slice bounds (``None`` = open)."""

    base: str
    start: str | None = None
    stop: str | None = None

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.base
        return f"{self.base}[{self.start or ''}:{self.stop or ''}]"

    def resolve(self, n: int) -> range:
        """The item positions this spec selects out of a base split of ``n`` items."""
        lo = _bound(self.start, n, 0, self)
        hi = _bound(self.stop, n, n, self)
        return range(*slice(lo, hi).indices(n))


def _bound(raw: str | None, n: int, default: int, spec: SplitSpec) -> int:
    if raw is None or raw.strip() == "":
        return default
    m = _BOUND.match(raw)
    if m is None:
        raise ConfigError(f"split {spec}: bound {raw!r} is not an integer or a percentage like '90%'")
    if m["pct"]:
        value = float(m["num"])
        if not -100.0 <= value <= 100.0:
            raise ConfigError(f"split {spec}: percentage {raw!r} must lie in [-100%, 100%]")
        return round(n * value / 100.0)
    if "." in m["num"]:
        raise ConfigError(f"split {spec}: bound {raw!r} must be a whole number of items or end in '%'")
    return int(m["num"])


def parse_split(spec: str | SplitSpec, valid_bases: tuple[str, ...] | None = None) -> SplitSpec:
    """Parse ``spec``; with ``valid_bases``, an unknown base split is a ConfigError listing them."""
    if isinstance(spec, SplitSpec):
        parsed = spec
    else:
        m = _SPEC.match(str(spec))
        if m is None:
            raise ConfigError(
                f"bad split {spec!r}; write a base split with an optional slice, "
                "like 'train', 'test[:7000]', 'test[7000:8000]' or 'train[:90%]'"
            )
        parsed = SplitSpec(m["base"], m["start"], m["stop"])
    if valid_bases is not None and parsed.base not in valid_bases:
        raise ConfigError(f"split {spec!r}: unknown base split {parsed.base!r}; valid: {', '.join(valid_bases)}")
    return parsed
