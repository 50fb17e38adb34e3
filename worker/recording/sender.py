"""The worker's own :class:`service.worker_api.Sender`: tasks by name through the worker's
Celery app (the service's sender is not the worker's to import).

Besides what the sweep scheduler sends with it (trials to train, a sweep's report), the
worker sends ``worker.advance_sweep`` when a trial ends: the scheduler runs in that task,
not in the training child.
"""

from __future__ import annotations

import logging

from service.config import Settings

log = logging.getLogger(__name__)

TRAIN_TASK = "worker.train"
SWEEP_REPORT_TASK = "worker.sweep_report"
ADVANCE_SWEEP_TASK = "worker.advance_sweep"
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}


class WorkerSender:
    """Sends by id; False (logged) when the broker cannot be reached, leaving the job queued
    for the API's background round."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def _send(self, task: str, arg: str, queue: str) -> bool:
        from worker.celery_app import app

        try:
            app.send_task(task, args=[arg], queue=queue, retry=True, retry_policy=RETRY_POLICY)
            return True
        except Exception as exc:
            log.warning("broker unreachable; %s(%s) is sent again later: %s", task, arg, exc)
            return False

    def train(self, job_id: str, queue: str) -> bool:
        return self._send(TRAIN_TASK, job_id, queue)

    def report(self, sweep_id: str) -> bool:
        return self._send(SWEEP_REPORT_TASK, sweep_id, self.settings.default_queue)

    def advance_sweep(self, sweep_id: str, queue: str | None) -> bool:
        """After a trial ended: tell Optuna, start the next trials, end the sweep when it is
        done, in a task of its own on ``queue`` (the queue the trial's job ran on, so the
        worker it just freed picks it up). False (logged) when the broker cannot be
        reached: the API's background round advances the sweep instead."""
        return self._send(ADVANCE_SWEEP_TASK, sweep_id, queue or self.settings.default_queue)
