"""Background work of the API process, in one thread the app factory starts.

Each round it sends again what no worker will otherwise pick up, and advances every live
sweep (:func:`service.sweeps.scheduler.tick`):

- queued jobs the broker never got (it was down when they were submitted);
- queued jobs sent ``resend_unclaimed_s`` ago or more, unclaimed, for which the broker holds
  no message (:func:`service.queue.held_job_ids`: its data was lost, or a worker took the
  message and could not claim the job): each is sent once more, and logged. A job still
  waiting in the queue behind others is never sent twice;
- every ``reconcile_s``, a ``worker.reconcile_runs`` task: a worker ends the MLflow runs left
  RUNNING by jobs that have ended (MLflow down at a run's end, a child killed for memory);
- running jobs whose worker is silent: their worker died or hangs. Each goes back to
  ``queued`` through :func:`service.lifecycle.requeue_stale` (which fences the old worker
  off) and is sent again; the next claim takes it over. Silence is measured from the later
  of the job's last heartbeat and the last time this process saw the database down (or
  started, :class:`DatabaseOutage`): no heartbeat can be written while the database is down,
  so an outage alone never makes a live worker look dead.

A database outage is logged once when a round first fails on it and once when it answers
again (with its length), not with a traceback every round.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from service import lifecycle
from service.config import Settings
from service.queue import CelerySender, held_job_ids
from service.store.db import session_scope
from service.store.models import Job, JobStatus, as_utc, utcnow
from service.sweeps import scheduler

log = logging.getLogger(__name__)


def is_outage(exc: BaseException) -> bool:
    """A failure of the database connection (refused, closed, no pooled connection came
    back), not of a statement."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


class DatabaseOutage:
    """What this process has seen of the database: down since when, and when it last saw it
    down. It starts as "last seen down at start": before that it saw nothing."""

    def __init__(self, now: dt.datetime | None = None):
        self.down_since: dt.datetime | None = None
        self.last_seen_down: dt.datetime = now or utcnow()

    def failed(self, what: str, exc: BaseException) -> None:
        now = utcnow()
        self.last_seen_down = now
        if self.down_since is None:
            self.down_since = now
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            log.warning("database unreachable (%s: %s; while %s); the background rounds go "
                        "on without logging each failure until it answers",
                        type(exc).__name__, first[0][:200] if first else "", what)

    def answered(self) -> None:
        if self.down_since is None:
            return
        now = utcnow()
        log.warning("database answered again after an outage of %.1f s (running jobs get "
                    "a full stale-heartbeat bound from now before any is taken for "
                    "silent)", (now - self.down_since).total_seconds())
        self.down_since = None
        self.last_seen_down = now

    def seen_down(self) -> dt.datetime:
        """The last time the database was seen down: now while it is (a round that gets
        through ends the outage now)."""
        return utcnow() if self.down_since is not None else self.last_seen_down


def dispatch_pending(settings: Settings, db_seen_down: dt.datetime | None = None) -> int:
    """Send again every job nobody will otherwise pick up; returns how many were sent.

    ``db_seen_down``: the last time the caller saw the database down; no running job is
    taken for silent until ``stale_heartbeat_s`` after it.
    """
    sender = CelerySender(settings)
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.stale_heartbeat_s)
    unclaimed = now - dt.timedelta(seconds=settings.resend_unclaimed_s)
    with session_scope(settings.database_url) as s:
        # Sweep trials are first sent by the sweep's scheduler, within max_parallel.
        never_sent = (Job.status == JobStatus.queued) & Job.dispatched_at.is_(None) & \
            Job.cancel_requested.is_(False) & Job.sweep_id.is_(None)
        waiting = (Job.status == JobStatus.queued) & (Job.dispatched_at < unclaimed) & \
            Job.trained_by.is_(None)
        wanted = never_sent | waiting
        if db_seen_down is None or as_utc(db_seen_down) < stale:
            wanted = wanted | ((Job.status == JobStatus.running) & (Job.heartbeat_at < stale))
        rows = s.execute(select(Job.id, Job.queue, Job.status, Job.sweep_id, Job.dispatched_at)
                         .where(wanted).order_by(Job.created_at)).all()
    lost = _lost(settings, [r for r in rows if r.dispatched_at is not None and
                            r.status == JobStatus.queued], now)
    sent = 0
    for job_id, queue, status, sweep_id, dispatched_at in rows:
        if status == JobStatus.running:
            if not lifecycle.requeue_stale(settings, job_id):
                continue  # its worker beat again in the meantime
            log.warning("job %s: its worker went silent; sending it again", job_id)
            if sweep_id:
                continue  # the scheduler sends it within the sweep's max_parallel
        elif dispatched_at is not None:
            if job_id not in lost:
                continue  # the broker still holds its message
            log.warning("job %s: sent %.0f s ago, unclaimed, and the broker holds no message "
                        "for it; sending it again", job_id, lost[job_id])
        if not lifecycle.dispatch(settings, sender, job_id, queue):
            break  # broker still down; try again next round
        sent += 1
    return sent


def _lost(settings: Settings, waiting: list, now: dt.datetime) -> dict[str, float]:
    """Of the queued jobs sent long ago, those the broker holds no message for, with the
    seconds since their last send; none when the broker cannot be read."""
    if not waiting:
        return {}
    held = held_job_ids(settings, {r.queue for r in waiting})
    if held is None:
        return {}
    return {r.id: (now - as_utc(r.dispatched_at)).total_seconds() for r in waiting
            if r.id not in held}


def send_reconcile(settings: Settings) -> bool:
    """Ask a worker to end the MLflow runs of ended jobs (:mod:`worker.jobs.reconcile`)."""
    if not settings.mlflow_logging:
        return False
    return CelerySender(settings).reconcile_runs()


def run_round(settings: Settings, reconcile: bool = False,
              outage: DatabaseOutage | None = None) -> None:
    """One round; ``outage`` (the thread's) judges silence and logs outages once."""
    outage = outage if outage is not None else DatabaseOutage(dt.datetime.min.replace(
        tzinfo=dt.timezone.utc))
    if reconcile:
        try:
            send_reconcile(settings)
        except Exception:
            log.warning("sending the MLflow reconcile task failed", exc_info=True)
    for what, step in (
            ("re-dispatching", lambda: dispatch_pending(settings, outage.seen_down())),
            ("advancing the sweeps", lambda: scheduler.tick(settings, CelerySender(settings)))):
        try:
            step()
        except Exception as exc:
            if is_outage(exc):
                outage.failed(what, exc)
                continue
            log.warning("%s failed", what, exc_info=True)
        else:
            outage.answered()


class BackgroundRounds(threading.Thread):
    """Runs :func:`run_round` every ``interval`` seconds until stopped."""

    def __init__(self, settings: Settings, interval: float):
        super().__init__(name="kerasyard-background", daemon=True)
        self.settings, self.interval = settings, interval
        self.stopped = threading.Event()
        self.outage = DatabaseOutage()

    def run(self) -> None:
        import time

        last_reconcile = time.monotonic()
        while not self.stopped.wait(self.interval):
            due = time.monotonic() - last_reconcile >= self.settings.reconcile_s
            if due:
                last_reconcile = time.monotonic()
            run_round(self.settings, reconcile=due, outage=self.outage)
