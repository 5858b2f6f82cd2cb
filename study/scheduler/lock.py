"""One driver per store: a second ``study run`` on the same store refuses, naming the first.

Two layers, because stores live on local disks and on cluster file systems alike:

1. ``flock`` on ``<store>.lock`` next to the store. The kernel drops it when the holder dies,
   even on ``kill -9``, so on one machine a dead driver never blocks a new one. The file holds
   the holder's pid and host for the refusal message.
2. A ``driver`` record in the store's ``meta`` table (pid, host, process start time, token,
   heartbeat every 15 s), claimed in one SQLite transaction. It catches a second driver on
   *another* host sharing the store over a network file system, where ``flock`` may not
   reach: a record from another host counts as live while its heartbeat is younger than
   ``STALE_S``; one from this host counts as live while that process still exists.

Once the lock is held, every run still marked ``running`` belongs to a dead driver and can be
set back to pending (``Store.recover_stale``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

from study.store import Store

HEARTBEAT_S = 15.0
STALE_S = 120.0


class StoreLocked(Exception):
    """Another live driver holds the store (CLI exit code 3)."""

    def __init__(self, store_path: Path, holder: dict | None):
        self.store_path, self.holder = store_path, holder or {}
        h = self.holder
        who = f"pid {h.get('pid', '?')} on host {h.get('host', '?')}"
        details = []
        if h.get("backend"):
            details.append(f"backend {h['backend']}")
        if h.get("started"):
            details.append("started " + datetime.fromtimestamp(h["started"]).strftime("%Y-%m-%d %H:%M:%S"))
        if h.get("heartbeat"):
            details.append(f"last heartbeat {time.time() - h['heartbeat']:.0f}s ago")
        extra = f" ({', '.join(details)})" if details else ""
        super().__init__(
            f"store {store_path} is in use by another `study run`: {who}{extra}. Only one driver may "
            f"write a store. Wait for it to finish, or stop it (`kill {h.get('pid', '<pid>')}` on "
            f"{h.get('host', 'its host')}) and run the same command again: it resumes where it stopped.")


def _proc_start(pid: int) -> str | None:
    """Start time of a process (Linux), to tell a live driver from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(info: dict, now: float | None = None) -> bool:
    """Whether a recorded driver is still running (see the module docstring)."""
    if info.get("host") == socket.gethostname():
        pid = int(info.get("pid", -1))
        if pid == os.getpid() or not _pid_exists(pid):
            return False  # this very process holds the flock now, so its old record is stale
        recorded, current = info.get("proc_start"), _proc_start(pid)
        return recorded is None or current is None or current == recorded
    return ((now or time.time()) - float(info.get("heartbeat", 0))) < STALE_S


class DriverLock:
    def __init__(self, store: Store, backend: str = "local"):
        self.store = store
        self.path = Path(str(store.path) + ".lock")
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
                     "token": uuid.uuid4().hex, "backend": backend, "started": time.time(),
                     "argv": " ".join(sys.argv)}
        self.fd: int | None = None
        self.replaced: dict | None = None  # the dead driver this one took over from, if any
        self._last_beat = 0.0

    def acquire(self) -> DriverLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read_file(fd) or self.store.driver_info()
            os.close(fd)
            raise StoreLocked(self.store.path, holder) from None
        try:
            holder, self.replaced = self.store.claim_driver(self.info, holder_alive)
            if holder is not None:
                raise StoreLocked(self.store.path, holder)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.info).encode(), 0)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self.fd = fd
        self._last_beat = time.monotonic()
        return self

    @staticmethod
    def _read_file(fd: int) -> dict | None:
        try:
            return json.loads(os.pread(fd, 65536, 0).decode() or "null")
        except (OSError, ValueError):
            return None

    def heartbeat(self, force: bool = False) -> None:
        if self.fd is None:
            return
        if force or time.monotonic() - self._last_beat >= HEARTBEAT_S:
            self.store.driver_heartbeat(self.info["token"])
            self._last_beat = time.monotonic()

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        try:
            self.store.release_driver(self.info["token"])
        finally:
            try:
                os.ftruncate(self.fd, 0)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> DriverLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
