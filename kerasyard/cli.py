"""The ``kerasyard`` command: submit and watch jobs and sweeps, list them, read their history.

Built on :class:`kerasyard.Client`; imports nothing beyond the standard library and PyYAML.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from . import format as fmt
from .client import DEFAULT_URL, JOB_TERMINAL, SWEEP_TERMINAL, ApiError, Client, ServiceUnreachable

# Prefix lookups scan the newest jobs/sweeps only; a full id always works.
PREFIX_SCAN_LIMIT = 5000
FULL_ID = re.compile(r"^[0-9a-f]{32}$")


class UsageError(Exception):
    """A mistake on the command line or in a local file: exit code 2."""


# --- specs and ids ----------------------------------------------------------------------------


def load_spec(path: str) -> dict:
    """A job or sweep spec from a .json or .yaml file ('-' reads standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML (or JSON): {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold one object (a mapping of fields), not "
                         f"{type(data).__name__}")
    return data


def _scan(items, prefix: str) -> list[dict]:
    found = []
    for i, item in enumerate(items):
        if i >= PREFIX_SCAN_LIMIT:
            break
        if str(item.get("id", "")).startswith(prefix):
            found.append(item)
    return found


def _sweeps_or_none(fetch: Callable[[], object]):
    """Sweep lookups on a service without sweeps (404 on the route) find nothing."""
    try:
        return fetch()
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def resolve(client: Client, ident: str) -> tuple[str, dict]:
    """A job or sweep by full id or id prefix: ('job', job) or ('sweep', sweep). Jobs first."""
    ident = ident.strip()
    if not ident:
        raise UsageError("an empty id")
    if FULL_ID.match(ident):
        try:
            return "job", client.get_job(ident)
        except ApiError as exc:
            if exc.status != 404:
                raise
        sweep = _sweeps_or_none(lambda: client.get_sweep(ident))
        if sweep is not None:
            return "sweep", sweep
        raise ApiError(404, "not_found", f"no job or sweep with id {ident!r}")
    jobs = _scan(client.iter_jobs(page_size=500), ident)
    if len(jobs) == 1:
        return "job", client.get_job(jobs[0]["id"])
    if len(jobs) > 1:
        raise UsageError(f"id prefix {ident!r} matches {len(jobs)} jobs: "
                         + ", ".join(j["id"] for j in jobs[:5])
                         + (" ..." if len(jobs) > 5 else "") + "; give more characters")
    sweeps = _sweeps_or_none(lambda: _scan(client.iter_sweeps(page_size=100), ident)) or []
    if len(sweeps) == 1:
        return "sweep", client.get_sweep(sweeps[0]["id"])
    if len(sweeps) > 1:
        raise UsageError(f"id prefix {ident!r} matches {len(sweeps)} sweeps: "
                         + ", ".join(s["id"] for s in sweeps[:5]) + "; give more characters")
    raise ApiError(404, "not_found", f"no job or sweep whose id starts with {ident!r}")


# --- live output ------------------------------------------------------------------------------


class JobWatcher:
    """``submit --watch``: one progress line redrawn in place on a terminal; on a pipe or log
    file, a plain line at every status change and at most every ``line_interval`` seconds
    while epochs advance."""

    def __init__(self, stream: TextIO, tty: bool, line_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.tty, self.line_interval, self.clock = stream, tty, line_interval, clock
        self.last_status = None
        self.last_epoch = None
        self.last_print = float("-inf")
        self.first_seen: tuple[float, int] | None = None
        self.drawn = False

    def update(self, job: dict) -> None:
        now = self.clock()
        status = job.get("status")
        epoch = (job.get("progress") or {}).get("epoch") or 0
        # The epoch rate as seen from here, for a service whose progress has no elapsed_s.
        if status == "running" and self.first_seen is None:
            self.first_seen = (now, epoch)
        rate = None
        if self.first_seen is not None and epoch > self.first_seen[1]:
            rate = (now - self.first_seen[0]) / (epoch - self.first_seen[1])
        if self.tty:
            width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
            self.stream.write("\r\x1b[K" + fmt.watch_line(job, rate, width))
            self.drawn = True
        elif status in JOB_TERMINAL:
            pass  # the caller prints the outcome
        elif status != self.last_status or (
                epoch != self.last_epoch and now - self.last_print >= self.line_interval):
            self.stream.write(fmt.watch_line(job, rate) + "\n")
            self.last_print = now
            self.last_epoch = epoch
        self.last_status = status
        self.stream.flush()

    def finish(self, job: dict) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
        elif not self.tty and job.get("status") == "running":
            self.stream.write(fmt.watch_line(job) + "\n")
        self.stream.flush()


class SweepWatcher:
    """``sweep --watch``: the trials table redrawn in place on a terminal; on a pipe or log
    file, a line per trial state change and a progress line every ``line_interval`` seconds."""

    def __init__(self, stream: TextIO, tty: bool, line_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.tty, self.line_interval, self.clock = stream, tty, line_interval, clock
        self.states: dict = {}
        self.last_header = None
        self.last_print = float("-inf")
        self.drawn_lines = 0
        self.last_block = None

    def update(self, sweep: dict) -> None:
        if self.tty:
            # Cursor-up cannot climb past the top of the screen: keep the block shorter.
            height = shutil.get_terminal_size((100, 40)).lines
            block = fmt.sweep_watch_block(sweep, max_rows=max(3, height - 5))
            if block == self.last_block:
                return
            if self.drawn_lines:
                self.stream.write(f"\x1b[{self.drawn_lines}F\x1b[J")
            self.stream.write(block + "\n")
            self.drawn_lines = block.count("\n") + 1
            self.last_block = block
        else:
            now = self.clock()
            header = fmt.sweep_header(sweep)
            changed = False
            for t in sweep.get("trials") or []:
                key = t.get("number")
                state = (t.get("state"), t.get("objective"))
                if self.states.get(key) != state:
                    self.states[key] = state
                    changed = True
                    self.stream.write("  " + trial_event(sweep, t) + "\n")
            running = fmt.running_trials(sweep)
            if running:
                header += f"  ({running})"
            if sweep.get("status") in SWEEP_TERMINAL:
                pass  # finish() prints the whole table
            elif header != self.last_header and (changed or now - self.last_print
                                                 >= self.line_interval):
                self.stream.write(header + "\n")
                self.last_header, self.last_print = header, now
        self.stream.flush()

    def finish(self, sweep: dict) -> None:
        if not self.tty:
            self.stream.write(fmt.sweep_watch_block(sweep) + "\n")
        self.stream.flush()


def trial_event(sweep: dict, trial: dict) -> str:
    label = trial.get("name") or fmt.fmt_params(trial.get("params"))
    line = f"trial {trial.get('number')} ({label}) {trial.get('state')}"
    if trial.get("objective") is not None:
        metric = (sweep.get("objective") or {}).get("metric", "objective")
        line += f"  {metric} {fmt.fmt_objective(trial['objective'], trial.get('objective_std'))}"
    return line


# --- commands ---------------------------------------------------------------------------------


class Ui:
    """Where output goes: results on stdout; live progress on stdout, or stderr under --json."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None):
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = self.err if as_json else self.out

    def result(self, data, text: str | None = None) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, indent=2) + "\n")
        elif text is not None:
            self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_submit(client: Client, args, ui: Ui) -> int:
    spec = load_spec(args.spec)
    if args.queue:
        resources = spec.get("resources")
        spec["resources"] = {**(resources if isinstance(resources, dict) else {}),
                             "queue": args.queue}
    job = client.submit_job(spec)
    plan = job.get("plan") or {}
    if not args.watch:
        ui.result(job, f"{job['id']}  {job.get('name')} queued on {job.get('queue')}: "
                       f"{fmt.updates(plan.get('steps_per_epoch'))} an epoch x "
                       f"{plan.get('epochs')} epochs = {fmt.updates(plan.get('total_updates'))}, "
                       f"{plan.get('total_params')} params")
        return fmt.EXIT_SUCCEEDED
    ui.live.write(f"submitted {fmt.job_label(job)} as {job['id']}: "
                  f"{fmt.updates(plan.get('steps_per_epoch'))} an epoch x {plan.get('epochs')} "
                  "epochs\n")
    return watch_job(client, job["id"], args, ui)


def watch_job(client: Client, job_id: str, args, ui: Ui) -> int:
    watcher = JobWatcher(ui.live, _tty(ui.live), line_interval=args.line_interval)
    try:
        job = client.wait_job(job_id, poll=args.interval, timeout=args.timeout,
                              on_update=watcher.update)
    except KeyboardInterrupt:
        watcher.finish({})
        ui.note(f"stopped watching; job {job_id} goes on (kerasyard cancel {job_id[:8]} "
                "stops it)")
        return 130
    watcher.finish(job)
    ui.result(job, fmt.final_line(job))
    return fmt.exit_code_for_status(job["status"])


def cmd_sweep(client: Client, args, ui: Ui) -> int:
    sweep = client.submit_sweep(load_spec(args.spec))
    p = sweep.get("progress") or {}
    if not args.watch:
        ui.result(sweep, f"{sweep['id']}  sweep {sweep.get('name')} {sweep.get('status')}: "
                         f"{p.get('total', sweep.get('max_trials'))} trials, "
                         f"{sweep.get('max_parallel')} at a time")
        return fmt.EXIT_SUCCEEDED
    ui.live.write(f"submitted sweep {sweep.get('name')} as {sweep['id']}: "
                  f"{p.get('total', sweep.get('max_trials'))} trials\n")
    return watch_sweep(client, sweep["id"], args, ui)


def watch_sweep(client: Client, sweep_id: str, args, ui: Ui) -> int:
    watcher = SweepWatcher(ui.live, _tty(ui.live), line_interval=max(args.line_interval, 5.0))
    try:
        sweep = client.wait_sweep(sweep_id, poll=max(args.interval, 1.0), timeout=args.timeout,
                                  on_update=watcher.update)
    except KeyboardInterrupt:
        ui.note(f"stopped watching; sweep {sweep_id} goes on (kerasyard cancel "
                f"{sweep_id[:8]} stops it)")
        return 130
    watcher.finish(sweep)
    url = (sweep.get("mlflow") or {}).get("url")
    ui.result(sweep, f"sweep {sweep.get('name')} ({sweep['id'][:8]}) {sweep['status']}"
                     + (f"\n  MLflow: {url}" if url else ""))
    return fmt.exit_code_for_status(sweep["status"])


def cmd_watch(client: Client, args, ui: Ui) -> int:
    kind, item = resolve(client, args.id)
    if kind == "job":
        return watch_job(client, item["id"], args, ui)
    return watch_sweep(client, item["id"], args, ui)


def _listing(ui: Ui, items: list[dict], key: str, next_cursor: str | None, text: str) -> int:
    if ui.as_json:
        ui.result({key: items, "next_cursor": next_cursor})
    else:
        ui.result(None, text if items else f"no {key}")
        if next_cursor:
            ui.note(f"(more {key}: raise --limit, or --all)")
    return fmt.EXIT_SUCCEEDED


def cmd_jobs(client: Client, args, ui: Ui) -> int:
    filters = {"status": args.status, "sweep_id": args.sweep, "experiment": args.experiment}
    if args.all:
        jobs, cursor = list(client.iter_jobs(page_size=500, **filters)), None
    else:
        page = client.list_jobs(limit=args.limit, **filters)
        jobs, cursor = page["jobs"], page.get("next_cursor")
    return _listing(ui, jobs, "jobs", cursor, fmt.jobs_table(jobs))


def cmd_sweeps(client: Client, args, ui: Ui) -> int:
    if args.all:
        sweeps, cursor = list(client.iter_sweeps(status=args.status)), None
    else:
        page = client.list_sweeps(status=args.status, limit=args.limit)
        sweeps, cursor = page["sweeps"], page.get("next_cursor")
    return _listing(ui, sweeps, "sweeps", cursor, fmt.sweeps_table(sweeps))


def cmd_show(client: Client, args, ui: Ui) -> int:
    kind, item = resolve(client, args.id)
    ui.result(item, fmt.job_details(item) if kind == "job" else fmt.sweep_details(item))
    return fmt.EXIT_SUCCEEDED


def cmd_cancel(client: Client, args, ui: Ui) -> int:
    kind, item = resolve(client, args.id)
    if kind == "job":
        job = client.cancel_job(item["id"])
        later = ("; it stops at its next epoch boundary" if job["status"] == "running" else "")
        ui.result(job, f"cancel requested for job {fmt.job_label(job)}: now {job['status']}{later}")
    else:
        sweep = client.cancel_sweep(item["id"])
        ui.result(sweep, f"cancel requested for sweep {sweep.get('name')} "
                         f"({fmt.short_id(sweep.get('id'))}): now {sweep.get('status')}")
    return fmt.EXIT_SUCCEEDED


def cmd_history(client: Client, args, ui: Ui) -> int:
    kind, item = resolve(client, args.id)
    if kind != "job":
        raise UsageError(f"{args.id} is a sweep; history is per job. `kerasyard show "
                         f"{args.id}` lists its trials and their job ids")
    history = client.job_history(item["id"])
    if args.csv:
        ui.out.write(fmt.history_csv(history))
        ui.out.flush()
    else:
        ui.result(history, fmt.history_table(history))
    return fmt.EXIT_SUCCEEDED


def cmd_open(client: Client, args, ui: Ui) -> int:
    kind, item = resolve(client, args.id)
    url = (item.get("mlflow") or {}).get("url")
    if not url:
        ui.note(f"error: {kind} {item['id']} ({item.get('status')}) has no MLflow run yet; "
                "it gets one when a worker starts it")
        if ui.as_json:
            ui.result({"kind": kind, "id": item["id"], "url": None})
        return fmt.EXIT_OTHER
    ui.result({"kind": kind, "id": item["id"], "url": url}, url)
    return fmt.EXIT_SUCCEEDED


def cmd_upload(client: Client, args, ui: Ui) -> int:
    if not Path(args.csv).is_file():
        raise UsageError(f"no such file: {args.csv}")
    ds = client.upload_dataset(args.csv, name=args.name)
    cols = ", ".join(c.get("name", "?") if isinstance(c, dict) else str(c)
                     for c in ds.get("columns") or [])
    ui.result(ds, f"{ds['id']}  {ds.get('name')}: {ds.get('n_rows')} rows; columns {cols}")
    return fmt.EXIT_SUCCEEDED


def cmd_health(client: Client, args, ui: Ui) -> int:
    body = client.health()
    rows = [(name, "ok" if c.get("ok") else "DOWN", c.get("detail", ""))
            for name, c in (body.get("components") or {}).items()]
    ui.result(body, f"{body.get('status')}  ({client.base_url})\n"
              + fmt.table(["COMPONENT", "STATE", "DETAIL"], rows, right=()))
    return fmt.EXIT_SUCCEEDED if body.get("status") == "ok" else fmt.EXIT_OTHER


# --- parser -----------------------------------------------------------------------------------

DESCRIPTION = """kerasyard: submit Keras training jobs and sweeps to a kerasyard service, watch
them train, list them, and open their MLflow runs.

examples:
  kerasyard submit examples/lecture_mlp.json --watch
  kerasyard jobs --status running
  kerasyard show 3f2c            (a job or sweep by id prefix)
  kerasyard history 3f2c --csv > history.csv
  kerasyard sweep sweep.yaml --watch
  kerasyard open 3f2c            (the MLflow UI link)"""

EPILOG = fmt.EXIT_CODES_HELP + """

environment:
  KERASYARD_URL        the service (default """ + DEFAULT_URL + """)
  KERASYARD_API_TOKEN  bearer token, when the service sets one"""


def build_parser() -> argparse.ArgumentParser:
    # Global options work before or after the command ("kerasyard jobs --json").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"service URL (default $KERASYARD_URL or {DEFAULT_URL})")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="API token (default $KERASYARD_API_TOKEN)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine output: the API's JSON on stdout")

    parser = argparse.ArgumentParser(
        prog="kerasyard", description=DESCRIPTION, epilog=EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def watch_opts(p: argparse.ArgumentParser, with_flag: bool = True) -> None:
        if with_flag:
            p.add_argument("--watch", "-w", action="store_true",
                           help="follow it live until it ends; the exit code is its outcome")
        p.add_argument("--interval", type=float, default=0.5, metavar="S",
                       help="seconds between polls while watching (default 0.5)")
        p.add_argument("--line-interval", type=float, default=2.0, metavar="S",
                       help="off a terminal: at most one progress line per S seconds "
                            "(default 2)")
        p.add_argument("--timeout", type=float, default=None, metavar="S",
                       help="stop watching after S seconds (exit 4)")

    p = add("submit", cmd_submit, "submit a job spec (.json or .yaml; - reads stdin)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--queue", help="override resources.queue (cpu or gpu)")
    watch_opts(p)

    p = add("sweep", cmd_sweep, "submit a sweep spec (.json or .yaml)")
    p.add_argument("spec", metavar="SPEC")
    watch_opts(p)

    p = add("watch", cmd_watch, "follow a job or sweep already submitted")
    p.add_argument("id", metavar="ID")
    watch_opts(p, with_flag=False)

    p = add("jobs", cmd_jobs, "list jobs, newest first")
    p.add_argument("--status", help="queued, running, succeeded, failed, cancelled, pruned")
    p.add_argument("--sweep", metavar="SWEEP_ID", help="only the trials of this sweep")
    p.add_argument("--experiment")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--all", action="store_true", help="every page")

    p = add("sweeps", cmd_sweeps, "list sweeps, newest first")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--all", action="store_true", help="every page")

    p = add("show", cmd_show, "one job or sweep, by id or id prefix")
    p.add_argument("id", metavar="ID")

    p = add("cancel", cmd_cancel, "cancel a job or sweep (cooperative: at an epoch boundary)")
    p.add_argument("id", metavar="ID")

    p = add("history", cmd_history, "a job's per-epoch metrics")
    p.add_argument("id", metavar="ID")
    p.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")

    p = add("open", cmd_open, "print the MLflow UI link of a job's run or a sweep's parent run")
    p.add_argument("id", metavar="ID")

    p = add("upload", cmd_upload, "upload a CSV dataset; prints its id for dataset.kind upload")
    p.add_argument("csv", metavar="CSV")
    p.add_argument("--name")

    add("health", cmd_health, "database, broker and MLflow reachability (exit 4 if degraded)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return fmt.EXIT_USAGE
    ui = Ui(getattr(args, "json", False))
    client = Client(getattr(args, "url", None), getattr(args, "token", None))
    try:
        return args.func(client, args, ui)
    except ApiError as exc:
        for line in fmt.render_api_error(exc):
            ui.err.write(line + "\n")
        if ui.as_json:
            ui.result({"error": {"status": exc.status, "code": exc.code, "message": exc.message,
                                 "details": exc.details}})
        return fmt.exit_code_for_error(exc)
    except ServiceUnreachable as exc:
        ui.note(f"error: {exc}\n  is the service running? point at it with --url or "
                "KERASYARD_URL")
        return fmt.EXIT_UNREACHABLE
    except UsageError as exc:
        ui.note(f"error: {exc}")
        return fmt.EXIT_USAGE
    except TimeoutError as exc:
        ui.note(("\n" if _tty(ui.live) else "") + f"error: {exc}")
        return fmt.EXIT_OTHER
    except BrokenPipeError:  # `kerasyard jobs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return fmt.EXIT_SUCCEEDED


if __name__ == "__main__":
    sys.exit(main())
