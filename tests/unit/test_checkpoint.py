"""Checkpoints and resume (worker/training/checkpoint.py, worker/jobs/checkpointing.py, the
trainers' state and restore): a training stopped at an epoch with a checkpoint and resumed
from it in a new trainer ends bit for bit where an uninterrupted one ends: every epoch's
metrics (not epoch_time_s) and the final weights.

Real parts on a throwaway SQLite database: the job rows, the claim (a second claim by this
process takes the job over, as after a lost worker), the fenced checkpoint write and read,
the reporter's epoch rows. MLflow is off (tests/integration/test_resume.py has it). A
training is stopped through ``stop_with_checkpoint`` at the epoch the test names, as a pause
or a SIGTERM stops it; tests/integration/test_resume.py SIGKILLs training processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from service import worker_api as api
from service.config import Settings
from service.jobspec import validate_job
from service.migrate import upgrade
from service.store.db import session_scope
from service.store.models import Checkpoint, Job, JobEpoch, JobStatus
from tests.helpers import ROOT, lecture_spec, tiny_spec
from worker.jobs import checkpointing
from worker.jobs.packed import PackTrainer
from worker.jobs.single import SingleTrainer
from worker.jobs.trainers import prepare
from worker.recording.reporter import Reporter, Signals
from worker.sweeps import pack as P
from worker.training import checkpoint as C
from worker.training import datasets as D

TF = keras.backend.backend() == "tensorflow"


@pytest.fixture()
def settings(tmp_path) -> Settings:
    s = dataclasses.replace(
        Settings.from_env(), data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'k.db'}",
        broker_url="memory://", mlflow_logging=False, checkpoint_s=1e9, api_token=None)
    upgrade(s.database_url)
    return s


def stored(settings: Settings, spec: dict) -> str:
    """A new job row of ``spec``, as POST /jobs stores it (not sent anywhere)."""
    parsed, plan = validate_job(spec)
    with session_scope(settings.database_url) as s:
        job = Job(name=parsed.name, experiment=parsed.experiment,
                  spec=parsed.model_dump(mode="json"), plan=plan.as_dict(), queue="cpu")
        s.add(job)
    return job.id


def claimed(settings: Settings, spec: dict, job_id: str | None = None):
    """A claim of a new job row of ``spec`` (or a new claim of ``job_id``: this process's
    earlier claim counts as a lost worker's, so it is a takeover)."""
    got = api.claim(settings, job_id or stored(settings, spec))
    assert isinstance(got, api.Claim), got
    return got


def stop_at(signals: Signals, epoch: int):
    """Asks for a checkpoint and a stop at the end of ``epoch`` (as a pause does)."""
    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, e, logs=None):
            if e + 1 == epoch:
                signals.stop_with_checkpoint.set()

    return Stop()


def train(settings: Settings, got, ctx=None, stop: int | None = None, resume: bool = False):
    """One attempt of the claimed job, as JobRun trains it (without MLflow): the trainer built,
    restored from the job's checkpoint when ``resume``, fit; stopped with a checkpoint at the
    end of epoch ``stop`` when given."""
    signals = Signals()
    reporter = Reporter(settings, got.fence, 0, signals)
    job = prepare(settings, got.spec)
    reporter.epochs = job.plan.epochs
    packs = ctx is not None and P.is_pack(job.raw, ctx.shared)
    trainer = (PackTrainer if packs else SingleTrainer)(settings, got.fence, ctx, reporter,
                                                        signals, job)
    trainer.build()
    if stop is not None:
        trainer.callbacks.insert(len(trainer.callbacks) - 1, stop_at(signals, stop))
    if resume:
        stored = api.load_checkpoint(settings, got.fence)
        trainer.restore(C.from_bytes(stored.state))
        reporter.resumed(trainer.history(), trainer.fit_time_before)
    trainer.fit()
    reporter.flush(final=True)
    return trainer


def same_metrics(a: list[dict], b: list[dict]) -> None:
    drop = ("epoch_time_s",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in a] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b]


def same_weights(a, b) -> None:
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))


