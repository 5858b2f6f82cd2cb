"""Masker modules; importing this package registers every masker kind."""

from study.maskers import input_level  # noqa: F401
from study.maskers.base import Masker, MaskerContext, ParamError  # noqa: F401
