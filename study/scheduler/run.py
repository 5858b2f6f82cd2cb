"""``study run``: lock the store, register the grid, recover, drive the backend, report.

A full disk (the store's, or where workers write checkpoints and results) stops the command
with one line naming the disk and the fix (exit code 4); SQLite keeps the store intact, a
failed checkpoint write leaves no file behind, and once space is freed the same command
resumes where it stopped."""

from __future__ import annotations

import sqlite3
import sys

from study.errors import DiskFull, describe_disk, is_disk_full
from study.protocol import Protocol
from study.spec import RunSpec
from study.store import Store

EXIT_OK, EXIT_RUNS_FAILED, EXIT_LOCKED, EXIT_DISK_FULL, EXIT_INTERRUPTED = 0, 1, 3, 4, 130


def execute(protocol: Protocol, specs: list[RunSpec], backend: str | None = None, gpus: list[int] | None = None,
            retry_failed: bool = False, stream=None, progress_tty: bool | None = None) -> int:
    """Run every run of the grid that is not done; returns the CLI exit code.

    With a protocol ``tracking:`` block every run is pushed to the sinks as it settles, and the
    grid's finished runs are back-filled at the end (a sink never fails the study). A full disk
    stops the grid with one line naming the disk and the fix (exit code 4)."""
    from study.tracking import Tracking

    stream = stream or sys.stderr
    tracking = Tracking.from_protocol(protocol, specs, stream)
    try:
        return _execute(protocol, specs, backend, gpus, retry_failed, stream, progress_tty, tracking)
    except (DiskFull, OSError, sqlite3.Error) as e:
        if isinstance(e, DiskFull):
            path, what = e.path, e.what
        elif is_disk_full(e):
            path = getattr(e, "filename", None) or protocol.store_path
            what = (f"writing {path} failed" if isinstance(e, OSError) else
                    f"the results store {protocol.store_path} could not record a change (rolled back)")
        else:
            raise
        print(f"\nerror: {protocol.name}: {what}: the disk {describe_disk(path)} is full. Fix: free space on it "
              f"(or point `store:` at a larger disk), then run `study run {protocol.source}` again: it resumes "
              f"where it stopped.", file=stream)
        return EXIT_DISK_FULL
    finally:
        if tracking:
            tracking.close()


def _execute(protocol: Protocol, specs: list[RunSpec], backend: str | None, gpus: list[int] | None,
             retry_failed: bool, stream, progress_tty: bool | None, tracking) -> int:
    from study.progress import Progress
    from study.scheduler import make_backend
    from study.scheduler.driver import Driver, Interrupted, adopt
    from study.scheduler.lock import DriverLock, StoreLocked
    from study.scheduler.looks import record_decisions, store_plan

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
            plan = store_plan(protocol, specs, store) if protocol.sequential else None
            stopped = len(plan.stopped) if plan else 0
            todo = counts["pending"] - stopped
            print(f"{protocol.name}: {len(specs)} runs ({new} new), {counts['done']} done, {counts['failed']} failed, "
                  f"{todo} to run" + (f"; {stale} interrupted run(s) set back to pending" if stale else "")
                  + (f"; {stopped} stopped early by the sequential design" if stopped else ""),
                  file=stream)
            if todo == 0 and not adopted:
                if plan:
                    record_decisions(store, plan)
                if tracking:
                    tracking.push(store)  # back-fill what a sink missed (no-op when it is complete)
                return EXIT_OK if counts["failed"] == 0 else EXIT_RUNS_FAILED
            be = be or make_backend(name, protocol, protocol.store_path, gpus=gpus)
            progress = Progress(total=len(specs) - stopped, already_done=counts["done"],
                                already_failed=counts["failed"], stream=stream, tty=progress_tty,
                                prior_run_s=_typical_run_s(store, ids))

            to_adopt = list(adopted)  # handed to the first driver only: later looks start fresh

            def drive(subset: list[RunSpec]) -> dict[str, int]:
                jobs, to_adopt[:] = list(to_adopt), []
                settled = (lambda run_id: tracking.push(store, [run_id])) if tracking else None
                return Driver(subset, store, be, protocol.execution.max_attempts, progress=progress,
                              heartbeat=lock.heartbeat, adopted=jobs, on_settled=settled).run()

            try:
                be.open()  # (idempotent: the driver opens it too) to describe the real resources
                print(f"{protocol.name}: {be.describe()}", file=stream)
                progress.slots = max(1, be.slots())
                if plan:
                    run_looks(protocol, specs, store, drive, stream)
                else:
                    drive(specs)
                counts = store.counts(ids)
            except (KeyboardInterrupt, Interrupted) as e:
                progress.close()
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
                print(f"{protocol.name}: {why}; running attempts were stopped and set back to pending. "
                      f"Run the same command again to resume.", file=stream)
                return EXIT_INTERRUPTED
            finally:
                be.close(cancel=True)  # no-op after a clean run; shuts down what open() started otherwise
            if plan:
                stopped = len(store_plan(protocol, specs, store).stopped)
            progress.close()
            if tracking:
                tracking.push(store)  # back-fill: runs recorded while a sink was unreachable, harvested ones
        finally:
            lock.release()
    counts["pending"] -= stopped
    print(f"{protocol.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending"
          + (f", {stopped} stopped early by the sequential design" if stopped else ""), file=stream)
    if counts["failed"]:
        print(f"{protocol.name}: failed runs keep their tracebacks in the store's events table "
              "(`study status` shows them); `study run --retry-failed` gives them fresh attempts.", file=stream)
    return EXIT_OK if counts["failed"] == 0 and counts["pending"] == 0 else EXIT_RUNS_FAILED


def run_looks(protocol: Protocol, specs: list[RunSpec], store: Store, drive, stream) -> None:
    """Run a sequential study look by look (study/scheduler/looks.py): run the look's missing
    runs with ``drive(specs)``, record the decisions they settle, go on until every comparison
    has decided (or has no runs left to run)."""
    from study.scheduler.looks import record_decisions, store_plan

    by_id = {s.run_id: s for s in specs}
    n_looks = len(protocol.sequential.looks)
    previous = None
    while True:
        plan = store_plan(protocol, specs, store)
        for c, d in record_decisions(store, plan):
            print(f"{protocol.name}: {'/'.join(c[:2])} {c[2]} vs {c[3]}: {d.decision} at look {d.look} "
                  f"({d.n_pairs} seed pairs)", file=stream)
        if plan.finished:
            return
        if plan.needed == previous:  # the driver returned without running them: a bug, not a loop
            raise RuntimeError(f"look {plan.look + 1}: {len(plan.needed)} run(s) still pending after the driver ran")
        previous = plan.needed
        undecided = len(plan.comparisons) - len(plan.decisions)
        print(f"{protocol.name}: look {plan.look + 1} of {n_looks} ({protocol.sequential.looks[plan.look]} seeds): "
              f"{len(plan.needed)} run(s) for {undecided} undecided comparison(s)", file=stream)
        drive([by_id[r] for r in plan.needed])


def _typical_run_s(store: Store, run_ids: list[str]) -> float | None:
    """Median slot time (claim → recorded) of this grid's finished runs, for an early ETA."""
    import statistics

    wanted = set(run_ids)
    times = [f - s for rid, s, f in store.conn.execute(
        "SELECT run_id, started_at, finished_at FROM runs WHERE status='done'") if rid in wanted and s and f and f > s]
    return statistics.median(times) if times else None
