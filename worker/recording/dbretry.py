"""Retrying a database call that failed on its connection.

A database that restarts, or a network cut between a worker and it, makes every call raise
(``OperationalError`` "connection refused", "server closed the connection unexpectedly",
``InterfaceError`` on a dead connection). Those calls are retried with backoff for
``settings.db_retry_s``; any other error (a constraint, a bug) is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from service.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.5
MAX_WAIT_S = 5.0


def is_transient(exc: BaseException) -> bool:
    """A failure of the connection, not of the statement: worth trying again."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                        sa_exc.TimeoutError)):  # TimeoutError: no pooled connection came back
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def retry_db(settings: Settings, what: str, call: Callable[[], T],
             budget_s: float | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()`` until it returns, retrying transient database errors with backoff
    (0.5 s doubling up to 5 s) for ``budget_s`` (default ``settings.db_retry_s``); the last
    transient error is raised when the time is up."""
    budget = settings.db_retry_s if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    wait, tries = FIRST_WAIT_S, 0
    while True:
        try:
            result = call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("%s: the database did not answer for %.0f s (%d tries); giving up: %s",
                          what, budget, tries, _short(exc))
                raise
            # One line per try (the first with the traceback): an outage is visible in the log
            # without burying it.
            log.warning("%s: database unavailable (%s); retry %d in %.1f s", what, _short(exc),
                        tries, min(wait, left), exc_info=tries == 1)
            sleep(min(wait, left))
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        if tries:
            log.info("%s: the database answered again after %d failed tries", what, tries)
        return result


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
