"""Live output of ``--watch``: redrawn in place on a terminal (rich's ``Live``), plain lines
on a pipe or in a log file (a line per change, throttled while epochs advance)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live

from ..client import JOB_WAIT_ENDS, SWEEP_WAIT_ENDS
from . import format as fmt


def _live(console: Console, transient: bool) -> Live:
    # No stdout/stderr redirection: under --json the live view is on stderr and the result
    # goes to stdout, untouched.
    return Live(console=console, auto_refresh=False, transient=transient,
                redirect_stdout=False, redirect_stderr=False)


class JobWatcher:
    """``submit --watch``: a progress line redrawn in place on a terminal; off one, a plain
    line at every status change and at most every ``line_interval`` seconds while epochs
    advance."""

    def __init__(self, console: Console, line_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.line_interval, self.clock = console, line_interval, clock
        self.tty = console.is_terminal
        self.live: Live | None = None
        self.last_status = None
        self.last_epoch = None
        self.last_print = float("-inf")
        self.first_seen: tuple[float, int] | None = None

    def update(self, job: dict) -> None:
        now = self.clock()
        status = job.get("status")
        epoch = (job.get("progress") or {}).get("epoch") or 0
        # The epoch rate as seen from here, for a service whose progress has no elapsed_s.
        if status == "running" and self.first_seen is None:
            self.first_seen = (now, epoch)
        rate = None
        if self.first_seen is not None and epoch > self.first_seen[1]:
            rate = (now - self.first_seen[0]) / (epoch - self.first_seen[1])
        if self.tty:
            if self.live is None:
                self.live = _live(self.console, transient=True)
                self.live.start()
            self.live.update(fmt.live_job(job, rate, self.console.width), refresh=True)
        elif status in JOB_WAIT_ENDS:
            pass  # the caller prints the outcome
        elif status != self.last_status or (
                epoch != self.last_epoch and now - self.last_print >= self.line_interval):
            self._line(fmt.watch_line(job, rate))
            self.last_print = now
            self.last_epoch = epoch
        self.last_status = status

    def _line(self, text: str) -> None:
        self.console.file.write(text + "\n")
        self.console.file.flush()

    def finish(self, job: dict) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif not self.tty and job.get("status") == "running":
            self._line(fmt.watch_line(job))


class SweepWatcher:
    """``sweep --watch``: the trials table redrawn in place on a terminal (the rows that
    matter now when it is taller than the terminal); off one, a line per trial state change
    and a progress line every ``line_interval`` seconds."""

    def __init__(self, console: Console, line_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.line_interval, self.clock = console, line_interval, clock
        self.tty = console.is_terminal
        self.live: Live | None = None
        self.states: dict = {}
        self.last_header = None
        self.last_print = float("-inf")

    def update(self, sweep: dict) -> None:
        if self.tty:
            if self.live is None:
                self.live = _live(self.console, transient=False)
                self.live.start()
            rows = max(3, self.console.size.height - 5)
            self.live.update(fmt.sweep_watch_block(sweep, max_rows=rows), refresh=True)
            return
        now = self.clock()
        header = fmt.sweep_header(sweep)
        changed = False
        out = self.console.file
        for t in sweep.get("trials") or []:
            key = t.get("number")
            state = (fmt.trial_event(sweep, t))
            if self.states.get(key) != state:
                self.states[key] = state
                changed = True
                out.write("  " + state + "\n")
        running = fmt.running_trials(sweep)
        if running:
            header += f"  ({running})"
        if sweep.get("status") in SWEEP_WAIT_ENDS:
            pass  # finish() prints the whole table
        elif header != self.last_header and (changed or now - self.last_print
                                             >= self.line_interval):
            out.write(header + "\n")
            self.last_header, self.last_print = header, now
        out.flush()

    def finish(self, sweep: dict) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif not self.tty and sweep:
            self.console.file.write(fmt.plain(fmt.sweep_watch_block(sweep)) + "\n")
            self.console.file.flush()
