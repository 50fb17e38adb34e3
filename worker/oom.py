"""A training child killed by the kernel's out-of-memory killer fails its job, with that reason.

Without this, Celery rejects the message back to the queue (``task_reject_on_worker_lost``),
the next claim takes the job over and it dies the same way, up to ``KERASYARD_MAX_ATTEMPTS``
times, ending as "its worker died". :class:`TrainRequest` (the train task's ``Request``) runs
in the worker's main process: when the child starts a task it reads the cgroup's count of OOM
kills; when the child is lost it reads it again, and if it went up (and the child died of
SIGKILL) it fails the job through :func:`service.worker_api.fail_out_of_memory`, fenced on the
dead child's ``host:pid`` and the job still running. The re-delivered message is then dropped
by the claim (the job has ended).

The counter: cgroup v2 ``memory.events`` ``oom_kill`` (this process's cgroup, or the root of
the namespace); cgroup v1 ``memory.oom_control`` ``oom_kill``. With no readable counter
nothing changes (the job is retried as before).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from celery.worker.request import Request

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroups(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def counter_files(root: Path = CGROUP_ROOT,
                  proc_cgroup: Path = Path("/proc/self/cgroup")) -> list[Path]:
    """Where this process's OOM-kill count may be read, most specific first."""
    v2, v1 = _own_cgroups(proc_cgroup)
    out = []
    if v2 is not None:
        out += [root / v2.lstrip("/") / "memory.events", root / "memory.events"]
    if v1 is not None:
        out += [root / "memory" / v1.lstrip("/") / "memory.oom_control",
                root / "memory" / "memory.oom_control"]
    out += [root / "memory.events", root / "memory" / "memory.oom_control"]
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def read_oom_kills(files: list[Path] | None = None) -> int | None:
    """The ``oom_kill`` count of the first readable file; None when none has it."""
    for path in files if files is not None else counter_files():
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def oom_message(pid: int | None, before: int, after: int) -> str:
    return (f"the training process (pid {pid}) was killed by the out-of-memory killer "
            f"(the worker's cgroup counted {after - before} OOM kill"
            f"{'s' if after - before != 1 else ''} while it trained); not retried: it would "
            "run out of memory again")


class TrainRequest(Request):
    """The train task's request, in the worker's main process (see the module's doc)."""

    oom_files: list[Path] | None = None  # tests point this at a fake memory.events

    def on_accepted(self, pid, time_accepted):
        self._oom_before = read_oom_kills(self.oom_files)
        super().on_accepted(pid, time_accepted)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        try:
            self._fail_if_oom(exc_info.exception)
        except Exception:
            log.warning("could not check or record an out-of-memory death", exc_info=True)
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)

    def _fail_if_oom(self, exc: BaseException) -> bool:
        from billiard.einfo import ExceptionWithTraceback
        from billiard.exceptions import WorkerLostError

        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        lost = isinstance(exc, WorkerLostError) or (
            isinstance(exc, (SystemExit, KeyboardInterrupt))
            and not getattr(self, "_already_cancelled", False)
            and not getattr(self, "_already_revoked", False))
        if not lost:
            return False
        before = getattr(self, "_oom_before", None)
        after = read_oom_kills(self.oom_files)
        if before is None or after is None or after <= before:
            return False
        if isinstance(exc, WorkerLostError) and "SIGKILL" not in str(exc) and \
                "signal 9" not in str(exc):
            return False
        return fail_job(self.args[0] if self.args else None, self.worker_pid,
                        oom_message(self.worker_pid, before, after))


def fail_job(job_id: str | None, pid: int | None, message: str) -> bool:
    from service import worker_api as api
    from service.config import get_settings

    if not job_id or not pid:
        return False
    worker = f"{socket.gethostname()}:{pid}"
    done = api.fail_out_of_memory(get_settings(), job_id, worker, message)
    if done:
        log.error("job %s failed: %s", job_id, message)
    return done
