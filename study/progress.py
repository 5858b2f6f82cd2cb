"""Progress display for ``study run``: a live line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total: int, already_done: int = 0, stream=None):
        self.total = total
        self.done = already_done
        self.failed = 0
        self.running = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.finished_here = 0

    def eta(self) -> str:
        if not self.finished_here:
            return "?"
        per_run = (time.monotonic() - self.t0) / self.finished_here
        return _fmt_duration(per_run * (self.total - self.done - self.failed))

    def line(self) -> str:
        width = 30
        filled = int(width * (self.done + self.failed) / max(1, self.total))
        bar = "#" * filled + "-" * (width - filled)
        return (f"[{bar}] {self.done}/{self.total} done, {self.failed} failed, {self.running} running, "
                f"elapsed {_fmt_duration(time.monotonic() - self.t0)}, ETA {self.eta()}")

    def _show(self, event: str | None = None) -> None:
        if self.tty:
            if event:
                self.stream.write("\r\033[K" + event + "\n")
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write((event + " | " if event else "") + self.line() + "\n")
        self.stream.flush()

    def started(self, spec) -> None:
        self.running += 1
        if not self.tty:
            self._show(f"start {spec.label}")

    def finished(self, spec, result) -> None:
        self.running -= 1
        self.done += 1
        self.finished_here += 1
        value = result.final_metrics.get(result.primary_metric)
        self._show(f"done  {spec.label}: {result.primary_metric}={value:.4f} ({result.wall_time_s:.0f}s)")

    def failed(self, spec, final: bool) -> None:
        self.running -= 1
        if final:
            self.failed += 1
            self.finished_here += 1
        self._show(f"{'FAILED' if final else 'retry '} {spec.label}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
