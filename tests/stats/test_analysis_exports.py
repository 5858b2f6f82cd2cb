"""Lazy public names stay the functions they name, whatever was imported first."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, types, analysis
for m in pkgutil.iter_modules(analysis.__path__):  # bind every submodule as a package attribute first
    importlib.import_module(f"analysis.{m.name}")
bad = [n for n in analysis.__all__ if n != "figures" and isinstance(getattr(analysis, n), types.ModuleType)]
assert not bad, f"these exports resolve to modules, not functions: {bad}"
"""


def test_every_export_is_the_object_not_a_same_named_submodule():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
