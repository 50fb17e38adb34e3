"""One process of bench/fleet.py's simulated fleet: many trainings, each a thread that takes
the worker's real path with fit replaced by a timer.

Per training, as :class:`worker.jobs.run.JobRun` does it: the claim
(:func:`worker.jobs.claim.claim`), the :class:`Heartbeat` and :class:`Reporter` threads, the
MLflow run (experiment, ``start_job_run`` with its params, :func:`service.worker_api.set_run`),
an epoch every ``epoch_s`` handed to the reporter (epoch rows, progress and MLflow metrics at
its pace), then the reporter's last flush and the final write
(:func:`worker.jobs.finish.final_write`) and the MLflow run's end. Each training has a
database URL of its own (``application_name=fleet-<i>``), so it has an engine and a pool of
its own: the connections a training process of its own would hold.

``baseline``: the settings before the fleet work: the report interval fixed at 0.25 s, a
heartbeat write every 0.25 s beside the reporter's (:class:`OldHeartbeat`), MLflow calls every
second however long they take, and the old pool of 5 + 5 connections per process.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import threading
import time

_calls = [0, 0]  # MLflow requests, database transactions (commits and rollbacks)
_calls_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Plan:
    """One simulated training: its job, its epoch time, its epochs and its start (seconds
    after the fleet's start; the wall clock once :func:`run_share` knows it)."""

    job_id: str
    index: int
    epoch_s: float
    epochs: int
    start_at: float


class Errors(logging.Handler):
    """Counts every warning and error the worker's code logs, by its first words."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.counts: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            text += f" [{type(exc).__name__}: {first}]"
        self.counts[f"{record.levelname}: {_kind(text)}"] += 1

    def note(self, what: str) -> None:
        self.counts[f"ERROR: {_kind(what)}"] += 1


def _kind(text: str) -> str:
    """A message with its ids, ports and counts taken out, so that one kind counts once."""
    text = re.sub(r"[0-9a-f]{32}", "<id>", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:300]


def count_mlflow_requests() -> None:
    """Every HTTP request MLflow's client makes goes through rest_utils.http_request."""
    from mlflow.utils import rest_utils

    original = rest_utils.http_request

    def counted(*args, **kwargs):
        with _calls_lock:
            _calls[0] += 1
        return original(*args, **kwargs)

    rest_utils.http_request = counted


def count_transactions() -> None:
    """Every commit and rollback of every engine in this process: the fleet's own share of
    pg_stat_database (which counts the API's and the bench's too)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def counted(_conn) -> None:
        with _calls_lock:
            _calls[1] += 1

    event.listen(Engine, "commit", counted)
    event.listen(Engine, "rollback", counted)


def old_heartbeat_class():
    from service import worker_api as api
    from worker.recording.reporter import Heartbeat

    class OldHeartbeat(Heartbeat):
        """Before: one beat every interval whatever the reporter wrote."""

        def _loop(self) -> None:
            while not self._stop.wait(self.interval_s):
                if self.signals.superseded.is_set():
                    return
                try:
                    answer = api.heartbeat(self.settings, self.fence)
                except Exception:
                    logging.getLogger(__name__).warning("old heartbeat failed", exc_info=True)
                    continue
                self.beats += 1
                if not self._finishing:
                    self.signals.answer(answer, self.fence.job_id)

    return OldHeartbeat


def train(settings, plan: Plan, baseline: bool, errors: Errors) -> str:
    """One training through the worker's path; returns the job's end (or why none)."""
    from service import worker_api as api
    from service.worker_api import JobStatus, Ownership
    from worker.jobs.claim import claim
    from worker.jobs.finish import Outcome, final_write
    from worker.recording import tracking
    from worker.recording.dbretry import retry_db
    from worker.recording.mlflow_retry import Deadline, retry
    from worker.recording.reporter import Heartbeat, Reporter, Signals

    time.sleep(max(0.0, plan.start_at - time.time()))
    got = claim(plan.job_id, settings)
    if got is None:
        return "skipped"
    fence, signals = got.fence, Signals()
    beat = (old_heartbeat_class() if baseline else Heartbeat)(settings, fence, signals)
    reporter = Reporter(settings, fence, plan.epochs, signals)
    beat.start()
    reporter.start()
    outcome, cl, run_id = Outcome(JobStatus.failed), None, None
    try:
        cl = tracking.client(settings.mlflow_tracking_uri)
        deadline = Deadline(settings.mlflow_retry_s)  # as worker.jobs.mlflow_run.MlflowRun

        def step(fn, what):
            return retry(fn, what, settings.mlflow_tracking_uri, deadline,
                         stop=signals.superseded.is_set)

        exp_id = step(lambda: tracking.experiment_id(cl, "fleet"), "finding the experiment")
        tags = tracking.base_tags(plan.job_id, None, "fleet", "tensorflow")
        tags["kerasyard.attempt"] = str(fence.attempt)
        params = {"epochs": str(plan.epochs), "epoch_s": str(plan.epoch_s)}
        run_id = step(lambda: tracking.start_job_run(cl, exp_id, f"fleet-{plan.index}", tags,
                                                     params), "starting the run")
        signals.answer(retry_db(settings, "set_run",
                                lambda: api.set_run(settings, fence, run_id, exp_id)),
                       plan.job_id)
        reporter.mlflow, reporter.run_id = cl, run_id
        reporter.fit_started()
        epoch = 0
        for epoch in range(1, plan.epochs + 1):  # "fit": an epoch every epoch_s
            time.sleep(plan.epoch_s)
            if signals.superseded.is_set() or signals.cancel.is_set():
                break
            reporter.epoch(epoch, {"loss": 1.0 / epoch, "accuracy": 1.0 - 1.0 / (epoch + 1),
                                   "fleet_wall_s": time.time()})
        status = JobStatus.succeeded if epoch == plan.epochs else JobStatus.cancelled
        outcome = Outcome(status, summary={"epochs": epoch})
    except Exception as exc:
        errors.note(f"training raised {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        reporter.close()
        beat.finishing()
        try:
            answer = final_write(settings, fence, reporter, signals, outcome, run_id)
        except Exception as exc:
            errors.note(f"final write raised {type(exc).__name__}: {str(exc)[:200]}")
            answer = None
        finally:
            beat.stop()
    if answer is not Ownership.OWNED:
        return f"final write {answer}"
    if run_id is not None:
        try:
            retry(lambda: cl.set_terminated(run_id, tracking.MLFLOW_RUN_STATUS[outcome.status]),
                  "ending the run", settings.mlflow_tracking_uri,
                  Deadline(settings.mlflow_retry_s))
        except Exception as exc:
            errors.note(f"MLflow end raised {type(exc).__name__}")
    return outcome.status.value


def _sample_calls(window: tuple[float, float], out: dict) -> None:
    for name, at in zip(("w0", "w1"), window):
        time.sleep(max(0.0, at - time.time()))
        with _calls_lock:
            out[f"calls_{name}"], out[f"xacts_{name}"] = _calls


def run_share(settings, plans: list[Plan], baseline: bool, pool: str,
              window: tuple[float, float], deadline: float, results, ready, go) -> None:
    """A process's share of the fleet; puts its tallies on ``results`` (a queue).

    ``plans``' starts, ``window`` and ``deadline`` are seconds after the fleet's start: the wall
    time the parent writes into ``go`` once every process has put itself on ``ready`` (imports
    take long on a loaded machine, and must not eat into the measured window)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # as worker/celery_app.py
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    errors = Errors()
    logging.basicConfig(level=logging.WARNING, handlers=[errors])
    from service import worker_api as api

    api.use_pool(pool)
    if baseline:  # before: MLflow calls every second whatever they took
        from worker.recording import reporter

        reporter.MLFLOW_CALL_SHARE = float("inf")
    count_mlflow_requests()
    count_transactions()
    import worker.jobs.claim  # noqa: F401  (the imports before the start, not in it)
    import worker.jobs.finish  # noqa: F401

    ready.put(os.getpid())
    while go.value <= 0:
        time.sleep(0.05)
    base = go.value
    plans = [dataclasses.replace(p, start_at=base + p.start_at) for p in plans]
    window, deadline = (base + window[0], base + window[1]), base + deadline
    ends: collections.Counter = collections.Counter()
    lock = threading.Lock()
    tally: dict = {}

    def one(plan: Plan) -> None:
        own = dataclasses.replace(settings, database_url=f"{settings.database_url}"
                                  f"?application_name=fleet-{plan.index}")
        try:
            end = train(own, plan, baseline, errors)
        except Exception as exc:
            errors.note(f"claim raised {type(exc).__name__}: {str(exc)[:200]}")
            end = "claim failed"
        with lock:
            ends[end] += 1

    sampler = threading.Thread(target=_sample_calls, args=(window, tally), daemon=True)
    sampler.start()
    threads = [threading.Thread(target=one, args=(p,), daemon=True, name=f"fleet-{p.index}")
               for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    sampler.join(max(0.0, deadline - time.time()))
    with lock:
        ends["still running at the deadline"] += sum(t.is_alive() for t in threads)
    with _calls_lock:
        tally["calls"], tally["xacts"] = _calls
    results.put({"ends": dict(ends), "errors": dict(errors.counts), **tally})
