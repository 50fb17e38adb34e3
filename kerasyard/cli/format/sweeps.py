"""A sweep: its trials table (cut to a terminal's height when asked), the watch's lines and
block, ``show``'s details and the sweeps table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .cells import (
    STATUS_STYLES,
    fmt_age,
    fmt_duration,
    fmt_number,
    key_values,
    plain,
    short_id,
    status_text,
    table,
    took,
)


def fmt_params(params: dict | None) -> str:
    """``{"fit.batch_size": 5, "model.hidden_activation": "relu"}`` -> ``batch_size=5
    hidden_activation=relu``; the full path where two last segments clash."""
    params = params or {}
    lasts = [str(k).rsplit(".", 1)[-1] for k in params]
    out = []
    for (key, value), last in zip(params.items(), lasts):
        name = last if lasts.count(last) == 1 else str(key)
        out.append(f"{name}={fmt_number(value) if isinstance(value, float) else value}")
    return " ".join(out)


def fmt_objective(value, std=None) -> str:
    if value is None:
        return "-"
    return fmt_number(value) + (f" ± {fmt_number(std)}" if std else "")


def objective_label(objective: dict | None) -> str:
    """``val_loss ↓`` (lower is better) or ``accuracy ↑``."""
    objective = objective or {}
    arrow = {"minimize": " ↓", "maximize": " ↑"}.get(objective.get("goal"), "")
    return f"{objective.get('metric', 'objective')}{arrow}"


def _trainer(sweep: dict, trial: dict) -> dict | None:
    """The trial whose training this trial is recorded from (``trained_by``), if any."""
    by = trial.get("trained_by")
    if not by:
        return None
    return next((t for t in sweep.get("trials") or [] if t is not trial
                 and any(j.get("id") == by for j in t.get("jobs") or [])), None)


def _recorded_epochs(trainer: dict, trial: dict) -> list[str]:
    """Each seed's epoch as its training has got: the trainer's epoch, up to the trial's own
    epoch count."""
    out = []
    for j in trial.get("jobs") or []:
        tj = next((x for x in trainer.get("jobs") or [] if x.get("repeat") == j.get("repeat")),
                  (trainer.get("jobs") or [{}])[0])
        own = j.get("epochs")
        epoch = min(tj.get("epoch") or 0, own) if own else tj.get("epoch") or 0
        out.append(f"{epoch}/{own or '?'}")
    return out


def trial_state(sweep: dict, trial: dict) -> tuple[Text, str]:
    """(state, epoch) as the trials table shows them. A trial recorded from a longer training
    (``trained_by``) that is still under way reads ``from #N`` with that training's epoch."""
    state = trial.get("state", "")
    trainer = _trainer(sweep, trial)
    if trainer is not None and state in ("queued", "running"):
        return (Text(f"from #{trainer.get('number')}", style=STATUS_STYLES["running"]
                     if state == "running" else "dim"),
                ", ".join(_recorded_epochs(trainer, trial)) or "-")
    jobs = trial.get("jobs") or []
    running = [j for j in jobs if j.get("status") == "running"]
    shown = running or jobs
    epoch = ", ".join(f"{j.get('epoch') or 0}/{j.get('epochs') or '?'}" for j in shown) or "-"
    return status_text(state), epoch


_STATE_RANK = {"running": 0, "paused": 1, "succeeded": 2, "pruned": 2, "failed": 2,
               "cancelled": 2, "queued": 3, "pending": 4}


def visible_trials(trials: list[dict], best: int | None, max_rows: int | None
                   ) -> tuple[list[dict], int]:
    """At most ``max_rows`` trials for a terminal: the best, the running, then the others in
    state order; shown in trial order. Returns (trials, how many were left out)."""
    if max_rows is None or len(trials) <= max_rows:
        return list(trials), 0
    max_rows = max(1, max_rows)
    ranked = sorted(trials, key=lambda t: (t.get("number") != best,
                                           _STATE_RANK.get(t.get("state"), 1),
                                           t.get("number") or 0))
    keep = {id(t) for t in ranked[:max_rows]}
    return [t for t in trials if id(t) in keep], len(trials) - max_rows


