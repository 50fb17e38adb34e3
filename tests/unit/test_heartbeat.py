"""The worker's two threads: the heartbeat goes through whatever MLflow does, and a fenced
write that answers SUPERSEDED or CANCEL stops the run the way it should.

The door's database functions (service.worker_api) are replaced by fakes; these tests need
no services.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from service import worker_api
from service.config import Settings
from service.worker_api import CANCEL, OWNED, SUPERSEDED, Fence
from worker.recording import reporter as R

FENCE = Fence("job", 1)


@pytest.fixture()
def settings() -> Settings:
    return dataclasses.replace(Settings.from_env(), report_interval_s=0.02,
                               report_interval_max_s=0.02, mlflow_flush_interval_s=0.0,
                               mlflow_max_duty=1.0)


class FakeDb:
    """Stands in for worker_api.heartbeat / record_epochs; answers what ``answer`` says."""

    def __init__(self, monkeypatch, answer=OWNED):
        self.answer = answer
        self.beats = 0
        self.records: list[list[int]] = []
        self.lock = threading.Lock()
        monkeypatch.setattr(worker_api, "heartbeat", self.heartbeat)
        monkeypatch.setattr(worker_api, "record_epochs", self.record_epochs)

    def heartbeat(self, settings, fence):
        assert fence == FENCE
        with self.lock:
            self.beats += 1
        return self.answer

    def record_epochs(self, settings, fence, epochs, progress):
        assert fence == FENCE
        with self.lock:
            self.records.append([e for e, _ in epochs])
        return self.answer


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def metrics():
    return {"loss": 0.5, "accuracy": 0.75}


def test_heartbeat_goes_through_while_an_mlflow_call_hangs(settings, monkeypatch):
    db = FakeDb(monkeypatch)
    blocked, release = threading.Event(), threading.Event()
    logged: list[list[int]] = []

    def slow_log_epochs(cl, run_id, epochs, values=None, stamps=None):
        blocked.set()
        release.wait(10)
        logged.append([e for e, _ in epochs])

    monkeypatch.setattr(R.tracking, "log_epochs", slow_log_epochs)
    signals = R.Signals()
    rep = R.Reporter(settings, FENCE, 10, signals)
    rep.mlflow, rep.run_id = object(), "run"
    beat = R.Heartbeat(settings, FENCE, signals)
    beat.start()
    rep.start()
    try:
        rep.epoch(1, metrics())
        assert blocked.wait(5), "the reporter never called MLflow"
        # The reporter thread is stuck in MLflow; the heartbeat keeps beating regardless.
        before = db.beats
        wait(lambda: db.beats >= before + 5)
        assert rep._thread.is_alive()
        assert db.records == [[1]]  # the database had the epoch before MLflow was called
    finally:
        release.set()
        rep.close()
        beat.stop()
    assert logged == [[1]]
    assert not signals.superseded.is_set() and not signals.cancel.is_set()


def test_superseded_record_stops_every_later_write(settings, monkeypatch):
    db = FakeDb(monkeypatch, answer=SUPERSEDED)
    calls = []
    monkeypatch.setattr(R.tracking, "log_epochs",
                        lambda cl, run_id, epochs, stamps=None: calls.append(1))
    signals = R.Signals()
    rep = R.Reporter(settings, FENCE, 10, signals)
    rep.mlflow, rep.run_id = object(), "run"
    rep.epoch(1, metrics())
    rep.flush()
    assert signals.superseded.is_set()
    assert db.records == [[1]] and calls == []  # refused by the fence; MLflow left alone
    rep.epoch(2, metrics())
    rep.flush(final=True)
    assert db.records == [[1]] and calls == []  # nothing more is even tried


def test_superseded_heartbeat_sets_the_signal_and_stops_beating(settings, monkeypatch):
    db = FakeDb(monkeypatch, answer=SUPERSEDED)
    signals = R.Signals()
    beat = R.Heartbeat(settings, FENCE, signals)
    beat.start()
    assert signals.superseded.wait(5)
    wait(lambda: not beat._thread.is_alive())
    assert db.beats == 1
    beat.stop()


def test_while_finishing_the_heartbeat_beats_on_and_acts_on_no_answer(settings, monkeypatch):
    """During the run's last writes the claim is kept alive; a beat that lands after the final
    write found the job ended (SUPERSEDED) must not relabel the run as superseded."""
    db = FakeDb(monkeypatch, answer=OWNED)
    signals = R.Signals()
    beat = R.Heartbeat(settings, FENCE, signals)
    beat.finishing()
    beat.start()
    try:
        wait(lambda: db.beats >= 3)
        db.answer = SUPERSEDED  # the final write went through: the job has ended
        before = db.beats
        wait(lambda: db.beats >= before + 3)
        assert beat._thread.is_alive()
        assert not signals.superseded.is_set() and not signals.cancel.is_set()
    finally:
        beat.stop()
    assert not beat._thread.is_alive()


def test_cancel_answer_sets_cancel_only(settings, monkeypatch):
    FakeDb(monkeypatch, answer=CANCEL)
    signals = R.Signals()
    beat = R.Heartbeat(settings, FENCE, signals)
    beat.start()
    try:
        assert signals.cancel.wait(5)
    finally:
        beat.stop()
    assert not signals.superseded.is_set()


def test_failed_db_write_keeps_the_epochs_for_the_next_flush(settings, monkeypatch):
    db = FakeDb(monkeypatch)
    fail = [True]

    def flaky(settings, fence, epochs, progress):
        if fail[0]:
            raise ConnectionError("database down")
        return FakeDb.record_epochs(db, settings, fence, epochs, progress)

    monkeypatch.setattr(worker_api, "record_epochs", flaky)
    rep = R.Reporter(settings, FENCE, 10, R.Signals())
    rep.epoch(1, metrics())
    rep.flush()
    rep.epoch(2, metrics())
    fail[0] = False
    rep.flush()
    assert db.records == [[1, 2]]


def test_pruner_answer_sets_prune(settings, monkeypatch):
    FakeDb(monkeypatch)
    signals = R.Signals()
    rep = R.Reporter(settings, FENCE, 10, signals)
    seen = []
    rep.on_epochs = lambda epochs: seen.extend(e for e, _ in epochs) or len(seen) >= 2
    rep.epoch(1, metrics())
    rep.flush()
    assert not signals.prune.is_set()
    rep.epoch(2, metrics())
    rep.flush()
    assert signals.prune.is_set() and seen == [1, 2]


def test_a_progress_write_is_the_heartbeat_the_thread_beats_only_when_it_is_missing(
        settings, monkeypatch):
    """One write per interval, not two: while the reporter writes, the heartbeat thread stays
    quiet; when the reporter stops writing (MLflow hangs, the run's last writes), it beats."""
    db = FakeDb(monkeypatch)
    settings = dataclasses.replace(settings, report_interval_max_s=0.1)
    signals = R.Signals()
    beat = R.Heartbeat(settings, FENCE, signals)
    assert beat.interval_s == 0.1
    stop = threading.Event()

    def reporter():  # writes every 0.05 s, as a reporter's record_epochs would
        while not stop.wait(0.05):
            signals.progress_written_at = time.monotonic()

    writer = threading.Thread(target=reporter, daemon=True)
    writer.start()
    beat.start()
    try:
        time.sleep(0.6)
        assert db.beats == 0
        stop.set()
        wait(lambda: db.beats >= 2)
    finally:
        stop.set()
        beat.stop()


def test_the_reporter_backs_off_to_the_bound_and_its_writes_count_as_heartbeats(
        settings, monkeypatch):
    FakeDb(monkeypatch)
    settings = dataclasses.replace(settings, report_interval_s=0.25, report_interval_max_s=3.0)
    signals = R.Signals()
    rep = R.Reporter(settings, FENCE, 10, signals)
    assert rep.pace.interval == 0.25
    rep.epoch(1, metrics())
    rep.flush()
    assert signals.progress_written_at > time.monotonic() - 5
    for _ in range(20):
        rep.pace.wrote(0.0)
    assert rep.pace.interval == 3.0


@pytest.mark.parametrize("duty, least_wait", [(0.01, 2.0), (0.25, 0.4)])
def test_a_slow_mlflow_call_spaces_the_next(settings, monkeypatch, duty, least_wait):
    """A loaded MLflow server gets fewer calls: the next waits 20 times the last one's time,
    or 1 / KERASYARD_MLFLOW_MAX_DUTY times it when that duty is above 5 %."""
    FakeDb(monkeypatch)
    calls = []

    def slow(cl, run_id, epochs, stamps=None):
        calls.append([e for e, _ in epochs])
        time.sleep(0.1)

    monkeypatch.setattr(R.tracking, "log_epochs", slow)
    rep = R.Reporter(dataclasses.replace(settings, mlflow_max_duty=duty), FENCE, 10,
                     R.Signals())
    rep.mlflow, rep.run_id = object(), "run"
    time.sleep(0.05)  # past the pace's first interval
    rep.epoch(1, metrics())
    rep.flush()
    rep.epoch(2, metrics())
    rep.flush()  # within the wait after a 0.1 s call: MLflow waits
    assert calls == [[1]] and least_wait <= rep._mlflow_wait < 2 * least_wait
    rep.flush(final=True)  # the run's end sends what waited
    assert calls == [[1], [2]]
