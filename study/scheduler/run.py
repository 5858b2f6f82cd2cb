"""``study run``: lock the store, register the grid, recover, drive the backend, report."""

from __future__ import annotations

import sys

from study.protocol import Protocol
from study.spec import RunSpec
from study.store import Store

EXIT_OK, EXIT_RUNS_FAILED, EXIT_LOCKED, EXIT_INTERRUPTED = 0, 1, 3, 130


def execute(protocol: Protocol, specs: list[RunSpec], backend: str | None = None, gpus: list[int] | None = None,
            retry_failed: bool = False, stream=None, progress_tty: bool | None = None) -> int:
    """Run every run of the grid that is not done; returns the CLI exit code."""
    from study.progress import Progress
    from study.scheduler import make_backend
    from study.scheduler.driver import Driver, Interrupted, adopt
    from study.scheduler.lock import DriverLock, StoreLocked

    stream = stream or sys.stderr
    name = backend or protocol.execution.backend
    ids = [s.run_id for s in specs]
    with Store(protocol.store_path) as store:
        lock = DriverLock(store, backend=name)
        try:
            lock.acquire()
        except StoreLocked as e:
            print(f"error: {e}", file=stream)
            return EXIT_LOCKED
        try:
            if lock.replaced:
                r = lock.replaced
                print(f"{protocol.name}: taking over from a driver that is gone (pid {r.get('pid')} on "
                      f"{r.get('host')})", file=stream)
            new = store.register(specs)
            be, adopted = None, []
            running = store.running(ids)
            if running:  # a driver died: re-attach to attempts that still run (Slurm jobs)
                be = make_backend(name, protocol, protocol.store_path, gpus=gpus)
                adopted = adopt(store, be, specs, running)
                if adopted:
                    print(f"{protocol.name}: re-attached to {len(adopted)} run(s) still running from the previous "
                          f"driver (not resubmitted)", file=stream)
            stale = store.recover_stale(keep=[j.run_id for j in adopted])
            if retry_failed:
                store.reset_failed(ids)
            counts = store.counts(ids)
            todo = counts["pending"]
            print(f"{protocol.name}: {len(specs)} runs ({new} new), {counts['done']} done, {counts['failed']} failed, "
                  f"{todo} to run" + (f"; {stale} interrupted run(s) set back to pending" if stale else ""),
                  file=stream)
            if todo == 0 and not adopted:
                return EXIT_OK if counts["failed"] == 0 else EXIT_RUNS_FAILED
            be = be or make_backend(name, protocol, protocol.store_path, gpus=gpus)
            progress = Progress(total=len(specs), already_done=counts["done"], already_failed=counts["failed"],
                                stream=stream, tty=progress_tty, prior_run_s=_typical_run_s(store, ids))
            driver = Driver(specs, store, be, protocol.execution.max_attempts, progress=progress,
                            heartbeat=lock.heartbeat, adopted=adopted)
            try:
                be.open()  # (idempotent: the driver opens it too) to describe the real resources
                print(f"{protocol.name}: {be.describe()}", file=stream)
                progress.slots = max(1, be.slots())
                counts = driver.run()
            except (KeyboardInterrupt, Interrupted) as e:
                progress.close()
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
                print(f"{protocol.name}: {why}; running attempts were stopped and set back to pending. "
                      f"Run the same command again to resume.", file=stream)
                return EXIT_INTERRUPTED
            finally:
                be.close(cancel=True)  # no-op after a clean run; shuts down what open() started otherwise
            progress.close()
        finally:
            lock.release()
    print(f"{protocol.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending",
          file=stream)
    if counts["failed"]:
        print(f"{protocol.name}: failed runs keep their tracebacks in the store's events table "
              "(`study status` shows them); `study run --retry-failed` gives them fresh attempts.", file=stream)
    return EXIT_OK if counts["failed"] == 0 and counts["pending"] == 0 else EXIT_RUNS_FAILED


def _typical_run_s(store: Store, run_ids: list[str]) -> float | None:
    """Median slot time (claim → recorded) of this grid's finished runs, for an early ETA."""
    import statistics

    wanted = set(run_ids)
    times = [f - s for rid, s, f in store.conn.execute(
        "SELECT run_id, started_at, finished_at FROM runs WHERE status='done'") if rid in wanted and s and f and f > s]
    return statistics.median(times) if times else None
