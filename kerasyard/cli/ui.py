"""Where a command's output goes, and how it looks on a terminal and off one."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from rich.console import Console, RenderableType
from rich.text import Text

from . import format as fmt


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