def cut_and_resumed(settings: Settings, spec: dict, stop: int, ctx=None):
    """(uncut trainer, stopped trainer, resumed trainer, the job's claim of attempt 2)."""
    uncut = train(settings, claimed(settings, spec), ctx)
    first = claimed(settings, spec)
    stopped = train(settings, first, ctx, stop=stop)
    assert stopped.callback.checkpointed_epoch == stop
    again = claimed(settings, spec, first.fence.job_id)
    assert again.fence.attempt == 2 and again.resumed_from_epoch == stop
    resumed = train(settings, again, ctx, resume=True)
    return uncut, stopped, resumed, again


def spec_of(epochs=5, batch_size=8, optimizer="sgd", dropout=0.0, batchnorm=False, **fit):
    spec = lecture_spec(epochs=epochs, batch_size=batch_size, validation_split=0.2, **fit)
    spec["dataset"]["n_samples"] = 61  # 48 training rows: a short last batch for most sizes
    spec["compile"]["optimizer"] = {"name": optimizer, "learning_rate": 0.05}
    if dropout:
        spec["model"]["layers"].insert(1, {"type": "dropout", "rate": dropout})
    if batchnorm:
        spec["model"]["layers"].insert(1, {"type": "batch_normalization"})
    return spec


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
@pytest.mark.parametrize("spec,stop", [
    (spec_of(batch_size=1), 2),                                        # SGD, one execution
    (spec_of(optimizer="adam", dropout=0.3), 3),                       # Adam's slots, dropout
    (spec_of(optimizer="rmsprop", batchnorm=True, steps_per_execution=2), 1),  # moving stats
    (spec_of(optimizer="adamw", dropout=0.5, shuffle=False), 4),       # rows as they are
])
def test_a_resumed_training_ends_where_the_uncut_one_ends(settings, spec, stop):
    uncut, stopped, resumed, again = cut_and_resumed(settings, spec, stop)
    assert len(stopped.callback.history) == stop
    same_metrics(resumed.callback.history, uncut.callback.history)
    same_weights(resumed.model, uncut.model)
    assert [keras.ops.convert_to_numpy(v).tolist() for v in resumed.model.optimizer.variables] \
        == [keras.ops.convert_to_numpy(v).tolist() for v in uncut.model.optimizer.variables]
    # The database: every epoch once, the resumed attempt's; the job says where it went on.
    with session_scope(settings.database_url) as s:
        rows = s.query(JobEpoch).filter_by(job_id=again.fence.job_id).order_by(JobEpoch.epoch)
        assert [r.epoch for r in rows] == list(range(1, spec["fit"]["epochs"] + 1))
        job = s.get(Job, again.fence.job_id)
        assert (job.resumed_from_epoch, job.attempts) == (stop, 2)
        assert s.get(Checkpoint, again.fence.job_id).epoch == stop


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
def test_early_stopping_resumes_with_its_patience_and_best_weights(settings):
    """A job with early stopping (restore_best_weights) cut before it stops: the resumed one
    stops at the same epoch with the same restored weights."""
    spec = spec_of(epochs=40, optimizer="sgd")
    spec["compile"]["optimizer"]["learning_rate"] = 0.9  # noisy: val_loss goes up and down
    spec["fit"]["early_stopping"] = {"monitor": "val_loss", "patience": 2,
                                     "restore_best_weights": True}
    uncut = train(settings, claimed(settings, spec))
    n = len(uncut.callback.history)
    assert 4 <= n < 40, n  # it did stop early, after a few epochs
    uncut_es = uncut.early_stopping
    for stop in (n - 2, n - 1):  # with patience spent in part, and one epoch before the end
        _, _, resumed, _ = cut_and_resumed(settings, spec, stop)
        same_metrics(resumed.callback.history, uncut.callback.history)
        same_weights(resumed.model, uncut.model)
        assert (resumed.early_stopping.stopped_epoch, resumed.early_stopping.best_epoch) == \
            (uncut_es.stopped_epoch, uncut_es.best_epoch)


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
def test_model_fit_path_resumes_exactly(settings, monkeypatch):
    """The path that keeps Model.fit on TensorFlow (data too big to hold in the graph):
    initial_epoch and the data order from the checkpoint, through Keras's input pipeline."""
    monkeypatch.setattr("worker.training.trainer.IN_GRAPH_DATA_MAX", 0)
    uncut, _, resumed, _ = cut_and_resumed(settings, spec_of(optimizer="adam", dropout=0.3), 2)
    same_metrics(resumed.callback.history, uncut.callback.history)
    same_weights(resumed.model, uncut.model)


