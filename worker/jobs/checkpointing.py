"""Checkpoints while a job trains: every ``KERASYARD_CHECKPOINT_S`` seconds at an epoch
boundary, and on request (:func:`checkpoint_and_stop`: save at the next boundary and stop).

:func:`checkpoint_callback` is the last of fit's callbacks, so it sees every other callback's
state after the epoch (early stopping's counters included). At a boundary where training goes
on, when a checkpoint is due, it

1. flushes the reporter, so the database has every epoch up to this one (a checkpoint never
   stands for epochs the history lacks; with the database not answering there is no
   checkpoint this time),
2. takes the trainer's state (:meth:`worker.jobs.trainers.JobTrainer.state`,
   :mod:`worker.training.checkpoint`), and
3. stores it as the job's newest checkpoint, fenced on the claim
   (:func:`service.worker_api.save_checkpoint`): a superseded worker stores nothing.

All of it runs in the training thread, between two epochs: nothing moves while the state is
read. The next one is due ``KERASYARD_CHECKPOINT_S`` later, or :data:`MAX_DUTY` worth of the
time the last one took, whichever is longer: checkpoints cost at most 2 % of fit.

The next attempt of the job goes on from the checkpoint (:meth:`worker.jobs.run.JobRun._train`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service import worker_api as api
from service.worker_api import Ownership
from worker.recording.reporter import Signals
from worker.training import checkpoint as C

log = logging.getLogger(__name__)

MAX_DUTY = 0.02  # the largest share of fit's wall clock checkpoints may take

_current: list[Signals] = []  # the training running in this process (one at a time)
_current_lock = threading.Lock()


def checkpoint_and_stop() -> bool:
    """Ask the training running in this process to save a checkpoint at its next epoch
    boundary and stop there (sets its ``stop_with_checkpoint``; safe from a signal handler:
    it waits for nothing). After fit, the epoch callback's ``checkpointed_epoch`` says where
    it stopped. Returns False when no training is running here."""
    with _current_lock:
        for signals in _current:
            signals.stop_with_checkpoint.set()
        return bool(_current)


class Running:
    """``with Running(signals):`` marks a training as this process's current one."""

    def __init__(self, signals: Signals):
        self.signals = signals

    def __enter__(self):
        with _current_lock:
            _current.append(self.signals)
        return self

    def __exit__(self, *exc) -> None:
        with _current_lock:
            _current.remove(self.signals)


class CheckpointTimer:
    """What the checkpoint callback does, Keras aside: when one is due, saving it, counting.
    ``saved`` counts the checkpoints stored, ``seconds`` their time, ``last_epoch`` and
    ``last_size`` the newest one's epoch and bytes."""

    def __init__(self, trainer, epochs: int, interval_s: float,
                 save: Callable[[int, bytes], Ownership], clock: Callable[[], float]):
        self.trainer, self.epochs, self.interval_s = trainer, epochs, interval_s
        self.save, self.clock = save, clock
        self.saved, self.seconds = 0, 0.0
        self.last_epoch: int | None = None
        self.last_size: int | None = None
        self._due = self._t0 = clock() + interval_s
        self._failing = False

    def train_begins(self) -> None:
        # After every other callback's on_train_begin, which resets their state.
        self.trainer.after_train_begin()
        self._t0 = self.clock()
        self._due = self._t0 + self.interval_s

    def epoch_ends(self, e: int, stopping: bool) -> bool:
        """At the end of epoch ``e`` (``stopping``: training stops there anyway): saves a
        checkpoint when one is due or asked for; True when training should stop now."""
        signals = self.trainer.signals
        if signals.superseded.is_set() or stopping or e >= self.epochs:
            return False  # training ends here anyway: nothing to go on from
        stop = signals.stop_with_checkpoint.is_set()
        if not stop and self.clock() < self._due:
            return False
        if self._save(e) and stop:
            self.trainer.callback.checkpointed_epoch = e
            return True
        return False

    def _save(self, e: int) -> bool:
        t0 = self.clock()
        try:
            ok = self._store(e)
        except Exception as exc:
            log.log(logging.DEBUG if self._failing else logging.WARNING,
                    "checkpoint of job %s at epoch %d failed; training goes on: %s",
                    self.trainer.job_id, e, type(exc).__name__, exc_info=not self._failing)
            self._failing, ok = True, False
        took = self.clock() - t0
        self._due = self.clock() + max(self.interval_s, took / MAX_DUTY)
        if ok:
            self._failing = False
            self.saved, self.seconds, self.last_epoch = self.saved + 1, self.seconds + took, e
        return ok

    def _store(self, e: int) -> bool:
        trainer = self.trainer
        trainer.reporter.flush()
        if trainer.reporter.db_pending():
            raise ConnectionError(f"{trainer.reporter.db_pending()} epochs are not in the "
                                  "database yet")
        blob = C.to_bytes(trainer.state(e, self.clock() - self._t0))
        answer = self.save(e, blob)
        trainer.signals.answer(answer, trainer.job_id)
        if answer is Ownership.SUPERSEDED:
            return False
        self.last_size = len(blob)
        return True


def checkpoint_callback(trainer, epochs: int, interval_s: float,
                        save: Callable[[int, bytes], Ownership] | None = None,
                        clock: Callable[[], float] = time.monotonic):
    """The callback (see the module's doc, and :class:`CheckpointTimer` for its counters)
    for ``trainer`` (a :class:`~worker.jobs.trainers.JobTrainer`, built) training to
    ``epochs``. ``save(epoch, state)`` stores a checkpoint (default:
    :func:`service.worker_api.save_checkpoint` on the trainer's claim)."""
    import keras

    if save is None:
        def save(epoch: int, state: bytes) -> Ownership:
            return api.save_checkpoint(trainer.settings, trainer.fence, epoch, state)

    class Checkpointer(CheckpointTimer, keras.callbacks.Callback):
        def __init__(self):
            keras.callbacks.Callback.__init__(self)
            CheckpointTimer.__init__(self, trainer, epochs, interval_s, save, clock)

        def on_train_begin(self, logs=None):
            self.train_begins()

        def on_epoch_end(self, epoch, logs=None):
            # A stop asked for (a pause, a shutdown: the callback's ``stopped``) is the one
            # stop that still saves: the next attempt goes on from here.
            stopping = self.model.stop_training and not getattr(trainer.callback, "stopped",
                                                                  False)
            if self.epoch_ends(epoch + 1, stopping):
                self.model.stop_training = True

    return Checkpointer()
