"""The sweep's report, written into its MLflow parent run when the sweep ends.

- ``report.html``: the page to open first (MLflow shows it inline): the objective for each pair
  of factors, which factor matters, each factor's effect with its seed spread, the learning
  curves on three clocks (epochs, updates, seconds), the sortable trial table with links to
  every child run. Self-contained: its figures are embedded.
- ``overview.png``, ``importance.png``, ``objective_by_factor.png``, ``curves.png``: the same
  figures as files (:mod:`.sweep_figures`, from what :mod:`.sweep_insight` computed).
- ``trials.csv``: one row per trial (configuration): its parameters, state, the objective's
  mean and standard deviation over seeds, each seed's value, jobs and runs.
- ``runs.csv``: one row per job (trial x seed).
- ``best_trial.json`` and the parent run's ``best.*`` params and metrics; ``importance.<param>``
  metrics; a description (note) with the best trials and a link to the report.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import logging
import statistics
import tempfile
from pathlib import Path

from service import worker_api as api
from service.config import Settings, mlflow_artifact_url, mlflow_run_url
from service.jobspec.sweep import fmt_value, short_name
from service.worker_api import Job, JobStatus, Sweep, SweepStatus, Trial, job_objective
from worker.recording import tracking
from worker.sweeps.report import curves as C
from worker.sweeps.report import figures as sweep_figures
from worker.sweeps.report import html as report_html
from worker.sweeps.report import insight as I
from worker.sweeps.report import registry
from worker.sweeps.report import words as W
from worker.sweeps.report.importance import Importance, importance

log = logging.getLogger(__name__)

SWEEP_RUN_STATUS = {SweepStatus.succeeded: "FINISHED", SweepStatus.cancelled: "KILLED"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write_report(sweep_id: str, settings: Settings) -> str:
    data = api.report_data(settings, sweep_id)
    if data is None:
        return "done"  # written already, or the sweep is gone
    try:
        artifacts, handed = _write(settings, data.sweep, data.jobs, data.trials, data.best,
                                   data.curves)
        report = {"state": "done", "artifacts": artifacts, "finished_at": utcnow().isoformat(),
                  **handed}
    except Exception as exc:
        log.exception("report of sweep %s failed", sweep_id)
        report = {"state": "failed", "error": f"{type(exc).__name__}: {exc}",
                  "finished_at": utcnow().isoformat()}
    api.save_report(settings, sweep_id, report)
    return report["state"]


def _write(settings: Settings, sweep: Sweep, jobs: list[Job], trials: list[Trial],
           best: dict | None, curves: dict[str, list[dict]]) -> tuple[list[str], dict]:
    """The report's artifacts, metrics and tags on the parent run, the best model registered;
    returns the artifacts' names and ``{registered_model}`` or ``{no_model_registered}``."""
    if not settings.mlflow_logging:
        return [], {}
    cl = tracking.client(settings.mlflow_tracking_uri)
    run_id, exp_id = tracking.sweep_parent_run(settings, cl, sweep.id)
    params = sweep.plan["param_order"]
    imp = importance(trials, params)
    handed = _hand_over(cl, settings, sweep, jobs, best)
    with tempfile.TemporaryDirectory(prefix="kerasyard-sweep-") as tmp:
        out = Path(tmp)
        _trials_csv(trials, params, out / "trials.csv")
        _runs_csv(jobs, params, sweep.spec["objective"]["metric"], out / "runs.csv",
                  sweep.spec["objective"].get("at", "last"))
        (out / "best_trial.json").write_text(json.dumps(best, indent=2))
        page = _report(settings, sweep, jobs, trials, best, curves, imp, out, exp_id, run_id,
                       handed)
        cl.log_artifacts(run_id, str(out))
        names = sorted(p.name for p in out.iterdir())
    report_url = mlflow_artifact_url(settings.mlflow_ui_url, exp_id, run_id, "report.html")
    metrics, best_params, tags = _run_fields(sweep, jobs, trials, best, imp, handed)
    tags["mlflow.note.content"] = _note(sweep, trials, page["headline"],
                                        sweep.spec["objective"]["metric"], params, report_url,
                                        handed)
    from mlflow.entities import RunTag

    cl.log_batch(run_id, metrics=metrics, params=best_params,
                 tags=[RunTag(k, v) for k, v in tags.items()])
    cl.set_terminated(run_id, SWEEP_RUN_STATUS.get(sweep.status, "FAILED"))
    return names, handed


