"""The ``kerasyard`` click group and what every command shares: the global options (--url,
--token, --json before or after the command), the :func:`command` decorator that hands a
command a :class:`~kerasyard.Client` and a :class:`~.ui.Ui` and turns its errors into messages
and exit codes (:func:`guarded`), the watch options, ID completion, and the help texts."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import click

from ..client import Client
from ..errors import ApiError, ServiceUnreachable
from ..transport import DEFAULT_URL
from . import format as fmt
from .inputs import UsageError
from .ui import Ui

JOB_STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled",
                "pruned")
SWEEP_STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")


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
shell completion (bash; zsh and fish alike, see docs/cli.md):
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
