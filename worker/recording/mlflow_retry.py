"""Bounded retries for the MLflow calls a run cannot do without.

At the start of a run (experiment, sweep parent run, the run and its params) and at its end
(the last metrics, artifacts, model, end status) an MLflow that does not answer delays the
job: each step is retried with backoff for up to ``Settings.mlflow_retry_s`` seconds in all,
then the job fails with :class:`MlflowUnavailable`, whose message names MLflow's URL (without
credentials) and what was being done. Every step retried here is idempotent (the run is
looked up by its job id and attempt before another is created; artifacts go to the same
paths). Outages during fit never come here: the reporter keeps the epochs for its next flush.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from service.config import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 1.0
MAX_WAIT_S = 15.0


class MlflowUnavailable(Exception):
    """MLflow did not answer within the retry bound; the message says where and doing what."""


def _permanent(exc: BaseException) -> bool:
    """An answer MLflow gave (bad request, not found, forbidden): retrying changes nothing."""
    code = getattr(exc, "error_code", None)
    if code is None:
        return False
    return code not in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                        "ENDPOINT_NOT_FOUND")  # ENDPOINT_NOT_FOUND: a proxy in front, restarting


class Deadline:
    """One retry budget, shared by the steps of a stage (start, or end)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = seconds, clock
        self.until = clock() + seconds

    def left(self) -> float:
        return self.until - self.clock()


def retry(fn: Callable[[], T], what: str, tracking_uri: str, deadline: Deadline,
          sleep: Callable[[float], None] = time.sleep,
          stop: Callable[[], bool] | None = None) -> T:
    """``fn()`` until it answers, backing off 1, 2, 4 ... 15 s, while ``deadline`` lasts.

    Raises :class:`MlflowUnavailable` (from the last error) after the deadline; an error MLflow
    answered with on purpose (4xx) is raised at once. ``stop()`` true ends the retries early
    (the attempt was superseded).
    """
    wait, tries = FIRST_WAIT_S, 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as exc:
            if _permanent(exc):
                raise
            left = deadline.left()
            if left <= 0 or (stop is not None and stop()):
                raise MlflowUnavailable(
                    f"MLflow at {redact_url(tracking_uri)} did not answer while {what}: tried "
                    f"{tries} times over {deadline.seconds:g} s (KERASYARD_MLFLOW_RETRY_S); "
                    f"last error: {type(exc).__name__}: {str(exc)[:300]}") from exc
            log.warning("MLflow did not answer while %s (%s: %s); retrying in %.0f s (%.0f s "
                        "left)", what, type(exc).__name__, str(exc)[:200], min(wait, left), left)
            sleep(min(wait, max(left, 0.0)))
            wait = min(wait * 2, MAX_WAIT_S)
