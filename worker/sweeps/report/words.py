"""What the sweep's report says in words: the headline (the best configuration over its seeds,
the runner-up, whether the lead is within noise), chance with how it is computed, where
training longer made a curve worse, and the lesson of the per-update panel.

Each returns plain text (HTML is escaped by the page); the headline also its parts, which the
page carries as data for the tests.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from service.jobspec.sweep import short_name, trial_name
from service.worker_api import Job
from worker.sweeps.report.curves import CurvePanel


def num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def objective_words(metric: str, at: str) -> str:
    return f"{metric} at its best epoch" if at == "best" else f"{metric} at the last epoch"


# --- the headline ------------------------------------------------------------------------------


def headline(best: dict | None, metric: str, at: str = "last") -> dict:
    """One sentence: the best configuration, its objective as mean ± sd over its seeds, the
    runner-up, and "within noise: add repeats" when the lead is not clear.

    ``best`` is ``GET /sweeps/{id}``'s ``best``; ``n_seeds``, ``runner_up`` and ``clear`` are
    read when present (a best without them names no runner-up and makes no noise claim).
    """
    if best is None:
        return {"text": "No trial finished with an objective: there is no best configuration.",
                "name": None, "objective": None}
    n = best.get("n_seeds") or len(best.get("job_ids") or []) or 1
    sd = best.get("objective_std")
    value = num(best["objective"]) + (f" ± {sd:.2g}" if sd is not None else "")
    spread = (f"mean ± sd over {n} seeds" if n > 1 and sd is not None
              else "one seed, so no spread measured")
    text = f"Best: {best['name']}, {objective_words(metric, at)} {value} ({spread})"
    runner = best.get("runner_up")
    clear = best.get("clear")
    if runner:
        name = runner.get("name") or trial_name(runner.get("params") or {})
        rsd = runner.get("objective_std")
        text += f"; runner-up {name}, {num(runner.get('objective'))}" + (
            f" ± {rsd:.2g}" if rsd is not None else "")
    if clear is False:
        text += ": within noise: add repeats"
    elif clear is True and runner:
        text += ": ahead by more than the noise"
    return {"text": text + ".", "name": best["name"], "objective": best["objective"],
            "objective_std": sd, "n_seeds": n, "runner_up": runner, "clear": clear}


# --- chance ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Chance:
    """What guessing scores on the objective, and how that is computed."""

    value: float  # a uniform guess over the classes
    label: str  # "chance: ln(10) = 2.303, uniform guess over 10 classes"
    majority: float | None = None  # accuracy: always answering the most common class
    majority_label: str | None = None


def chance_of(jobs: list[Job], metric: str) -> Chance | None:
    """Chance on a classification objective (a loss or an accuracy; worker/training/chance.py):
    a uniform guess over n classes scores cross-entropy ln(n) and accuracy 1/n. For accuracy,
    the share of the most common class in the set the metric is read on (the jobs' summaries)
    is the second bar, labelled, when the classes are not balanced."""
    base = metric[4:] if metric.startswith("val_") else metric
    if base not in ("loss", "accuracy"):
        return None
    for j in jobs:
        chance = (j.summary or {}).get("chance")
        if not isinstance(chance, dict) or not isinstance(chance.get("loss"), (int, float)):
            continue
        n = (j.plan or {}).get("n_classes") or round(math.exp(chance["loss"]))
        n = max(int(n), 2)
        if base == "loss":
            return Chance(math.log(n), f"chance: ln({n}) = {math.log(n):.3f}, uniform guess "
                                       f"over {n} classes")
        out = Chance(1 / n, f"chance: 1/{n} = {1 / n:.3f}, uniform guess over {n} classes")
        major = chance.get("accuracy")
        if isinstance(major, (int, float)) and abs(major - 1 / n) > 0.005:
            where = "validation" if metric.startswith("val_") else "training"
            out.majority = float(major)
            out.majority_label = (f"majority class: {major:.3f}, always answering the "
                                  f"{where} set's most common class")
        return out
    return None


# --- the curves --------------------------------------------------------------------------------


def overtraining(panels: list[CurvePanel], line_by: str | None, metric: str,
                 chance: Chance | None, goal: str) -> dict:
    """The curves whose last epoch is worse than their best by more than the noise
    (:func:`.curves.best_epoch`): training longer made them worse. Returns the sentence and,
    per curve, its best epoch, values and verdict."""
    rows, judged = [], 0
    for p in panels:
        for c in p.curves:
            name = _line_name(p, c.label, line_by)
            rows.append({"curve": name, "best_epoch": c.best_epoch, "best": c.best_value,
                         "last_epoch": c.epochs[-1] if c.epochs else None,
                         "last": c.last_value, "noise": c.noise, "worse": c.worse})
            judged += c.worse is not None
    worse = [r for r in rows if r["worse"]]
    if not rows:
        return {"text": "", "curves": rows}
    if not judged:
        text = ("Each curve's best epoch is marked (★). Whether training longer made a curve "
                "worse is not judged: one seed and too few epochs to measure its noise.")
    elif not worse:
        text = (f"Each curve's best epoch is marked (★). On none of the {judged} curves was "
                f"the last epoch worse than the best by more than the noise.")
    else:
        parts = []
        for r in worse:
            s = (f"{r['curve']}: best {num(r['best'])} at epoch {r['best_epoch']}, "
                 f"{num(r['last'])} at epoch {r['last_epoch']}")
            if chance is not None and _beyond(r["last"], chance.value, goal):
                s += f", worse than chance ({chance.value:.3f})"
            parts.append(s)
        noise = "the seeds' spread" if panels[0].curves[0].seeds > 1 else \
            "the epoch-to-epoch jitter"
        text = (f"Each curve's best epoch is marked (★). Training longer made {len(worse)} of "
                f"the {judged} curves worse (the last epoch worse than the best by more than "
                f"the noise, {noise}): " + "; ".join(parts) + ".")
    return {"text": text, "curves": rows}


def _beyond(value: float | None, chance: float, goal: str) -> bool:
    return value is not None and (value > chance if goal == "minimize" else value < chance)


def _line_name(panel: CurvePanel, label: str, line_by: str | None) -> str:
    own = f"{short_name(line_by)}={label}" if line_by else label
    return f"{own} {panel.title}" if panel.fixed else own


def update_lesson(panels: list[CurvePanel], line_by: str | None, metric: str,
                  goal: str) -> str:
    """The per-update panel in words: what x and y are, each line's steps per epoch, and where
    each line stands after the same number of updates (the most every line of a panel
    reached), averaged over the panels; the leader is named only when it leads the next line
    by more than those two lines' noise."""
    if not panels or not line_by:
        return ""
    steps = {}
    for p in panels:
        for c in p.curves:
            if c.updates:
                steps.setdefault(c.label, c.updates[0])
    name = short_name(line_by)
    if len(set(steps.values())) > 1:
        per = ", ".join(f"{name}={k}: {v} an epoch" for k, v in steps.items())
        why = (" An epoch of a small batch is many more updates, so on the per-epoch panel "
               "small batches look faster; this panel asks what each update buys.")
    else:
        per = f"{next(iter(steps.values()), 0)} an epoch for every line"
        why = (" Every line takes as many updates an epoch, so this panel reads as the "
               "per-epoch one.")
    text = (f"x: updates, the weight steps taken (epochs × steps per epoch: {per}); y: {metric}, "
            f"mean over seeds.{why}")
    at, reached = _at_same_updates(panels)
    if len(reached) > 1:
        order = sorted(reached, key=lambda k: reached[k] * (1 if goal == "minimize" else -1))
        # The noise of the two lines compared (their seeds' spread, or jitter, as measured
        # for their best epochs: curves.best_epoch).
        noises = [c.noise for p in panels for c in p.curves
                  if c.noise is not None and c.label in order[:2]]
        noise = max(noises, default=0.0)
        text += (f" After {at:g} updates (the most every line reached): "
                 + ", ".join(f"{name}={k} {num(reached[k])}" for k in order))
        if abs(reached[order[1]] - reached[order[0]]) > noise:
            text += f"; per update, {name}={order[0]} got furthest" + (
                "." if noises else " (its noise not measured).")
        else:
            text += (f"; per update they are within noise of each other (±{noise:.2g}): the "
                     "batch size changed how many updates an epoch is, not what an update "
                     "bought.")
    return text


def _at_same_updates(panels: list[CurvePanel]) -> tuple[float, dict[str, float]]:
    """Each line's value at the largest update count every line of every panel reached
    (interpolated on log updates), averaged over the panels."""
    ends = [c.updates[-1] for p in panels for c in p.curves if c.updates]
    starts = [c.updates[0] for p in panels for c in p.curves if c.updates]
    if not ends or min(ends) < max(starts):
        return 0.0, {}
    at = float(min(ends))
    values: dict[str, list[float]] = {}
    for p in panels:
        for c in p.curves:
            pts = [(u, v) for u, v in zip(c.updates, c.y) if v is not None]
            if not pts:
                continue
            xs = np.log([u for u, _ in pts])
            values.setdefault(c.label, []).append(
                float(np.interp(math.log(at), xs, [v for _, v in pts])))
    return at, {k: float(np.mean(v)) for k, v in values.items()}