def _ctx(trials: list[dict], epochs: list[int]) -> api.TrialContext:
    shared = [api.SharedTrial(id=f"trial-{i}", name=f"trial-{i}", spec=t, epochs=e, number=i,
                              params={}) for i, (t, e) in enumerate(zip(trials, epochs), 1)]
    return api.TrialContext(sweep_id="s", sweep_name="s", study_name="s",
                            sweep_spec={"early_stopping": None}, number=0, repeat=0,
                            params={}, optuna_trial_id=0, shared=shared)


def _stored(spec: dict) -> dict:
    """A spec as the database stores it (every default filled in), as a trial's is."""
    return validate_job(spec)[0].model_dump(mode="json")


def _with_epochs(spec: dict, epochs: int) -> dict:
    return _stored({**spec, "fit": {**spec["fit"], "epochs": epochs}})


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
def test_a_training_that_carries_shorter_trials_resumes_with_their_saved_models(settings):
    """The models saved at the carried trials' epochs before the checkpoint come back from it
    (the killed process's files are gone); those after it are saved by the resumed one."""
    spec = spec_of(epochs=6, optimizer="adam", dropout=0.2)
    ctx = _ctx([_with_epochs(spec, 2), _with_epochs(spec, 5)], [2, 5])
    uncut, stopped, resumed, _ = cut_and_resumed(settings, spec, 3, ctx)
    assert set(stopped.callback.saved) == {2}
    same_metrics(resumed.callback.history, uncut.callback.history)
    same_weights(resumed.model, uncut.model)
    assert set(resumed.callback.saved) == set(uncut.callback.saved) == {2, 5}
    for e in (2, 5):
        a, b = (keras.models.load_model(t.callback.saved[e]) for t in (resumed, uncut))
        same_weights(a, b)
    for t in (uncut, stopped, resumed):
        t.close()


@pytest.mark.skipif(not TF, reason="towers pack on TensorFlow")
def test_a_pack_resumes_as_a_whole_with_a_tower_that_left_it(settings):
    """A pack of three towers (SGD, Adam with dropout, one whose trial ends at epoch 2 and
    leaves the pack): cut at epoch 3, each tower ends as in the uncut pack."""
    spec = spec_of(epochs=5, batch_size=8)
    adam = spec_of(epochs=5, batch_size=8, optimizer="adam", dropout=0.3)
    short = spec_of(epochs=2, batch_size=8)
    short["model"]["layers"][0]["units"] = 16
    ctx = _ctx([_stored(adam), _stored(short)], [5, 2])
    uncut, stopped, resumed, _ = cut_and_resumed(settings, spec, 3, ctx)
    assert stopped.pack is not None and stopped.pack.active == [0, 1]
    assert resumed.pack.active == uncut.pack.active == [0, 1]
    for a, b in zip(resumed.towers, uncut.towers):
        same_metrics(a.history, b.history)
        same_weights(a.model, b.model)
        assert (a.ended, a.ended_at, set(a.saved)) == (b.ended, b.ended_at, set(b.saved))
    assert len(resumed.towers[2].history) == 2
    for t in (uncut, stopped, resumed):
        t.close()