def _hand_over(cl, settings: Settings, sweep: Sweep, jobs: list[Job], best: dict | None) -> dict:
    """The best model registered (:mod:`.registry`): ``{"registered_model": {...}}``, or
    ``{"registered_model": None, "no_model_registered": why}``; a registry that fails is a
    reason, not a failed report."""
    try:
        registered, why = registry.register_best(cl, settings, sweep, jobs, best)
    except Exception as exc:
        log.warning("registering the best model of sweep %s failed", sweep.id, exc_info=True)
        registered, why = None, f"registering it failed: {type(exc).__name__}: {exc}"
    return {"registered_model": registered} if registered else \
        {"registered_model": None, "no_model_registered": why}


def _run_fields(sweep: Sweep, jobs: list[Job], trials: list[Trial], best: dict | None,
                imp: Importance, handed: dict) -> tuple[list, list, dict]:
    """The parent run's metrics, params and tags (the note aside)."""
    from mlflow.entities import Metric, Param

    now = int(utcnow().timestamp() * 1000)
    counts = {state: sum(1 for t in trials if t.state == state)
              for state in ("succeeded", "failed", "pruned", "cancelled")}
    metrics = [Metric(f"trials_{k}", v, now, 0) for k, v in counts.items()]
    metrics += [Metric(k, v, now, 0) for k, v in imp.metrics().items()]
    best_params: list[Param] = []
    tags = {"kerasyard.sweep_status": sweep.status.value}
    if imp.main:
        tags["kerasyard.importance_method"] = imp.method
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
    model = handed.get("registered_model")
    if model:
        tags.update({"kerasyard.registered_model": model["name"],
                     "kerasyard.registered_model_version": model["version"],
                     "kerasyard.registered_model_url": model["url"]})
    elif handed.get("no_model_registered"):
        tags["kerasyard.no_model_registered"] = handed["no_model_registered"][:5000]
    return metrics, best_params, tags


NOTE_ROWS = 8


def _note(sweep: Sweep, trials: list[Trial], headline: dict, metric: str, params: list[str],
          report_url: str, handed: dict) -> str:
    """The parent run's description: where the report is, the headline, the registered model,
    then the best trials as a narrow table (one column per factor) that fits MLflow's
    description box."""
    goal = sweep.spec["objective"].get("goal", "minimize")
    lines = [f"Sweep **{sweep.name}** ({sweep.method}, {len(trials)} trials): "
             f"{sweep.status.value}.", "",
             f"**[Open the report]({report_url})** (`report.html` under Artifacts): the "
             f"objective for each pair of factors, which factor matters, learning curves per "
             "epoch, update and second, every trial.", "", headline["text"], ""]
    model = handed.get("registered_model")
    if model:
        lines += [f"Model: [{model['name']} version {model['version']}]({model['url']}), "
                  f"alias `{model['alias']}`.", ""]
    elif handed.get("no_model_registered"):
        lines += [f"No model registered: {handed['no_model_registered']}.", ""]
    ranked = sorted(I.finished(trials), key=lambda t: t.objective,
                    reverse=goal == "maximize")
    if ranked:
        shown = [short_name(p) for p in params]
        lines += [f"| {' | '.join(shown)} | {metric} |",
                  "|" + " --- |" * (len(shown) + 1)]
        for t in ranked[:NOTE_ROWS]:
            obj = f"{t.objective:.4g}" + (f" ± {t.objective_std:.2g}"
                                           if t.objective_std is not None else "")
            cells = [fmt_value(t.params.get(p)) for p in params]
            lines.append(f"| {' | '.join(cells)} | {obj} |")
        rest = len(trials) - min(len(ranked), NOTE_ROWS)
        if rest:
            lines += ["", f"{rest} more trials in the report."]
    return "\n".join(lines)


