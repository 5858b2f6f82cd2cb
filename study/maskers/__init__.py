"""Masker modules; importing this package registers every masker kind."""

import os as _os

from study.maskers import attention, drophead, input_level, tlm, typhoon, whole_word  # noqa: F401
from study.maskers.base import Masker, MaskerContext, ParamError  # noqa: F401

if _os.environ.get("MASKSTUDY_TEST_MASKERS") == "1":  # test-fixture kinds (test-fault): never by default
    from study.maskers import testing  # noqa: F401
