"""The sweep's report, written into its MLflow parent run when the sweep ends.

- ``trials.csv``: one row per trial (configuration): its parameters, state, the objective's
  mean and standard deviation over seeds, each seed's value, jobs and runs.
- ``runs.csv``: one row per job (trial x seed).
- ``best_trial.json`` and the parent run's ``best.*`` params and metrics.
- ``objective_vs_<param>.png``: the objective against each swept parameter.
- ``curves_by_<param>.png``: learning curves overlaid, one per value of each parameter.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np

from service.config import Settings
from service.models import Job, JobStatus, Sweep, SweepStatus, utcnow
from service.spec.sweep import short_name
from service.sweeps import for_worker
from service.sweeps.for_worker import Trial, job_objective

from . import plots, tracking

log = logging.getLogger(__name__)

SWEEP_RUN_STATUS = {SweepStatus.succeeded: "FINISHED", SweepStatus.cancelled: "KILLED"}


def write_report(sweep_id: str, settings: Settings) -> str:
    data = for_worker.report_data(settings, sweep_id)
    if data is None:
        return "done"  # written already, or the sweep is gone
    try:
        artifacts = _write(settings, data.sweep, data.jobs, data.trials, data.best, data.curves)
        report = {"state": "done", "artifacts": artifacts, "finished_at": utcnow().isoformat()}
    except Exception as exc:
        log.exception("report of sweep %s failed", sweep_id)
        report = {"state": "failed", "error": f"{type(exc).__name__}: {exc}",
                  "finished_at": utcnow().isoformat()}
    for_worker.save_report(settings, sweep_id, report)
    return report["state"]


def _write(settings: Settings, sweep: Sweep, jobs: list[Job], trials: list[Trial],
           best: dict | None, curves: dict[str, list[dict]]) -> list[str]:
    if not settings.mlflow_logging:
        return []
    cl = tracking.client(settings.mlflow_tracking_uri)
    run_id, _ = tracking.sweep_parent_run(settings, cl, sweep.id)
    metric = sweep.spec["objective"]["metric"]
    params = sweep.plan["param_order"]
    with tempfile.TemporaryDirectory(prefix="kerasyard-sweep-") as tmp:
        out = Path(tmp)
        _trials_csv(trials, params, out / "trials.csv")
        _runs_csv(jobs, params, metric, out / "runs.csv")
        (out / "best_trial.json").write_text(json.dumps(best, indent=2))
        for path in params:
            _objective_plot(trials, path, metric, out)
            _curves_plot(trials, path, metric, curves, out)
        cl.log_artifacts(run_id, str(out))
        names = sorted(p.name for p in out.iterdir())
    counts = {state: sum(1 for t in trials if t.state == state)
              for state in ("succeeded", "failed", "pruned", "cancelled")}
    from mlflow.entities import Metric, Param, RunTag

    now = int(utcnow().timestamp() * 1000)
    metrics = [Metric(f"trials_{k}", v, now, 0) for k, v in counts.items()]
    best_params: list[Param] = []
    tags = {"kerasyard.sweep_status": sweep.status.value}
    if best is not None:
        metrics.append(Metric("best_objective", best["objective"], now, 0))
        job = next(j for j in jobs if j.id == best["job_ids"][0])
        finals = [((j.summary or {}).get("final_metrics") or {}) for j in jobs
                  if j.id in best["job_ids"] and j.status == JobStatus.succeeded]
        for name in (finals[0] if finals else {}):
            values = [f[name] for f in finals if isinstance(f.get(name), (int, float))]
            if values:
                metrics.append(Metric(f"best.{name}", statistics.fmean(values), now, 0))
        best_params = [Param(f"best.{k}", str(v)[:6000]) for k, v in best["params"].items()]
        tags.update({"kerasyard.best_trial": best["name"],
                     "kerasyard.best_run_id": job.mlflow_run_id or ""})
    tags["mlflow.note.content"] = _note(sweep, trials, best, metric)
    cl.log_batch(run_id, metrics=metrics, params=best_params,
                 tags=[RunTag(k, v) for k, v in tags.items()])
    cl.set_terminated(run_id, SWEEP_RUN_STATUS.get(sweep.status, "FAILED"))
    return names


def _note(sweep: Sweep, trials: list[Trial], best: dict | None, metric: str) -> str:
    title = (f"Sweep **{sweep.name}** ({sweep.method}, {len(trials)} trials): "
             f"{sweep.status.value}.")
    lines = [title, "", f"| trial | state | {metric} |", "| --- | --- | --- |"]
    for t in trials:
        obj = "" if t.objective is None else f"{t.objective:.4g}"
        if t.objective_std is not None:
            obj += f" ± {t.objective_std:.2g}"
        mark = " **best**" if best and t.number == best["number"] else ""
        lines.append(f"| {t.name}{mark} | {t.state} | {obj} |")
    return "\n".join(lines)


def _trials_csv(trials: list[Trial], params: list[str], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "name", *params, "state", "objective_mean", "objective_std",
                    "n_seeds", "objective_per_seed", "epochs_trained", "trained_by", "job_ids",
                    "mlflow_run_ids"])
        for t in trials:
            w.writerow([t.number, t.name, *(t.params.get(p) for p in params),
                        t.state, t.objective, t.objective_std, len(t.objective_values),
                        " ".join(f"{v:.6g}" for v in t.objective_values),
                        " ".join(str(j.epoch) for j in t.jobs), t.trained_by or "",
                        " ".join(j.id for j in t.jobs),
                        " ".join(j.mlflow_run_id or "" for j in t.jobs)])


def _runs_csv(jobs: list[Job], params: list[str], metric: str, path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "repeat", "seed", *params, "status", metric, "epochs_completed",
                    "fit_time_s", "job_id", "mlflow_run_id", "trained_by", "error"])
        for j in jobs:
            summary = j.summary or {}
            w.writerow([j.trial_number, j.repeat, (j.spec.get("fit") or {}).get("seed"),
                        *((j.trial_params or {}).get(p) for p in params), j.status.value,
                        job_objective(j, metric), summary.get("epochs_completed"),
                        summary.get("fit_time_s"), j.id, j.mlflow_run_id or "",
                        j.trained_by or "", (j.error or {}).get("message", "")])


def _values_of(trials: list[Trial], path: str) -> list:
    seen: list = []
    for t in trials:
        v = t.params.get(path)
        if v not in seen:
            seen.append(v)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
    return sorted(seen) if numeric else seen


def _objective_plot(trials: list[Trial], path: str, metric: str, out: Path) -> None:
    values = _values_of(trials, path)
    means, spreads = [], []
    for v in values:
        # Every seed of every finished trial with this value.
        pts = [x for t in trials if t.params.get(path) == v and t.state == "succeeded"
               for x in t.objective_values]
        means.append(statistics.fmean(pts) if pts else None)
        spreads.append(statistics.stdev(pts) if len(pts) > 1 else None)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    plots.objective_vs_param([str(v) for v in values], means, spreads,
                             out / f"objective_vs_{short_name(path)}.png", path, metric, numeric)


def _curves_plot(trials: list[Trial], path: str, metric: str, curves: dict[str, list[dict]],
                 out: Path) -> None:
    lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for v in _values_of(trials, path):
        series = [[e.get(metric) for e in curves.get(j.id, [])]
                  for t in trials if t.params.get(path) == v
                  and t.state in ("succeeded", "pruned") for j in t.jobs]
        series = [[np.nan if x is None else float(x) for x in s] for s in series if s]
        if not series:
            continue
        n = max(len(s) for s in series)
        grid = np.full((len(series), n), np.nan)
        for i, s in enumerate(series):
            grid[i, :len(s)] = s
        with warnings.catch_warnings():  # an epoch only some trials reached
            warnings.simplefilter("ignore", RuntimeWarning)
            lines[str(v)] = (np.nanmean(grid, axis=0), np.nan_to_num(np.nanstd(grid, axis=0)))
    if lines:
        plots.curves_by_value(lines, out / f"curves_by_{short_name(path)}.png", path, metric)
