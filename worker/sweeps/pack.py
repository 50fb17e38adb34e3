"""Packed trials: several sweep trials trained as one Keras model, one tower per trial.

Each tower is the trial's own standalone model, built and compiled exactly as a separate
training builds it (:func:`worker.training.model.build_model` after
``keras.utils.set_random_seed(fit.seed)``, so the same initial weights, its own loss, metrics
and optimizer). The pack's train step runs each tower's own ``train_step`` (its own tape,
loss, optimizer update and metric trackers) on the one batch the pack's input pipeline hands
it, inside one compiled function: the per-step dispatch is paid once for all towers, and the
towers share no variable, so each tower's arithmetic is a separate training's.

A tower whose loss becomes NaN, or that its sweep's pruner stops, is *frozen*: it leaves the
pack's step (:mod:`worker.training.trainer` rebuilds the step without it at the epoch
boundary) and keeps the weights it had; the other towers train on.

What packs: towers that share everything outside the model and its optimizer (the data, its
split and order, the batch size, the loss and metrics: :func:`service.jobspec.sweep_checks.
pack_key`); inside, they may differ in anything. On TensorFlow any model
:func:`~worker.training.model.build_model` builds packs: a Sequential stack or a functional
graph, of any layer types (conv, pooling, recurrent, bidirectional, embedding, merges); an
uploaded model is such a Keras model too (the tests cover built ones). The pack trains on
tower 0's arrays: a tower whose input dtype differs (an embedding's int32 token ids beside
float towers on unscaled digits) gets them cast by Keras to its own input's dtype, the same
values its own training reads.

What does not pack: trials that differ in the data, the split, the batch size, the loss or
the metrics (separate trainings), random sweeps and early stopping (sweep_checks says why).
On the other backends (JAX) the towers of a pack train one after another in the same job,
each with its own ``fit`` (exact by construction, no speed-up), whatever the models.
Tests: ``tests/unit/test_pack.py`` (dense towers, freezing, JAX in turn) and
``tests/unit/test_pack_layers.py`` (conv2d and recurrent towers, an embedding beside float
towers), each tower bit for bit a separate training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from service.worker_api import SharedTrial

# Where the pack's step runs the towers' own train_step in one compiled function; elsewhere
# the towers of a pack train one after another (separate fits, the same job).
PACKABLE_BACKENDS = ("tensorflow",)


def tower_key(spec: dict) -> str:
    """Trials with the same key are one tower (they differ in fit.epochs alone)."""
    d = json.loads(json.dumps(spec))
    d.pop("name", None)
    d.get("fit", {}).pop("epochs", None)
    return json.dumps(d, sort_keys=True)


@dataclasses.dataclass
class Tower:
    """One tower of a pack: a configuration, the trials recorded from it, its training."""

    index: int
    raw: dict  # the spec it trains (its trial with the most epochs)
    trials: list[SharedTrial]  # recorded from it (the training job's own trial is not here)
    epochs: int  # the last epoch any of its trials needs
    spec: object = None
    plan: object = None
    model: object = None
    pruner: object = None
    history: list[dict] = dataclasses.field(default_factory=list)
    saved: dict[int, object] = dataclasses.field(default_factory=dict)  # epoch -> path or model
    checkpoints: dict[int, Path] = dataclasses.field(default_factory=dict)
    ended: str | None = None  # None (training), "done", "diverged", "pruned", "cancelled"
    ended_at: int | None = None
    cancelled: set[str] = dataclasses.field(default_factory=set)  # its trials asked to cancel


def towers_of(trainer_spec: dict, trainer_epochs: int, shared: list[SharedTrial]
              ) -> list[Tower]:
    """Tower 0 is the training job's own configuration (with its epoch-shared trials); one
    tower per other configuration the pack carries, in trial order."""
    own = tower_key(trainer_spec)
    groups: dict[str, list[SharedTrial]] = {own: []}
    for t in shared:
        groups.setdefault(tower_key(t.spec), []).append(t)
    towers = []
    for i, (key, trials) in enumerate(groups.items()):
        if key == own:
            towers.append(Tower(i, trainer_spec, trials, trainer_epochs))
        else:
            lead = max(trials, key=lambda t: t.epochs)
            towers.append(Tower(i, lead.spec, trials, lead.epochs))
    return towers


def is_pack(trainer_spec: dict, shared: list[SharedTrial]) -> bool:
    own = tower_key(trainer_spec)
    return any(tower_key(t.spec) != own for t in shared)


def backend_packs() -> bool:
    import keras

    return keras.backend.backend() in PACKABLE_BACKENDS


def tower_logs(logs: dict, i: int) -> dict[str, float]:
    """The pack's logs (``t3/loss``, ``val_t3/accuracy``) -> tower ``i``'s own names
    (``loss``, ``val_accuracy``)."""
    out = {}
    mine, val_mine = f"t{i}/", f"val_t{i}/"
    for k, v in (logs or {}).items():
        if k.startswith(mine):
            out[k[len(mine):]] = float(v)
        elif k.startswith(val_mine):
            out["val_" + k[len(val_mine):]] = float(v)
    return out


def make_pack(towers: list, steps_per_execution: int, data_batch):
    """The pack of compiled, standalone ``towers``; ``data_batch`` (x, y) builds their state
    (weights, metrics, optimizer variables) the way ``fit`` would before its first step."""
    import keras

    for t in towers:
        t._symbolic_build(data_batch=data_batch)

    class Pack(keras.Model):
        def __init__(self):
            super().__init__(name="pack")
            self.towers = list(towers)
            self.active = list(range(len(towers)))

        def call(self, x, training=False):
            return [t(x, training=training) for t in self.towers]

        def _each_tower(self, step: str, data) -> dict:
            """Each active tower's own ``step`` on the batch; its logs under ``t<i>/``."""
            return {f"t{i}/{k}": v for i in self.active
                    for k, v in getattr(self.towers[i], step)(data).items()}

        def train_step(self, data):
            return self._each_tower("train_step", data)

        def test_step(self, data):
            return self._each_tower("test_step", data)

        def reset_metrics(self):
            for i in self.active:
                self.towers[i].reset_metrics()

        def get_metrics_result(self):
            return {f"t{i}/{k}": v for i in self.active
                    for k, v in self.towers[i].get_metrics_result().items()}

        def freeze(self, leaving: list[int]) -> None:
            """The towers ``leaving`` stop training (their weights stay as they are); the
            training loop rebuilds its step without them at the next epoch."""
            self.active = [i for i in self.active if i not in leaving]

    pack = Pack()
    jit = towers[0].jit_compile
    pack.compile(optimizer=None, steps_per_execution=steps_per_execution, jit_compile=jit)
    pack.built = True
    return pack


