"""What a sweep trial adds to a job's run: the MLflow parent run, pruning through Optuna, and
the trials recorded from this training for the epochs axis."""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from pathlib import Path

from sqlalchemy import insert, select, update

from service import studies
from service.config import Settings
from service.db import session_scope
from service.models import TERMINAL, Job, JobEpoch, JobStatus, Sweep, utcnow
from service.sweep_spec import ordered, trial_name

from . import tracking

log = logging.getLogger(__name__)
TERMINAL_VALUES = {s.value for s in TERMINAL}


def claim_trial(s, job: Job, sweep: Sweep | None, now) -> dict | None:
    """The trial's part of the claim snapshot; marks the trials recorded from this training
    running (called inside claim's transaction)."""
    if sweep is None:
        return None
    order = sweep.plan["param_order"]
    derived = s.scalars(select(Job).where(Job.trained_by == job.id)
                        .order_by(Job.trial_number)).all()
    out = []
    for d in derived:
        if d.status in TERMINAL_VALUES:
            continue
        d.status, d.started_at, d.worker = JobStatus.running.value, now, job.worker
        d.progress = {"epoch": 0, "epochs": d.plan.get("epochs"), "metrics": {}}
        out.append({"id": d.id, "name": d.name, "spec": d.spec, "epochs": d.plan["epochs"],
                    "trial_number": d.trial_number,
                    "params": ordered(d.trial_params or {}, order)})
    return {"sweep_id": sweep.id, "sweep_name": sweep.name, "study_name": sweep.study_name,
            "number": job.trial_number, "repeat": job.repeat,
            "params": ordered(job.trial_params or {}, order),
            "optuna_trial_id": job.optuna_trial_id, "sweep_spec": sweep.spec, "derived": out}


# --- MLflow parent run -------------------------------------------------------------------------


def ensure_parent_run(settings: Settings, cl, sweep_id: str) -> tuple[str, str]:
    """The sweep's parent run, created by whichever trial gets there first."""
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep.mlflow_run_id:
            return sweep.mlflow_run_id, sweep.mlflow_experiment_id
        name, experiment, spec, plan = sweep.name, sweep.experiment, sweep.spec, sweep.plan
    exp_id = tracking.experiment_id(cl, experiment)
    params = {"sweep.method": spec["method"],
              "sweep.objective": f"{spec['objective']['goal']} {spec['objective']['metric']}",
              "sweep.max_parallel": spec["max_parallel"],
              "sweep.trials": plan["total"], "sweep.repeats": spec["repeats"],
              "sweep.early_stopping": (spec["early_stopping"] or {}).get("type", "none"),
              "sweep.share_epochs": plan["share_epochs"]}
    for path, space in spec["parameters"].items():
        params[f"sweep.parameters.{path}"] = space
    tags = {"kerasyard.sweep_id": sweep_id, "kerasyard.kind": "sweep",
            "mlflow.note.content": f"Sweep **{name}**: one child run per trial."}
    run_id = mine = tracking.start_run(cl, exp_id, f"sweep: {name}", tags,
                                       {k: str(v)[:6000] for k, v in params.items()})
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Sweep).where(Sweep.id == sweep_id)
                        .where(Sweep.mlflow_run_id.is_(None))
                        .values(mlflow_run_id=run_id, mlflow_experiment_id=exp_id)).rowcount
        if not won:  # another trial created it at the same moment
            sweep = s.get(Sweep, sweep_id)
            run_id, exp_id = sweep.mlflow_run_id, sweep.mlflow_experiment_id
    if not won:
        cl.delete_run(mine)
    return run_id, exp_id


def child_tags(trial: dict, parent_run_id: str) -> dict[str, str]:
    return {"mlflow.parentRunId": parent_run_id,
            "kerasyard.trial_number": str(trial["number"]),
            "kerasyard.trial": trial_name(trial["params"]),
            "kerasyard.repeat": str(trial["repeat"] or 0)}


# --- pruning -----------------------------------------------------------------------------------


class PruneCheck:
    """Reports the objective of each epoch to the Optuna trial and asks its pruner.

    Runs in the reporter's thread, so fit never waits on it. With several seeds per
    configuration, the first seed's curve decides for all of them.
    """

    def __init__(self, settings: Settings, trial: dict, prune: threading.Event):
        import optuna

        study = studies.load_study(settings.database_url, trial["study_name"],
                                   trial["sweep_spec"])
        self.trial = optuna.trial.Trial(study, trial["optuna_trial_id"])
        self.metric = trial["sweep_spec"]["objective"]["metric"]
        self.prune = prune
        self.pruned_at: int | None = None

    def __call__(self, epochs: list[tuple[int, dict]]) -> None:
        if self.prune.is_set() or not epochs:
            return
        reported = False
        for epoch, metrics in epochs:
            value = metrics.get(self.metric)
            if value is None:
                continue
            self.trial.report(float(value) if math.isfinite(value) else float("inf"), epoch)
            reported = True
        if reported and self.trial.should_prune():
            self.pruned_at = epochs[-1][0]
            self.prune.set()