def trials_table(sweep: dict, max_rows: int | None = None) -> RenderableType:
    """Trials with params, state, epoch, objective; the best trial marked ``*``. With
    ``max_rows``, a longer list is cut to the trials that matter now (see visible_trials)."""
    best = (sweep.get("best") or {}).get("number")
    trials, hidden = visible_trials(sweep.get("trials") or [], best, max_rows)
    if not trials:
        return Text("no trials yet")
    rows = []
    for t in trials:
        state, epoch = trial_state(sweep, t)
        mark = best is not None and t.get("number") == best
        rows.append([Text("*", style="bold green") if mark else "", t.get("number"),
                     t.get("name") or fmt_params(t.get("params")), state, epoch,
                     Text(fmt_objective(t.get("objective"), t.get("objective_std")),
                          style="bold green" if mark else "")])
    out = table(["", "#", "PARAMS", "STATE", "EPOCH", objective_label(sweep.get("objective"))],
                rows, right={1, 4, 5})
    if not hidden:
        return out
    return Group(out, Text(f"   ... {hidden} more trials (kerasyard show "
                           f"{short_id(sweep.get('id'))})", style="dim"))


def sweep_progress(sweep: dict) -> str:
    p = sweep.get("progress") or {}
    return (f"{p.get('done', 0)}/{p.get('total', '?')} done, {p.get('running', 0)} running, "
            f"{p.get('queued', 0)} queued")


def _seeds(n) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def best_line(sweep: dict) -> str | None:
    """The best trial, its runner-up and whether the gap is clear of the seeds' noise, in
    one sentence: ``best: trial 3 (bs=5 act=tanh) val_loss 1.508 ± 0.012 over 3 seeds;
    runner-up trial 7 (bs=1 act=tanh) 1.519 ± 0.020 over 3 seeds; within noise: add
    repeats``."""
    best = sweep.get("best")
    if not best:
        return None
    metric = (sweep.get("objective") or {}).get("metric", "objective")
    label = best.get("name") or fmt_params(best.get("params"))
    line = f"best: trial {best.get('number')} ({label})  {metric} " + \
        fmt_objective(best.get("objective"), best.get("objective_std"))
    if best.get("n_seeds"):
        line += f" over {_seeds(best['n_seeds'])}"
    second = best.get("runner_up")
    if second:
        line += (f"; runner-up trial {second.get('number')} "
                 f"({second.get('name') or fmt_params(second.get('params'))}) "
                 + fmt_objective(second.get("objective"), second.get("objective_std"))
                 + (f" over {_seeds(second['n_seeds'])}" if second.get("n_seeds") else ""))
        if "clear" in best:
            line += "; the best is clearly better (Welch's t-test, 5 %)" if best["clear"] \
                else "; within noise: add repeats"
    return line


def registered_line(sweep: dict) -> str | None:
    """Where the winner's model is (``models:/<name>@best``, version and its page), or why
    none was registered; None before the report is written."""
    report = sweep.get("report") or {}
    model = report.get("registered_model")
    if model:
        return (f"models:/{model.get('name')}@{model.get('alias') or 'best'} "
                f"(version {model.get('version')})  {model.get('url') or ''}").rstrip()
    why = report.get("no_model_registered")
    return f"none registered: {why}" if why else None


def sweep_header(sweep: dict) -> str:
    return (f"sweep {sweep.get('name') or '?'} ({short_id(sweep.get('id'))}) "
            f"{sweep.get('status')}  {sweep.get('method', '')}  {sweep_progress(sweep)}")


