"""Masker plugins: files or modules named in a protocol's ``plugins:`` that register masker kinds.

A plugin is a Python file (relative to the protocol file) or an importable module; importing it
runs its ``@study.maskers.register("kind")`` decorators, exactly as the built-in kinds do.
Every process that needs a plugin kind imports the plugin itself: the driver while validating
the protocol, each worker (fork server child, fresh interpreter, Ray task, Slurm job) from the
absolute references the RunSpec carries (``RunSpec.plugins``, not hashed: paths move).

A plugin kind's run_ids hash the plugin's source (:attr:`Plugin.sha256`: the bytes of the file,
or of the module's file), so editing a plugin re-runs its kinds' cells and nothing else. Loading
the same plugin twice in one process is a no-op; loading it again after its source changed
replaces the kinds it registered (a long-lived process, e.g. a notebook, sees the edit).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from study.errors import UserError


class PluginError(UserError):
    """A plugin could not be loaded; the message names the plugin, the problem and the fix."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Fix: {fix}")


@dataclass(frozen=True)
class Plugin:
    ref: str  # absolute file path, or a module name
    sha256: str  # of the source that defined the kinds
    kinds: tuple[str, ...]  # masker kinds it registered
    task_types: tuple[str, ...] = ()  # task types it registered (study.tasktypes.register_task_type)


_LOADED: dict[str, Plugin] = {}  # ref → the plugin as loaded in this process


def resolve_ref(entry: str, base_dir: Path | None) -> str:
    """A protocol's ``plugins:`` entry → the reference workers import: a file (``*.py`` or a path
    with a slash) becomes absolute, relative to the protocol's folder; anything else is a module."""
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return str(path.resolve())
    return entry


