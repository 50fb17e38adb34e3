"""A worker's row in the ``workers`` table: its queues, the queues it refused (and why) and its
device, written by the Celery parent at start and every WORKER_HEARTBEAT_S, deleted at a
clean stop (:func:`service.worker_api.publish_worker`, ``withdraw_worker``).
The API's /health lists the rows seen within LIVE_S (service/api/health.py)."""

from __future__ import annotations

import logging
import os
import threading

from service import worker_api as api
from service.config import Settings

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, settings: Settings, hostname: str, queues: list[str],
                 refused: dict[str, str], device: str | None, backend: str):
        self.settings, self.hostname = settings, hostname
        self.queues, self.refused, self.device, self.backend = queues, refused, device, backend
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def write(self) -> None:
        try:
            api.publish_worker(self.settings, self.hostname, queues=self.queues,
                               refused=self.refused, device=self.device,
                               keras_backend=self.backend, pid=os.getpid())
            self._warned = False
        except Exception as exc:  # a database not migrated yet, or down: say so once
            if not self._warned:
                log.warning("could not publish worker %s in the workers table: %s",
                            self.hostname, type(exc).__name__)
                self._warned = True

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._loop, name="kerasyard-presence",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(api.WORKER_HEARTBEAT_S):
            self.write()

    def stop(self) -> None:
        self._stop.set()
        try:
            api.withdraw_worker(self.settings, self.hostname, os.getpid())
        except Exception as exc:
            log.warning("could not remove worker %s from the workers table: %s", self.hostname,
                        type(exc).__name__)