def diverged(metrics: dict) -> bool:
    return not math.isfinite(metrics.get("loss", 0.0))


def pack_callback(towers: list[Tower], reporter, signals, prefixed: bool = True,
                  on_progress=None, progress_interval_s: float = 1.0):
    """Per epoch and tower: its own metrics (under its trial's names) into its history, the
    training job's tower (0) to the reporter; checkpoints; a tower that diverged, that its
    pruner stopped, that reached its last epoch or whose trials were all cancelled leaves the
    pack (the training job's cancel flag cancels tower 0); superseded stops the lot.
    ``on_progress()`` (at most every ``progress_interval_s``) writes the other trials' live
    progress and fills each tower's ``cancelled``. ``prefixed`` False: a lone tower's own fit
    (the backends that do not pack).

    The training job's own outcome reads like :func:`~.reporter.epoch_callback`'s:
    ``history``, ``saved``, ``nan_epoch``, ``pruned``, ``cancelled``, ``superseded``,
    ``stopped`` (a stop with checkpoint while towers were left to train)."""
    import keras

    by_index = {t.index: t for t in towers}
    own = by_index.get(0) or Tower(0, {}, [], 0)

    class PackReporter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.active = [t.index for t in towers]
            self.nan_epoch: int | None = None
            self.superseded = self.cancelled = self.pruned = self.stopped = False
            self.checkpointed_epoch: int | None = None  # as the epoch callback's
            self._t = time.perf_counter()
            self._progress_at = time.monotonic()

        @property
        def history(self) -> list[dict]:
            return own.history

        @property
        def saved(self) -> dict[int, Path]:
            return own.saved

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if signals.superseded.is_set():
                self.superseded = True
                self.model.stop_training = True
                return
            e, took, leaving = epoch + 1, time.perf_counter() - self._t, []
            for i in list(self.active):
                t = by_index[i]
                if _tower_epoch(t, e, _tower_metrics(t, logs, prefixed, took), reporter):
                    leaving.append(i)
            if on_progress is not None and \
                    time.monotonic() - self._progress_at >= progress_interval_s:
                self._progress_at = time.monotonic()
                on_progress()
            for i in list(self.active):
                if _cancelled(by_index[i], signals) and i not in leaving:
                    by_index[i].ended, by_index[i].ended_at = "cancelled", e
                    leaving.append(i)
            _leave(self, own, leaving, prefixed, signals.stop_with_checkpoint.is_set())

    return PackReporter()


