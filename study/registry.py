"""One registry mechanism: name → component, with did-you-mean on a miss.

Masker kinds (:data:`study.maskers.MASKERS`), datasets (:data:`study.tasks.DATASETS`) and
built-in models (:data:`study.models.BUILTIN_MODELS`) are each a :class:`Registry`. Entries are
added once, at import of the module that owns them (there is no init call to forget); adding a
name twice is an error. Tests add an entry for the length of a ``with`` block through
:meth:`Registry.scoped`, which removes it again on exit, so no test touches the registry's
insides. This module imports no torch: the config layer (``study validate``) reads registries.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from typing import Any


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry:
    """Named entries of one sort (``what`` names the sort in messages, e.g. "dataset")."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """``register(name, obj)`` adds ``obj``; ``@register(name)`` adds the decorated object."""
        if obj is None:
            def deco(target):
                self.register(name, target)
                return target

            return deco
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice; pick another name")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin reloaded after an edit re-registers its kinds)."""
        self._entries.pop(name, None)

    def unknown(self, name: str) -> str:
        """The message for a miss: "unknown dataset 'x'. Did you mean 'y'?"."""
        return f"unknown {self.what} {name!r}.{did_you_mean(str(name), self._entries)}"

    def get(self, name: str) -> Any:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name read from YAML
            raise KeyError(f"{self.unknown(name)} Known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def scoped(self, name: str, obj: Any) -> Iterator[Any]:
        """Add ``name`` for the ``with`` block only (tests); a name already taken is an error."""
        self.register(name, obj)
        try:
            yield obj
        finally:
            self.unregister(name)


def resolve(target: str) -> Any:
    """The object a ``"package.module:Attribute"`` string names, importing its module."""
    import importlib

    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def masker_class(kind: str) -> type:
    """The Masker subclass of ``kind`` (imports its implementation, hence torch)."""
    from study.maskers import MASKERS

    return MASKERS.get(kind).implementation


def masker_params(kind: str) -> type:
    """The frozen Params dataclass of ``kind``; imports no torch for a built-in kind."""
    from study.maskers import MASKERS

    return MASKERS.get(kind).params


def masker_kinds() -> list[str]:
    from study.maskers import MASKERS

    return MASKERS.names()


