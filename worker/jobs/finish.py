"""The job's last database writes: the epochs still waiting, then its final status
(:func:`final_write`), or, for an attempt that stopped on purpose, what it became
(:func:`stop_write`).

Each is retried while the database does not answer (``db_retry_s``): a training that
finished is not thrown away for a write that failed during a database outage.
"""

from __future__ import annotations

import dataclasses
import logging

from service import worker_api as api
from service.config import Settings
from service.worker_api import Fence, JobStatus, Ownership
from worker.recording.dbretry import retry_db
from worker.recording.reporter import Reporter, Signals

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    status: JobStatus
    summary: dict | None = None
    error: dict | None = None
    # Training stopped at an epoch boundary with a checkpoint (a pause, the worker's
    # shutdown): the job does not end; stop_write says what it became; its next attempt goes
    # on from the checkpoint.
    stopped: bool = False


def final_write(settings: Settings, fence: Fence, reporter: Reporter, signals: Signals,
                outcome: Outcome, run_id: str | None) -> Ownership:
    """The epochs still waiting for the database, then the job's final status (``run_id``:
    the job's MLflow run, named in the log when the write fails for good)."""
    st, job_id = settings, fence.job_id
    retry_db(st, f"final epochs of job {job_id}",
             lambda: reporter.flush(final=True, raise_db_errors=True))
    if signals.superseded.is_set():
        return Ownership.SUPERSEDED
    failed = []

    def write() -> Ownership:
        try:
            return api.finish(st, fence, outcome.status,
                                    summary=outcome.summary, error=outcome.error)
        except Exception:
            failed.append(True)
            raise

    try:
        answer = retry_db(st, f"final write of job {job_id}", write)
    except Exception:
        # The row stays running; its heartbeat has stopped, the API's background round
        # hands the job to another worker, which ends this MLflow run.
        log.error("job %s: the final write failed; leaving MLflow run %s as it is",
                  job_id, run_id)
        raise
    if answer is Ownership.SUPERSEDED and failed and retry_db(
            st, f"final write of job {job_id} (did a failed try land?)",
            lambda: api.finished_by(st, fence, outcome.status)):
        # An earlier try committed but its answer was lost with the connection.
        return Ownership.OWNED
    return answer


def stop_write(settings: Settings, fence: Fence, reporter: Reporter,
               signals: Signals) -> JobStatus | None:
    """The last writes of an attempt that stopped at an epoch boundary on purpose (a pause,
    the worker's shutdown): the epochs still waiting, then :func:`service.worker_api.stop`,
    each retried while the database does not answer. Returns what the job became (paused,
    queued, or cancelled when a cancel came meanwhile); None when the claim no longer held."""
    st, job_id = settings, fence.job_id
    retry_db(st, f"final epochs of job {job_id}",
             lambda: reporter.flush(final=True, raise_db_errors=True))
    if signals.superseded.is_set():
        return None
    failed = []

    def write() -> JobStatus | None:
        try:
            return api.stop(st, fence)
        except Exception:
            failed.append(True)
            raise

    status = retry_db(st, f"stop of job {job_id}", write)
    if status is None and failed:  # did a try whose answer was lost land?
        status = retry_db(st, f"stop of job {job_id} (did a failed try land?)",
                          lambda: api.stopped_as(st, fence))
    return status
