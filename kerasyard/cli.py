"""The ``kerasyard`` command: submit and watch jobs and sweeps, list, show and compare them,
read their history. click parses the command line (and completes it in the shell); rich
draws the output (:mod:`kerasyard.format`, :mod:`kerasyard.watch`); :class:`kerasyard.Client`
talks to the API.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console, Group, RenderableType
from rich.text import Text

from . import format as fmt
from .client import DEFAULT_URL, ApiError, Client, ServiceUnreachable
from .watch import JobWatcher, SweepWatcher

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "pruned")
SWEEP_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


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


def resolve(client: Client, ident: str | None) -> tuple[str, dict]:
    """A job or sweep by full id or unique id prefix (the API resolves prefixes): ('job', job)
    or ('sweep', sweep); jobs first. No id: the newest job."""
    if ident is None:
        jobs = client.list_jobs(limit=1)["jobs"]
        if not jobs:
            raise UsageError("no jobs yet; submit one with `kerasyard submit SPEC`")
        return "job", jobs[0]
    ident = ident.strip()
    if not ident:
        raise UsageError("an empty id")
    try:
        return "job", client.get_job(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
    try:
        return "sweep", client.get_sweep(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
    raise ApiError(404, "not_found", f"no job or sweep with id {ident!r}")


def resolve_job(client: Client, ident: str | None, what: str) -> dict:
    kind, item = resolve(client, ident)
    if kind != "job":
        raise UsageError(f"{ident} is a sweep; {what} is per job. `kerasyard show {ident}` "
                         "lists its trials and their job ids")
    return item


# --- output -----------------------------------------------------------------------------------


def _console(stream: TextIO) -> Console:
    # rich turns colour off when the stream is not a terminal, with NO_COLOR or TERM=dumb.
    return Console(file=stream, highlight=False, markup=False, emoji=False)


class Ui:
    """Where output goes: results on stdout; live progress on stdout, or stderr under --json.
    On a terminal rich draws the renderables; elsewhere they are plain text (fmt.plain)."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None):
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.console = _console(self.out)
        self.err_console = _console(self.err)
        self.live = self.err_console if as_json else self.console

    def show(self, renderable: RenderableType, console: Console | None = None) -> None:
        console = console or self.console
        if console.is_terminal:
            # Lines of text are not folded at the terminal's width (a URL stays one line).
            console.print(renderable, soft_wrap=isinstance(renderable, (str, Text)))
        else:
            console.file.write(fmt.plain(renderable) + "\n")
            console.file.flush()

    def result(self, data, shown: RenderableType | None = None) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, indent=2) + "\n")
            self.out.flush()
        elif shown is not None:
            self.show(shown)

    def note(self, text: str) -> None:
        self.show(Text(text), self.err_console)

    def error(self, lines: list[str]) -> None:
        head, *rest = lines
        self.show(Text.assemble(("error:", "bold red"), head.removeprefix("error:"),
                                *(f"\n{ln}" for ln in rest)), self.err_console)


# --- the command line -------------------------------------------------------------------------

DESCRIPTION = """kerasyard: submit Keras training jobs and sweeps to a kerasyard service, watch
them train, list and compare them, and open their MLflow runs.

\b
examples:
  kerasyard submit examples/lecture_mlp.json --watch
  kerasyard jobs --status running
  kerasyard show 3f2c            (a job or sweep by id prefix; no id: the newest job)
  kerasyard history --csv > history.csv
  kerasyard compare 3f2c 9a1b --plot curves.png
  kerasyard sweep sweep.yaml --watch
  kerasyard open 3f2c            (the MLflow UI link)"""

