"""Pure formatting for the command-line client: tables, progress lines, errors, exit codes.

Nothing here does I/O, so every piece is unit-tested on plain dicts shaped like the API's JSON.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable, Sequence

from .client import ApiError

# Exit codes (documented in `kerasyard --help` and the README).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2          # bad arguments, unreadable spec, or any 4xx from the API
EXIT_CANCELLED = 3
EXIT_OTHER = 4          # pruned, a 5xx, or a result that is none of the above
EXIT_UNREACHABLE = 5

EXIT_CODES_HELP = """exit codes:
  0  succeeded (or the command did what it was asked)
  1  the job or sweep failed
  2  usage or validation error: bad arguments, unreadable spec, any 4xx from the API
  3  the job or sweep was cancelled
  4  pruned, or another outcome (a 5xx from the API, no MLflow run yet)
  5  cannot reach the service"""

_STATUS_EXIT = {"succeeded": EXIT_SUCCEEDED, "failed": EXIT_FAILED,
                "cancelled": EXIT_CANCELLED, "pruned": EXIT_OTHER}


def exit_code_for_status(status: str | None) -> int:
    """The process exit code for a job's or sweep's final status."""
    return _STATUS_EXIT.get(status or "", EXIT_OTHER)


def exit_code_for_error(exc: ApiError) -> int:
    """4xx (the request was wrong) is a usage error; anything else is 'other'."""
    return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_OTHER


def render_api_error(exc: ApiError) -> list[str]:
    """The API's error as it gave it: ``error: code: message``, then one line per detail."""
    lines = [f"error: {exc.code}: {exc.message}"]
    for d in exc.details:
        if isinstance(d, dict):
            loc = d.get("loc")
            loc = ".".join(map(str, loc)) if isinstance(loc, list) else (loc or "(request)")
            lines.append(f"  {loc}: {d.get('msg', '')}")
        else:
            lines.append(f"  {d}")
    return lines


# --- numbers and times ------------------------------------------------------------------------