def _tower_metrics(t: Tower, logs: dict | None, prefixed: bool, took: float) -> dict:
    """Tower ``t``'s metrics of the epoch (under its trial's own names), its learning rate and
    the epoch's time."""
    import keras

    metrics = tower_logs(logs, t.index) if prefixed else \
        {k: float(v) for k, v in (logs or {}).items()}
    metrics["learning_rate"] = float(keras.ops.convert_to_numpy(
        t.model.optimizer.learning_rate))
    metrics["epoch_time_s"] = took
    return metrics


def _tower_epoch(t: Tower, e: int, metrics: dict, reporter) -> bool:
    """Tower ``t``'s epoch ``e``: into its history (the job's own tower to the reporter too),
    its checkpoint; True when it leaves the pack (diverged, pruned or at its last epoch)."""
    t.history.append(metrics)
    if t.index == 0:
        reporter.epoch(e, metrics)
    if e in t.checkpoints and t.index != 0 and e >= t.epochs:
        t.saved[e] = t.model  # it leaves the pack now: the model stays as it is
    elif e in t.checkpoints:
        t.model.save(t.checkpoints[e])
        t.saved[e] = t.checkpoints[e]
    if diverged(metrics):
        t.ended = "diverged"
    elif t.pruner is not None and _pruned(t, e, metrics):
        t.ended = "pruned"
    elif e >= t.epochs:
        t.ended = "done"
    if t.ended:
        t.ended_at = e
    return bool(t.ended)


def _leave(cb, own: Tower, leaving: list[int], prefixed: bool, stop: bool) -> None:
    """The job's own outcome on the callback ``cb``, read from its tower; the towers
    ``leaving`` out of the pack (fit stops once none is left, or at a ``stop`` with
    checkpoint: the pack stops as a whole, ``cb.stopped`` when towers were left)."""
    if own.ended == "diverged" and cb.nan_epoch is None:
        cb.nan_epoch = own.ended_at
    cb.pruned = own.ended == "pruned"
    cb.cancelled = own.ended == "cancelled"
    for i in leaving:
        cb.active.remove(i)
    if not cb.active:
        cb.model.stop_training = True
    elif stop:
        cb.stopped = cb.model.stop_training = True
    elif leaving and prefixed:
        cb.model.freeze(leaving)


def restore_left(cb, own: Tower, left: list[int], pack) -> None:
    """A resumed pack: the towers that had ``left`` it before the checkpoint are out of the
    pack's step and of the callback ``cb``'s active towers again, and the job's own outcome
    reads from its tower as at the checkpoint."""
    cb.active = [i for i in cb.active if i not in left]
    if left and pack is not None:
        pack.freeze(left)
    if own.ended == "diverged":
        cb.nan_epoch = own.ended_at
    cb.pruned = own.ended == "pruned"
    cb.cancelled = own.ended == "cancelled"


def _cancelled(t: Tower, signals) -> bool:
    """The job's own tower: its cancel flag; another: all of its trials asked to cancel."""
    if t.index == 0:
        return signals.cancel.is_set()
    return bool(t.trials) and all(tr.id in t.cancelled for tr in t.trials)


def fit_in_turn(towers: list[Tower], own, reporter, signals, fit):
    """The backends that do not pack: each tower's own ``fit(tower, callback)`` in turn (the
    job's own tower first, with ``own``, the pack's callback); returns ``own``."""
    own.active = [0]
    for t in towers:
        cb = own if t.index == 0 else pack_callback([t], reporter, signals, prefixed=False)
        fit(t, cb)
        if signals.cancel.is_set() or cb.superseded:
            own.cancelled, own.superseded = own.cancelled or signals.cancel.is_set(), \
                cb.superseded
            break
        if cb.stopped or (signals.stop_with_checkpoint.is_set() and t is not towers[-1]):
            own.stopped = True  # the towers left train when the job goes on
            break
    return own


def _pruned(t: Tower, epoch: int, metrics: dict) -> bool:
    try:
        return bool(t.pruner([(epoch, metrics)]))
    except Exception:  # the pruner is advice: a failed report never stops a tower
        return False
