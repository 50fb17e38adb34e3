"""The only place the service talks to Celery: send_task by name, ids only.

The service never imports worker/; the task is addressed by its registered name.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from celery import Celery
from sqlalchemy import select

from .config import Settings, celery_config
from .db import session_scope
from .models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

TRAIN_TASK = "worker.train"
SWEEP_REPORT_TASK = "worker.sweep_report"
_apps: dict[str, Celery] = {}  # one sender app per broker
_lock = threading.Lock()


def celery_for(settings: Settings) -> Celery:
    # The filesystem transport's folders come from the data dir, so it is part of the key.
    key = f"{settings.broker_url}|{settings.broker_data_dir}"
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = Celery("kerasyard-service")
            app.conf.update(celery_config(settings))
            _apps[key] = app
        return app


def queue_training_job(settings: Settings, job_id: str, queue: str) -> bool:
    """Publish the job id; call only after the job row is committed.

    Returns False (and leaves dispatched_at empty) when the broker is unreachable: the job
    stays queued in the database and :func:`dispatch_pending` sends it later.
    """
    try:
        celery_for(settings).send_task(TRAIN_TASK, args=[job_id], queue=queue,
                                       retry=True, retry_policy={"max_retries": 2,
                                                                 "interval_start": 0,
                                                                 "interval_step": 0.5})
    except Exception as exc:
        log.warning("broker unreachable, job %s stays queued for re-dispatch: %s", job_id, exc)
        return False
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.dispatched_at = utcnow()
    return True


def queue_sweep_report(settings: Settings, sweep_id: str) -> bool:
    """Ask a worker to write the sweep's report into its MLflow parent run."""
    try:
        celery_for(settings).send_task(SWEEP_REPORT_TASK, args=[sweep_id],
                                       queue=settings.default_queue, retry=True,
                                       retry_policy={"max_retries": 2, "interval_start": 0,
                                                     "interval_step": 0.5})
        return True
    except Exception as exc:
        log.warning("broker unreachable, report of sweep %s sent later: %s", sweep_id, exc)
        return False


def dispatch_pending(settings: Settings) -> int:
    """Send again what no worker will otherwise pick up; returns how many ids were sent.

    That is every queued job that never reached the broker, and every running job whose
    heartbeat is stale: its worker host died, and Redis would only re-deliver the unacked
    message after the visibility timeout (hours). The worker's claim takes such a job over.
    """
    stale = utcnow() - dt.timedelta(seconds=settings.stale_heartbeat_s)
    with session_scope(settings.database_url) as s:
        # Sweep trials are sent by the sweep's scheduler, which keeps them within max_parallel.
        never_sent = (Job.status == JobStatus.queued.value) & Job.dispatched_at.is_(None) & \
            Job.cancel_requested.is_(False) & Job.sweep_id.is_(None)
        orphaned = (Job.status == JobStatus.running.value) & (Job.heartbeat_at < stale)
        rows = s.execute(select(Job.id, Job.queue).where(never_sent | orphaned)
                         .order_by(Job.created_at)).all()
    sent = 0
    for job_id, queue in rows:
        if not queue_training_job(settings, job_id, queue):
            break  # broker still down; try again next round
        sent += 1
    return sent


def broker_ok(settings: Settings) -> tuple[bool, str]:
    try:
        with celery_for(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


class Redispatcher(threading.Thread):
    """Background thread in the API process: re-sends jobs whose publish failed."""

    def __init__(self, settings: Settings, interval: float):
        super().__init__(name="kerasyard-redispatch", daemon=True)
        self.settings, self.interval = settings, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                dispatch_pending(self.settings)
            except Exception:
                log.warning("re-dispatch round failed", exc_info=True)
            try:
                from .sweeps import tick

                tick(self.settings)
            except Exception:
                log.warning("sweep round failed", exc_info=True)
