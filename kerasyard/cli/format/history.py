"""A job's per-epoch metrics: the columns in reading order, as a table and as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich.console import RenderableType
from rich.text import Text

from .cells import fmt_number, table

TIMING_COLUMNS = ("learning_rate", "epoch_time_s")


def history_columns(epochs: Sequence[dict]) -> list[str]:
    """``epoch, loss, <metrics>, val_loss, val_<metrics>, learning_rate, epoch_time_s``."""
    seen: list[str] = []
    for row in epochs:
        for key in row:
            if key != "epoch" and key not in seen:
                seen.append(key)

    def rank(key: str) -> tuple:
        if key in TIMING_COLUMNS:
            return (3, TIMING_COLUMNS.index(key))
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


def metric_names(rows: Sequence[dict]) -> list[str]:
    """The metrics of these rows in history order, without the timing columns."""
    return [k for k in history_columns(rows)[1:] if k not in TIMING_COLUMNS]