def fmt_number(value) -> str:
    """Metrics at four significant digits; '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    if abs(value) < 1:
        return f"{value:.4f}"
    return f"{value:#.4g}".rstrip(".")  # four significant digits, trailing zeros kept


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isnan(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta_seconds(epoch: int | None, epochs: int | None, elapsed_s: float | None) -> float | None:
    """Seconds left at the epoch rate so far: elapsed / epoch * epochs left."""
    if not epoch or not epochs or elapsed_s is None or epoch <= 0:
        return None
    return max(0.0, elapsed_s / epoch * (epochs - epoch))


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def took(item: dict) -> float | None:
    """Seconds from started_at to finished_at (or None)."""
    start, end = parse_time(item.get("started_at")), parse_time(item.get("finished_at"))
    return (end - start).total_seconds() if start and end else None


def fmt_age(value: str | None, now: dt.datetime | None = None) -> str:
    """'12s ago', '3m04s ago'; an absolute date past a day."""
    when = parse_time(value)
    if when is None:
        return "-"
    now = now or dt.datetime.now(dt.timezone.utc)
    delta = (now - when).total_seconds()
    if delta >= 86400:
        return when.strftime("%Y-%m-%d %H:%M")
    return fmt_duration(max(0.0, delta)) + " ago"


def short_id(value: str | None, n: int = 8) -> str:
    return (value or "-")[:n]


# --- tables -----------------------------------------------------------------------------------


def _is_numeric(text: str) -> bool:
    try:
        float(text.replace("±", "").split()[0])
        return True
    except (ValueError, IndexError):
        return text == "-"


def table(headers: Sequence[str], rows: Iterable[Sequence], right: Iterable[int] | None = None
          ) -> str:
    """Columns padded to their widest cell, two spaces apart. Columns in ``right`` (or, when
    not given, those whose every cell is a number) are right-aligned."""
    rows = [[str(c) for c in row] for row in rows]
    headers = [str(h) for h in headers]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if right is None:
        right = {i for i in range(len(headers))
                 if rows and all(_is_numeric(r[i]) for r in rows)}
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
               for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


# --- jobs -------------------------------------------------------------------------------------


def progress_bar(epoch: int, epochs: int | None, width: int = 20) -> str:
    frac = min(1.0, epoch / epochs) if epochs else 0.0
    filled = round(frac * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _progress(job: dict) -> tuple[int, int | None, dict]:
    p = job.get("progress") or {}
    epochs = p.get("epochs") or (job.get("plan") or {}).get("epochs")
    return int(p.get("epoch") or 0), epochs, p.get("metrics") or {}


def progress_line(job: dict, seconds_per_epoch: float | None = None, width: int = 20) -> str:
    """``[#####---------------]  epoch 12/50  loss 0.4123  val_loss 0.4411  ETA 3.2s``.

    The ETA comes from the epoch rate: the progress's ``elapsed_s`` (the worker's clock) over
    its epochs or, when absent, ``seconds_per_epoch`` as the caller measured it.
    """
    epoch, epochs, metrics = _progress(job)
    parts = [progress_bar(epoch, epochs, width), f"epoch {epoch}/{epochs or '?'}"]
    for name in ("loss", "val_loss"):
        if name in metrics:
            parts.append(f"{name} {fmt_number(metrics[name])}")
    if job.get("status") == "running" and epochs and epoch < epochs:
        p = job.get("progress") or {}
        elapsed = p.get("elapsed_s")
        if elapsed is None and seconds_per_epoch is not None:
            elapsed = seconds_per_epoch * epoch
        eta = eta_seconds(epoch, epochs, elapsed)
        if eta is not None:
            parts.append(f"ETA {fmt_duration(eta)}")
    elif job.get("status") == "running" and epochs and epoch >= epochs:
        parts.append("fit done, logging to MLflow")
    return "  ".join(parts)


def job_label(job: dict) -> str:
    return f"{job.get('name') or '?'} ({short_id(job.get('id'))})"


def watch_line(job: dict, seconds_per_epoch: float | None = None, width: int | None = None
               ) -> str:
    """One line of ``submit --watch``: who, state, and (once training) the progress bar.

    Given a terminal ``width``, the bar narrows and then the job's name goes before the line is
    cut, so the epoch, losses and ETA stay in view.
    """
    status = job.get("status")
    head = f"{job_label(job)} {status}"
    if status == "queued":
        return head[:width] if width else head
    line = f"{head}  {progress_line(job, seconds_per_epoch)}"
    if width is None or len(line) <= width:
        return line
    for bar in (10, 5):
        line = f"{head}  {progress_line(job, seconds_per_epoch, bar)}"
        if len(line) <= width:
            return line
    line = f"{short_id(job.get('id'))} {status}  {progress_line(job, seconds_per_epoch, 5)}"
    return line[:width]


def final_line(job: dict) -> str:
    """The last line of a watch: outcome, epochs, final metrics, wall time, and why it failed."""
    epoch, epochs, metrics = _progress(job)
    summary = job.get("summary") or {}
    final = summary.get("final_metrics") or metrics
    parts = [f"{job_label(job)} {job.get('status')} after epoch {epoch}/{epochs or '?'}"]
    shown = "  ".join(f"{k} {fmt_number(final[k])}" for k in history_columns([final])[1:]
                      if k not in _LAST)
    if shown:
        parts.append(shown)
    secs = took(job)
    if secs is not None:
        parts.append(f"in {fmt_duration(secs)}")
    if summary.get("stopped_early") and job.get("status") == "succeeded":
        parts.append("(stopped early)")
    line = "  ".join(parts)
    err = job.get("error")
    if err:
        line += f"\n  {err.get('type', 'error')}: {err.get('message', '')}"
    url = (job.get("mlflow") or {}).get("url")
    if url:
        line += f"\n  MLflow: {url}"
    return line


def jobs_table(jobs: Sequence[dict], now: dt.datetime | None = None) -> str:
    rows = []
    for job in jobs:
        epoch, epochs, metrics = _progress(job)
        rows.append([short_id(job.get("id")), job.get("name", ""), job.get("status", ""),
                     f"{epoch}/{epochs or '?'}", fmt_number(metrics.get("loss")),
                     fmt_number(metrics.get("val_loss")), job.get("experiment", ""),
                     fmt_age(job.get("created_at"), now)])
    return table(["ID", "NAME", "STATUS", "EPOCH", "LOSS", "VAL_LOSS", "EXPERIMENT", "CREATED"],
                 rows, right={3, 4, 5})


def job_details(job: dict) -> str:
    """``show`` for a job: one ``key  value`` line per fact."""
    plan = job.get("plan") or {}
    rows = [("job", job.get("id")), ("name", job.get("name")),
            ("experiment", job.get("experiment")), ("status", job.get("status")),
            ("queue", job.get("queue"))]
    if job.get("sweep_id"):
        rows.append(("sweep", job["sweep_id"]))
    if plan:
        steps, total = plan.get("steps_per_epoch"), plan.get("total_updates")
        rows.append(("plan", (f"{plan.get('n_train')} training samples, batch size "
                              f"{plan.get('batch_size')} -> {updates(steps)} an epoch x "
                              f"{plan.get('epochs')} epochs = {updates(total)} "
                              f"({plan.get('gradient_descent')})")))
        rows.append(("params", f"{plan.get('total_params')} (input_dim {plan.get('input_dim')})"))
    if job.get("status") != "queued":
        rows.append(("progress", progress_line(job)))
        _, _, metrics = _progress(job)
        if metrics:
            rows.append(("metrics", "  ".join(f"{k} {fmt_number(metrics[k])}"
                                              for k in history_columns([metrics])[1:])))
        if job.get("metrics_on") == "training":
            rows.append(("note", "metrics are on the training data (no validation split): "
                                 "they say how well it fits, not how it generalizes"))
        chance = (job.get("summary") or {}).get("chance") or {}
        if chance:
            rows.append(("chance", "  ".join(f"{k} {fmt_number(v)}" for k, v in chance.items())))
    summary = job.get("summary") or {}
    if summary:
        facts = [f"epochs_completed {summary.get('epochs_completed')}"]
        if summary.get("stopped_early"):
            facts.append("stopped early")
        if summary.get("best_loss") is not None:
            facts.append(f"best_loss {fmt_number(summary['best_loss'])}")
        if summary.get("fit_time_s") is not None:
            facts.append(f"fit {fmt_duration(summary['fit_time_s'])}")
        rows.append(("summary", ", ".join(facts)))
    err = job.get("error")
    if err:
        rows.append(("error", f"{err.get('type', 'error')}: {err.get('message', '')}"))
    rows.append(("mlflow", (job.get("mlflow") or {}).get("url") or "- (no run yet)"))
    rows.append(("created", job.get("created_at") or "-"))
    if job.get("started_at"):
        rows.append(("started", job["started_at"]))
    if job.get("finished_at"):
        rows.append(("finished", f"{job['finished_at']} (took {fmt_duration(took(job))})"))
    return _key_values(rows)


def updates(n) -> str:
    return f"{n} update" + ("" if n == 1 else "s")


def _key_values(rows: Sequence[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {'-' if v is None else v}" for k, v in rows)


# --- history ----------------------------------------------------------------------------------

_LAST = ("learning_rate", "epoch_time_s")


def history_columns(epochs: Sequence[dict]) -> list[str]:
    """``epoch, loss, <metrics>, val_loss, val_<metrics>, learning_rate, epoch_time_s``."""
    seen: list[str] = []
    for row in epochs:
        for key in row:
            if key != "epoch" and key not in seen:
                seen.append(key)

    def rank(key: str) -> tuple:
        if key in _LAST:
            return (3, _LAST.index(key))
        val = key.startswith("val_")
        base = key[4:] if val else key
        return (1 if val else 0, 0 if base == "loss" else 1, seen.index(key))

    return ["epoch"] + sorted(seen, key=rank)


def history_table(history: dict) -> str:
    epochs = history.get("epochs") or []
    if not epochs:
        return f"no epochs recorded yet (job {history.get('status')})"
    cols = history_columns(epochs)
    rows = [[fmt_number(row.get(c)) for c in cols] for row in epochs]
    return table(cols, rows, right=range(len(cols)))


def history_csv(history: dict) -> str:
    epochs = history.get("epochs") or []
    cols = history_columns(epochs)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in epochs:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return out.getvalue()


# --- sweeps -----------------------------------------------------------------------------------


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


def _trial_epoch(trial: dict) -> str:
    jobs = trial.get("jobs") or []
    running = [j for j in jobs if j.get("status") == "running"]
    shown = running or jobs
    if not shown:
        return "-"
    return ", ".join(f"{j.get('epoch') or 0}/{j.get('epochs') or '?'}" for j in shown)


_STATE_RANK = {"running": 0, "succeeded": 2, "pruned": 2, "failed": 2, "cancelled": 2,
               "queued": 3, "pending": 4}


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


def trials_table(sweep: dict, max_rows: int | None = None) -> str:
    """Trials with params, state, epoch, objective; the best trial marked ``*``. With
    ``max_rows``, a longer list is cut to the trials that matter now (see visible_trials)."""
    best = (sweep.get("best") or {}).get("number")
    objective = sweep.get("objective") or {}
    metric = objective.get("metric", "objective")
    goal = {"minimize": "min", "maximize": "max"}.get(objective.get("goal"), objective.get("goal"))
    trials, hidden = visible_trials(sweep.get("trials") or [], best, max_rows)
    rows = []
    for t in trials:
        rows.append(["*" if best is not None and t.get("number") == best else "",
                     t.get("number"), t.get("name") or fmt_params(t.get("params")),
                     t.get("state", ""), _trial_epoch(t),
                     fmt_objective(t.get("objective"), t.get("objective_std"))])
    if not rows:
        return "no trials yet"
    head = f"{metric} ({goal})" if goal else metric
    out = table(["", "#", "PARAMS", "STATE", "EPOCH", head], rows, right={1, 4, 5})
    if hidden:
        out += f"\n   ... {hidden} more trials (kerasyard show {short_id(sweep.get('id'))})"
    return out


def sweep_progress(sweep: dict) -> str:
    p = sweep.get("progress") or {}
    return (f"{p.get('done', 0)}/{p.get('total', '?')} done, {p.get('running', 0)} running, "
            f"{p.get('queued', 0)} queued")


def best_line(sweep: dict) -> str | None:
    best = sweep.get("best")
    if not best:
        return None
    metric = (sweep.get("objective") or {}).get("metric", "objective")
    label = best.get("name") or fmt_params(best.get("params"))
    value = fmt_number(best.get("objective"))
    return f"best: trial {best.get('number')} ({label})  {metric} {value}"


def sweep_header(sweep: dict) -> str:
    return (f"sweep {sweep.get('name') or '?'} ({short_id(sweep.get('id'))}) "
            f"{sweep.get('status')}  {sweep.get('method', '')}  {sweep_progress(sweep)}")


def running_trials(sweep: dict) -> str:
    """``trial 3 epoch 7/50, trial 4 epoch 2/50``: the epochs of the trials training now."""
    out = []
    for t in sweep.get("trials") or []:
        for j in t.get("jobs") or []:
            if j.get("status") == "running":
                out.append(f"trial {t.get('number')} epoch {j.get('epoch') or 0}/"
                           f"{j.get('epochs') or '?'}")
    return ", ".join(out)


def sweep_watch_block(sweep: dict, max_rows: int | None = None) -> str:
    """What ``sweep --watch`` redraws: header, trials table, best trial."""
    lines = [sweep_header(sweep), trials_table(sweep, max_rows)]
    best = best_line(sweep)
    if best:
        lines.append(best)
    return "\n".join(lines)


def sweep_details(sweep: dict) -> str:
    objective = sweep.get("objective") or {}
    rows = [("sweep", sweep.get("id")), ("name", sweep.get("name")),
            ("status", sweep.get("status")), ("method", sweep.get("method")),
            ("objective", f"{objective.get('goal', '?')} {objective.get('metric', '?')}"),
            ("trials", f"{sweep.get('max_trials') or (sweep.get('progress') or {}).get('total')}"
                       f", {sweep.get('max_parallel')} at a time"
                       + (f", {sweep['repeats']} repeats each" if (sweep.get("repeats") or 1) > 1
                          else "")),
            ("progress", sweep_progress(sweep))]
    if sweep.get("error"):
        err = sweep["error"]
        rows.append(("error", f"{err.get('type', 'error')}: {err.get('message', '')}"
                     if isinstance(err, dict) else str(err)))
    rows.append(("mlflow", (sweep.get("mlflow") or {}).get("url") or "-"))
    rows.append(("created", sweep.get("created_at") or "-"))
    if sweep.get("finished_at"):
        rows.append(("finished", f"{sweep['finished_at']} (took {fmt_duration(took(sweep))})"))
    out = [_key_values(rows), "", trials_table(sweep)]
    best = best_line(sweep)
    if best:
        out.append(best)
    return "\n".join(out)


def sweeps_table(sweeps: Sequence[dict], now: dt.datetime | None = None) -> str:
    rows = []
    for s in sweeps:
        p = s.get("progress") or {}
        objective = s.get("objective") or {}
        best = s.get("best") or {}
        rows.append([short_id(s.get("id")), s.get("name", ""), s.get("status", ""),
                     s.get("method", ""), f"{p.get('done', 0)}/{p.get('total', '?')}",
                     p.get("running", 0), objective.get("metric", "-"),
                     fmt_number(best.get("objective")) if best else "-",
                     fmt_age(s.get("created_at"), now)])
    return table(["ID", "NAME", "STATUS", "METHOD", "DONE", "RUNNING", "OBJECTIVE", "BEST",
                  "CREATED"], rows, right={4, 5, 7})
