"""A job: its progress line (plain and live), the last lines of a watch, the jobs table and
``show``'s details."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .cells import (
    eta_seconds,
    fmt_age,
    fmt_duration,
    fmt_number,
    key_values,
    short_id,
    status_text,
    table,
    took,
    updates,
)
from .history import metric_names


def progress_bar(epoch: int, epochs: int | None, width: int = 20) -> str:
    """``[#####---------------]``: the bar of the plain lines (a pipe, a log file)."""
    frac = min(1.0, epoch / epochs) if epochs else 0.0
    filled = round(frac * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def epoch_progress(job: dict) -> tuple[int, int | None, dict]:
    """(epoch reached, epochs planned or None, the latest metrics) of a job."""
    p = job.get("progress") or {}
    epochs = p.get("epochs") or (job.get("plan") or {}).get("epochs")
    return int(p.get("epoch") or 0), epochs, p.get("metrics") or {}


def _progress_facts(job: dict, seconds_per_epoch: float | None) -> list[str]:
    """``epoch 12/50``, the losses, and the ETA (or what a finished fit is doing now).

    The ETA comes from the epoch rate: the progress's ``elapsed_s`` (the worker's clock) over
    its epochs or, when absent, ``seconds_per_epoch`` as the caller measured it.
    """
    epoch, epochs, metrics = epoch_progress(job)
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
    epoch, epochs, _ = epoch_progress(job)
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
    epoch, epochs, _ = epoch_progress(job)
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


def final_line(job: dict) -> Text:
    """The last lines of a watch: outcome, epochs, final metrics, wall time, why it failed."""
    epoch, epochs, metrics = epoch_progress(job)
    summary = job.get("summary") or {}
    final = summary.get("final_metrics") or metrics
    out = Text(f"{job_label(job)} ") + status_text(job.get("status"))
    out.append(f" after epoch {epoch}/{epochs or '?'}")
    shown = "  ".join(f"{k} {fmt_number(final[k])}" for k in metric_names([final]))
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
        epoch, epochs, metrics = epoch_progress(job)
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


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape or []) or "-"


def params_line(plan: dict) -> str:
    """The parameter count, one sample's shape, and the memory the door estimated."""
    shape = plan.get("input_shape") or [plan.get("input_dim")]
    line = f"{plan.get('total_params')} (input {_shape(shape)})"
    if plan.get("memory_mb"):
        line += f", about {plan['memory_mb']:,} MB to train"
    return line


def layer_rows(plan: dict) -> list[tuple[str, str]]:
    """One row per layer: its name and type, the output shape of one sample, its parameters."""
    return [("layers" if i == 0 else "", f"{layer.get('name')} ({layer.get('type')}) -> "
             f"{_shape(layer.get('output_shape'))}, {layer.get('params', 0):,} params")
            for i, layer in enumerate(plan.get("layers") or [])]


def metric_rows(job: dict) -> list[tuple[str, str]]:
    """The latest epoch's metrics, training and validation on rows of their own, then the
    best epoch: ``training  loss 5.0e-04  accuracy 1.000 (epoch 1000)``, ``validation
    val_loss 2.519  val_accuracy 0.2200 (epoch 1000, 50 held-out samples)``, ``best epoch
    20 of 1000 by val_loss: 1.666 (lower is better); training on made it worse (...)``."""
    epoch, _, metrics = epoch_progress(job)
    names = metric_names([metrics])
    at = f"epoch {epoch}"
    n_val = (job.get("plan") or {}).get("n_val")
    rows = []
    for label, keys, note in (
            ("training", [k for k in names if not k.startswith("val_")], at),
            ("validation", [k for k in names if k.startswith("val_")],
             f"{at}, {n_val} held-out samples" if n_val else at)):
        if keys:
            rows.append((label, "  ".join(f"{k} {fmt_number(metrics[k])}" for k in keys)
                         + f" ({note})"))
    best = best_epoch_line(job)
    if best:
        rows.append(("best epoch", best))
    return rows


def best_epoch_line(job: dict) -> str | None:
    """``20 of 1000 by val_loss: 1.666 (lower is better); training on made it worse (last
    epoch: 2.519)``, from the summary's ``best_epoch``."""
    summary = job.get("summary") or {}
    best = summary.get("best_epoch")
    if not best:
        return None
    metric, goal = best.get("metric"), best.get("goal")
    line = (f"{best.get('epoch')} of {summary.get('epochs_completed') or '?'} by {metric}: "
            f"{fmt_number(best.get('value'))} "
            f"({'lower' if goal == 'minimize' else 'higher'} is better)")
    last = (summary.get("final_metrics") or {}).get(metric)
    if isinstance(last, (int, float)) and best.get("epoch") != summary.get("epochs_completed") \
            and last != best.get("value"):
        line += f"; training on made it worse (last epoch: {fmt_number(last)})"
    return line


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
        rows.append(("params", params_line(plan)))
        rows += layer_rows(plan)
    if job.get("resumed_from_epoch") is not None:
        rows.append(("resumed", f"after epoch {job['resumed_from_epoch']}, from its checkpoint "
                     f"(attempt {job.get('attempts')}: its worker was lost or stopped)"))
    if job.get("status") != "queued":
        rows.append(("progress", progress_line(job)))
        rows += metric_rows(job)
        if job.get("metrics_on") == "training":
            rows.append(("note", ("metrics are on the training data (no validation split): "
                                  "they say how well it fits, not how it generalizes")))
        chance = (job.get("summary") or {}).get("chance") or {}
        if chance:
            rows.append(("chance", "  ".join(f"{k} {fmt_number(v)}" for k, v in chance.items())))
    summary = job.get("summary") or {}
    if summary:
        facts = [f"epochs_completed {summary.get('epochs_completed')}"]
        if summary.get("stopped_early"):
            facts.append("stopped early")
        if summary.get("best_loss") is not None:
            facts.append(f"lowest training loss {fmt_number(summary['best_loss'])}")
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
