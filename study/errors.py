"""Errors that carry a user-facing message; the CLI turns them into exit code 2."""


class UserError(Exception):
    """Bad input from the user (protocol, paths, flags). The message names the problem and the fix."""


class ProtocolError(UserError):
    """A protocol file failed validation.

    ``path`` is the key path inside the file (``tasks[0].max_train_examples``) so a researcher
    can find the offending line; ``fix`` says what to write instead.
    """

    def __init__(self, file: str | None, path: str, problem: str, fix: str = ""):
        self.file, self.path, self.problem, self.fix = file, path, problem, fix
        where = f"{file}: " if file else ""
        key = f"{path}: " if path else ""
        tail = f" Fix: {fix}" if fix else ""
        end = "" if problem.endswith((".", "?")) else "."  # (a did-you-mean hint already ends the sentence)
        super().__init__(f"{where}{key}{problem}{end}{tail}")


class DiskFull(Exception):
    """A write failed because the disk (or the user's quota) is full. ``study run`` stops with a
    one-line error naming the disk (exit code 4); once space is freed the same command resumes.
    ``path``: the file or folder that could not be written; ``what``: what was being written."""

    def __init__(self, path, what: str):
        self.path, self.what = path, what
        super().__init__(f"{what}: no space left on the disk holding {path}")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for lack of space: OSError ENOSPC / EDQUOT, or SQLite's
    SQLITE_FULL ("database or disk is full")."""
    import errno
    import sqlite3

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False


def describe_disk(path) -> str:
    """``<mount point> (<free> MB free)`` for the file system holding ``path``."""
    import os
    import shutil
    from pathlib import Path

    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = f"{shutil.disk_usage(p).free / 2**20:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return f"{mount} ({free})"