EPILOG = "\b\n" + fmt.EXIT_CODES_HELP + """

\b
environment:
  KERASYARD_URL        the service (default """ + DEFAULT_URL + """)
  KERASYARD_API_TOKEN  bearer token, when the service sets one
  NO_COLOR             no colour on a terminal (none off one anyway)

\b
shell completion (bash; zsh and fish alike, see the README):
  eval "$(_KERASYARD_COMPLETE=bash_source kerasyard)\""""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _remember(ctx: click.Context, param: click.Parameter, value):
    """--url, --token and --json work before or after the command: each is kept on the root
    context, the command's own taking over the group's."""
    if value not in (None, False):
        ctx.find_root().meta[f"kerasyard.{param.name}"] = value
    return value


def global_options(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_remember,
                     help="machine output: the API's JSON on stdout")(f)
    f = click.option("--token", expose_value=False, callback=_remember, metavar="TOKEN",
                     help="API token (default $KERASYARD_API_TOKEN)")(f)
    f = click.option("--url", expose_value=False, callback=_remember, metavar="URL",
                     help=f"service URL (default $KERASYARD_URL or {DEFAULT_URL})")(f)
    return f


def _client(ctx: click.Context, timeout: float = 30.0) -> Client:
    meta = ctx.find_root().meta
    return Client(meta.get("kerasyard.url"), meta.get("kerasyard.token"), timeout=timeout)


def complete_id(ctx: click.Context, param: click.Parameter, incomplete: str):
    """Shell completion of an ID: the newest jobs' and sweeps' ids that begin with what is
    typed, with their names (nothing when the service does not answer in 2 s)."""
    from click.shell_completion import CompletionItem

    client = _client(ctx, timeout=2.0)
    items = []
    try:
        for kind, rows in (("job", client.list_jobs(limit=50)["jobs"]),
                           ("sweep", client.list_sweeps(limit=20)["sweeps"])):
            for r in rows:
                if r["id"].startswith(incomplete):
                    value = r["id"][:8] if len(incomplete) < 8 else r["id"]
                    items.append(CompletionItem(value, help=f"{kind} {r.get('name')} "
                                                            f"({r.get('status')})"))
    except (ApiError, ServiceUnreachable, KeyError, TypeError):
        return []
    return items


@click.group(help=DESCRIPTION, epilog=EPILOG, context_settings=CONTEXT, no_args_is_help=True)
@global_options
def app() -> None:
    pass


def command(name: str, help_text: str, short: str | None = None, **kw) -> Callable:
    """A subcommand ``f(client, ui, **params) -> exit code``, with the global options and the
    API's errors turned into messages and exit codes."""

    def wrap(f: Callable[..., int]) -> Callable:
        @functools.wraps(f)
        def run(**params) -> int:
            ctx = click.get_current_context()
            ui = Ui(bool(ctx.find_root().meta.get("kerasyard.as_json")))
            return guarded(ui, lambda: f(_client(ctx), ui, **params))

        return app.command(name, help=help_text, short_help=short or help_text, epilog=EPILOG,
                           **kw)(global_options(run))

    return wrap


def guarded(ui: Ui, call: Callable[[], int]) -> int:
    try:
        return call()
    except ApiError as exc:
        ui.error(fmt.render_api_error(exc))
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
        ui.note(f"error: {exc}")
        return fmt.EXIT_OTHER
    except BrokenPipeError:  # `kerasyard jobs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return fmt.EXIT_SUCCEEDED


def watch_options(with_flag: bool = True) -> Callable:
    def add(f: Callable) -> Callable:
        f = click.option("--timeout", type=float, default=None, metavar="S",
                         help="stop watching after S seconds (exit 4)")(f)
        f = click.option("--line-interval", type=float, default=2.0, metavar="S",
                         show_default=True,
                         help="off a terminal: at most one progress line per S seconds")(f)
        f = click.option("--interval", type=float, default=0.5, metavar="S", show_default=True,
                         help="seconds between polls while watching")(f)
        if with_flag:
            f = click.option("--watch", "-w", is_flag=True,
                             help="follow it live until it ends; the exit code is its "
                                  "outcome")(f)
        return f

    return add


