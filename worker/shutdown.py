"""A worker asked to stop checkpoints its training first, and its job goes on elsewhere.

``docker compose stop`` or ``up`` with a new image, systemd and ``kill`` send the worker's
main process SIGTERM: Celery's warm shutdown, which takes no new task and waits for the
running ones. The training runs in a pool child, which Celery does not tell. So:

- :func:`forward_to_children` (Celery's ``worker_shutting_down``, in the main process, on a
  warm shutdown) sends each pool child :data:`STOP_SIGNAL`;
- the child's handler (:func:`install_child_handler`, at ``worker_process_init``) sets
  ``stop_with_checkpoint`` on the job it trains (:func:`training`): the training stops at its
  next epoch boundary with a checkpoint, the attempt ends through
  :func:`service.worker_api.stop` (the job back to ``queued``, not counted as a lost
  attempt; ``paused`` instead when a pause was asked for meanwhile), the worker sends the id
  again for the next worker, and the task returns, so the warm shutdown ends.

A child asked to stop between jobs stops its next one at the first epoch boundary (a warm
shutdown starts none). SIGTERM itself is left to Celery: a child that gets it (a cold
shutdown, a signal to the whole process group) dies as before, and the job is retried by the
next claim. The worker's grace period (Compose's ``stop_grace_period``) must cover an epoch,
the checkpoint and the last writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

# Not SIGTERM (Celery's own for its children) nor SIGUSR1 (Celery resets it in the children).
STOP_SIGNAL = signal.SIGUSR2

_requested = threading.Event()  # this child was asked to stop
_training: list = []  # the Signals of the job this child trains (at most one)


def install_child_handler() -> None:
    """In a pool child (its main thread): :data:`STOP_SIGNAL` stops its training."""
    _requested.clear()
    signal.signal(STOP_SIGNAL, _on_stop)


def _on_stop(signum, frame) -> None:
    _requested.set()
    for signals in list(_training):
        signals.stop_with_checkpoint.set()


@contextlib.contextmanager
def training(signals):
    """While a job trains in this process: a stop request sets its ``stop_with_checkpoint``
    (at once when one came before it started)."""
    _training.append(signals)
    if _requested.is_set():
        signals.stop_with_checkpoint.set()
    try:
        yield
    finally:
        _training.remove(signals)


def stop_requested() -> bool:
    """Whether this process was asked to stop (a child of a worker shutting down)."""
    return _requested.is_set()


def pool_pids(controller) -> list[int]:
    """The pids of a Celery worker's pool children (``controller``: its WorkController);
    empty when it has no prefork pool (a solo or threads pool trains in the main process)."""
    pool = getattr(controller, "pool", None)
    try:
        return [int(p) for p in (pool.info or {}).get("processes", []) if p]
    except Exception:
        return []


def forward_to_children(controller) -> int:
    """A warm shutdown began: ask every pool child to stop its training (and this process's
    own, with a pool that trains in the main process). Returns how many children were
    asked."""
    _on_stop(STOP_SIGNAL, None)
    asked = 0
    for pid in pool_pids(controller):
        try:
            os.kill(pid, STOP_SIGNAL)
            asked += 1
        except ProcessLookupError:
            continue
    log.warning("warm shutdown: %d training process%s asked to stop at the next epoch "
                "boundary; their jobs go back to the queue", asked, "" if asked == 1 else "es")
    return asked
