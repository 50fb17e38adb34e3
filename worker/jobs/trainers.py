"""The two ways a job trains, behind one interface (the way Keras's backends implement its
``Trainer``): :class:`~.single.SingleTrainer` fits this job's own model;
:class:`~.packed.PackTrainer` fits it as tower 0 of a pack, beside the other configurations
the sweep packed into this job.

:class:`~.run.JobRun` prepares the job (:func:`prepare`), picks one trainer once, and calls it
in this order: :meth:`JobTrainer.build` (once the MLflow run is started), for a resumed
attempt :meth:`~JobTrainer.restore`, :meth:`~JobTrainer.fit`, :meth:`~JobTrainer.record`
(once every epoch is flushed), :meth:`~JobTrainer.summary`, and :meth:`~JobTrainer.close` in
every case after fit.

Checkpoints (:mod:`.checkpointing`, :mod:`worker.training.checkpoint`): a trainer's
:meth:`~JobTrainer.state` is everything the rest of its training depends on, and
:meth:`~JobTrainer.restore` puts it back into a trainer built from the same spec, which then
trains on from the epoch after it to the same end, bit for bit.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path

from service import worker_api as api
from service.config import Settings
from service.worker_api import Fence
from worker.jobs import checkpointing
from worker.recording.reporter import Reporter, Signals
from worker.sweeps import shared_trials
from worker.training import checkpoint as C
from worker.training import datasets as D
from worker.training import model as M
from worker.training import uploaded as U
from worker.training.chance import chance_levels


class TrainingFailed(Exception):
    """Training could not go on; the message says why and what to change."""


@dataclasses.dataclass
class JobInputs:
    """What every trainer trains from: the job's spec as submitted (``raw``), validated
    (``spec``, ``plan``), its dataset, and the choices made before the model exists."""

    raw: dict
    spec: object
    plan: object
    data: D.Data
    spe: int  # steps_per_execution
    backend: str  # Keras's backend
    chance: dict[str, float] | None  # what guessing scores; None for a regression


def upload_loader(settings: Settings):
    def load(dataset_id: str):
        got = api.uploaded_dataset(settings, dataset_id)
        if got is None:
            raise TrainingFailed(f"uploaded dataset {dataset_id!r} no longer exists")
        return got

    return load


def prepare(settings: Settings, raw: dict) -> JobInputs:
    """The job's spec checked again (the same checks as at submission, caps included), its
    dataset loaded, and the chance levels computed on the data the metrics describe."""
    spec, plan = api.validate(settings, raw)
    import keras

    data = D.build_dataset(spec, plan, upload_loader(settings), settings.data_cache_dir)
    chance = chance_levels(plan.n_classes or 2, data.y_val if data.x_val is not None
                           else data.y_train) if plan.task == "classification" else None
    spe = M.choose_steps_per_execution(plan.steps_per_epoch, settings.max_steps_per_execution,
                                       spec.fit.steps_per_execution)
    return JobInputs(raw, spec, plan, data, spe, keras.backend.backend(), chance)


class JobTrainer(abc.ABC):
    """What :class:`~.run.JobRun` calls. After :meth:`fit`, ``callback`` holds this job's own
    outcome (``history``, ``saved``, ``nan_epoch``, ``pruned``, ``cancelled``) and ``model``
    its model; ``timings`` collects the seconds spent recording the trials it carries."""

    def __init__(self, settings: Settings, fence: Fence, ctx: api.TrialContext | None,
                 reporter: Reporter, signals: Signals, job: JobInputs):
        self.settings = settings
        self.fence = fence
        self.job_id = fence.job_id
        self.ctx = ctx
        self.reporter = reporter
        self.signals = signals
        self.job = job
        self.model = None
        self.callback = None
        self.callbacks: list = []
        self.y_train = self.y_val = None
        self.ckpt_dir = None
        self.timings: dict = {}
        self.orders: D.EpochOrders | None = None  # the data order, read by checkpoints
        self.checkpointer = None  # the checkpoint callback (None: checkpoints are off)
        self.start_epoch = 0  # epochs done before this attempt's fit (from a checkpoint)
        self.fit_time_before = 0.0  # their fit seconds

    @property
    def superseded(self) -> bool:
        return self.signals.superseded.is_set()

    def build(self) -> None:
        """This job's model, built and compiled as its spec says (the seed first: the same
        weights as any other training of it), its targets, the folder of the checkpoints the
        shared trials are recorded from, then the callbacks of fit."""
        import keras

        spec, plan = self.job.spec, self.job.plan
        keras.utils.set_random_seed(spec.fit.seed)
        up = U.load_uploaded(self.settings, spec.model.uploaded) if spec.model.uploaded else None
        self.model = M.build_model(spec, plan, uploaded=up)
        M.compile_model(self.model, spec, plan, self.job.spe)
        self.y_train = M.prepare_targets(self.job.data.y_train, spec, plan)
        self.y_val = M.prepare_targets(self.job.data.y_val, spec, plan)
        self.ckpt_dir = shared_trials.checkpoint_dir() if self.ctx and self.ctx.shared else None
        self.callbacks = self._callbacks()
        self.orders = D.epoch_orders(self.job.data.n_train, spec.fit.seed, spec.fit.shuffle)
        if self.settings.checkpoint_s > 0 and self.checkpoints():
            self.checkpointer = checkpointing.checkpoint_callback(
                self, plan.epochs, self.settings.checkpoint_s)
            self.callbacks.append(self.checkpointer)  # last: it reads the others' state

    @abc.abstractmethod
    def _callbacks(self) -> list:
        """The callbacks of fit; sets ``callback`` (the one that holds the job's outcome)."""

    @abc.abstractmethod
    def fit(self) -> None:
        """Train until the last epoch, or until a callback stops it."""

    def fit_kw(self) -> dict:
        """The arguments of :func:`worker.training.trainer.fit` besides the data and epochs
        (a resumed training's first epoch and data order included)."""
        job = self.job
        val = None if job.data.x_val is None else (job.data.x_val, self.y_val)
        return {"batch_size": job.plan.batch_size, "steps_per_execution": job.spe,
                "seed": job.spec.fit.seed, "shuffle": job.spec.fit.shuffle, "validation": val,
                "initial_epoch": self.start_epoch, "orders": self.orders}

    # --- checkpoints -------------------------------------------------------------------------

    def checkpoints(self) -> bool:
        """Whether this trainer's training can be checkpointed and resumed."""
        return True

    def state(self, epoch: int, fit_s: float) -> C.State:
        """The training's whole state at the end of ``epoch`` (``fit_s``: this attempt's
        fit seconds so far): what the trainer adds (:meth:`_state`), the data order's
        position, Keras's global seed, whether the pruner said stop."""
        meta = {"orders": self.orders.state_before(epoch),
                "fit_time_s": self.fit_time_before + fit_s,
                "prune": self.signals.prune.is_set()}
        arrays = C.seed_state()
        self._state(meta, arrays)
        return C.State(epoch, meta, arrays)

    def restore(self, state: C.State) -> None:
        """Put a checkpoint's state back into this trainer (built); fit then starts at the
        epoch after it. Raises :class:`~worker.training.checkpoint.CheckpointMismatch`, with
        nothing changed, when it does not fit."""
        self._check(state)
        self._restore(state)
        spec = self.job.spec
        self.orders = D.EpochOrders(self.job.data.n_train, spec.fit.seed, spec.fit.shuffle,
                                    state=state.meta["orders"], start=state.epoch)
        self.start_epoch, self.fit_time_before = state.epoch, state.meta["fit_time_s"]
        C.restore_seed_state(state.arrays)
        if state.meta.get("prune"):
            self.signals.prune.set()

    def after_train_begin(self) -> None:
        """Called by the checkpoint callback after every callback's ``on_train_begin`` (which
        resets their state): a resumed trainer puts callbacks' state back here."""

    @abc.abstractmethod
    def _state(self, meta: dict, arrays: dict) -> None:
        """Add the models, their optimizers and the callbacks' state."""

    @abc.abstractmethod
    def _check(self, state: C.State) -> None:
        """Raise CheckpointMismatch unless ``state`` fits this trainer's models."""

    @abc.abstractmethod
    def _restore(self, state: C.State) -> None:
        """Put back what :meth:`_state` added."""

    def history(self) -> list[dict]:
        """This job's own epochs so far (the reporter's)."""
        return self.callback.history

    def record(self, run) -> None:
        """The shared trials this job's own model reached, each recorded as a finished job
        with its own MLflow child run (``run``: this job's :class:`~.mlflow_run.MlflowRun`)."""
        if self.ctx and self.ctx.shared and not self.superseded:
            shared_trials.record(
                self.settings, self.fence, self.signals, run.client, ctx=self.ctx,
                parent_run_id=run.parent_run_id, trainer_run_id=run.run_id, data=self.job.data,
                history=self.callback.history, saved=self.callback.saved,
                trials=self._own_trials(), timings=self.timings, inputs=run.inputs,
                active=self.active_towers())

    def _own_trials(self) -> list[api.SharedTrial] | None:
        """The shared trials recorded from this job's own model; None: all of them."""
        return None

    def active_towers(self) -> list[int] | None:
        """How many models trained at once in each epoch, for each trial's share of the fit
        time (:func:`worker.recording.outcome.fit_share`); None: one."""
        return None

    def summary(self) -> dict:
        """What this trainer adds to the job's summary."""
        return {}

    def close(self) -> None:
        if self.ckpt_dir is not None:
            self.ckpt_dir.cleanup()

    def checkpoint_folder(self) -> Path:
        return Path(self.ckpt_dir.name)