ID = click.argument("ident", metavar="ID", shell_complete=complete_id)
OPTIONAL_ID = click.argument("ident", metavar="[ID]", required=False, shell_complete=complete_id)


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
    return fmt.exit_code_for_status(sweep["status"])


@command("watch", "follow a job or sweep already submitted (no ID: the newest job)")
@OPTIONAL_ID
@watch_options(with_flag=False)
def cmd_watch(client: Client, ui: Ui, ident: str | None, **w) -> int:
    kind, item = resolve(client, ident)
    if kind == "job":
        return watch_job(client, ui, item["id"], **w)
    return watch_sweep(client, ui, item["id"], **w)


def _listing(ui: Ui, items: list[dict], key: str, next_cursor: str | None,
             shown: RenderableType) -> int:
    if ui.as_json:
        ui.result({key: items, "next_cursor": next_cursor})
    else:
        ui.show(shown if items else f"no {key}")
        if next_cursor:
            ui.note(f"(more {key}: raise --limit, or --all)")
    return fmt.EXIT_SUCCEEDED


@command("jobs", "list jobs, newest first")
@click.option("--status", type=click.Choice(JOB_STATUSES))
@click.option("--sweep", metavar="SWEEP_ID", shell_complete=complete_id,
              help="only the trials of this sweep (id or id prefix)")
@click.option("--experiment")
@click.option("--limit", type=int, default=20, show_default=True, help="how many")
@click.option("--all", "every", is_flag=True, help="every page")
def cmd_jobs(client: Client, ui: Ui, status, sweep, experiment, limit, every) -> int:
    filters = {"status": status, "sweep_id": sweep, "experiment": experiment}
    if every:
        jobs, cursor = list(client.iter_jobs(page_size=500, **filters)), None
    else:
        page = client.list_jobs(limit=limit, **filters)
        jobs, cursor = page["jobs"], page.get("next_cursor")
    return _listing(ui, jobs, "jobs", cursor, fmt.jobs_table(jobs))


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


@command("upload", "upload a CSV dataset; prints its id for dataset.kind upload")
@click.argument("csv_path", metavar="CSV", type=click.Path())
@click.option("--name")
def cmd_upload(client: Client, ui: Ui, csv_path: str, name: str | None) -> int:
    if not Path(csv_path).is_file():
        raise UsageError(f"no such file: {csv_path}")
    ds = client.upload_dataset(csv_path, name=name)
    cols = ", ".join(c.get("name", "?") if isinstance(c, dict) else str(c)
                     for c in ds.get("columns") or [])
    ui.result(ds, f"{ds['id']}  {ds.get('name')}: {ds.get('n_rows')} rows; columns {cols}")
    return fmt.EXIT_SUCCEEDED


@command("health", "database, broker and MLflow reachability (exit 4 if degraded)")
def cmd_health(client: Client, ui: Ui) -> int:
    body = client.health()
    rows = [(name, fmt.status_text("ok" if c.get("ok") else "DOWN"), c.get("detail", ""))
            for name, c in (body.get("components") or {}).items()]
    ui.result(body, Group(Text(f"{body.get('status')}  ({client.base_url})"),
                          fmt.table(["COMPONENT", "STATE", "DETAIL"], rows)))
    return fmt.EXIT_SUCCEEDED if body.get("status") == "ok" else fmt.EXIT_OTHER


def main(argv: list[str] | None = None) -> int:
    """The ``kerasyard`` script: returns the exit code (see ``kerasyard --help``)."""
    try:
        code = app.main(args=argv, prog_name="kerasyard", complete_var="_KERASYARD_COMPLETE",
                        standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return fmt.EXIT_USAGE
    except click.ClickException as exc:  # a usage error: exit 2
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return code if isinstance(code, int) else fmt.EXIT_SUCCEEDED


if __name__ == "__main__":
    sys.exit(main())
