"""What the command line shows, built with rich from dicts shaped like the API's JSON.

Builders return a rich renderable (a ``Table``, a ``Text``, a ``Group``) or a plain string;
nothing here does I/O. :func:`plain` renders one as text with no colour and no padding at the
ends of lines: what goes to a pipe or a log file, and what the unit tests read. On a terminal
the command prints the renderable itself, and rich decides on colour (none with ``NO_COLOR``
set or ``TERM=dumb``) and fits tables to the terminal's width.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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
    """``error: code: message``, then one ``  field.path: message`` line per detail. A message
    that spells its details out again ("the job spec is invalid: 2 errors: fit.epochs: ...")
    is cut before the first of them, so nothing is printed twice."""
    message = exc.message
    lines = []
    for d in exc.details:
        if isinstance(d, dict):
            loc = d.get("loc")
            loc = ".".join(map(str, loc)) if isinstance(loc, list) else (loc or "(request)")
            lines.append(f"  {loc}: {d.get('msg', '')}")
            at = message.find(f"{loc}: ")
            if at > 0 and len(lines) == 1:
                message = message[:at].rstrip(": ;")
        else:
            lines.append(f"  {d}")
    return [f"error: {exc.code}: {message}"] + lines


def plain(renderable: RenderableType, width: int = 10_000) -> str:
    """A renderable as plain text: no colour, nothing wrapped, no spaces at line ends."""
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False,
            markup=False, emoji=False, soft_wrap=False).print(renderable)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


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


def updates(n) -> str:
    return f"{n} update" + ("" if n == 1 else "s")


# --- tables and colour ------------------------------------------------------------------------

STATUS_STYLES = {"queued": "dim", "pending": "dim", "running": "cyan", "succeeded": "green",
                 "failed": "bold red", "cancelled": "yellow", "pruned": "magenta",
                 "ok": "green", "DOWN": "bold red", "degraded": "bold red"}


def status_text(status: str | None) -> Text:
    return Text(str(status or ""), style=STATUS_STYLES.get(status or "", ""))


def table(headers: Sequence[str], rows: Iterable[Sequence], right: Iterable[int] = ()
          ) -> Table:
    """Columns two spaces apart, no borders; the columns in ``right`` right-aligned."""
    right = set(right)
    out = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1), header_style="bold",
                highlight=False)
    for i, head in enumerate(headers):
        out.add_column(head, justify="right" if i in right else "left")
    for row in rows:
        out.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
    return out


def key_values(rows: Sequence[tuple[str, Any]]) -> Table:
    """``key  value`` lines, the keys padded to the widest."""
    out = Table(box=None, pad_edge=False, show_edge=False, show_header=False, padding=(0, 1),
                highlight=False)
    out.add_column(style="bold")
    out.add_column()
    for key, value in rows:
        out.add_row(key, value if isinstance(value, Text) else Text("-" if value is None
                                                                    else str(value)))
    return out


# --- jobs -------------------------------------------------------------------------------------


def progress_bar(epoch: int, epochs: int | None, width: int = 20) -> str:
    """``[#####---------------]``: the bar of the plain lines (a pipe, a log file)."""
    frac = min(1.0, epoch / epochs) if epochs else 0.0
    filled = round(frac * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _progress(job: dict) -> tuple[int, int | None, dict]:
    p = job.get("progress") or {}
    epochs = p.get("epochs") or (job.get("plan") or {}).get("epochs")
    return int(p.get("epoch") or 0), epochs, p.get("metrics") or {}


def _progress_facts(job: dict, seconds_per_epoch: float | None) -> list[str]:
    """``epoch 12/50``, the losses, and the ETA (or what a finished fit is doing now).

    The ETA comes from the epoch rate: the progress's ``elapsed_s`` (the worker's clock) over
    its epochs or, when absent, ``seconds_per_epoch`` as the caller measured it.
    """
    epoch, epochs, metrics = _progress(job)
    parts = [f"epoch {epoch}/{epochs or '?'}"]
    for name in ("loss", "val_loss"):
        if name in metrics:
            parts.append(f"{name} {fmt_number(metrics[name])}")
    if job.get("status") == "running" and epochs and epoch < epochs:
        elapsed = (job.get("progress") or {}).get("elapsed_s")
        if elapsed is None and seconds_per_epoch is not None:
            elapsed = seconds_per_epoch * epoch
        eta = eta_seconds(epoch, epochs, elapsed)
        if eta is not None:
            parts.append(f"ETA {fmt_duration(eta)}")
    elif job.get("status") == "running" and epochs and epoch >= epochs:
        parts.append("fit done, logging to MLflow")
    return parts


def progress_line(job: dict, seconds_per_epoch: float | None = None, width: int = 20) -> str:
    """``[#####---------------]  epoch 12/50  loss 0.4123  val_loss 0.4411  ETA 3.2s``."""
    epoch, epochs, _ = _progress(job)
    return "  ".join([progress_bar(epoch, epochs, width),
                      *_progress_facts(job, seconds_per_epoch)])


def job_label(job: dict) -> str:
    return f"{job.get('name') or '?'} ({short_id(job.get('id'))})"


def watch_line(job: dict, seconds_per_epoch: float | None = None) -> str:
    """One plain line of ``submit --watch`` off a terminal: who, state, progress."""
    head = f"{job_label(job)} {job.get('status')}"
    if job.get("status") == "queued":
        return head
    return f"{head}  {progress_line(job, seconds_per_epoch)}"


def live_job(job: dict, seconds_per_epoch: float | None = None, width: int = 100
             ) -> RenderableType:
    """What ``submit --watch`` redraws on a terminal ``width`` columns wide: name and state, a
    progress bar, the epoch, losses and ETA. When the line does not fit, the bar narrows and
    then the name is cut, so the numbers stay in view."""
    head = Text(f"{job_label(job)} ") + status_text(job.get("status"))
    if job.get("status") == "queued":
        head.truncate(width, overflow="ellipsis")
        return head
    facts = Text("  ".join(_progress_facts(job, seconds_per_epoch)))
    room = width - facts.cell_len - 4  # two gaps of two spaces
    bar_width = next((w for w in (20, 10, 5) if room - w >= head.cell_len),
                     5 if room >= 5 + 8 else 0)
    head_width = max(1, min(head.cell_len, room - bar_width + (0 if bar_width else 2)))
    epoch, epochs, _ = _progress(job)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(width=head_width, no_wrap=True, overflow="ellipsis")
    cells: list[RenderableType] = [head]
    if bar_width:
        grid.add_column(width=bar_width)
        cells.append(ProgressBar(total=float(epochs or 1), completed=float(epoch),
                                 width=bar_width))
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(*cells, facts)
    return grid


def _metric_names(rows: Sequence[dict]) -> list[str]:
    return [k for k in history_columns(rows)[1:] if k not in _LAST]


def final_line(job: dict) -> Text:
    """The last lines of a watch: outcome, epochs, final metrics, wall time, why it failed."""
    epoch, epochs, metrics = _progress(job)
    summary = job.get("summary") or {}
    final = summary.get("final_metrics") or metrics
    out = Text(f"{job_label(job)} ") + status_text(job.get("status"))
    out.append(f" after epoch {epoch}/{epochs or '?'}")
    shown = "  ".join(f"{k} {fmt_number(final[k])}" for k in _metric_names([final]))
    if shown:
        out.append(f"  {shown}")
    secs = took(job)
    if secs is not None:
        out.append(f"  in {fmt_duration(secs)}")
    if summary.get("stopped_early") and job.get("status") == "succeeded":
        out.append("  (stopped early)")
    err = job.get("error")
    if err:
        out.append(f"\n  {err.get('type', 'error')}: {err.get('message', '')}", style="red")
    url = (job.get("mlflow") or {}).get("url")
    if url:
        out.append(f"\n  MLflow: {url}")
    return out


def jobs_table(jobs: Sequence[dict], now: dt.datetime | None = None) -> Table:
    rows = []
    for job in jobs:
        epoch, epochs, metrics = _progress(job)
        rows.append([short_id(job.get("id")), job.get("name", ""), status_text(job.get("status")),
                     f"{epoch}/{epochs or '?'}", fmt_number(metrics.get("loss")),
                     fmt_number(metrics.get("val_loss")), job.get("experiment", ""),
                     fmt_age(job.get("created_at"), now)])
    return table(["ID", "NAME", "STATUS", "EPOCH", "LOSS", "VAL_LOSS", "EXPERIMENT", "CREATED"],
                 rows, right={3, 4, 5})


def plan_line(plan: dict) -> str:
    steps, total = plan.get("steps_per_epoch"), plan.get("total_updates")
    return (f"{plan.get('n_train')} training samples, batch size {plan.get('batch_size')} -> "
            f"{updates(steps)} an epoch x {plan.get('epochs')} epochs = {updates(total)} "
            f"({plan.get('gradient_descent')})")


def job_details(job: dict) -> Table:
    """``show`` for a job: one ``key  value`` line per fact."""
    plan = job.get("plan") or {}
    rows: list[tuple[str, Any]] = [
        ("job", job.get("id")), ("name", job.get("name")), ("experiment", job.get("experiment")),
        ("status", status_text(job.get("status"))), ("queue", job.get("queue"))]
    if job.get("sweep_id"):
        rows.append(("sweep", job["sweep_id"]))
    if job.get("trained_by"):
        rows.append(("trained by", f"{job['trained_by']} (recorded from that training)"))
    if plan:
        rows.append(("plan", plan_line(plan)))
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
        rows.append(("error", Text(f"{err.get('type', 'error')}: {err.get('message', '')}",
                                   style="red")))
    rows.append(("mlflow", (job.get("mlflow") or {}).get("url") or "- (no run yet)"))
    rows.append(("created", job.get("created_at") or "-"))
    if job.get("started_at"):
        rows.append(("started", job["started_at"]))
    if job.get("finished_at"):
        rows.append(("finished", f"{job['finished_at']} (took {fmt_duration(took(job))})"))
    return key_values(rows)


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


def history_table(history: dict) -> RenderableType:
    epochs = history.get("epochs") or []
    if not epochs:
        return Text(f"no epochs recorded yet (job {history.get('status')})")
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


# --- compare ----------------------------------------------------------------------------------

# The lecture's quantities, as `compare` lists them: (label, how to read them off the plan).
LECTURE = (
    ("samples (train/val)", lambda p: f"{p.get('n_train', '-')}/{p.get('n_val', '-')}"),
    ("batch size", lambda p: p.get("batch_size")),
    ("steps per epoch", lambda p: p.get("steps_per_epoch")),
    ("epochs", lambda p: p.get("epochs")),
    ("total updates", lambda p: p.get("total_updates")),
    ("gradient descent", lambda p: p.get("gradient_descent")),
    ("parameters", lambda p: p.get("total_params")),
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"fit": {"batch_size": 5}}`` -> ``{"fit.batch_size": 5}`` (list items by index)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def spec_differences(jobs: Sequence[dict]) -> dict[str, list]:
    """The spec fields whose values differ between the jobs (name aside), in spec order."""
    flat = [flatten(j.get("spec") or {}) for j in jobs]
    paths = list(dict.fromkeys(p for f in flat for p in f))
    return {p: [f.get(p, None) for f in flat] for p in paths
            if p != "name" and len({json.dumps(f.get(p, None), sort_keys=True)
                                    for f in flat}) > 1}


def final_metrics(job: dict) -> dict:
    return (job.get("summary") or {}).get("final_metrics") or _progress(job)[2]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fmt_number(value)
    return value if isinstance(value, str) else json.dumps(value)


def compare_table(jobs: Sequence[dict]) -> Table:
    """Runs side by side: a column per job; what differs in their specs, the lecture's
    quantities, the final metrics, the wall time."""
    out = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1), header_style="bold",
                highlight=False)
    out.add_column("")
    for j in jobs:
        out.add_column(job_label(j), justify="right")

    def section(title: str) -> None:
        out.add_row(Text(title, style="bold underline"), *([""] * len(jobs)))

    out.add_row("status", *(status_text(j.get("status")) for j in jobs))
    diffs = spec_differences(jobs)
    section("spec differences")
    if not diffs:
        out.add_row("  (none)", *([""] * len(jobs)))
    for path, values in diffs.items():
        out.add_row(f"  {path}", *(_cell(v) for v in values))
    section("plan")
    for label, read in LECTURE:
        out.add_row(f"  {label}", *(_cell(read(j.get("plan") or {})) for j in jobs))
    section("final metrics")
    names = _metric_names([final_metrics(j) for j in jobs])
    for name in names:
        out.add_row(f"  {name}", *(fmt_number(final_metrics(j).get(name)) for j in jobs))
    out.add_row("  epochs completed", *(str(_progress(j)[0]) for j in jobs))
    out.add_row("  took", *(fmt_duration(took(j)) if took(j) is not None else "-"
                            for j in jobs))
    return out


def compare_data(jobs: Sequence[dict]) -> dict:
    """``compare --json``."""
    return {"jobs": [{"id": j.get("id"), "name": j.get("name"), "status": j.get("status"),
                      "plan": j.get("plan"), "final_metrics": final_metrics(j),
                      "epochs_completed": _progress(j)[0], "took_s": took(j)} for j in jobs],
            "spec_differences": spec_differences(jobs)}
