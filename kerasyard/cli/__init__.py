"""The ``kerasyard`` command: submit and watch jobs and sweeps, list, show and compare them,
read their history. click parses the command line (and completes it in the shell); rich draws
the output; :class:`kerasyard.Client` talks to the API.

- :mod:`.group`: the click group, the global options, errors to exit codes, the help texts;
- :mod:`.run`: ``submit``, ``sweep``, ``watch``, ``cancel``, ``pause``, ``resume``, ``upload``;
- :mod:`.browse`: ``jobs``, ``sweeps``, ``show``, ``history``, ``open``, ``compare``, ``health``;
- :mod:`.models`: ``models`` (the uploaded .keras models) and ``models upload FILE``;
- :mod:`.inputs`: spec files and IDs; :mod:`.ui`: where output goes;
- :mod:`.format`: what the output says; :mod:`.watch`: ``--watch``'s live view;
  :mod:`.plot`: ``compare --plot``.

``main`` is the ``kerasyard`` script (pyproject.toml); ``python -m kerasyard.cli`` runs it too.
"""

from __future__ import annotations

import click

from . import browse, models, run  # noqa: F401  (their commands register on the group)
from .format import EXIT_SUCCEEDED, EXIT_USAGE
from .group import app


def main(argv: list[str] | None = None) -> int:
    """The ``kerasyard`` script: returns the exit code (see ``kerasyard --help``)."""
    try:
        code = app.main(args=argv, prog_name="kerasyard", complete_var="_KERASYARD_COMPLETE",
                        standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:  # a usage error: exit 2
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return code if isinstance(code, int) else EXIT_SUCCEEDED