def test_the_state_bytes_round_trip_and_refuse_another_format(monkeypatch):
    state = C.State(7, {"orders": {"a": 2 ** 100}, "x": [1.5, None]},
                    {"m/0": np.arange(6, dtype=np.float32).reshape(2, 3),
                     "s/2": np.frombuffer(b"zip bytes", dtype=np.uint8)})
    back = C.from_bytes(C.to_bytes(state))
    assert (back.epoch, back.meta) == (7, state.meta)
    assert set(back.arrays) == set(state.arrays)
    assert all(np.array_equal(back.arrays[k], v) and back.arrays[k].dtype == v.dtype
               for k, v in state.arrays.items())
    monkeypatch.setattr(C, "FORMAT", 9)
    other = C.to_bytes(state)
    monkeypatch.undo()
    with pytest.raises(C.CheckpointMismatch, match="format 9, not 1"):
        C.from_bytes(other)


def test_history_round_trips_exactly_with_missing_and_non_finite_values():
    history = [{"loss": 0.1 + 1e-17, "accuracy": 0.5}, {"loss": float("inf")},
               {"loss": float("nan"), "accuracy": 1 / 3, "val_loss": 2.0}]
    meta, arrays = C.history_state(history, "h")
    back = C.restore_history(meta, arrays, "h")
    assert [list(h) for h in back] == [list(h) for h in history]
    assert back[0] == history[0] and back[1] == history[1]
    assert np.isnan(back[2]["loss"]) and back[2]["accuracy"] == 1 / 3
    assert C.restore_history(*C.history_state([], "h"), "h") == []


