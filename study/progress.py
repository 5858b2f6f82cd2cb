"""Progress display for ``study run``: a live bar on a terminal, plain log lines otherwise.

The bar shows done / failed / running out of the whole grid, elapsed time and an ETA. The ETA
is work left over slots: the runs not started yet at the mean run time, plus what the running
ones still need (the mean minus their age), divided by the slots. It moves smoothly between
finishes, where a throughput estimate (finished / elapsed) jumps with every wave of finishes
(2m19s → 7m52s → 3m36s in one demo run). Off a terminal
(CI, ``nohup``, Slurm logs) every start, finish and failure is one line, plus a status line
every ``log_every_s`` seconds.
"""

from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total: int, already_done: int = 0, already_failed: int = 0, stream=None,
                 tty: bool | None = None, log_every_s: float = 60.0, prior_run_s: float | None = None,
                 slots: int = 1):
        self.total = total
        self.n_done = already_done
        self.n_failed = already_failed
        self.n_running = 0
        self.retries = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.log_every_s = log_every_s
        self.t0 = time.monotonic()
        self.prior_run_s = prior_run_s  # typical run time from earlier sessions: an ETA before the first finish
        self.slots = max(1, slots)
        self._last_draw = 0.0
        self._started: dict[str, float] = {}  # label → start time of the runs in flight
        self._durations: list[float] = []  # run times finished in this session

    # -- numbers -----------------------------------------------------------------------------
    @property
    def remaining(self) -> int:
        return max(0, self.total - self.n_done - self.n_failed)

    def run_s(self) -> float | None:
        """The typical run time: the mean of this session's finished runs, else earlier sessions'."""
        if self._durations:
            return sum(self._durations) / len(self._durations)
        return self.prior_run_s

    def eta_s(self) -> float | None:
        run_s = self.run_s()
        if run_s is None:
            return None
        now = time.monotonic()
        running = sorted(now - t for t in self._started.values())
        queued = max(0, self.remaining - len(running))
        # a run older than the mean still needs a little: a tenth of the mean, not zero
        left = queued * run_s + sum(max(run_s - age, 0.1 * run_s) for age in running)
        return left / self.slots

    def line(self) -> str:
        width = 30
        n_done = int(width * self.n_done / max(1, self.total))
        n_failed = int(width * (self.n_done + self.n_failed) / max(1, self.total)) - n_done
        bar = "#" * n_done + "x" * n_failed + "-" * (width - n_done - n_failed)
        eta = self.eta_s()
        retry = f", {self.retries} retried" if self.retries else ""
        return (f"[{bar}] {self.n_done}/{self.total} done, {self.n_failed} failed, {self.n_running} running{retry}"
                f" | elapsed {fmt_duration(time.monotonic() - self.t0)}, ETA {'?' if eta is None else fmt_duration(eta)}")

    # -- output ------------------------------------------------------------------------------
    def _emit(self, event: str | None = None) -> None:
        if self.tty:
            if event:
                self.stream.write("\r\033[K" + event + "\n")
            self.stream.write("\r\033[K" + self.line())
        elif event:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {event} | {self.line()}\n")
        else:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {self.line()}\n")
        self.stream.flush()
        self._last_draw = time.monotonic()

    def tick(self) -> None:
        """Called by the driver loop about once a second: redraws the bar / logs a status line."""
        every = 1.0 if self.tty else self.log_every_s
        if time.monotonic() - self._last_draw >= every:
            self._emit()

    # -- events ------------------------------------------------------------------------------
    def _ended(self, spec, counts: bool) -> None:
        start = self._started.pop(spec.label, None)
        if counts and start is not None:
            self._durations.append(time.monotonic() - start)

    def started(self, spec, where: str = "") -> None:
        self.n_running += 1
        self._started[spec.label] = time.monotonic()
        if self.tty:
            self._emit()
        else:
            self._emit(f"start  {spec.label}" + (f" on {where}" if where else ""))

    def finished(self, spec, result) -> None:
        self.n_running = max(0, self.n_running - 1)
        self._ended(spec, counts=True)
        self.n_done += 1
        value = result.final_metrics.get(result.primary_metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
        self._emit(f"done   {spec.label}: {result.primary_metric}={shown} ({result.wall_time_s:.0f}s)")

    def failed_attempt(self, spec, final: bool, message: str = "") -> None:
        self.n_running = max(0, self.n_running - 1)
        self._ended(spec, counts=False)  # a failure's time says nothing about a run's
        if final:
            self.n_failed += 1
        else:
            self.retries += 1
        self._emit(f"{'FAILED' if final else 'retry '} {spec.label}" + (f": {message}" if message else ""))

    def harvested(self, spec) -> None:
        self.n_done += 1
        self._emit(f"collected {spec.label} (finished while no driver was running)")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()
