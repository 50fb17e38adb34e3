"""The sweep's winner handed over: the best configuration's model registered in the MLflow
Model Registry when the sweep ends, as a version of the registered model named after the sweep,
with the alias ``best`` (``models:/<name>@best`` loads it).

The version is the model logged by the best configuration's run; with several seeds, the seed
whose own objective is best (each seed's model is a different network, and this is the one to
use). Its tags say which sweep, trial and seed it is and its objective. A sweep of the same name
run again adds a version and moves ``best`` to its winner; the versions before stay.

Idempotent: the report may be written again after a crash (the sweep's report state is saved
only at the end), so an existing version of this sweep from the same run is reused, never
duplicated; a registered model that another writer created first is used as it is.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from service.config import MLFLOW_UI_MODE, Settings
from service.worker_api import Job, JobStatus, Sweep, job_objective

log = logging.getLogger(__name__)

ALIAS = "best"


def registered_name(sweep_name: str) -> str:
    """The sweep's name as a registered model's name: MLflow refuses ``/`` and ``:`` in
    one, so each (with the spaces around it) becomes `` - ``; ``lecture: batch size x
    activation`` is ``lecture - batch size x activation``."""
    name = re.sub(r"\s*[/:]+\s*", " - ", sweep_name).strip(" -") or "sweep"
    return f"sweep {name}" if name.startswith(".") else name


def model_url(ui_url: str, name: str, version: str | int | None = None) -> str:
    """The MLflow UI's page of a registered model (or one of its versions)."""
    url = f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}"
    return (f"{url}/versions/{version}" if version is not None else url) + f"?{MLFLOW_UI_MODE}"


def register_best(cl, settings: Settings, sweep: Sweep, jobs: list[Job], best: dict | None
                  ) -> tuple[dict | None, str | None]:
    """Register the best configuration's model with the alias ``best``.

    Returns:
        tuple[dict | None, str | None]: ``({name, version, alias, run_id, model_id, url},
        None)`` when a version is registered, else ``(None, why not)``.
    """
    if best is None:
        return None, "no trial finished with an objective, so there is no best model"
    if not settings.log_model:
        return None, ("the trials logged no model (KERASYARD_LOG_MODEL is off), so there is "
                      "no model to register")
    found = _logged_model(cl, sweep, jobs, best)
    if found is None:
        return None, (f"the best trial's runs ({best['name']}) have no logged model that "
                      "finished uploading, so there is no model to register")
    job, model = found
    name = registered_name(sweep.name)
    _ensure_registered_model(cl, name, sweep)
    version = _version_of(cl, name, sweep.id, job.mlflow_run_id)
    if version is None:
        seeds = len(best.get("job_ids") or [])
        version = cl.create_model_version(
            name, source=model.model_uri, run_id=job.mlflow_run_id, model_id=model.model_id,
            tags={"kerasyard.sweep_id": sweep.id, "kerasyard.trial": best["name"],
                  "kerasyard.seed": str((job.spec.get("fit") or {}).get("seed")),
                  "kerasyard.objective": repr(best["objective"])},
            description=(f"The best configuration of sweep {sweep.name} ({sweep.id}): "
                         f"{best['name']}, objective {best['objective']:.4g} (mean over "
                         f"{seeds} seed{'s' if seeds != 1 else ''}); this is the model of "
                         f"its seed {(job.spec.get('fit') or {}).get('seed')}.")).version
    cl.set_registered_model_alias(name, ALIAS, str(version))
    return {"name": name, "version": str(version), "alias": ALIAS,
            "run_id": job.mlflow_run_id, "model_id": model.model_id,
            "url": model_url(settings.mlflow_ui_url, name, version)}, None


def _logged_model(cl, sweep: Sweep, jobs: list[Job], best: dict):
    """(the seed's job, its logged model): the best trial's seed with the best objective whose
    run has a READY logged model; None when none has."""
    metric = sweep.spec["objective"]["metric"]
    sign = -1.0 if sweep.spec["objective"].get("goal") == "maximize" else 1.0
    ids = set(best.get("job_ids") or [])
    seeds = [j for j in jobs if j.id in ids and j.status == JobStatus.succeeded
             and j.mlflow_run_id]
    seeds.sort(key=lambda j: (job_objective(j, metric) is None,
                              sign * (job_objective(j, metric) or 0.0)))
    for job in seeds:
        run = cl.get_run(job.mlflow_run_id)
        model_ids = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
        if not model_ids:
            model_ids = [m.model_id for m in cl.search_logged_models(
                [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")]
        for model_id in model_ids:
            model = cl.get_logged_model(model_id)
            if str(model.status).endswith("READY"):
                return job, model
    return None


def _ensure_registered_model(cl, name: str, sweep: Sweep) -> None:
    from mlflow.exceptions import MlflowException

    try:
        cl.create_registered_model(
            name, tags={"kerasyard.sweep_name": sweep.name},
            description=f"The winners of the kerasyard sweep {sweep.name!r}: the alias "
                        f"{ALIAS!r} is the best configuration's model of the latest sweep of "
                        "this name.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _version_of(cl, name: str, sweep_id: str, run_id: str) -> str | None:
    """The version this sweep registered from this run already (a report written again)."""
    for mv in cl.search_model_versions(f"run_id = '{run_id}'"):
        if mv.name == name and (mv.tags or {}).get("kerasyard.sweep_id") == sweep_id:
            return str(mv.version)
    return None