def _report(settings: Settings, sweep: Sweep, jobs: list[Job], trials: list[Trial],
            best: dict | None, curves: dict[str, list[dict]], imp: Importance, out: Path,
            exp_id: str, run_id: str, handed: dict | None = None) -> dict:
    """report.html and its figures as PNG files beside it; returns the page's data block."""
    objective = sweep.spec["objective"]
    metric, goal = objective["metric"], objective.get("goal", "minimize")
    params = sweep.plan["param_order"]
    chance = W.chance_of(jobs, metric)
    grids = I.pair_grids(trials, params, best)
    line_by, panels = C.curve_panels(trials, jobs, params, curves, metric, goal)
    figures = _figures(out, metric, goal, chance, grids, imp,
                       I.factor_effects(trials, params, best), line_by, panels)
    rows = _trial_rows(settings, jobs, trials, best)
    head = W.headline(best, metric, objective.get("at", "last"))
    over = W.overtraining(panels, line_by, metric, chance, goal)
    handed = handed or {}
    data = {
        "sweep_id": sweep.id, "name": sweep.name, "metric": metric, "goal": goal,
        "chance": chance.value if chance else None,
        "chance_label": chance.label if chance else None,
        "majority": chance.majority if chance else None, "params": params,
        "headline": head, "overview": [g.as_dict() for g in grids],
        "importance": imp.as_dict(),
        "curves": {"line_by": line_by, "clocks": list(I.CLOCKS), "panels": [
            {"fixed": p.fixed, "lines": [c.label for c in p.curves],
             "marks": [[c.label, m[0], m[2]] for c in p.curves for m in c.marks],
             "best_epochs": [[c.label, c.best_epoch, c.best_value, c.worse]
                             for c in p.curves]}
            for p in panels], "overtraining": over["curves"]},
        "trials": [{"number": r["number"], "name": r["name"], "params": r["params"],
                    "state": r["state"], "objective": r["objective"]} for r in rows],
        "figures": sorted(figures), **handed,
    }
    texts = {"headline": head["text"], "model": _model_html(handed),
             "overtraining": over["text"],
             "update_lesson": W.update_lesson(panels, line_by, metric, goal)}
    page = report_html.render(title=f"Sweep {sweep.name}", data=data, figures=figures,
                              lede=_lede(settings, sweep, trials, metric, goal, chance, exp_id,
                                         run_id),
                              trials_rows=rows, params=params, metric=metric, goal=goal,
                              notes=_notes(jobs), texts=texts)
    (out / "report.html").write_text(page, encoding="utf-8")
    return data


def _lede(settings: Settings, sweep: Sweep, trials: list[Trial], metric: str, goal: str,
          chance: W.Chance | None, exp_id: str, run_id: str) -> str:
    parent = mlflow_run_url(settings.mlflow_ui_url, exp_id, run_id)
    e = html.escape
    return (f"{e(sweep.method)} sweep, {len(trials)} trials, {sweep.status.value}; objective "
            f"<b>{e(metric)}</b> ({sweep_figures.direction(goal)})"
            + (f"; {e(chance.label)}" if chance else "")
            + (f"; {e(chance.majority_label)}" if chance and chance.majority_label else "")
            + f". <a href='{e(parent)}' target='_blank' rel='noopener'>Parent run in MLflow</a>.")


