"""The only place the service talks to Celery: send_task by name, ids only, and a look into
the broker for the train messages it holds (:func:`held_job_ids`).

The service never imports worker/; tasks are addressed by their registered names. The
re-dispatcher that sends again later lives in :mod:`service.background`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator

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


# --- what the broker holds --------------------------------------------------------------------


def held_job_ids(settings: Settings, queues: Iterable[str]) -> set[str] | None:
    """The jobs whose ``worker.train`` message the broker holds: waiting in one of ``queues``,
    or (Redis) delivered to a worker and not acked yet.

    Redis: every priority list of each queue and the transport's ``unacked`` hash (a worker
    that took a message keeps it there until the task returns, ``task_acks_late``). The
    filesystem transport (the embedded stack): the queue folder's ``*.<queue>.msg`` files; a
    worker removes a file when it takes the message, moments before it claims the job.

    Args:
        settings (Settings): The broker.
        queues (Iterable[str]): The queues to look in.

    Returns:
        set[str] | None: Job ids; None when the broker could not be read (down, or a
        transport other than Redis and the filesystem).
    """
    queues = sorted(set(queues))
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
    if not redis_broker and not settings.broker_url.startswith("filesystem://"):
        return None
    try:
        with celery_for(settings).connection_for_read() as conn:
            ch = conn.default_channel
            payloads = list(_redis_messages(ch, queues) if redis_broker
                            else _folder_messages(ch, queues))
    except Exception as exc:
        log.warning("could not read the broker's queues %s: %s", ",".join(queues), exc)
        return None
    held = set()
    for payload in payloads:
        job_id = _train_job_id(ch, payload)
        if job_id is not None:
            held.add(job_id)
    return held


def _redis_messages(ch, queues: list[str]) -> Iterator[dict]:
    prefix = getattr(ch, "global_keyprefix", "") or ""
    with ch.conn_or_acquire() as client:
        keys = {ch._q_for_pri(q, pri) for q in queues for pri in ch.priority_steps}
        for key in sorted(keys):
            for raw in client.lrange(prefix + key, 0, -1):
                yield _json(raw)
        for raw in client.hvals(prefix + ch.unacked_key):  # [message, exchange, routing key]
            entry = _json(raw)
            if isinstance(entry, list) and entry:
                yield entry[0]


def _folder_messages(ch, queues: list[str]) -> Iterator[dict]:
    folder = ch.data_folder_in
    suffixes = tuple(f".{q}.msg" for q in queues)
    for name in os.listdir(folder):
        if not name.endswith(suffixes):
            continue
        try:
            with open(os.path.join(folder, name), "rb") as f:
                yield _json(f.read())
        except OSError:  # taken by a worker while we listed the folder
            continue


def _json(raw: bytes | str):
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _train_job_id(ch, payload) -> str | None:
    """The job id a ``worker.train`` message carries (Celery's message protocol 2: the body
    is ``[args, kwargs, embed]``); None for any other message."""
    if not isinstance(payload, dict):
        return None
    if (payload.get("headers") or {}).get("task") != TRAIN_TASK:
        return None
    try:
        body = ch.decode_body(payload["body"], (payload.get("properties") or {})
                              .get("body_encoding"))
        args = json.loads(body)[0]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return args[0] if args and isinstance(args[0], str) else None
