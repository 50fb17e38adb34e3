"""Background work of the API process, in one thread the app factory starts.

Each round it sends again what no worker will otherwise pick up, and advances every live
sweep (:func:`service.sweeps.scheduler.tick`):

- queued jobs the broker never got (it was down when they were submitted), and queued jobs
  the broker has had for ``resend_unclaimed_s`` with no claim (a message lost in the broker,
  or acked by a worker that could not reach the database): the claim drops a duplicate;
- every ``reconcile_s``, a ``worker.reconcile_runs`` task: a worker ends the MLflow runs left
  RUNNING by jobs that have ended (MLflow down at a run's end, a child killed for memory);
- running jobs whose heartbeat is stale: their worker died or hangs. Each goes back to
  ``queued`` through :func:`service.lifecycle.requeue_stale` (which fences the old worker
  off) and is sent again; the next claim takes it over.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import select

from service import lifecycle
from service.config import Settings
from service.queue import CelerySender
from service.store.db import session_scope
from service.store.models import Job, JobStatus, utcnow
from service.sweeps import scheduler

log = logging.getLogger(__name__)


def dispatch_pending(settings: Settings) -> int:
    """Send again every job nobody will otherwise pick up; returns how many were sent."""
    sender = CelerySender(settings)
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.stale_heartbeat_s)
    unclaimed = now - dt.timedelta(seconds=settings.resend_unclaimed_s)
    with session_scope(settings.database_url) as s:
        # Sweep trials are first sent by the sweep's scheduler, within max_parallel.
        never_sent = (Job.status == JobStatus.queued) & Job.dispatched_at.is_(None) & \
            Job.cancel_requested.is_(False) & Job.sweep_id.is_(None)
        lost = (Job.status == JobStatus.queued) & (Job.dispatched_at < unclaimed) & \
            Job.trained_by.is_(None)
        silent = (Job.status == JobStatus.running) & (Job.heartbeat_at < stale)
        rows = s.execute(select(Job.id, Job.queue, Job.status, Job.sweep_id)
                         .where(never_sent | lost | silent).order_by(Job.created_at)).all()
    sent = 0
    for job_id, queue, status, sweep_id in rows:
        if status == JobStatus.running:
            if not lifecycle.requeue_stale(settings, job_id):
                continue  # its worker beat again in the meantime
            log.warning("job %s: its worker went silent; sending it again", job_id)
            if sweep_id:
                continue  # the scheduler sends it within the sweep's max_parallel
        if not lifecycle.dispatch(settings, sender, job_id, queue):
            break  # broker still down; try again next round
        sent += 1
    return sent


def send_reconcile(settings: Settings) -> bool:
    """Ask a worker to end the MLflow runs of ended jobs (:mod:`worker.jobs.reconcile`)."""
    if not settings.mlflow_logging:
        return False
    return CelerySender(settings).reconcile_runs()


def run_round(settings: Settings, reconcile: bool = False) -> None:
    if reconcile:
        try:
            send_reconcile(settings)
        except Exception:
            log.warning("sending the MLflow reconcile task failed", exc_info=True)
    try:
        dispatch_pending(settings)
    except Exception:
        log.warning("re-dispatch round failed", exc_info=True)
    try:
        scheduler.tick(settings, CelerySender(settings))
    except Exception:
        log.warning("sweep round failed", exc_info=True)


class BackgroundRounds(threading.Thread):
    """Runs :func:`run_round` every ``interval`` seconds until stopped."""

    def __init__(self, settings: Settings, interval: float):
        super().__init__(name="kerasyard-background", daemon=True)
        self.settings, self.interval = settings, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        import time

        last_reconcile = time.monotonic()
        while not self.stopped.wait(self.interval):
            due = time.monotonic() - last_reconcile >= self.settings.reconcile_s
            if due:
                last_reconcile = time.monotonic()
            run_round(self.settings, reconcile=due)
