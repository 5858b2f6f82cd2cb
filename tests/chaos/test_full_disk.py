"""A full disk during `study run` (issue 23 §3), on a small tmpfs mounted for the test.

The run stops with one line naming the disk and the fix (exit code 4, no traceback), the store
stays intact (PRAGMA integrity_check, nothing half-recorded), no half-written checkpoint is left
or used, and once space is freed the same command finishes the grid. Skipped where a tmpfs
cannot be mounted (needs root, or CAP_SYS_ADMIN in a container).
"""

from __future__ import annotations

import subprocess

import pytest
from exectools import cli, query, write_protocol


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()

    def mount(size: str, remount: bool = False) -> None:
        opts = f"remount,size={size}" if remount else f"size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(disk)], check=True, capture_output=True)

    try:
        mount("48m")
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {getattr(e, 'stderr', e)!r}")
    try:
        yield disk, lambda size: mount(size, remount=True)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def one_line_disk_error(out, disk) -> str:
    assert out.returncode == 4, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: exec: ") and f"the disk {disk} (" in last and "is full. Fix: free space" in last
    assert "then run `study run " in last and "again: it resumes where it stopped." in last
    print(last)
    return last


def test_checkpoints_that_do_not_fit_stop_the_run_then_it_resumes(tmp_path, small_disk):
    """A 48 MB disk; each checkpoint of the 1-layer MiniLM is ~166 MB: the first write fails."""
    small_disk, resize = small_disk
    path = write_protocol(tmp_path, execution={"checkpoint_every_steps": 1, "max_attempts": 3})
    path.write_text(path.read_text().replace(str(tmp_path / "runs"), str(small_disk / "runs")))
    store = small_disk / "runs" / "exec.sqlite"
    checkpoints = small_disk / "runs" / "exec.work" / "checkpoints"

    out = cli("run", path, cwd=tmp_path)
    last = one_line_disk_error(out, small_disk)
    assert "could not write its files" in last
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    # The attempt was given back, not counted: retrying on a full disk would only burn attempts.
    assert query(store, "SELECT status, attempts FROM runs") == [("pending", 0), ("pending", 0)]
    assert not list(checkpoints.iterdir()), "no checkpoint, whole or half, is left behind"

    resize("600m")
    again = cli("run", path, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert query(store, "SELECT status, attempts FROM runs") == [("done", 1), ("done", 1)]
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert not list(checkpoints.iterdir())


def test_a_store_on_a_full_disk_stays_intact_and_resumes(tmp_path, small_disk):
    """A finished seed, then a second one added on a disk filled to the last byte."""
    small_disk, _ = small_disk

    def protocol(seeds):
        p = write_protocol(tmp_path, seeds=seeds)
        p.write_text(p.read_text().replace(str(tmp_path / "runs"), str(small_disk / "runs")))
        return p

    first = cli("run", protocol([0]), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    store = small_disk / "runs" / "exec.sqlite"
    before = query(store, "SELECT run_id, status, value, finished_at FROM runs ORDER BY run_id")
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # to the last byte
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass

    more = protocol([0, 1])
    out = cli("run", more, cwd=tmp_path)
    one_line_disk_error(out, small_disk)
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    after = query(store, "SELECT run_id, status, value, finished_at FROM runs ORDER BY run_id")
    assert [r for r in after if r[0] in {b[0] for b in before}] == before  # finished runs untouched
    finished = {rid for rid, *_ in before}
    assert all(status in ("pending", "running") for rid, status, *_ in after if rid not in finished)

    filler.unlink()
    again = cli("run", more, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert query(store, "SELECT status, COUNT(*) FROM runs GROUP BY status") == [("done", 4)]
    assert query(store, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM predictions") == [(32, 4)]
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
