"""The two ways a job trains, behind one interface (the way Keras's backends implement its
``Trainer``): :class:`~.single.SingleTrainer` fits this job's own model;
:class:`~.packed.PackTrainer` fits it as tower 0 of a pack, beside the other configurations
the sweep packed into this job.

:class:`~.run.JobRun` prepares the job (:func:`prepare`), picks one trainer once, and calls it
in this order: :meth:`JobTrainer.build` (once the MLflow run is started), :meth:`~JobTrainer.fit`,
:meth:`~JobTrainer.record` (once every epoch is flushed), :meth:`~JobTrainer.summary`, and
:meth:`~JobTrainer.close` in every case after fit.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path

from service import worker_api as api
from service.config import Settings
from service.worker_api import Fence
from worker.recording.reporter import Reporter, Signals
from worker.sweeps import shared_trials
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

    @abc.abstractmethod
    def _callbacks(self) -> list:
        """The callbacks of fit; sets ``callback`` (the one that holds the job's outcome)."""

    @abc.abstractmethod
    def fit(self) -> None:
        """Train until the last epoch, or until a callback stops it."""

    def fit_kw(self) -> dict:
        """The arguments of :func:`worker.training.trainer.fit` besides the data and epochs."""
        job = self.job
        val = None if job.data.x_val is None else (job.data.x_val, self.y_val)
        return {"batch_size": job.plan.batch_size, "steps_per_execution": job.spe,
                "seed": job.spec.fit.seed, "shuffle": job.spec.fit.shuffle, "validation": val}

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