def test_epoch_orders_go_on_from_a_stored_position_even_when_read_ahead():
    whole = D.EpochOrders(50, seed=4)
    expected = [next(whole) for _ in range(8)]
    cut = D.EpochOrders(50, seed=4)
    for _ in range(5):
        next(cut)  # a prefetching pipeline has drawn epochs 0..4 (0-based) ...
    stored = json.loads(json.dumps(cut.state_before(3)))  # ... the checkpoint is after 3
    again = D.EpochOrders(50, seed=4, state=stored, start=3)
    assert all(np.array_equal(a, b) for a, b in zip([next(again) for _ in range(5)],
                                                    expected[3:]))
    assert again.drawn == 8
    flat = D.EpochOrders(5, seed=4, shuffle=False)
    assert np.array_equal(next(flat), np.arange(5))


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
def test_a_checkpoint_that_does_not_fit_the_model_changes_nothing(settings):
    spec = spec_of(epochs=3)
    first = claimed(settings, spec)
    train(settings, first, stop=1)
    state = C.from_bytes(api.load_checkpoint(settings, first.fence).state)
    wider = spec_of(epochs=3)
    wider["model"]["layers"][0]["units"] = 65
    other = train(settings, claimed(settings, wider), stop=1)
    before = [v.copy() for v in other.model.get_weights()]
    with pytest.raises(C.CheckpointMismatch, match="is \\(50, 65\\), the checkpoint's"):
        other.restore(state)
    same_weights(other.model, other.model)
    assert all(np.array_equal(a, b) for a, b in zip(before, other.model.get_weights()))
    assert other.start_epoch == 0


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
def test_checkpoints_come_every_interval_and_back_off_when_slow(settings):
    """The periodic checkpoint: none before the interval, then one per interval; one that
    took longer than 2 % of the interval moves the next one out (MAX_DUTY)."""
    got = claimed(settings, tiny_spec("periodic", epochs=12))
    signals = Signals()
    reporter = Reporter(settings, got.fence, 12, signals)
    job = prepare(settings, got.spec)
    trainer = SingleTrainer(settings, got.fence, None, reporter, signals, job)
    trainer.build()
    now = [0.0]
    saves: list[tuple[int, float]] = []

    def save(epoch, blob):
        saves.append((epoch, now[0]))
        now[0] += 0.5 if epoch == 6 else 0.01  # the checkpoint at epoch 6 takes 0.5 s
        return api.save_checkpoint(settings, got.fence, epoch, blob)

    class Tick(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            now[0] += 1.0  # an epoch takes a second

    ckpt = checkpointing.checkpoint_callback(trainer, 12, 2.5, save=save, clock=lambda: now[0])
    trainer.callbacks[-1:] = [Tick(), ckpt]
    trainer.fit()
    # due at 2.5 (epoch 3), 5.5 (epoch 6: took 0.5 s -> next in 25 s), none after
    assert [e for e, _ in saves] == [3, 6]
    assert (ckpt.saved, ckpt.last_epoch) == (2, 6) and ckpt.last_size > 1000
    with session_scope(settings.database_url) as s:
        row = s.get(Checkpoint, got.fence.job_id)
        assert (row.epoch, row.attempt, row.size_bytes) == (6, 1, len(row.state))


def test_a_superseded_attempt_cannot_overwrite_the_checkpoint(settings):
    first = claimed(settings, tiny_spec("fenced"))
    assert api.save_checkpoint(settings, first.fence, 2, b"first") is api.OWNED
    second = claimed(settings, tiny_spec("fenced"), first.fence.job_id)  # takes it over
    assert second.resumed_from_epoch == 2
    assert api.save_checkpoint(settings, first.fence, 3, b"stale") is api.SUPERSEDED
    stored = api.load_checkpoint(settings, second.fence)
    assert (stored.epoch, stored.state, stored.attempt) == (2, b"first", 1)
    assert api.load_checkpoint(settings, first.fence) is None
    assert api.save_checkpoint(settings, second.fence, 4, b"second") is api.OWNED
    assert api.load_checkpoint(settings, second.fence).state == b"second"
    # The job ends: its checkpoint goes with it.
    assert api.finish(settings, second.fence, JobStatus.succeeded) is api.OWNED
    with session_scope(settings.database_url) as s:
        assert s.get(Checkpoint, first.fence.job_id) is None


def test_the_claim_keeps_the_epochs_up_to_the_checkpoint_and_the_run(settings):
    first = claimed(settings, tiny_spec("claim-keeps", epochs=10))
    api.record_epochs(settings, first.fence, [(e, {"loss": 1.0 / e}) for e in range(1, 8)],
                      None)
    api.set_run(settings, first.fence, "run-1", "exp-1")
    api.save_checkpoint(settings, first.fence, 5, b"state")
    second = claimed(settings, None, first.fence.job_id)
    assert second.stale_run is None  # the run goes on: not handed back for ending
    with session_scope(settings.database_url) as s:
        job = s.get(Job, first.fence.job_id)
        epochs = [r.epoch for r in s.query(JobEpoch).filter_by(job_id=job.id)]
        assert sorted(epochs) == [1, 2, 3, 4, 5]
        assert (job.mlflow_run_id, job.resumed_from_epoch) == ("run-1", 5)
        assert job.progress == {"epoch": 5, "epochs": 10, "metrics": {"loss": 0.2}}
    # One that cannot use it starts over: no epochs, no checkpoint, its run handed back.
    assert api.start_over(settings, second.fence) == "run-1"
    with session_scope(settings.database_url) as s:
        job = s.get(Job, first.fence.job_id)
        assert s.query(JobEpoch).filter_by(job_id=job.id).count() == 0
        assert s.get(Checkpoint, job.id) is None
        assert (job.mlflow_run_id, job.resumed_from_epoch) == (None, None)
    third = claimed(settings, None, first.fence.job_id)
    assert third.resumed_from_epoch is None


def test_a_resumed_reporter_skips_the_steps_its_run_has(settings):
    """MLflow has loss/accuracy up to epoch 5 (the killed attempt logged past its checkpoint
    at 3) and chance_loss at step 0: the resumed reporter sends none of them again, and
    every epoch after them whole."""
    rep = Reporter(settings, api.Fence("job", 2), 8, Signals())
    rep.mlflow_logged = {"loss": 5, "accuracy": 5, "chance_loss": 0}
    history = [{"loss": 1.0 / e, "accuracy": 0.1 * e, "epoch_time_s": 0.01}
               for e in range(1, 4)]
    rep.resumed(history, elapsed_before=12.5)
    assert rep._pending_mlflow == [(e, {"epoch_time_s": 0.01}) for e in (1, 2, 3)]
    assert rep.last_epoch == 3 and rep.progress((3, history[-1]))["elapsed_s"] >= 12.5
    later = [(e, {"loss": 0.5, "accuracy": 0.5, "epoch_time_s": 0.02}) for e in (4, 5, 6)]
    assert rep._not_logged(later) == [(4, {"epoch_time_s": 0.02}), (5, {"epoch_time_s": 0.02}),
                                      later[2]]


EPOCHS_RUN = 1500  # a few seconds: the stop comes well before the end


@pytest.mark.skipif(not TF, reason="the worker's own loop runs on TensorFlow")
def test_a_job_run_stopped_with_a_checkpoint_is_resumed_by_its_next_attempt(settings):
    """worker.jobs.run end to end (MLflow off): checkpoint_and_stop() from another thread
    stops the training at an epoch boundary with a checkpoint and puts the job back in the
    queue (as a worker's shutdown does) for its next attempt, which goes on from it; the
    history equals an uncut run's."""
    import threading

    from worker.jobs.run import run_job

    settings = dataclasses.replace(settings, report_interval_s=0.05)
    spec = tiny_spec("job-run", epochs=EPOCHS_RUN)
    uncut, job_id = stored(settings, spec), stored(settings, spec)
    assert run_job(uncut, settings) == "succeeded"

    def progress() -> int:
        with session_scope(settings.database_url) as s:
            return (s.get(Job, job_id).progress or {}).get("epoch", 0)

    def stop_soon():
        while progress() < 3:
            time.sleep(0.005)
        checkpointing.checkpoint_and_stop()

    stopper = threading.Thread(target=stop_soon, daemon=True)
    stopper.start()
    assert run_job(job_id, settings) == "queued"
    stopper.join(5)
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job_id)
        stopped_at = s.get(Checkpoint, job_id).epoch
        assert j.status == JobStatus.queued and 3 <= stopped_at < EPOCHS_RUN
        assert j.progress["epoch"] == stopped_at
    assert run_job(job_id, settings) == "succeeded"
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job_id)
        assert (j.attempts, j.resumed_from_epoch) == (2, stopped_at)
        assert j.summary["epochs_completed"] == EPOCHS_RUN
        assert s.get(Checkpoint, job_id) is None

        def rows(i):
            return [(r.epoch, {k: v for k, v in r.metrics.items() if k != "epoch_time_s"})
                    for r in s.query(JobEpoch).filter_by(job_id=i).order_by(JobEpoch.epoch)]

        assert rows(job_id) == rows(uncut)
        assert len(rows(job_id)) == EPOCHS_RUN


