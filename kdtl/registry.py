"""Name -> component registries, so YAML can choose components by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from kdtl.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    schema: type | None
    """Dataclass describing the config node that ``factory`` reads, used to
    reject unknown keys and wrong types before any work starts."""


class Registry(Generic[T]):
    """A named collection of factories (models, datasets, ...).

    >>> students = Registry("student")
    >>> @students.register("mlp", schema=MLPConfig)
    ... def build_mlp(cfg, num_classes): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, schema: type | None = None) -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, schema)
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