def prune_check(settings: Settings, trial: dict | None, prune: threading.Event):
    if not trial or not trial["sweep_spec"]["early_stopping"] or (trial["repeat"] or 0) > 0:
        return None
    return PruneCheck(settings, trial, prune)


# --- trials recorded from this training (the epochs axis) --------------------------------------


def record_derived(run, data, history: list[dict], checkpoints: dict[int, Path]) -> None:
    """Each shorter-epoch trial whose epoch count this training reached becomes a finished
    job with its own MLflow child run: metrics cut at its epochs, its model as it was then."""
    for d in run.trial["derived"]:
        e = d["epochs"]
        if len(history) < e or not math.isfinite(history[e - 1].get("loss", math.nan)) \
                or e not in checkpoints:
            continue
        try:
            _record_one(run, d, data, history[:e], checkpoints[e])
        except Exception as exc:
            log.error("recording trial %s from job %s failed", d["id"], run.job_id,
                      exc_info=True)
            settle(run.settings, [d], JobStatus.failed.value,
                   {"type": type(exc).__name__, "message": f"recording this trial from the "
                    f"training of job {run.job_id} failed: {exc}"})


def _record_one(run, d: dict, data, history: list[dict], checkpoint: Path) -> None:
    import keras

    from service.jobs import validate

    from .runner import _clean, write_artifacts

    st = run.settings
    spec, plan = validate(st, d["spec"])
    run_id = exp_id = None
    model = keras.models.load_model(checkpoint)
    if run.mlflow is not None:
        trial = run.trial
        exp_id = tracking.experiment_id(run.mlflow, spec.experiment)
        tags = tracking.base_tags(d["id"], trial["sweep_id"], data.digest,
                                  keras.backend.backend())
        tags.update(child_tags({**trial, "number": d["trial_number"], "params": d["params"]},
                               run.parent_run_id))
        tags["kerasyard.trained_by"] = run.job_id
        tags["mlflow.note.content"] = (f"Recorded from the training of job {run.job_id} "
                                       f"(run {run.run_id}) at epoch {plan.epochs}: the same "
                                       "seed, data order and updates as a separate training.")
        params = tracking.run_params(d["spec"], plan, {"trained_by": run.job_id})
        run_id = tracking.start_run(run.mlflow, exp_id, spec.name, tags, params)
        tracking.log_epochs(run.mlflow, run_id, list(enumerate(history, start=1)))
        write_artifacts(run.mlflow, run_id, d["spec"], spec, plan, model, data, history)
        if st.log_model:
            run.log_model(model, data, run_id)
        run.mlflow.set_terminated(run_id, "FINISHED")
    summary = {"epochs_completed": len(history), "stopped_early": False,
               "final_metrics": _clean(history[-1]),
               "best_loss": min(h["loss"] for h in history),
               "fit_time_s": round(sum(h["epoch_time_s"] for h in history), 3),
               "trained_by": run.job_id}
    with session_scope(st.database_url) as s:
        s.execute(insert(JobEpoch), [{"job_id": d["id"], "epoch": i, "metrics": _clean(h)}
                                     for i, h in enumerate(history, start=1)])
        job = s.get(Job, d["id"])
        job.status, job.finished_at = JobStatus.succeeded.value, utcnow()
        job.summary = summary
        job.progress = {"epoch": len(history), "epochs": plan.epochs,
                        "metrics": _clean(history[-1])}
        job.mlflow_run_id, job.mlflow_experiment_id = run_id, exp_id
        job.attempts = 1


def settle(settings: Settings, derived: list[dict], status: str, error: dict | None) -> None:
    """Trials this training did not reach end with it (failed or cancelled, saying why)."""
    ids = [d["id"] for d in derived]
    if not ids:
        return
    with session_scope(settings.database_url) as s:
        for job in s.scalars(select(Job).where(Job.id.in_(ids))).all():
            if job.status in TERMINAL_VALUES:
                continue
            job.status, job.finished_at = status, utcnow()
            job.error = error


def checkpoint_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kerasyard-epochs-")