def test_checkpoint_and_stop_reaches_the_running_training():
    assert not checkpointing.checkpoint_and_stop()
    signals = Signals()
    with checkpointing.Running(signals):
        assert checkpointing.checkpoint_and_stop()
        assert signals.stop_with_checkpoint.is_set()
    assert not checkpointing.checkpoint_and_stop()


JAX_CHECK = """
import dataclasses, sys, tempfile
from pathlib import Path
import keras
from tests.unit import test_checkpoint as T
from service.config import Settings
from service.migrate import upgrade
tmp = Path(tempfile.mkdtemp())
settings = dataclasses.replace(
    Settings.from_env(), data_dir=tmp, database_url=f"sqlite:///{tmp / 'k.db'}",
    broker_url="memory://", mlflow_logging=False, checkpoint_s=1e9, api_token=None)
upgrade(settings.database_url)
assert keras.backend.backend() == "jax"
uncut, stopped, resumed, _ = T.cut_and_resumed(settings, T.spec_of(optimizer="adam",
                                                                    dropout=0.3), 2)
T.same_metrics(resumed.callback.history, uncut.callback.history)
T.same_weights(resumed.model, uncut.model)
print("JAX-OK", len(uncut.callback.history))
"""


def test_on_jax_a_resumed_training_ends_where_the_uncut_one_ends():
    """JAX keeps Model.fit: initial_epoch, the restored variables (dropout's seed state
    included) and the data order from the checkpoint; bit for bit there too."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", JAX_CHECK], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "JAX-OK 5" in proc.stdout, proc.stderr[-3000:]