def _model_html(handed: dict) -> str:
    e = html.escape
    model = handed.get("registered_model")
    if model:
        return (f"The best configuration's model is registered: <a id='model-link' "
                f"href='{e(model['url'])}' target='_blank' rel='noopener'>{e(model['name'])} "
                f"version {e(model['version'])}</a>, alias <code>{e(model['alias'])}</code> "
                f"(<code>models:/{e(model['name'])}@{e(model['alias'])}</code> loads it).")
    why = handed.get("no_model_registered")
    return f"No model registered: {e(why)}." if why else ""


def _notes(jobs: list[Job]) -> list[str]:
    if jobs and all(not (j.plan or {}).get("n_val") for j in jobs):
        return ["These trials hold no data out: their metrics are on the training data "
                "and say how well each network fits it, not how it does on new data. "
                "Set <code>fit.validation_split</code> in the base spec."]
    return []


def _figures(out: Path, metric: str, goal: str, chance, grids, imp: Importance, effects,
             line_by, panels) -> dict[str, Path]:
    """The report's figures as PNG files in ``out``, by name: those with something to show."""
    figures: dict[str, Path] = {}
    if grids:
        figures["overview"] = sweep_figures.overview(grids, metric, goal, chance,
                                                     out / "overview.png")
    if imp.main:
        figures["importance"] = sweep_figures.importance(imp, metric, out / "importance.png")
    if effects:
        figures["factors"] = sweep_figures.factor_effects(effects, metric, goal, chance,
                                                          out / "objective_by_factor.png")
    if panels:
        figures["curves"] = sweep_figures.clocks(panels, line_by, metric, goal, chance,
                                                 out / "curves.png")
    return figures


def _trial_rows(settings: Settings, jobs: list[Job], trials: list[Trial],
                best: dict | None) -> list[dict]:
    """One row per trial for the report's table: its state and objective over seeds, epochs,
    updates, mean fit time (the trainings, not the trials recorded from them), run links."""
    by_id = {j.id: j for j in jobs}
    rows = []
    for t in trials:
        tjobs = [by_id[tj.id] for tj in t.jobs if tj.id in by_id]
        plan = tjobs[0].plan if tjobs else {}
        fit = [(j.summary or {}).get("fit_time_s") for j in tjobs if not j.trained_by]
        fit = [f for f in fit if isinstance(f, (int, float))]
        epochs = t.params.get(I.EPOCHS) or (plan or {}).get("epochs")
        rows.append({
            "number": t.number, "name": t.name, "params": t.params, "state": t.state,
            "objective": t.objective, "sd": t.objective_std,
            "seeds": len(t.objective_values), "epochs": epochs,
            "updates": (epochs * plan["steps_per_epoch"]) if epochs and plan
            and plan.get("steps_per_epoch") else None,
            "fit_s": sum(fit) / len(fit) if fit else None,
            "best": bool(best and t.number == best["number"]),
            "links": [(f"seed {j.repeat}" if len(tjobs) > 1 else "run",
                       mlflow_run_url(settings.mlflow_ui_url, j.mlflow_experiment_id,
                                      j.mlflow_run_id))
                      for j in tjobs if j.mlflow_run_id and j.mlflow_experiment_id]})
    return rows


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


def _runs_csv(jobs: list[Job], params: list[str], metric: str, path: Path,
              at: str = "last") -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "repeat", "seed", *params, "status", metric, "epochs_completed",
                    "fit_time_s", "job_id", "mlflow_run_id", "trained_by", "error"])
        for j in jobs:
            summary = j.summary or {}
            w.writerow([j.trial_number, j.repeat, (j.spec.get("fit") or {}).get("seed"),
                        *((j.trial_params or {}).get(p) for p in params), j.status.value,
                        job_objective(j, metric, at), summary.get("epochs_completed"),
                        summary.get("fit_time_s"), j.id, j.mlflow_run_id or "",
                        j.trained_by or "", (j.error or {}).get("message", "")])
