"""The registry of masker kinds: name → (Params dataclass, implementation class).

Every kind — built-in or from a plugin — is a :class:`~study.maskers.base.Masker` subclass with
a frozen-dataclass ``Params``, registered by the public decorator::

    from study.maskers import Masker, register

    @register("my-kind")
    class MyMasker(Masker):
        Params = MyParams
        level = "input"

The built-in kinds are known before their implementations are imported: :data:`BUILTIN` pairs
each with its Params (torch-free, :mod:`study.maskers.params`) and a ``"module:Class"``
placeholder for the implementation, imported (with torch) on the first
:attr:`MaskerKind.implementation`. So ``study validate`` checks every kind's parameters without
torch, and a training run imports only the implementation it uses. When that module runs its
own ``@register``, the decorator finds the placeholder naming exactly that class and the same
Params and accepts it; any other second registration of a name — a plugin reusing a built-in
kind, a kind registered twice — is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from study.maskers import params as p
from study.maskers.base import NoParams
from study.registry import Registry, resolve

# kind → (Params, implementation placeholder); the implementation modules document the kinds.
BUILTIN: dict[str, tuple[type, str]] = {
    "none": (NoParams, "study.maskers.input_level:NoMasking"),
    "random-token": (p.RandomTokenParams, "study.maskers.input_level:RandomTokenMasker"),
    "whole-word": (p.WholeWordParams, "study.maskers.whole_word:WholeWordMasker"),
    "typhoon": (p.TyphoonParams, "study.maskers.typhoon:TyphoonMasker"),
    "tlm": (p.TLMParams, "study.maskers.tlm:TLMMasker"),
    "attention-dropout": (p.AttentionDropoutParams, "study.maskers.attention:AttentionDropoutMasker"),
    "drophead": (p.DropHeadParams, "study.maskers.drophead:DropHeadMasker"),
}


@dataclass(frozen=True)
class MaskerKind:
    params: type  # the frozen dataclass a protocol's masker entry is validated into
    target: type | str  # the Masker subclass, or "module:Class" until it is first needed

    @property
    def implementation(self) -> type:
        return resolve(self.target) if isinstance(self.target, str) else self.target


MASKERS = Registry("masker kind")
for _kind, (_params, _target) in BUILTIN.items():
    MASKERS.register(_kind, MaskerKind(_params, _target))


def register(kind: str):
    """Class decorator: make ``kind`` name this Masker subclass (its ``Params`` included)."""

    def deco(cls):
        from study.maskers.base import Masker

        if not (isinstance(cls, type) and issubclass(cls, Masker)):
            raise TypeError(f"@register({kind!r}) decorates {cls!r}, which is not a subclass of study.maskers.Masker")
        params = cls.Params
        if not (dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen):
            raise TypeError(f"masker kind {kind!r}: {cls.__name__}.Params must be a @dataclass(frozen=True) "
                            "(its fields are the protocol's parameters, and run_ids hash them)")
        if kind in MASKERS:
            known = MASKERS.get(kind)
            if known.target == f"{cls.__module__}:{cls.__qualname__}" and known.params is params:
                return cls  # a built-in's implementation module being imported: the placeholder is this class
            clash = " (a built-in kind)" if kind in BUILTIN else ""
            raise ValueError(f"masker kind {kind!r}{clash} is registered twice: {cls.__module__}.{cls.__qualname__} "
                             f"and {known.target if isinstance(known.target, str) else known.target.__qualname__}; "
                             "give the new masker another kind name")
        MASKERS.register(kind, MaskerKind(params, cls))
        return cls

    return deco
