"""MLflow retries, the reconciler's decisions and the out-of-memory detection, without
processes (the real-process tests are in tests/integration/test_mlflow_faults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError

from service.worker_api import JobEnd, JobStatus
from worker import oom
from worker.jobs.reconcile import decide
from worker.recording.mlflow_retry import Deadline, MlflowUnavailable, retry


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_retry_waits_for_mlflow_then_answers():
    clock, calls = Clock(), []

    def flaky():
        calls.append(clock.t)
        if len(calls) < 4:
            raise ConnectionError("refused")
        return "run-1"

    assert retry(flaky, "creating the run", "http://u:secret@mlflow:5000",
                 Deadline(120, clock), sleep=clock.sleep) == "run-1"
    assert calls == [0, 1, 3, 7]  # backoff 1, 2, 4 s


def test_retry_gives_up_after_the_bound_naming_url_and_step():
    clock = Clock()

    def down():
        raise ConnectionError("Connection refused")

    with pytest.raises(MlflowUnavailable) as err:
        retry(down, "logging the run's artifacts", "http://kerasyard:s3cret@mlflow:5000",
              Deadline(30, clock), sleep=clock.sleep)
    msg = str(err.value)
    assert "http://kerasyard:***@mlflow:5000" in msg and "s3cret" not in msg
    assert "logging the run's artifacts" in msg and "Connection refused" in msg
    assert clock.t == pytest.approx(30)  # waited the whole bound, no longer


def test_retry_does_not_retry_what_mlflow_refused():
    class Refused(Exception):
        error_code = "INVALID_PARAMETER_VALUE"

    calls = []

    def bad():
        calls.append(1)
        raise Refused("no")

    with pytest.raises(Refused):
        retry(bad, "x", "http://m", Deadline(60, Clock()), sleep=lambda s: None)
    assert len(calls) == 1


def _job(status, attempts=1, run="r1", error=None):
    return JobEnd("j1", status, attempts, run, error)


def test_reconciler_ends_the_run_of_an_ended_job_with_its_status():
    failed = decide("r1", {"kerasyard.attempt": "1"},
                    _job(JobStatus.failed, error={"message": "MLflow at ... did not answer"}))
    assert failed.status == "FAILED" and "did not answer" in failed.error
    ok = decide("r1", {}, _job(JobStatus.succeeded))
    assert ok.status == "FINISHED" and ok.error is None
    assert decide("r1", {}, _job(JobStatus.pruned)).status == "FINISHED"
    assert decide("r1", {}, _job(JobStatus.cancelled)).status == "KILLED"


def test_reconciler_fails_superseded_attempts_and_leaves_live_runs():
    sup = decide("old", {"kerasyard.attempt": "1"}, _job(JobStatus.running, attempts=2))
    assert sup.status == "FAILED" and "superseded by attempt 2" in sup.error
    assert decide("r1", {"kerasyard.attempt": "1"}, _job(JobStatus.running)) is None
    # the current attempt's run before set_run recorded it
    assert decide("new", {"kerasyard.attempt": "2"},
                  _job(JobStatus.running, attempts=2, run=None)) is None
    # a shared trial's run while its training records it
    assert decide("t", {}, _job(JobStatus.running, run=None)) is None
    assert decide("r1", {}, None) is None  # not this database's job
    # an ended job's run that was never recorded on it
    stray = decide("x", {"kerasyard.attempt": "1"},
                   _job(JobStatus.failed, run=None, error={"message": "boom"}))
    assert stray.status == "FAILED" and stray.error == "boom"


# --- out of memory ----------------------------------------------------------------------------


def test_counter_files_and_reading(tmp_path: Path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/worker.scope\n")
    files = oom.counter_files(tmp_path / "fs", proc)
    assert files[0] == tmp_path / "fs/system.slice/worker.scope/memory.events"
    v1 = tmp_path / "cgroup1"
    v1.write_text("4:memory:/docker/abc\n1:cpu:/\n0::/\n")
    assert tmp_path / "fs/memory/docker/abc/memory.oom_control" in oom.counter_files(
        tmp_path / "fs", v1)
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")
    ctl = tmp_path / "memory.oom_control"
    ctl.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    assert oom.read_oom_kills([tmp_path / "missing", events]) == 2
    assert oom.read_oom_kills([ctl]) == 5
    assert oom.read_oom_kills([tmp_path / "missing"]) is None


class FakeRequest(oom.TrainRequest):
    """TrainRequest's OOM check without a Celery message."""

    def __init__(self, events: Path, job_id: str, pid: int):
        self.oom_files = [events]
        self._args_ = [job_id]
        self.worker_pid = pid
        self._already_cancelled = self._already_revoked = False

    @property
    def args(self):
        return self._args_


def _lost(sig="signal 9 (SIGKILL)"):
    try:
        raise WorkerLostError(f"Worker exited prematurely: {sig} Job: 3.")
    except WorkerLostError:
        return ExceptionInfo()


def test_an_oom_kill_fails_the_job_instead_of_retrying(tmp_path: Path, monkeypatch):
    events = tmp_path / "memory.events"
    events.write_text("oom 0\noom_kill 4\n")
    failed = []
    monkeypatch.setattr(oom, "fail_job", lambda job_id, pid, msg: failed.append(
        (job_id, pid, msg)) or True)
    req = FakeRequest(events, "job-1", 4242)
    req._oom_before = oom.read_oom_kills(req.oom_files)  # what on_accepted reads
    events.write_text("oom 1\noom_kill 5\n")  # the kernel killed the child
    assert req._fail_if_oom(_lost().exception)
    (job_id, pid, msg), = failed
    assert (job_id, pid) == ("job-1", 4242)
    assert "killed by the out-of-memory killer" in msg and "4242" in msg


def test_other_deaths_still_go_back_to_the_queue(tmp_path: Path, monkeypatch):
    events = tmp_path / "memory.events"
    events.write_text("oom_kill 4\n")
    monkeypatch.setattr(oom, "fail_job", lambda *a: pytest.fail("not an OOM"))
    req = FakeRequest(events, "job-1", 4242)
    req._oom_before = 4
    assert not req._fail_if_oom(_lost().exception)  # counter did not move
    events.write_text("oom_kill 5\n")
    assert not req._fail_if_oom(_lost("signal 11 (SIGSEGV)").exception)  # not SIGKILL
    assert not req._fail_if_oom(ValueError("task raised"))  # not a lost worker
    req.oom_files = [tmp_path / "none"]
    assert not req._fail_if_oom(_lost().exception)  # no counter to read
