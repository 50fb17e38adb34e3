"""A stop with checkpoint in the worker (issue 20): the epoch callbacks stop at the epoch
boundary after ``stop_with_checkpoint`` is set (never at the last epoch, which ends the job),
a fenced write's PAUSE sets it, and the warm-shutdown signal sets it on the training of the
process that gets it."""

from __future__ import annotations

import os
import signal

import pytest

from service import jobspec as S
from service.worker_api import Ownership, SharedTrial
from tests.helpers import tiny_spec
from worker import shutdown
from worker.recording.reporter import Signals, epoch_callback
from worker.sweeps import pack as P
from worker.training import datasets as D
from worker.training import model as M
from worker.training import trainer as F

EPOCHS = 6


class _Reporter:
    """What the callbacks hand epochs to; sets the stop when ``stop_at`` is reached."""

    def __init__(self, signals: Signals, stop_at: int):
        self.signals, self.stop_at, self.epochs, self.got = signals, stop_at, EPOCHS, []

    def epoch(self, e, metrics):
        self.got.append(e)
        if e == self.stop_at:
            self.signals.stop_with_checkpoint.set()


def _prepared(epochs: int = EPOCHS):
    spec, plan = S.validate_job(tiny_spec("stop", epochs=epochs))
    data = D.build_dataset(spec, plan)
    model = M.build_model(spec, plan)
    M.compile_model(model, spec, plan, 1)
    return spec, plan, data, model, M.prepare_targets(data.y_train, spec, plan)


def _fit(model, spec, plan, data, y, callbacks):
    F.fit(model, data.x_train, y, batch_size=plan.batch_size, epochs=plan.epochs,
          steps_per_execution=1, seed=spec.fit.seed, shuffle=spec.fit.shuffle,
          callbacks=callbacks)


@pytest.mark.parametrize("stop_at,trained,stopped", [(2, 2, True), (EPOCHS, EPOCHS, False)])
def test_the_epoch_callback_stops_at_the_boundary_after_the_stop_but_not_at_the_end(
        stop_at, trained, stopped):
    signals = Signals()
    reporter = _Reporter(signals, stop_at)
    cb = epoch_callback(reporter, signals)
    spec, plan, data, model, y = _prepared()
    _fit(model, spec, plan, data, y, [cb])
    assert reporter.got == list(range(1, trained + 1))
    assert cb.stopped is stopped and not (cb.cancelled or cb.pruned or cb.superseded)


def test_the_pack_callback_stops_the_whole_pack_while_towers_are_left():
    signals = Signals()
    spec, plan, data, model, y = _prepared()
    other = tiny_spec("stop", epochs=EPOCHS)
    towers = [P.Tower(0, tiny_spec("stop", epochs=EPOCHS), [], EPOCHS),
              P.Tower(1, other, [SharedTrial(id="t1", name="1", spec=other, epochs=EPOCHS,
                                             number=1, params={})], EPOCHS)]
    for t in towers:
        t.spec, t.plan = spec, plan
        t.model = M.build_model(spec, plan)
        M.compile_model(t.model, spec, plan, 1)
    reporter = _Reporter(signals, 3)
    cb = P.pack_callback(towers, reporter, signals)
    pk = P.make_pack([t.model for t in towers], 1, (data.x_train[:16], y[:16]))
    _fit(pk, spec, plan, data, y, [cb])
    assert cb.stopped and reporter.got == [1, 2, 3]
    assert [len(t.history) for t in towers] == [3, 3] and towers[1].ended is None


def test_a_pause_answer_sets_the_stop():
    signals = Signals()
    signals.answer(Ownership.OWNED, "j")
    assert not signals.stop_with_checkpoint.is_set()
    signals.answer(Ownership.PAUSE, "j")
    assert signals.stop_with_checkpoint.is_set() and not signals.cancel.is_set()


def test_the_stop_signal_stops_the_training_of_this_process():
    before = signal.getsignal(shutdown.STOP_SIGNAL)
    try:
        shutdown.install_child_handler()
        training, idle = Signals(), Signals()
        with shutdown.training(training):
            os.kill(os.getpid(), shutdown.STOP_SIGNAL)
            assert training.stop_with_checkpoint.wait(5)
        assert shutdown.stop_requested()
        with shutdown.training(idle):  # asked before it began: it stops at once
            assert idle.stop_with_checkpoint.is_set()
    finally:
        signal.signal(shutdown.STOP_SIGNAL, before)
        shutdown._requested.clear()
