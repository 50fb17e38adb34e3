"""The only place the service talks to Celery: send_task by name, ids only.

The service never imports worker/; tasks are addressed by their registered names. Sending is
all this module does: the re-dispatcher that calls it again later lives in
:mod:`service.background`.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from service.config import Settings, celery_config

log = logging.getLogger(__name__)

TRAIN_TASK = "worker.train"
SWEEP_REPORT_TASK = "worker.sweep_report"
RECONCILE_TASK = "worker.reconcile_runs"
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
# kombu's Redis sockets wait for ever by default: a broker that accepts the connection and
# then hangs would block POST /jobs after its commit, and the background thread for good.
SENDER_SOCKET_TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 5,
                          "socket_keepalive": True}
_apps: dict[str, Celery] = {}  # one sender app per broker
_lock = threading.Lock()


def celery_for(settings: Settings) -> Celery:
    # The filesystem transport's folders come from the data dir, so it is part of the key.
    key = f"{settings.broker_url}|{settings.broker_data_dir}"
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = Celery("kerasyard-service")
            conf = celery_config(settings)
            if settings.broker_url.startswith(("redis://", "rediss://")):
                conf["broker_transport_options"] = {**conf["broker_transport_options"],
                                                    **SENDER_SOCKET_TIMEOUTS}
            conf["broker_connection_timeout"] = 5
            app.conf.update(conf)
            _apps[key] = app
        return app


class CelerySender:
    """Sends the worker's tasks; False (logged) when the broker is unreachable, so the caller
    leaves the job for the re-dispatcher. Also what the sweep scheduler sends with."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def _send(self, task: str, arg: str | None, queue: str) -> bool:
        try:
            celery_for(self.settings).send_task(task, args=[] if arg is None else [arg],
                                                queue=queue, retry=True,
                                                retry_policy=RETRY_POLICY)
            return True
        except Exception as exc:
            log.warning("broker unreachable, %s(%s) is sent again later: %s", task, arg, exc)
            return False

    def train(self, job_id: str, queue: str) -> bool:
        """Publish a job id; call only after the job row is committed."""
        return self._send(TRAIN_TASK, job_id, queue)

    def report(self, sweep_id: str) -> bool:
        """Ask a worker to write the sweep's report into its MLflow parent run."""
        return self._send(SWEEP_REPORT_TASK, sweep_id, self.settings.default_queue)

    def reconcile_runs(self) -> bool:
        """Ask a worker to end the MLflow runs left RUNNING by jobs that have ended."""
        return self._send(RECONCILE_TASK, None, self.settings.default_queue)


def broker_ok(settings: Settings) -> tuple[bool, str]:
    try:
        with celery_for(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