def running_trials(sweep: dict) -> str:
    """``trial 3 epoch 7/50, trial 4 (from #3) epoch 7/10``: the trials training now."""
    out = []
    for t in sweep.get("trials") or []:
        if t.get("state") != "running":
            continue
        trainer = _trainer(sweep, t)
        if trainer is not None:
            out += [f"trial {t.get('number')} (from #{trainer.get('number')}) epoch {e}"
                    for e in _recorded_epochs(trainer, t)]
            continue
        for j in t.get("jobs") or []:
            if j.get("status") == "running":
                out.append(f"trial {t.get('number')} epoch {j.get('epoch') or 0}/"
                           f"{j.get('epochs') or '?'}")
    return ", ".join(out)


def trial_event(sweep: dict, trial: dict) -> str:
    """A plain line for a trial whose state or objective changed."""
    label = trial.get("name") or fmt_params(trial.get("params"))
    state = plain(trial_state(sweep, trial)[0])
    line = f"trial {trial.get('number')} ({label}) {state}"
    if trial.get("objective") is not None:
        metric = (sweep.get("objective") or {}).get("metric", "objective")
        line += f"  {metric} {fmt_objective(trial['objective'], trial.get('objective_std'))}"
    return line


def sweep_watch_block(sweep: dict, max_rows: int | None = None) -> RenderableType:
    """What ``sweep --watch`` redraws: header, trials table, best trial."""
    parts: list[RenderableType] = [Text(sweep_header(sweep), style="bold"),
                                   trials_table(sweep, max_rows)]
    best = best_line(sweep)
    if best:
        parts.append(Text(best, style="green"))
    return Group(*parts)


def sweep_details(sweep: dict) -> RenderableType:
    objective = sweep.get("objective") or {}
    rows: list[tuple[str, Any]] = [
        ("sweep", sweep.get("id")), ("name", sweep.get("name")),
        ("status", status_text(sweep.get("status"))), ("method", sweep.get("method")),
        ("objective", f"{objective_label(objective)} ({objective.get('goal', '?')})"),
        ("trials", f"{sweep.get('max_trials') or (sweep.get('progress') or {}).get('total')}"
                   f", {sweep.get('max_parallel')} at a time"
                   + (f", {sweep['repeats']} repeats each" if (sweep.get("repeats") or 1) > 1
                      else "")),
        ("progress", sweep_progress(sweep))]
    share = sweep.get("share_epochs")
    if isinstance(share, dict):
        rows.append(("share epochs", f"{'on' if share.get('on') else 'off'}: {share.get('why')}"))
    if sweep.get("error"):
        err = sweep["error"]
        rows.append(("error", Text(f"{err.get('type', 'error')}: {err.get('message', '')}"
                                   if isinstance(err, dict) else str(err), style="red")))
    rows.append(("mlflow", (sweep.get("mlflow") or {}).get("url") or "-"))
    model = registered_line(sweep)
    if model:
        rows.append(("best model", model))
    rows.append(("created", sweep.get("created_at") or "-"))
    if sweep.get("finished_at"):
        rows.append(("finished", f"{sweep['finished_at']} (took {fmt_duration(took(sweep))})"))
    parts: list[RenderableType] = [key_values(rows), Text(""), trials_table(sweep)]
    best = best_line(sweep)
    if best:
        parts.append(Text(best, style="green"))
    return Group(*parts)


def sweeps_table(sweeps: Sequence[dict], now: dt.datetime | None = None) -> Table:
    rows = []
    for s in sweeps:
        p = s.get("progress") or {}
        best = s.get("best") or {}
        rows.append([short_id(s.get("id")), s.get("name", ""), status_text(s.get("status")),
                     s.get("method", ""), f"{p.get('done', 0)}/{p.get('total', '?')}",
                     p.get("running", 0), objective_label(s.get("objective")),
                     fmt_number(best.get("objective")) if best else "-",
                     fmt_age(s.get("created_at"), now)])
    return table(["ID", "NAME", "STATUS", "METHOD", "DONE", "RUNNING", "OBJECTIVE", "BEST",
                  "CREATED"], rows, right={4, 5, 7})
