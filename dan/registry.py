"""Name -> builder registries, in the style of timm's ``register_model``/``create_model``.

Installed packages add entries through the entry-point group ``dan.<kind>`` (for example
``dan.towers``): each entry point names a module or object whose import registers itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from dan.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named builders of one kind (towers, fusions, trunks, balancers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@registry.register("name")`` on a class or factory function."""

        def deco(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders and self._builders[name] is not builder:
                raise ConfigError(f"{self.kind} {name!r} is registered twice; pick another name")
            self._builders[name] = builder
            return builder

        return deco

    def load_plugins(self) -> None:
        """Import every entry point of group ``dan.<kind>`` once."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=f"dan.{self.kind}"):
            obj = ep.load()
            if callable(obj) and ep.name not in self._builders:
                self._builders[ep.name] = obj

    def names(self) -> list[str]:
        """Sorted names of every registered builder, plugins included."""
        self.load_plugins()
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., T]:
        """The builder registered as ``name``; a ConfigError lists the valid names otherwise."""
        self.load_plugins()
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, /, **kwargs: Any) -> T:
        """Build ``name`` with ``kwargs``; bad keyword arguments become a ConfigError naming them."""
        builder = self.get(name)
        try:
            return builder(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad arguments for {self.kind} {name!r}: {exc}") from exc

    def check_kwargs(
        self, name: str, kwargs: Mapping[str, Any], key: str, reserved: tuple[str, ...] = ()
    ) -> None:
        """ConfigError naming ``key.<k>`` and the valid keys when ``kwargs`` holds a key that builder ``name``
        does not take (its signature is the schema; a builder taking ``**kwargs`` accepts any key).
        ``reserved`` arguments are set by the caller, never by the config."""
        params = inspect.signature(self.get(name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        valid = [
            n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n not in reserved
        ]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown key {key}.{unknown[0]} for {self.kind} {name!r}; valid keys: {', '.join(sorted(valid)) or '(none)'}"
            )

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
