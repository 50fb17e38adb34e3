"""The shared trials of a sweep: with ``share_epochs``, a configuration trains once to its
largest epoch count and the trials that differ from it only in ``fit.epochs`` are recorded
from that training (``trained_by`` it in the database, ``kerasyard.trained_by`` in MLflow).

Each shared trial becomes a finished job with its own MLflow child run: the metrics cut at its
epochs and the model as it was then (a checkpoint saved at that epoch). Its rows are written
through :func:`service.worker_api.finish_recorded`, fenced on the training's claim; its MLflow
run is marked FINISHED only once that write went through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from pathlib import Path

from service import worker_api as api
from service.config import Settings
from service.worker_api import Fence, JobStatus, Ownership, SharedTrial, TrialContext
from worker.recording import artifacts, outcome, tracking
from worker.recording.inputs import log_inputs
from worker.recording.reporter import Signals, clean
from worker.recording.tracking import MLFLOW_RUN_STATUS, child_tags
from worker.training.chance import chance_levels

log = logging.getLogger(__name__)


def checkpoint_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kerasyard-epochs-")


def checkpoints(ctx: TrialContext | None, folder: Path) -> dict[int, Path]:
    """epoch -> where the model is saved at the end of that epoch."""
    return {t.epochs: folder / f"epoch-{t.epochs}.keras" for t in (ctx.shared if ctx else [])}


def record(settings: Settings, fence: Fence, signals: Signals, cl, *, ctx: TrialContext,
           parent_run_id: str | None, trainer_run_id: str | None, data,
           history: list[dict], saved: dict[int, Path],
           trials: list[SharedTrial] | None = None, pruned_model=None,
           timings: dict | None = None, inputs: list | None = None,
           active: list[int] | None = None) -> list[str]:
    """Record each shared trial this training reached (``trials``: those of one tower of a
    pack; all of them by default); returns the ids recorded. One that fails ends ``failed``
    (the others go on); a superseded claim stops the lot. ``timings`` gets ``record_s`` and
    its parts added (seconds spent: :func:`_record_one`).

    With ``pruned_model`` (a pack's tower its pruner stopped, at ``len(history)`` epochs), the
    trial with the most epochs is recorded ``pruned`` from that model and history.
    ``inputs``: the training's dataset inputs (:mod:`worker.recording.inputs`), logged on each
    trial's run: it trained on the same data. ``active``: how many towers trained in each
    epoch (a pack's; one each when None), for each trial's share of the fit time
    (:func:`worker.recording.outcome.fit_share`)."""
    done = []
    trials = ctx.shared if trials is None else trials
    experiments: dict[str, str] = {}  # name -> id: the trials of a training share theirs
    pruned_id = max(trials, key=lambda t: t.epochs).id if pruned_model is not None and trials \
        else None
    for trial in trials:
        if signals.superseded.is_set():
            break
        e = trial.epochs
        pruned = trial.id == pruned_id
        if pruned and history and math.isfinite(history[-1].get("loss", math.nan)):
            e = len(history)
        elif len(history) < e or not math.isfinite(history[e - 1].get("loss", math.nan)) \
                or e not in saved:
            continue  # not reached: ended with the training
        t0 = time.perf_counter()
        try:
            answer = _record_one(settings, fence, cl, ctx, trial, parent_run_id,
                                 trainer_run_id, data, history[:e],
                                 pruned_model if pruned else saved[e],
                                 JobStatus.pruned if pruned else JobStatus.succeeded, timings,
                                 inputs, active, experiments)
        except Exception as exc:
            log.exception("recording trial %s from job %s failed", trial.id, fence.job_id)
            api.end_unrecorded(
                settings, [trial.id], JobStatus.failed,
                {"type": type(exc).__name__, "message": f"recording this trial from the "
                 f"training of job {fence.job_id} failed: {exc}"}, fence=fence)
            continue
        finally:
            if timings is not None:
                timings["record_s"] = timings.get("record_s", 0.0) + time.perf_counter() - t0
        if answer is Ownership.OWNED:
            done.append(trial.id)
        elif not api.still_owned(settings, fence):
            signals.answer(Ownership.SUPERSEDED, fence.job_id)
    return done


@contextlib.contextmanager
def _timed(timings: dict | None, key: str):
    """Adds the seconds the block took to ``timings[key]`` (when there are timings)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _record_one(settings: Settings, fence: Fence, cl, ctx: TrialContext, trial: SharedTrial,
                parent_run_id: str | None, trainer_run_id: str | None, data,
                history: list[dict], checkpoint, status: JobStatus = JobStatus.succeeded,
                timings: dict | None = None, inputs: list | None = None,
                active: list[int] | None = None,
                experiments: dict[str, str] | None = None) -> Ownership:
    """``checkpoint``: where the model was saved at the trial's epochs, or the model.
    ``experiments``: experiment ids by name looked up already (this adds to it).
    ``timings`` gets the parts of ``record_s``: ``checkpoint_load_s``, ``model_log_s``,
    ``artifacts_s`` (plots included) and ``database_s``."""
    import keras

    spec, plan = api.validate(settings, trial.spec)
    chance = chance_levels(plan.n_classes or 2, data.y_val if data.x_val is not None
                           else data.y_train) if plan.task == "classification" else None
    summary = _summary(ctx, spec, plan, history, status, fence.job_id, active, chance)
    run_id = exp_id = None
    if cl is not None:
        with _timed(timings, "checkpoint_load_s"):
            model = keras.models.load_model(checkpoint) if isinstance(checkpoint, Path) \
                else checkpoint
        experiments = {} if experiments is None else experiments
        if spec.experiment not in experiments:
            experiments[spec.experiment] = tracking.experiment_id(cl, spec.experiment)
        exp_id = experiments[spec.experiment]
        params = tracking.run_params(trial.spec, plan, {"trained_by": fence.job_id},
                                     trial.params)
        run_id = tracking.start_run(cl, exp_id, spec.name, _tags(
            ctx, trial, fence, parent_run_id, trainer_run_id, len(history), status,
            data.digest, keras.backend.backend()), params)
        log_inputs(cl, run_id, inputs)
        if settings.log_model and status == JobStatus.succeeded:
            # Before the epochs: MLflow's log_model reads the run's whole history of every
            # metric (one request per metric) to link the model to step 0's metrics, which
            # a run whose steps are epochs (1..n) does not have: 0.4 s a trial for nothing.
            with _timed(timings, "model_log_s"):
                artifacts.log_model(settings, model, data, run_id, experiment_id=exp_id,
                                    params=params)
        # The epochs, and the run's best epoch, fit time and chance levels, in one call.
        tracking.log_epochs(cl, run_id, list(enumerate(history, start=1)),
                            outcome.run_metrics(summary, chance))
        with _timed(timings, "artifacts_s"):
            artifacts.write_artifacts(cl, run_id, trial.spec, spec, plan, model, data,
                                      history, lean=settings.lean_recording)
    progress = {"epoch": len(history), "epochs": plan.epochs, "metrics": clean(history[-1])}
    with _timed(timings, "database_s"):
        answer = api.finish_recorded(settings, fence, trial.id,
                                     epochs=[clean(h) for h in history], summary=summary,
                                     progress=progress, run_id=run_id, experiment_id=exp_id,
                                     status=status)
    if run_id is not None:
        try:  # FINISHED only once the job row says so; otherwise nobody else will end it
            cl.set_terminated(run_id, MLFLOW_RUN_STATUS[status] if answer is Ownership.OWNED
                              else "FAILED")
        except Exception:
            log.warning("could not end MLflow run %s of trial %s", run_id, trial.id,
                        exc_info=True)
    return answer


def _tags(ctx: TrialContext, trial: SharedTrial, fence: Fence, parent_run_id: str | None,
          trainer_run_id: str | None, epochs: int, status: JobStatus, digest: str,
          backend: str) -> dict[str, str]:
    """A recorded trial's run tags: a child of the sweep's run, trained by ``fence``'s job,
    a note saying so."""
    tags = tracking.base_tags(trial.id, ctx.sweep_id, digest, backend)
    if parent_run_id:
        tags.update(child_tags(ctx, parent_run_id, trial))
    tags["kerasyard.trained_by"] = fence.job_id
    tags["mlflow.note.content"] = (f"Recorded from the training of job {fence.job_id} "
                                   f"(run {trainer_run_id}) at epoch {epochs}: the same "
                                   "seed, data order and updates as a separate training.")
    if status == JobStatus.pruned:
        tags["kerasyard.pruned"] = "true"
        tags["kerasyard.pruned_at_epoch"] = str(epochs)
    tags["kerasyard.trial_state"] = status.value
    return tags


def _summary(ctx: TrialContext, spec, plan, history: list[dict], status: JobStatus,
             trained_by: str, active: list[int] | None, chance: dict | None) -> dict:
    """A recorded trial's summary, as a training's would be: its best epoch by the sweep's
    objective, its fit time (its share of the training's: :mod:`worker.recording.outcome`)
    and its chance levels."""
    summary = {"epochs_completed": len(history),
               "stopped_early": status != JobStatus.succeeded,
               "final_metrics": clean(history[-1]),
               "best_loss": min(h["loss"] for h in history),
               "fit_time_s": round(outcome.fit_share(history, active), 3),
               "trained_by": trained_by}
    best = outcome.best_epoch(history, *outcome.monitored(spec, plan, ctx))
    if best is not None:
        summary["best_epoch"] = best
    if chance is not None:
        summary["chance"] = {k: round(v, 6) for k, v in chance.items()}
    if status == JobStatus.pruned:
        summary["pruned_at_epoch"] = len(history)
    return summary


def end_unreached(settings: Settings, fence: Fence, ctx: TrialContext | None,
                  status: JobStatus, error: dict | None) -> None:
    """The shared trials this training did not record end with it (those recorded are
    terminal already and stay as they are)."""
    if ctx is None or not ctx.shared:
        return
    reason = {"type": "NotReached", "message":
              f"recorded from the training of job {fence.job_id}, which ended {status.value} "
              "before reaching this trial's epochs"
              + (f": {error['message']}" if error else "")}
    ended = status if status in (JobStatus.cancelled, JobStatus.pruned) else JobStatus.failed
    api.end_unrecorded(settings, [t.id for t in ctx.shared], ended, reason, fence=fence)