def is_file_ref(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or "\\" in ref


def _source_file(ref: str) -> Path:
    if is_file_ref(ref):
        path = Path(ref)
        if not path.is_file():
            raise PluginError(f"plugin {ref}: file not found", "check the path (plugin files are relative to "
                              "the protocol file) or name an importable module instead")
        return path
    try:
        spec = importlib.util.find_spec(ref)
    except (ImportError, ValueError) as e:
        spec, why = None, f" ({e})"
    else:
        why = ""
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise PluginError(f"plugin {ref!r}: no importable module of that name{why}", "install it, put its folder "
                          "on PYTHONPATH, or give the plugin as a .py file relative to the protocol")
    return Path(spec.origin)


def source_sha256(ref: str) -> str:
    return hashlib.sha256(_source_file(ref).read_bytes()).hexdigest()


def _module_name(ref: str) -> str:
    # One stable, unique module name per plugin file, so two plugins called my_maskers.py don't clash.
    return f"maskstudy_plugin_{Path(ref).stem}_{hashlib.sha256(ref.encode()).hexdigest()[:8]}"


def load(ref: str) -> Plugin:
    """Import the plugin ``ref`` (see :func:`resolve_ref`) once; PluginError names it on any failure."""
    from study.maskers import MASKERS
    from study.tasktypes import TASK_TYPES

    sha = source_sha256(ref)
    known = _LOADED.get(ref)
    if known is not None and known.sha256 == sha:
        return known
    if known is not None:  # edited since this process imported it: its kinds are re-registered
        for kind in known.kinds:
            MASKERS.unregister(kind)
        for name in known.task_types:
            TASK_TYPES.unregister(name)
    before = set(MASKERS.names())
    types_before = set(TASK_TYPES.names())
    try:
        if is_file_ref(ref):
            name = _module_name(ref)
            spec = importlib.util.spec_from_file_location(name, ref)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        elif ref in sys.modules:  # imported before (by a test, another plugin): run its decorators again
            for kind in _kinds_defined_in(ref):
                MASKERS.unregister(kind)
            for name in _task_types_defined_in(ref):
                TASK_TYPES.unregister(name)
            before, types_before = set(MASKERS.names()), set(TASK_TYPES.names())
            importlib.reload(sys.modules[ref])
        else:
            importlib.import_module(ref)
    except Exception as e:  # noqa: BLE001  (any error in user code is the plugin's, reported as such)
        for kind in set(MASKERS.names()) - before:  # leave no half-loaded plugin's kinds behind
            MASKERS.unregister(kind)
        for name in set(TASK_TYPES.names()) - types_before:
            TASK_TYPES.unregister(name)
        raise PluginError(f"plugin {ref}: import failed: {type(e).__name__}: {e}", "correct the plugin "
                          "(a masker kind is a study.maskers.Masker subclass with a @dataclass(frozen=True) "
                          "Params, registered with @study.maskers.register(\"new-kind-name\"))") from None
    kinds = tuple(sorted(set(MASKERS.names()) - before))
    task_types = tuple(sorted(set(TASK_TYPES.names()) - types_before))
    if not kinds and not task_types:
        raise PluginError(f"plugin {ref}: registers no masker kind", "decorate a study.maskers.Masker subclass "
                          "with @study.maskers.register(\"kind-name\") (or a study.tasktypes.TaskType subclass "
                          "with @study.tasktypes.register_task_type(\"type-name\")), or remove it from plugins:")
    plugin = Plugin(ref=ref, sha256=sha, kinds=kinds, task_types=task_types)
    _LOADED[ref] = plugin
    return plugin


def _kinds_defined_in(module: str) -> list[str]:
    from study.maskers import MASKERS

    return [k for k in MASKERS.names()
            if isinstance(MASKERS.get(k).target, type) and MASKERS.get(k).target.__module__ == module]


def _task_types_defined_in(module: str) -> list[str]:
    from study.tasktypes import TASK_TYPES

    return [n for n in TASK_TYPES.names()
            if not isinstance(TASK_TYPES.get(n), str) and type(TASK_TYPES.get(n)).__module__ == module]


def load_all(refs) -> list[Plugin]:
    return [load(ref) for ref in refs]


def plugin_of(kind: str) -> Plugin | None:
    """The loaded plugin that registered ``kind`` (None for a built-in kind)."""
    return next((p for p in _LOADED.values() if kind in p.kinds), None)


def load_plugins_of(spec) -> None:
    """Import what a RunSpec's worker needs (every launcher's worker calls this through run_one), and
    refuse to run a plugin kind whose source changed after the run_id was computed from it."""
    load_all(spec.plugins)
    if spec.plugin_sha256:
        plugin = plugin_of(spec.masker["kind"])
        if plugin is None or plugin.sha256 != spec.plugin_sha256:
            where = plugin.ref if plugin else ", ".join(spec.plugins) or "(no plugins listed)"
            raise PluginError(f"plugin {where}: the source of masker kind {spec.masker['kind']!r} changed after "
                              "this run was planned", "run `study run` again: the edited plugin's runs get new run_ids")


@dataclass(frozen=True)
class PluginFault:
    """Where an exception left a plugin's code: the hook the training loop called, the line, the step."""

    plugin: Plugin
    hook: str  # the outermost plugin frame: setup, attach, apply, after_backward, detach, state ...
    location: str  # file:line of the innermost plugin frame
    step: int | None  # the training step it happened at (None before training started)
    error: str  # "TypeError: ..."

    def describe(self) -> str:
        at = f" at step {self.step}" if self.step is not None else ""
        return f"{self.hook} raised {self.error} ({self.location}){at}"


def plugin_fault(exc: BaseException, kind: str) -> PluginFault | None:
    """The fault ``exc`` is when its traceback passes through the source of the plugin that
    registered ``kind``; None for a built-in kind or an error outside the plugin's code."""
    import traceback

    plugin = plugin_of(kind)
    if plugin is None:
        return None
    source = str(_source_file(plugin.ref).resolve())
    frames = [(f, line) for f, line in traceback.walk_tb(exc.__traceback__)]
    mine = [(f, line) for f, line in frames if str(Path(f.f_code.co_filename).resolve()) == source]
    if not mine:
        return None
    step = next((f.f_locals.get("step") for f, _ in frames if f.f_code.co_name == "run_one"), None)
    inner, line = mine[-1]
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return PluginFault(plugin, mine[0][0].f_code.co_name, f"{Path(source).name}:{line}",
                       step if isinstance(step, int) else None, f"{type(exc).__name__}: {first_line}"[:300])
