"""The commands that only read: ``jobs`` and ``sweeps`` (lists), ``show``, ``history``,
``open`` (the MLflow link), ``compare`` and ``health``."""

from __future__ import annotations

import click
from rich.console import Group, RenderableType
from rich.text import Text

from ..client import Client
from . import format as fmt
from .group import JOB_STATUSES, OPTIONAL_ID, SWEEP_STATUSES, command, complete_id
from .inputs import UsageError, resolve, resolve_job
from .ui import Ui


def _listing(ui: Ui, items: list[dict], key: str, next_cursor: str | None,
             shown: RenderableType, more: str = "--all") -> int:
    if ui.as_json:
        ui.result({key: items, "next_cursor": next_cursor})
    else:
        ui.show(shown if items else f"no {key}")
        if next_cursor:
            ui.note(f"(more {key}: raise --limit, or {more})")
    return fmt.EXIT_SUCCEEDED


@command("jobs", "list your jobs, newest first (sweeps' trials: --sweep ID, or --all)",
         short="list jobs, newest first")
@click.option("--status", type=click.Choice(JOB_STATUSES))
@click.option("--sweep", metavar="SWEEP_ID", shell_complete=complete_id,
              help="only the trials of this sweep (id or id prefix)")
@click.option("--experiment")
@click.option("--limit", type=int, default=20, show_default=True, help="how many")
@click.option("--all", "every", is_flag=True,
              help="every job, sweeps' trials included, on every page")
def cmd_jobs(client: Client, ui: Ui, status, sweep, experiment, limit, every) -> int:
    # Without --sweep or --all, the jobs submitted on their own: a sweep's trials (36 for
    # the lecture sweep) are listed by `jobs --sweep ID` and summed up by `show SWEEP`.
    standalone = None if sweep or every else True
    filters = {"status": status, "sweep_id": sweep, "experiment": experiment,
               "standalone": standalone}
    if every:
        jobs, cursor = list(client.iter_jobs(page_size=500, **filters)), None
    else:
        page = client.list_jobs(limit=limit, **filters)
        jobs, cursor = page["jobs"], page.get("next_cursor")
    return _listing(ui, jobs, "jobs", cursor, fmt.jobs_table(jobs),
                    "--all" if sweep else "--all: every page, sweeps' trials included")


@command("sweeps", "list sweeps, newest first")
@click.option("--status", type=click.Choice(SWEEP_STATUSES))
@click.option("--limit", type=int, default=20, show_default=True, help="how many")
@click.option("--all", "every", is_flag=True, help="every page")
def cmd_sweeps(client: Client, ui: Ui, status, limit, every) -> int:
    if every:
        sweeps, cursor = list(client.iter_sweeps(status=status)), None
    else:
        page = client.list_sweeps(status=status, limit=limit)
        sweeps, cursor = page["sweeps"], page.get("next_cursor")
    return _listing(ui, sweeps, "sweeps", cursor, fmt.sweeps_table(sweeps))


@command("show", "one job or sweep, by id or id prefix (no ID: the newest job)")
@OPTIONAL_ID
def cmd_show(client: Client, ui: Ui, ident: str | None) -> int:
    kind, item = resolve(client, ident)
    ui.result(item, fmt.job_details(item) if kind == "job" else fmt.sweep_details(item))
    return fmt.EXIT_SUCCEEDED


@command("history", "a job's per-epoch metrics (no ID: the newest job)")
@OPTIONAL_ID
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table")
def cmd_history(client: Client, ui: Ui, ident: str | None, as_csv: bool) -> int:
    job = resolve_job(client, ident, "history")
    history = client.job_history(job["id"])
    if as_csv:
        ui.out.write(fmt.history_csv(history))
        ui.out.flush()
    else:
        ui.result(history, fmt.history_table(history))
    return fmt.EXIT_SUCCEEDED


@command("open", "print the MLflow UI link of a job's run or a sweep's parent run (no ID: the "
                 "newest job)", short="the MLflow UI link of a job or sweep")
@OPTIONAL_ID
def cmd_open(client: Client, ui: Ui, ident: str | None) -> int:
    kind, item = resolve(client, ident)
    url = (item.get("mlflow") or {}).get("url")
    if not url:
        ui.note(f"error: {kind} {item['id']} ({item.get('status')}) has no MLflow run yet; "
                "it gets one when a worker starts it")
        if ui.as_json:
            ui.result({"kind": kind, "id": item["id"], "url": None})
        return fmt.EXIT_OTHER
    ui.result({"kind": kind, "id": item["id"], "url": url}, url)
    return fmt.EXIT_SUCCEEDED


@command("compare", "jobs side by side: spec differences, the lecture's quantities (samples, "
                    "batch size, steps per epoch, updates, gradient descent), final metrics; "
                    "--plot FILE draws their learning curves in one PNG (needs matplotlib)",
         short="jobs side by side; --plot FILE draws their curves")
@click.argument("idents", metavar="ID ID...", nargs=-1, required=True,
                shell_complete=complete_id)
@click.option("--plot", "plot_file", metavar="FILE.png", type=click.Path(dir_okay=False),
              help="write the learning curves (each metric and its val_ twin) to this PNG")
def cmd_compare(client: Client, ui: Ui, idents: tuple[str, ...], plot_file: str | None) -> int:
    if len(idents) < 2:
        raise UsageError("compare needs at least two job ids")
    jobs = [resolve_job(client, ident, "compare") for ident in idents]
    if plot_file:
        from .plot import PlotUnavailable, curves_png

        histories = [client.job_history(j["id"])["epochs"] for j in jobs]
        try:
            metrics = curves_png(plot_file, jobs, histories)
        except PlotUnavailable as exc:
            raise UsageError(str(exc)) from None
        ui.note(f"wrote {plot_file}: {', '.join(metrics)} by epoch, one colour per job")
    ui.result(fmt.compare_data(jobs), fmt.compare_table(jobs))
    return fmt.EXIT_SUCCEEDED


@command("health", "database, broker and MLflow reachability (exit 4 if degraded)")
def cmd_health(client: Client, ui: Ui) -> int:
    body = client.health()
    rows = [(name, fmt.status_text("ok" if c.get("ok") else "DOWN"), c.get("detail", ""))
            for name, c in (body.get("components") or {}).items()]
    ui.result(body, Group(Text(f"{body.get('status')}  ({client.base_url})"),
                          fmt.table(["COMPONENT", "STATE", "DETAIL"], rows)))
    return fmt.EXIT_SUCCEEDED if body.get("status") == "ok" else fmt.EXIT_OTHER
