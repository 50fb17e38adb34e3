"""``compare``: jobs side by side, what differs in their specs, the lecture's quantities, their
final metrics and wall time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from .cells import fmt_duration, fmt_number, status_text, took
from .history import metric_names
from .jobs import epoch_progress, job_label

# The lecture's quantities, as `compare` lists them: (label, how to read them off the plan).
LECTURE = (
    ("samples (train/val)", lambda p: f"{p.get('n_train', '-')}/{p.get('n_val', '-')}"),
    ("batch size", lambda p: p.get("batch_size")),
    ("steps per epoch", lambda p: p.get("steps_per_epoch")),
    ("epochs", lambda p: p.get("epochs")),
    ("total updates", lambda p: p.get("total_updates")),
    ("gradient descent", lambda p: p.get("gradient_descent")),
    ("parameters", lambda p: p.get("total_params")),
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"fit": {"batch_size": 5}}`` -> ``{"fit.batch_size": 5}`` (list items by index)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def spec_differences(jobs: Sequence[dict]) -> dict[str, list]:
    """The spec fields whose values differ between the jobs (name aside), in spec order."""
    flat = [flatten(j.get("spec") or {}) for j in jobs]
    paths = list(dict.fromkeys(p for f in flat for p in f))
    return {p: [f.get(p, None) for f in flat] for p in paths
            if p != "name" and len({json.dumps(f.get(p, None), sort_keys=True)
                                    for f in flat}) > 1}


def final_metrics(job: dict) -> dict:
    return (job.get("summary") or {}).get("final_metrics") or epoch_progress(job)[2]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fmt_number(value)
    return value if isinstance(value, str) else json.dumps(value)


def compare_table(jobs: Sequence[dict]) -> Table:
    """Runs side by side: a column per job; what differs in their specs, the lecture's
    quantities, the final metrics, the wall time."""
    out = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1), header_style="bold",
                highlight=False)
    out.add_column("")
    for j in jobs:
        out.add_column(job_label(j), justify="right")

    def section(title: str) -> None:
        out.add_row(Text(title, style="bold underline"), *([""] * len(jobs)))

    out.add_row("status", *(status_text(j.get("status")) for j in jobs))
    diffs = spec_differences(jobs)
    section("spec differences")
    if not diffs:
        out.add_row("  (none)", *([""] * len(jobs)))
    for path, values in diffs.items():
        out.add_row(f"  {path}", *(_cell(v) for v in values))
    section("plan")
    for label, read in LECTURE:
        out.add_row(f"  {label}", *(_cell(read(j.get("plan") or {})) for j in jobs))
    section("final metrics")
    names = metric_names([final_metrics(j) for j in jobs])
    for name in names:
        out.add_row(f"  {name}", *(fmt_number(final_metrics(j).get(name)) for j in jobs))
    out.add_row("  epochs completed", *(str(epoch_progress(j)[0]) for j in jobs))
    out.add_row("  took", *(fmt_duration(took(j)) if took(j) is not None else "-"
                            for j in jobs))
    return out


def compare_data(jobs: Sequence[dict]) -> dict:
    """``compare --json``."""
    return {"jobs": [{"id": j.get("id"), "name": j.get("name"), "status": j.get("status"),
                      "plan": j.get("plan"), "final_metrics": final_metrics(j),
                      "epochs_completed": epoch_progress(j)[0], "took_s": took(j)} for j in jobs],
            "spec_differences": spec_differences(jobs)}
