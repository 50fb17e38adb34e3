"""The commands that send something: ``submit`` (a job), ``sweep``, ``cancel``, ``pause``,
``resume`` and ``upload`` (a dataset), and ``watch``, which follows a job or sweep until it
ends or is paused (``submit --watch`` and ``sweep --watch`` too)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from ..client import Client
from . import format as fmt
from .group import ID, OPTIONAL_ID, command, watch_options
from .inputs import UsageError, load_spec, resolve
from .ui import Ui
from .watch import JobWatcher, SweepWatcher


@command("submit", "submit a job spec (.json or .yaml; - reads stdin)")
@click.argument("spec", metavar="SPEC", type=click.Path(allow_dash=True))
@click.option("--queue", type=click.Choice(["cpu", "gpu"]), help="override resources.queue")
@watch_options()
def cmd_submit(client: Client, ui: Ui, spec: str, queue: str | None, watch: bool,
               **w) -> int:
    data = load_spec(spec)
    if queue:
        resources = data.get("resources")
        data["resources"] = {**(resources if isinstance(resources, dict) else {}),
                             "queue": queue}
    job = client.submit_job(data)
    plan = job.get("plan") or {}
    if not watch:
        ui.result(job, f"{job['id']}  {job.get('name')} queued on {job.get('queue')}: "
                       f"{fmt.updates(plan.get('steps_per_epoch'))} an epoch x "
                       f"{plan.get('epochs')} epochs = {fmt.updates(plan.get('total_updates'))}"
                       f", {plan.get('total_params')} params")
        return fmt.EXIT_SUCCEEDED
    ui.show(f"submitted {fmt.job_label(job)} as {job['id']}: "
            f"{fmt.updates(plan.get('steps_per_epoch'))} an epoch x {plan.get('epochs')} "
            "epochs", ui.live)
    return watch_job(client, ui, job["id"], **w)


def watch_job(client: Client, ui: Ui, job_id: str, interval: float, line_interval: float,
              timeout: float | None) -> int:
    watcher = JobWatcher(ui.live, line_interval=line_interval)
    try:
        job = client.wait_job(job_id, poll=interval, timeout=timeout, on_update=watcher.update)
    except KeyboardInterrupt:
        watcher.finish({})
        ui.note(f"stopped watching; job {job_id} goes on (kerasyard cancel {job_id[:8]} "
                "stops it)")
        return 130
    except BaseException:
        watcher.finish({})
        raise
    watcher.finish(job)
    ui.result(job, fmt.final_line(job))
    if job["status"] == "paused":
        ui.note(f"job {job_id} is paused; kerasyard resume {job_id[:8]} continues it")
    return fmt.exit_code_for_status(job["status"])


@command("sweep", "submit a sweep spec (.json or .yaml)")
@click.argument("spec", metavar="SPEC", type=click.Path(allow_dash=True))
@watch_options()
def cmd_sweep(client: Client, ui: Ui, spec: str, watch: bool, **w) -> int:
    sweep = client.submit_sweep(load_spec(spec))
    p = sweep.get("progress") or {}
    if not watch:
        ui.result(sweep, f"{sweep['id']}  sweep {sweep.get('name')} {sweep.get('status')}: "
                         f"{p.get('total', sweep.get('max_trials'))} trials, "
                         f"{sweep.get('max_parallel')} at a time")
        return fmt.EXIT_SUCCEEDED
    ui.show(f"submitted sweep {sweep.get('name')} as {sweep['id']}: "
            f"{p.get('total', sweep.get('max_trials'))} trials", ui.live)
    return watch_sweep(client, ui, sweep["id"], **w)


def watch_sweep(client: Client, ui: Ui, sweep_id: str, interval: float, line_interval: float,
                timeout: float | None) -> int:
    watcher = SweepWatcher(ui.live, line_interval=max(line_interval, 5.0))
    try:
        sweep = client.wait_sweep(sweep_id, poll=max(interval, 1.0), timeout=timeout,
                                  on_update=watcher.update)
    except KeyboardInterrupt:
        watcher.finish({})
        ui.note(f"stopped watching; sweep {sweep_id} goes on (kerasyard cancel "
                f"{sweep_id[:8]} stops it)")
        return 130
    except BaseException:
        watcher.finish({})
        raise
    watcher.finish(sweep)
    url = (sweep.get("mlflow") or {}).get("url")
    ui.result(sweep, Text(f"sweep {sweep.get('name')} ({sweep['id'][:8]}) ")
              + fmt.status_text(sweep["status"]) + (f"\n  MLflow: {url}" if url else ""))
    if sweep["status"] == "paused":
        ui.note(f"sweep {sweep_id} is paused; kerasyard resume {sweep_id[:8]} continues it")
    return fmt.exit_code_for_status(sweep["status"])


@command("watch", "follow a job or sweep already submitted (no ID: the newest job)")
@OPTIONAL_ID
@watch_options(with_flag=False)
def cmd_watch(client: Client, ui: Ui, ident: str | None, **w) -> int:
    kind, item = resolve(client, ident)
    if kind == "job":
        return watch_job(client, ui, item["id"], **w)
    return watch_sweep(client, ui, item["id"], **w)


@command("cancel", "cancel a job or sweep (cooperative: at an epoch boundary)")
@ID
def cmd_cancel(client: Client, ui: Ui, ident: str) -> int:
    kind, item = resolve(client, ident)
    if kind == "job":
        job = client.cancel_job(item["id"])
        later = ("; it stops at its next epoch boundary" if job["status"] == "running" else "")
        ui.result(job, f"cancel requested for job {fmt.job_label(job)}: now {job['status']}{later}")
    else:
        sweep = client.cancel_sweep(item["id"])
        ui.result(sweep, f"cancel requested for sweep {sweep.get('name')} "
                         f"({fmt.short_id(sweep.get('id'))}): now {sweep.get('status')}")
    return fmt.EXIT_SUCCEEDED


@command("pause", "pause a job or sweep (cooperative: at an epoch boundary); resume goes on")
@ID
def cmd_pause(client: Client, ui: Ui, ident: str) -> int:
    kind, item = resolve(client, ident)
    if kind == "job":
        job = client.pause_job(item["id"])
        later = ("; it stops at its next epoch boundary" if job.get("pause_requested") else "")
        ui.result(job, f"pause requested for job {fmt.job_label(job)}: now {job['status']}"
                       f"{later} (kerasyard resume {fmt.short_id(job['id'])} continues it)")
    else:
        sweep = client.pause_sweep(item["id"])
        ui.result(sweep, f"sweep {sweep.get('name')} ({fmt.short_id(sweep.get('id'))}) "
                         f"{sweep.get('status')}: its running trials stop at their next epoch "
                         f"boundary, no new ones start (kerasyard resume "
                         f"{fmt.short_id(sweep.get('id'))} continues it)")
    return fmt.EXIT_SUCCEEDED


@command("resume", "resume a paused job or sweep (queued again for the next worker)")
@ID
def cmd_resume(client: Client, ui: Ui, ident: str) -> int:
    kind, item = resolve(client, ident)
    if kind == "job":
        job = client.resume_job(item["id"])
        ui.result(job, f"resumed job {fmt.job_label(job)}: now {job['status']}")
    else:
        sweep = client.resume_sweep(item["id"])
        ui.result(sweep, f"resumed sweep {sweep.get('name')} "
                         f"({fmt.short_id(sweep.get('id'))}): now {sweep.get('status')}")
    return fmt.EXIT_SUCCEEDED


@command("upload", "upload a CSV or .npz dataset; prints its id for dataset.kind upload")
@click.argument("csv_path", metavar="FILE", type=click.Path())
@click.option("--name")
def cmd_upload(client: Client, ui: Ui, csv_path: str, name: str | None) -> int:
    if not Path(csv_path).is_file():
        raise UsageError(f"no such file: {csv_path}")
    ds = client.upload_dataset(csv_path, name=name)
    cols = ", ".join(c.get("name", "?") if isinstance(c, dict) else str(c)
                     for c in ds.get("columns") or [])
    if ds.get("format") == "npz":
        x = (ds.get("arrays") or {}).get("x") or {}
        ui.result(ds, f"{ds['id']}  {ds.get('name')}: x {x.get('shape')} {x.get('dtype')}")
        return fmt.EXIT_SUCCEEDED
    ui.result(ds, f"{ds['id']}  {ds.get('name')}: {ds.get('n_rows')} rows; columns {cols}")
    return fmt.EXIT_SUCCEEDED
