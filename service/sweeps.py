"""Sweep commands and the scheduler that keeps a sweep moving; no Flask inside.

The database is the sweep's state: its trials are job rows (``Job.sweep_id``), one per
(trial, seed), unique on ``(sweep_id, trial_number, repeat)``; Optuna's study, in the same
database, holds what its sampler and pruner need. :func:`advance` looks at those rows and
does what is due: tells Optuna about finished trials, cancels, asks for new trials up to
``max_parallel`` running trainings and ``max_trials`` in all, queues them, and ends the sweep.
It is idempotent, and one caller at a time holds the sweep's lease; the API calls it on submit
and on cancel, a worker after each trial, and the API's background thread every few seconds,
so a sweep carries on after any of them restarts.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import time
from typing import Any

from sqlalchemy import select, tuple_, update

from . import jobs as J
from . import studies
from .config import Settings
from .db import session_scope
from .errors import ApiError
from .models import (
    SWEEP_TERMINAL,
    TERMINAL,
    Job,
    JobStatus,
    Sweep,
    SweepStatus,
    as_utc,
    new_id,
    utcnow,
)
from .queue import queue_sweep_report, queue_training_job
from .spec import SpecError
from .sweep_spec import SweepPlan, SweepSpec, apply_params, ordered, trial_name, validate_sweep

log = logging.getLogger(__name__)

LEASE_S = 60
TERMINAL_VALUES = {s.value for s in TERMINAL}
SWEEP_STATUSES = [s.value for s in SweepStatus]
REPORT_RESEND_S = 600


def validate(settings: Settings, data: Any) -> tuple[SweepSpec, SweepPlan]:
    base = data.get("base") if isinstance(data, dict) else None
    return validate_sweep(data, J.limits(settings), J.resolver(settings, base or {}))


# --- commands behind the routes ----------------------------------------------------------------


def submit_sweep(settings: Settings, data: Any) -> dict:
    """Validate, store, create the Optuna study, start the first trials.

    The sweep is stored as validated, every default filled in (the experiment resolved from
    the base), so the scheduler, the worker and the report read one set of values.
    """
    sweep, plan = validate(settings, data)
    sweep.experiment = sweep.experiment or sweep.base.get("experiment") or "Default"
    sweep_id = new_id()
    with session_scope(settings.database_url) as s:
        s.add(Sweep(id=sweep_id, name=sweep.name, experiment=sweep.experiment,
                    method=sweep.method, spec=sweep.model_dump(mode="json"),
                    plan=plan.as_dict(), study_name=f"kerasyard-sweep-{sweep_id}"))
    advance(settings, sweep_id)
    return get_sweep(settings, sweep_id)


def _load(s, sweep_id: str) -> Sweep:
    sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        raise ApiError(404, "not_found", f"no sweep with id {sweep_id!r}")
    return sweep


def get_sweep(settings: Settings, sweep_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        sweep = _load(s, sweep_id)
        jobs = s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                         .order_by(Job.trial_number, Job.repeat)).all()
        return serialize(settings, sweep, jobs, with_trials=True)


def cancel_sweep(settings: Settings, sweep_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        sweep = _load(s, sweep_id)
        if SweepStatus(sweep.status) in SWEEP_TERMINAL:
            raise ApiError(409, "illegal_state", f"sweep {sweep_id} is already {sweep.status}; "
                           "only queued or running sweeps can be cancelled")
        sweep.cancel_requested = True
    advance(settings, sweep_id, wait_s=5)
    return get_sweep(settings, sweep_id)


def list_sweeps(settings: Settings, status: str | None = None, limit: int = 50,
                cursor: str | None = None) -> dict:
    if status is not None and status not in SWEEP_STATUSES:
        raise ApiError(400, "bad_request", f"status {status!r} is not one of {SWEEP_STATUSES}",
                       [{"loc": "status", "msg": f"expected one of {SWEEP_STATUSES}",
                         "value": status}])
    query = select(Sweep)
    if status:
        query = query.where(Sweep.status == status)
    if cursor:
        created, sweep_id = J._decode_cursor(cursor)
        query = query.where(tuple_(Sweep.created_at, Sweep.id) < tuple_(created, sweep_id))
    query = query.order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit + 1)
    with session_scope(settings.database_url) as s:
        rows = s.scalars(query).all()
        page = rows[:limit]
        ids = [sw.id for sw in page]
        jobs = s.scalars(select(Job).where(Job.sweep_id.in_(ids))).all() if ids else []
        by_sweep: dict[str, list[Job]] = {}
        for j in jobs:
            by_sweep.setdefault(j.sweep_id, []).append(j)
        return {"sweeps": [serialize(settings, sw, by_sweep.get(sw.id, []), with_trials=False)
                           for sw in page],
                "next_cursor": J._encode_cursor(page[-1]) if len(rows) > limit else None}


# --- trials as the user sees them --------------------------------------------------------------


def job_objective(job: Job, metric: str) -> float | None:
    if job.status not in (JobStatus.succeeded.value, JobStatus.pruned.value):
        return None
    value = ((job.summary or {}).get("final_metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def seed_values(group: list[Job], metric: str) -> list[float]:
    """The objective of each seed of a trial that succeeded."""
    return [v for v in (job_objective(j, metric) for j in group
                        if j.status == JobStatus.succeeded.value) if v is not None]


def trial_state(jobs: list[Job]) -> str:
    states = {j.status for j in jobs}
    if JobStatus.pruned.value in states:
        return JobStatus.pruned.value
    if states & {JobStatus.running.value}:
        return JobStatus.running.value
    if states == {JobStatus.queued.value}:
        return JobStatus.queued.value
    if not states <= TERMINAL_VALUES:
        return JobStatus.running.value  # some seeds done, others queued
    if JobStatus.succeeded.value in states:
        return JobStatus.succeeded.value
    if states == {JobStatus.cancelled.value}:
        return JobStatus.cancelled.value
    return JobStatus.failed.value


def trials_of(sweep: Sweep, jobs: list[Job]) -> list[dict]:
    """One entry per trial (configuration), seeds folded into mean and spread."""
    metric = sweep.spec["objective"]["metric"]
    by_trial: dict[int, list[Job]] = {}
    for j in jobs:
        by_trial.setdefault(j.trial_number, []).append(j)
    out = []
    for number in sorted(by_trial):
        group = sorted(by_trial[number], key=lambda j: j.repeat or 0)
        values = seed_values(group, metric)
        params = ordered(group[0].trial_params or {}, sweep.plan["param_order"])
        state = trial_state(group)
        pruned = [job_objective(j, metric) for j in group if j.status == JobStatus.pruned.value]
        objective = statistics.fmean(values) if values and state == "succeeded" else \
            (pruned[0] if pruned and pruned[0] is not None else None)
        out.append({
            "number": number,
            "name": trial_name(params),
            "params": params,
            "state": state,
            "objective": objective,
            "objective_std": statistics.stdev(values) if len(values) > 1 else None,
            "objective_values": values,
            "trained_by": group[0].trained_by,
            "jobs": [{"id": j.id, "status": j.status, "seed": (j.spec.get("fit") or {})
                      .get("seed"), "repeat": j.repeat,
                      "epoch": (j.progress or {}).get("epoch"),
                      "epochs": (j.plan or {}).get("epochs"),
                      "objective": job_objective(j, metric),
                      "error": (j.error or {}).get("message"),
                      "mlflow_run_id": j.mlflow_run_id} for j in group],
        })
    return out


def best_trial(sweep: Sweep, trials: list[dict]) -> dict | None:
    goal = sweep.spec["objective"]["goal"]
    done = [t for t in trials if t["state"] == "succeeded" and t["objective"] is not None]
    if not done:
        return None
    best = (min if goal == "minimize" else max)(done, key=lambda t: t["objective"])
    return {"number": best["number"], "name": best["name"], "params": best["params"],
            "objective": best["objective"], "objective_std": best["objective_std"],
            "job_ids": [j["id"] for j in best["jobs"]]}


def serialize(settings: Settings, sweep: Sweep, jobs: list[Job], with_trials: bool) -> dict:
    trials = trials_of(sweep, jobs)
    total = sweep.plan["total"]
    done = sum(1 for t in trials if t["state"] in TERMINAL_VALUES)
    out = {
        "id": sweep.id,
        "name": sweep.name,
        "experiment": sweep.experiment,
        "status": sweep.status,
        "method": sweep.method,
        "objective": sweep.spec["objective"],
        "max_trials": sweep.spec["max_trials"],
        "max_parallel": sweep.spec["max_parallel"],
        "repeats": sweep.spec["repeats"],
        "early_stopping": sweep.spec["early_stopping"],
        "share_epochs": {"on": sweep.plan["share_epochs"], "why": sweep.plan["share_epochs_why"]},
        "progress": {"done": done, "total": total,
                     "running": sum(1 for t in trials if t["state"] == "running"),
                     "queued": sum(1 for t in trials if t["state"] == "queued"),
                     "trainings_running": sum(1 for j in jobs if j.trained_by is None and
                                              j.status == JobStatus.running.value)},
        "best": best_trial(sweep, trials),
        "spec": sweep.spec,
        "mlflow": {"run_id": sweep.mlflow_run_id, "experiment_id": sweep.mlflow_experiment_id,
                   "url": J.mlflow_url(settings, sweep.mlflow_experiment_id, sweep.mlflow_run_id)},
        "report": sweep.report,
        "error": sweep.error,
        "cancel_requested": sweep.cancel_requested,
        "created_at": J._iso(sweep.created_at),
        "started_at": J._iso(sweep.started_at),
        "finished_at": J._iso(sweep.finished_at),
    }
    if with_trials:
        out["trials"] = trials + _pending_grid_trials(sweep, trials)
    return out


def _pending_grid_trials(sweep: Sweep, trials: list[dict]) -> list[dict]:
    configs = sweep.plan["configs"]
    if not configs:
        return []
    seen = {t["number"] for t in trials}
    order = sweep.plan["param_order"]
    state = "cancelled" if sweep.cancel_requested else "pending"
    return [{"number": i, "name": trial_name(configs[i], order),
             "params": ordered(configs[i], order), "state": state, "objective": None,
             "objective_std": None, "objective_values": [], "trained_by": None, "jobs": []}
            for i in range(sweep.plan["total"]) if i not in seen]


# --- the scheduler -----------------------------------------------------------------------------


def _take_lease(settings: Settings, sweep_id: str) -> bool:
    now = utcnow()
    with session_scope(settings.database_url) as s:
        res = s.execute(update(Sweep).where(Sweep.id == sweep_id)
                        .where((Sweep.lease_until.is_(None)) | (Sweep.lease_until < now))
                        .values(lease_until=now + dt.timedelta(seconds=LEASE_S)))
        return res.rowcount == 1


def _release_lease(settings: Settings, sweep_id: str) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(Sweep).where(Sweep.id == sweep_id).values(lease_until=None))


def advance(settings: Settings, sweep_id: str, wait_s: float = 2.0) -> bool:
    """Do what is due for the sweep; False when another caller held the lease throughout
    (it will have done the work, and the API's background round catches anything left)."""
    deadline = time.monotonic() + wait_s
    while not _take_lease(settings, sweep_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    try:
        _advance(settings, sweep_id)
    finally:
        _release_lease(settings, sweep_id)
    return True


def tick(settings: Settings) -> None:
    """The background round: advance every live sweep, re-send lost report tasks."""
    resend_before = utcnow() - dt.timedelta(seconds=REPORT_RESEND_S)
    with session_scope(settings.database_url) as s:
        live = s.scalars(select(Sweep.id).where(Sweep.status.in_(
            [SweepStatus.queued.value, SweepStatus.running.value]))).all()
        ended = s.scalars(select(Sweep).where(Sweep.status.in_(
            [st.value for st in SWEEP_TERMINAL]))).all()
        lost_reports = [sw.id for sw in ended if _report_lost(sw, resend_before)]
    for sweep_id in live:
        try:
            advance(settings, sweep_id, wait_s=0)
        except Exception:
            log.warning("advancing sweep %s failed", sweep_id, exc_info=True)
    for sweep_id in lost_reports:
        _send_report(settings, sweep_id)


def _report_lost(sweep: Sweep, resend_before: dt.datetime) -> bool:
    report = sweep.report or {}
    if report.get("state") in ("done", "failed"):
        return False
    sent = report.get("sent_at")
    return sent is None or dt.datetime.fromisoformat(sent) < resend_before


def _send_report(settings: Settings, sweep_id: str) -> None:
    sent = queue_sweep_report(settings, sweep_id)
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is not None and (sweep.report or {}).get("state") not in ("done", "failed"):
            sweep.report = {"state": "queued", "sent_at": utcnow().isoformat() if sent else None}


def _advance(settings: Settings, sweep_id: str) -> None:
    import optuna
    from optuna.trial import TrialState

    url = settings.database_url
    with session_scope(url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or SweepStatus(sweep.status) in SWEEP_TERMINAL:
            return
        spec, plan = sweep.spec, sweep.plan
        study_name, cancel = sweep.study_name, sweep.cancel_requested
        jobs = s.scalars(select(Job).where(Job.sweep_id == sweep_id)).all()
    studies.create_study(url, study_name, spec)  # a no-op once it exists
    study = studies.load_study(url, study_name, spec)
    metric = spec["objective"]["metric"]
    by_trial: dict[int, list[Job]] = {}
    for j in jobs:
        by_trial.setdefault(j.trial_number, []).append(j)
    optuna_trials = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    if _settle_orphaned_derived(settings, jobs):
        return _advance(settings, sweep_id)

    # 1. Tell Optuna what finished. Seeds of one configuration are one Optuna trial.
    for group in by_trial.values():
        tid = group[0].optuna_trial_id
        ot = optuna_trials.get(tid)
        if ot is None or ot.state != TrialState.RUNNING:
            continue
        statuses = {j.status for j in group}
        pruned_seed = any(j.status == JobStatus.pruned.value for j in group)
        if pruned_seed:
            _stop_siblings(settings, group)
        if not statuses <= TERMINAL_VALUES:
            continue
        trial = optuna.trial.Trial(study, tid)
        values = seed_values(group, metric)
        if pruned_seed:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        elif values:
            study.tell(trial, statistics.fmean(values), skip_if_finished=True)
        else:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    # 2. Cancel.
    if cancel:
        with session_scope(url) as s:
            now = utcnow()
            for j in s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                               .where(Job.status.in_([JobStatus.queued.value,
                                                      JobStatus.running.value]))).all():
                j.cancel_requested = True
                if j.status == JobStatus.queued.value:
                    j.status, j.finished_at = JobStatus.cancelled.value, now
        _fail_idle_trials(study, optuna_trials, by_trial)
        _maybe_finish(settings, sweep_id)
        return

    # 3. Trials Optuna holds that no job row knows (a scheduler died between ask and commit).
    known = {j.optuna_trial_id for j in jobs}
    for tid, ot in optuna_trials.items():
        if ot.state == TrialState.RUNNING and tid not in known:
            study.tell(optuna.trial.Trial(study, tid), state=TrialState.FAIL,
                       skip_if_finished=True)
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        stray = study.ask()  # an enqueued grid point nobody asked for
        study.tell(stray, state=TrialState.FAIL)

    # 4. Trainings, never more than max_parallel at once: first the seeds already stored but
    # not yet sent (a broker outage, or more seeds than room), then new trials.
    max_parallel = spec["max_parallel"]
    created = set(by_trial)
    with session_scope(url) as s:
        rows = s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                         .where(Job.trained_by.is_(None))
                         .where(Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
                         .order_by(Job.trial_number, Job.repeat)).all()
        active = sum(1 for j in rows if j.status == JobStatus.running.value
                     or j.dispatched_at is not None)
        waiting = [(j.id, j.queue) for j in rows
                   if j.status == JobStatus.queued.value and j.dispatched_at is None]
    while max_parallel - active > len(waiting):
        batch = _next_trials(plan, created)
        if not batch:
            break
        waiting += _create_trials(settings, sweep_id, study, spec, plan, batch)
        created.update(batch)
    if created:
        with session_scope(url) as s:
            sweep = s.get(Sweep, sweep_id)
            if sweep.status == SweepStatus.queued.value:
                sweep.status, sweep.started_at = SweepStatus.running.value, utcnow()
    for job_id, queue in waiting[:max(0, max_parallel - active)]:
        if not queue_training_job(settings, job_id, queue):
            break  # broker down: the API's background round sends them later
    _maybe_finish(settings, sweep_id)


ORPHAN_GRACE_S = 60


def _settle_orphaned_derived(settings: Settings, jobs: list[Job]) -> bool:
    """A trial recorded from another job's training ends when that job has ended without
    recording it (its worker gave up, say) -- after a grace period for the recording itself."""
    by_id = {j.id: j for j in jobs}
    cutoff = utcnow() - dt.timedelta(seconds=ORPHAN_GRACE_S)
    orphans = []
    for j in jobs:
        trainer = by_id.get(j.trained_by) if j.trained_by else None
        if trainer is not None and j.status not in TERMINAL_VALUES and \
                trainer.status in TERMINAL_VALUES and trainer.finished_at is not None and \
                as_utc(trainer.finished_at) < cutoff:
            orphans.append((j.id, trainer))
    if not orphans:
        return False
    with session_scope(settings.database_url) as s:
        for job_id, trainer in orphans:
            row = s.get(Job, job_id)
            status = JobStatus.cancelled.value if trainer.status == "cancelled" else \
                JobStatus.failed.value
            row.status, row.finished_at = status, utcnow()
            row.error = {"type": "NotReached", "message": f"recorded from the training of job "
                         f"{trainer.id}, which ended {trainer.status} without recording it"
                         + (f": {trainer.error.get('message')}" if trainer.error else "")}
    return True


def _stop_siblings(settings: Settings, group: list[Job]) -> None:
    """A pruned seed prunes its configuration: the other seeds stop."""
    with session_scope(settings.database_url) as s:
        now = utcnow()
        for j in group:
            row = s.get(Job, j.id)
            if row.status == JobStatus.queued.value:
                row.status, row.finished_at, row.cancel_requested = \
                    JobStatus.pruned.value, now, True
            elif row.status == JobStatus.running.value:
                row.cancel_requested = True


def _fail_idle_trials(study, optuna_trials, by_trial) -> None:
    """A cancelled sweep: Optuna trials with no seed still training end FAIL."""
    import optuna
    from optuna.trial import TrialState

    for group in by_trial.values():
        ot = optuna_trials.get(group[0].optuna_trial_id)
        if ot is None or ot.state != TrialState.RUNNING:
            continue
        if any(j.status == JobStatus.running.value for j in group):
            continue
        study.tell(optuna.trial.Trial(study, ot._trial_id), state=TrialState.FAIL,
                   skip_if_finished=True)


def _next_trials(plan: dict, created: set[int]) -> list[int]:
    """The next trial indices to create together (a group trained once for the epochs axis
    is created as one)."""
    total = plan["total"]
    if plan["method"] != "grid":
        n = len(created)
        return [n] if n < total else []
    for i in range(total):
        if i in created:
            continue
        for group in plan["groups"] or []:
            if i in group:
                return [g for g in group if g not in created and g < total]
        return [i]
    return []


def _create_trials(settings: Settings, sweep_id: str, study, spec: dict, plan: dict,
                   numbers: list[int]) -> list[tuple[str, str]]:
    """Ask Optuna for each trial, store its job rows (one per seed); returns what to queue.

    In a group, the first index trains and the others are recorded from its training.
    """
    dists = studies.distributions(plan)
    repeats = plan["repeats"]
    rows: list[Job] = []
    failed_trials = []
    trainer_of_repeat: dict[int, str] = {}
    for k, number in enumerate(numbers):
        if plan["method"] == "grid":
            params = ordered(plan["configs"][number], plan["param_order"])
            study.enqueue_trial(params)
            trial = study.ask(dists)
        else:
            trial = studies.ask(study, spec, dists)
            params = {p: trial.params[p] for p in plan["param_order"]}
        trial_failed = False
        for r in range(repeats):
            job_id = _new_job_row(settings, sweep_id, spec, params, number, r,
                                  trial._trial_id, rows)
            if rows[-1].status == JobStatus.failed.value:
                trial_failed = True
            elif k == 0:
                trainer_of_repeat[r] = job_id
            else:
                rows[-1].trained_by = trainer_of_repeat.get(r)
        if trial_failed:
            failed_trials.append(trial)
    with session_scope(settings.database_url) as s:
        s.add_all(rows)
    from optuna.trial import TrialState

    for trial in failed_trials:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return [(j.id, j.queue) for j in rows
            if j.trained_by is None and j.status == JobStatus.queued.value]


def _new_job_row(settings: Settings, sweep_id: str, spec: dict, params: dict, number: int,
                 repeat: int, optuna_trial_id: int, rows: list[Job]) -> str:
    base = spec["base"]
    seed = (base.get("fit") or {}).get("seed", 0) + repeat
    name = trial_name(params) + (f" seed={seed}" if spec["repeats"] > 1 else "")
    job_spec = apply_params(base, params)
    job_spec["name"] = name[:200]
    job_spec["experiment"] = spec["experiment"]
    job_spec.setdefault("fit", {})["seed"] = seed
    if spec["resources"]:
        job_spec["resources"] = spec["resources"]
    job = Job(id=new_id(), name=name[:200], experiment=job_spec["experiment"],
              sweep_id=sweep_id, trial_number=number, repeat=repeat, trial_params=params,
              optuna_trial_id=optuna_trial_id, spec=job_spec, attempts=0,
              cancel_requested=False, status=JobStatus.queued.value)
    try:
        parsed, job_plan = J.validate(settings, job_spec)  # the checks POST /jobs makes
        job.plan = job_plan.as_dict()
        job.queue = parsed.resources.queue or settings.default_queue
        job.progress = {"epoch": 0, "epochs": job_plan.epochs, "metrics": {}}
    except SpecError as exc:
        # A sampled value the door could not rule out (a random int range, say): the trial is
        # recorded as failed with the reason, never dropped.
        job.plan, job.queue = {}, settings.default_queue
        job.status, job.finished_at = JobStatus.failed.value, utcnow()
        job.error = {"type": "InvalidSpec", "message": f"trial {trial_name(params)}: {exc}",
                     "details": [d.as_dict() for d in exc.details]}
    rows.append(job)
    return job.id


def _maybe_finish(settings: Settings, sweep_id: str) -> None:
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if SweepStatus(sweep.status) in SWEEP_TERMINAL:
            return
        jobs = s.scalars(select(Job).where(Job.sweep_id == sweep_id)).all()
        if any(j.status not in TERMINAL_VALUES for j in jobs):
            return
        numbers = {j.trial_number for j in jobs}
        if not sweep.cancel_requested and len(numbers) < sweep.plan["total"]:
            return
        trials = trials_of(sweep, jobs)
        sweep.best = best_trial(sweep, trials)
        sweep.finished_at = utcnow()
        if sweep.cancel_requested:
            sweep.status = SweepStatus.cancelled.value
        elif sweep.best is not None:
            sweep.status = SweepStatus.succeeded.value
        else:
            first = next((j.error for j in jobs if j.error), None)
            sweep.status = SweepStatus.failed.value
            sweep.error = {"type": "NoTrialSucceeded",
                           "message": f"none of the {len(trials)} trials succeeded"
                           + (f"; the first error: {first.get('message')}" if first else "")}
    _send_report(settings, sweep_id)
