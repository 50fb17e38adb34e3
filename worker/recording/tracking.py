"""MLflow through MlflowClient: the run, its params and tags, batched metrics, artifacts.

MLflow's terms are the worker's: how each end of a job shows (:data:`MLFLOW_RUN_STATUS`),
a sweep's parent run (:func:`sweep_parent_run`, its params and tags built here from the
sweep's spec and plan) and its trials' child runs (:func:`child_tags`). The service hands
over plain data through :mod:`service.worker_api`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from service import __version__
from service import jobspec as S
from service import worker_api as api

PARAM_BATCH = 100  # MLflow's log_batch limit for params
METRIC_BATCH = 1000

# How each end of a job shows in MLflow. A pruned trial did what it was asked until its
# pruner stopped it: FINISHED, and tagged so (MLflow has no PRUNED status).
MLFLOW_RUN_STATUS = {
    api.JobStatus.succeeded: "FINISHED",
    api.JobStatus.pruned: "FINISHED",
    api.JobStatus.cancelled: "KILLED",
    api.JobStatus.failed: "FAILED",
}


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


# How MLflow 3 records an experiment's kind: this experiment tag, which its UI's experiment
# header sets too ("Machine learning" vs "GenAI apps & agents"). kerasyard trains models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def experiment_id(cl, name: str) -> str:
    """The id of experiment ``name``, created (as a model-training experiment) or restored
    when needed."""
    exp = cl.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            cl.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND_TAG not in exp.tags:  # created before kerasyard marked its kind
            cl.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return exp.experiment_id
    try:
        return cl.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except Exception:  # created concurrently by another worker
        exp = cl.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for MLflow params: {"fit": {"epochs": 3}} -> {"fit.epochs": 3}."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = data
    return out


# The plan's (and the worker's) quantities that restate a spec field, by the field's path.
PLAN_SPEC_FIELDS = {"batch_size": "fit.batch_size", "epochs": "fit.epochs",
                    "n_samples": "dataset.n_samples", "n_classes": "dataset.n_classes",
                    "gradient_descent": "fit.gradient_descent",
                    "steps_per_execution": "fit.steps_per_execution"}


def run_params(spec_dict: dict, plan: S.TrainingPlan, extra: dict,
               swept: dict | None = None) -> dict[str, str]:
    """A run's params, each once: every field of the spec under its path (``fit.batch_size``,
    ``model.layers.0.activation``); the plan's quantities and ``extra`` (``steps_per_epoch``,
    ``total_updates``, ...), less those that restate the value of a field the spec sets (the
    batch size, the epochs); and for a sweep trial each swept factor under the sweep's path
    (``swept``: the trial's params), so a factor that is no single spec field
    (``model.hidden_activation``) is a param too. Keys and values are cut to MLflow's limits
    (250 and 6,000 characters); :func:`log_params` sends them 100 at a time."""
    params = {k: v for k, v in flatten(spec_dict).items() if v is not None}
    for key, value in {**plan.as_dict(), **extra}.items():
        path = PLAN_SPEC_FIELDS.get(key)
        if path is None or path not in params or str(params[path]) != str(value):
            params[key] = value
    for path, value in (swept or {}).items():
        params.setdefault(path, value)
    return {k[:250]: str(v)[:6000] for k, v in params.items()}


def log_params(cl, run_id: str, params: dict[str, str], metrics: list | None = None) -> None:
    """Every param, in log_batch calls of at most :data:`PARAM_BATCH`; ``metrics`` (MLflow
    ``Metric``s) go with the first call."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, max(len(items), 1 if metrics else 0), PARAM_BATCH):
        cl.log_batch(run_id, params=items[i:i + PARAM_BATCH],
                     metrics=(metrics or []) if i == 0 else [])


def start_run(cl, exp_id: str, run_name: str, tags: dict[str, str], params: dict[str, str],
              metrics: list | None = None) -> str:
    run = cl.create_run(exp_id, run_name=run_name, tags=tags)
    log_params(cl, run.info.run_id, params, metrics)
    return run.info.run_id


def find_run(cl, exp_id: str, job_id: str, attempt: int) -> str | None:
    """The run this job's attempt created already (an earlier try whose answer was lost)."""
    runs = cl.search_runs([exp_id], filter_string=f"tags.`kerasyard.job_id` = '{job_id}' and "
                          f"tags.`kerasyard.attempt` = '{attempt}'", max_results=5)
    return runs[0].info.run_id if runs else None


def start_job_run(cl, exp_id: str, run_name: str, tags: dict[str, str],
                  params: dict[str, str], metrics: list | None = None,
                  retried: bool = True) -> str:
    """:func:`start_run` that may be called again after a failure: a run with the same
    ``kerasyard.job_id`` and ``kerasyard.attempt`` tags is reused (its params and
    ``metrics`` logged again, same values and timestamps), so retries never leave two runs.
    ``retried`` False (the first try of an attempt, when no run can exist yet) skips the
    search."""
    run_id = find_run(cl, exp_id, tags["kerasyard.job_id"], int(tags["kerasyard.attempt"])) \
        if retried else None
    if run_id is None:
        return start_run(cl, exp_id, run_name, tags, params, metrics)
    log_params(cl, run_id, params, metrics)
    return run_id


def log_values(cl, run_id: str, values: dict[str, float]) -> None:
    """Single-value metrics (step 0) in one log_batch call."""
    log_epochs(cl, run_id, [], values)


def log_epochs(cl, run_id: str, epochs: list[tuple[int, dict[str, float]]],
               values: dict[str, float] | None = None,
               stamps: dict[int, int] | None = None) -> None:
    """One log_batch call for every epoch gathered since the last flush (step = epoch), and
    any single-value metrics (``values``, step 0) in the same call.

    ``stamps`` (epoch -> milliseconds) fixes each epoch's timestamp: an epoch without one gets
    now, written into it. A batch sent again after a lost answer then repeats the very rows
    MLflow stored: its SQL store keeps one row per (key, timestamp, step, value), and drops the
    repeats instead of adding a second point at the same step.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    stamps = {} if stamps is None else stamps
    metrics = [Metric(name, value, stamps.setdefault(step, now), step)
               for step, row in [*epochs, (0, values or {})]
               for name, value in row.items() if not math.isnan(value)]  # NaN is not loggable
    for i in range(0, len(metrics), METRIC_BATCH):
        cl.log_batch(run_id, metrics=metrics[i:i + METRIC_BATCH])


def logged_steps(cl, run_id: str) -> dict[str, int]:
    """Each metric of the run and the last step logged of it (a resumed run skips those)."""
    metrics = cl.get_run(run_id).data.metrics
    return {key: max((m.step for m in cl.get_metric_history(run_id, key)), default=0)
            for key in metrics}


def base_tags(job_id: str, sweep_id: str | None, digest: str, backend: str) -> dict[str, str]:
    tags = {
        "kerasyard.job_id": job_id,
        "kerasyard.dataset_digest": digest,
        "kerasyard.version": __version__,
        "kerasyard.keras_backend": backend,
    }
    if sweep_id:
        tags["kerasyard.sweep_id"] = sweep_id
    return tags


def child_tags(ctx: api.TrialContext, parent_run_id: str,
               shared: api.SharedTrial | None = None) -> dict[str, str]:
    """The MLflow tags of a trial's child run (this training's, or a shared trial's)."""
    number, name = (shared.number, shared.trial_name) if shared else (ctx.number, ctx.name)
    return {"mlflow.parentRunId": parent_run_id,
            "kerasyard.trial_number": str(number),
            "kerasyard.trial": name,
            "kerasyard.repeat": str(ctx.repeat)}


def parent_params(spec: dict, plan: dict) -> dict[str, str]:
    """The sweep's parent run's params: how it searches, and each parameter's space."""
    params = {"sweep.method": spec["method"],
              "sweep.objective": f"{spec['objective']['goal']} {spec['objective']['metric']}",
              "sweep.max_parallel": spec["max_parallel"],
              "sweep.trials": plan["total"], "sweep.repeats": spec["repeats"],
              "sweep.early_stopping": (spec["early_stopping"] or {}).get("type", "none"),
              "sweep.share_epochs": plan["share_epochs"],
              "sweep.pack": plan.get("pack", False)}
    for path, space in spec["parameters"].items():
        params[f"sweep.parameters.{path}"] = space
    return {k: str(v)[:6000] for k, v in params.items()}


def parent_tags(sweep_id: str, name: str) -> dict[str, str]:
    return {"kerasyard.sweep_id": sweep_id, "kerasyard.kind": "sweep",
            "mlflow.note.content": f"Sweep **{name}**: one child run per trial."}


def sweep_parent_run(settings, cl, sweep_id: str) -> tuple[str, str]:
    """The sweep's MLflow parent run, created by whichever trial (or report) gets there
    first; a run that lost the race is deleted."""
    parent = api.parent_run(settings, sweep_id)
    if parent.run_id:
        return parent.run_id, parent.experiment_id
    exp_id = experiment_id(cl, parent.experiment)
    mine = start_run(cl, exp_id, f"sweep: {parent.name}", parent_tags(sweep_id, parent.name),
                     parent_params(parent.spec, parent.plan))
    run_id, exp_id, won = api.adopt_parent_run(settings, sweep_id, mine, exp_id)
    if not won:
        cl.delete_run(mine)
    return run_id, exp_id
