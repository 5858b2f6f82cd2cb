"""Name → component registries with did-you-mean errors.

Components register themselves with a decorator when their module is imported; importing
``study.maskers`` imports every masker module once, so there is no init call to forget.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry:
    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj):
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str):
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.what} {name!r}.{did_you_mean(name, self._items)} "
                f"Known: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)


MASKERS = Registry("masker kind")


def masker_class(kind: str):
    import study.maskers  # noqa: F401  (registers every masker)

    return MASKERS.get(kind)


def masker_kinds() -> list[str]:
    import study.maskers  # noqa: F401

    return MASKERS.names()
