"""Maskers: the public interface (``Masker``, ``register``) and the registry of kinds.

Importing this package imports no torch: the kinds and their parameters are known from
:mod:`study.maskers.kinds`; an implementation module is imported when a run first needs it.
"""

import os as _os

from study.maskers.base import Masker, MaskerContext, ParamError
from study.maskers.kinds import MASKERS, MaskerKind, register

__all__ = ["MASKERS", "Masker", "MaskerContext", "MaskerKind", "ParamError", "register"]

# Test-fixture kinds (test-fault) are never there by default. An environment variable, not a
# test-side registration, because the workers that need them are fresh processes.
if _os.environ.get("MASKSTUDY_TEST_MASKERS") == "1":
    from study.maskers import testing

    MASKERS.register(testing.KIND, testing.ENTRY)
