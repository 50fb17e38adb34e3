"""The pieces every view is built of: numbers, durations and ages as text, status colours,
borderless tables, ``key  value`` blocks, and :func:`plain`, a renderable as plain text."""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text


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

STATUS_STYLES = {"queued": "dim", "pending": "dim", "running": "cyan", "paused": "blue",
                 "succeeded": "green",
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
