"""Is this path (or can it become) this study's results store? Answered leaving nothing written.

Every command checks its protocol's store before it reads or writes it, so a store path in a
place that cannot be written, a file that is not SQLite, the store of another study or one
written by a newer maskstudy is a clear error (exit 2) rather than a traceback or a stray empty
database. Whether a new store can be created is tried for real (and undone).
``study.store.Store`` runs the same checks when it opens a file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from study.errors import ProtocolError

# The store's format version, kept in its ``meta`` table. Bump it when a change to the tables
# would make an older maskstudy misread a store: that older version then refuses the store.
SCHEMA_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"
NEW_STORE_FIX = "point `store:` at a new file (e.g. runs/<study name>.sqlite)"


def check_store(path: str | Path, study: str | None = None, source: str | None = None) -> None:
    """Raise ProtocolError (key ``store``, file ``source``) unless ``path`` is usable as the store of
    ``study``: an existing results store of that study (or of none yet) that this version can read,
    or a new file in a folder that exists or can be created, and written. Leaves nothing behind."""
    def fail(problem: str, fix: str) -> None:
        raise ProtocolError(source, "store", problem, fix)

    if "\0" in str(path):
        fail(f"{str(path)!r} contains a NUL character, which no file name can hold", NEW_STORE_FIX)
    path = Path(path)
    try:
        _check(path, study, fail)
    except OSError as e:  # a name too long, a loop of links ...
        fail(f"cannot use {path} as the results store ({e.strerror})", NEW_STORE_FIX)


def _check(path: Path, study: str | None, fail) -> None:
    if path.is_dir():
        fail(f"{path} is a folder, not a results store file", f"name a file inside it, e.g. {path / 'study.sqlite'}")
    if not path.exists():
        if path.is_symlink():
            fail(f"{path} is a symbolic link to a file that does not exist", "remove the link or " + NEW_STORE_FIX)
        problem = creatable_problem(path)
        if problem:
            fail(f"cannot create the results store {path}: {problem}",
                 "point `store:` at a path in a folder you can write")
        return
    if not path.is_file():
        fail(f"{path} is not a regular file (a pipe, socket or device)", NEW_STORE_FIX)
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        fail(f"cannot read the results store {path} ({e.strerror})", "check the file's permissions")
    if not header:
        return  # an empty file is a new SQLite database
    if header != SQLITE_HEADER:
        fail(f"{path} is not an SQLite database, so not a results store", f"move that file away or {NEW_STORE_FIX}")
    if not os.access(path, os.R_OK | os.W_OK):
        fail(f"cannot write the results store {path} (permission denied)", "check the file's permissions")
    try:
        tables, meta, studies = _read_identity(path)
    except sqlite3.Error as e:
        fail(f"{path} is an SQLite file that cannot be read as a results store ({e})",
             f"move that file away or {NEW_STORE_FIX}")
    if tables and "runs" not in tables:
        fail(f"{path} is an SQLite database of something else (tables: {', '.join(sorted(tables)[:5])}), "
             "not a maskstudy results store", NEW_STORE_FIX)
    version = meta.get("schema_version", "1")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        fail(f"{path} was written by a newer maskstudy (store schema version {version}; this one reads up to "
             f"{SCHEMA_VERSION})", f"upgrade maskstudy (pip install -U maskstudy), or {NEW_STORE_FIX}")
    owner = meta.get("study") or (studies[0] if len(studies) == 1 else None)
    if study is not None and owner is not None and owner != study:
        fail(f"{path} holds the results of study {owner!r}, not {study!r}",
             f"{NEW_STORE_FIX} for this study, or keep `name: {owner}` to continue that study")


def creatable_problem(path: Path) -> str | None:
    """Why a file at ``path`` (and any missing folders above it) cannot be created, or None.

    Permission bits do not answer it (root passes them; /proc and read-only mounts refuse anyway),
    so this really creates the folders and the file, then removes exactly what it created.
    """
    folder = path.parent.absolute()
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    created: list[Path] = []
    try:
        for f in reversed([folder, *folder.parents]):
            if not f.exists():
                try:
                    f.mkdir()
                except FileExistsError:  # another process made it meanwhile: not ours to remove
                    continue
                except OSError as e:
                    return f"cannot create the folder {f} ({e.strerror})"
                created.append(f)
        probe = folder / f".maskstudy-probe-{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            return f"cannot create files in the folder {folder} ({e.strerror})"
        probe.unlink()
    finally:
        for f in reversed(created):
            f.rmdir()
    return None


def _read_identity(path: Path) -> tuple[set[str], dict[str, str], list[str]]:
    """(table names, meta key → value, distinct study names in runs), read through a read-only connection."""
    # A read-only connection to a WAL database creates its -wal and -shm files. They exist already
    # while any connection is open; when they do not, nothing is pending in a WAL, so the file alone
    # is the whole database and can be read as immutable (no lock, no side files).
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    conn = sqlite3.connect(f"file:{quote(str(path.absolute()))}?{mode}", uri=True, timeout=30)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        studies = ([s for (s,) in conn.execute("SELECT DISTINCT study FROM runs LIMIT 2")]
                   if "runs" in tables else [])
    finally:
        conn.close()
    return tables, {str(k): str(v) for k, v in meta.items()}, studies


def check_store_moved(protocol) -> None:
    """Refuse to start afresh when the store sits where an older maskstudy put it.

    ``store:`` once resolved against the working directory; it now resolves against the
    protocol's folder, like data and plugins. If the new place holds no store and the old one
    does, every run would silently be trained again into a new store: say how to move it."""
    written = Path(protocol.store).expanduser()
    new = protocol.store_path
    if written.is_absolute() or new.exists():
        return
    old = Path.cwd() / written
    if not old.is_file() or old.resolve() == new.resolve():
        return
    work = old.with_name(old.stem + ".work")
    extra = f" {work}" if work.exists() else ""
    raise ProtocolError(protocol.source, "store",
                        f"{protocol.store} resolves relative to the protocol file, to {new}, where there is no "
                        f"results store yet; the store is at {old} (relative to the working directory, where "
                        "older versions put it)",
                        f"move it next to the protocol: `mkdir -p {new.parent} && mv {old}*{extra} {new.parent}/`, "
                        f"or set `store:` to its absolute path {old}")
