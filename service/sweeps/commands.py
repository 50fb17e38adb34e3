"""Sweep commands: the work behind the /sweeps routes, with no Flask inside."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from service import lifecycle
from service.config import Settings
from service.errors import ApiError
from service.jobs import mlflow_ref
from service.jobspec.sweep import SweepPlan, SweepSpec
from service.jobspec.sweep_checks import validate_sweep
from service.queue import CelerySender
from service.store.db import session_scope
from service.store.ids import full_id
from service.store.models import Job, JobStatus, Sweep, SweepStatus, new_id
from service.store.paging import check_status, iso, keyset_page, next_cursor
from service.sweeps import scheduler
from service.sweeps.trials import best_trial, pending_grid_trials, trials_of
from service.validation import limits, model_resolver, resolver

SWEEP_STATUSES = [s.value for s in SweepStatus]
log = logging.getLogger(__name__)


def validate(settings: Settings, data: Any) -> tuple[SweepSpec, SweepPlan]:
    base = data.get("base") if isinstance(data, dict) else None
    return validate_sweep(data, limits(settings), resolver(settings, base or {}),
                          resolve_model=model_resolver(settings))


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
    try:
        scheduler.advance(settings, sweep_id, CelerySender(settings))
    except Exception:  # stored: the background round advances it; the caller gets its 202
        log.warning("starting sweep %s failed; the background round retries", sweep_id,
                    exc_info=True)
    return get_sweep(settings, sweep_id)


def _load(s, sweep_id: str, lock: bool = False) -> Sweep:
    """The sweep by id or unique id prefix (service.store.ids); 404 when there is none."""
    sweep = s.get(Sweep, full_id(s, Sweep, sweep_id, "sweep", "sweep_id"), with_for_update=lock)
    if sweep is None:
        raise ApiError(404, "not_found", f"no sweep with id {sweep_id!r}")
    return sweep


def _jobs(s, sweep_id: str) -> list[Job]:
    return s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                     .order_by(Job.trial_number, Job.repeat)).all()


def get_sweep(settings: Settings, sweep_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        sweep = _load(s, sweep_id)
        return serialize(settings, sweep, _jobs(s, sweep.id), with_trials=True)


def cancel_sweep(settings: Settings, sweep_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        sweep = _load(s, sweep_id, lock=True)
        if sweep.status in scheduler.SWEEP_TERMINAL:
            raise ApiError(409, "illegal_state", f"sweep {sweep.id} is already "
                           f"{sweep.status.value}; only queued, running or paused sweeps can "
                           "be cancelled")
        sweep.cancel_requested = True
        sweep_id = sweep.id
    scheduler.advance(settings, sweep_id, CelerySender(settings), wait_s=5)
    return get_sweep(settings, sweep_id)


def pause_sweep(settings: Settings, sweep_id: str) -> tuple[dict, int]:
    """Pause a sweep: its trainings pause (queued ones now, running ones at their next epoch
    boundary) and its scheduler starts no new ones until it is resumed.

    Returns:
        tuple[dict, int]: The sweep, and 202; 200 when it was paused already.

    Raises:
        ApiError: 404 no such sweep; 409 it has ended.
    """
    with session_scope(settings.database_url) as s:
        sweep = _load(s, sweep_id, lock=True)
        if sweep.status == SweepStatus.paused:
            return serialize(settings, sweep, _jobs(s, sweep.id), with_trials=True), 200
        if sweep.status in scheduler.SWEEP_TERMINAL:
            raise ApiError(409, "illegal_state", f"sweep {sweep.id} is already "
                           f"{sweep.status.value}; only queued or running sweeps can be paused")
        sweep.status = SweepStatus.paused
        sweep_id = sweep.id
    # Under the sweep's lease: a pass of the scheduler that was starting trials meanwhile has
    # finished, and what it started is paused too.
    _advance_now(settings, sweep_id)
    return get_sweep(settings, sweep_id), 202


def resume_sweep(settings: Settings, sweep_id: str) -> dict:
    """Resume a paused sweep: its paused trainings are queued again and sent (up to
    ``max_parallel``), the pending pauses of those still running are withdrawn, and its
    scheduler goes on.

    Raises:
        ApiError: 404 no such sweep; 409 it is not paused (the message names its status).
    """
    with session_scope(settings.database_url) as s:
        sweep = _load(s, sweep_id, lock=True)
        if sweep.status != SweepStatus.paused:
            raise ApiError(409, "illegal_state", f"sweep {sweep.id} is {sweep.status.value}; "
                           "only a paused sweep can be resumed")
        sweep.status = SweepStatus.running if sweep.started_at else SweepStatus.queued
        sweep_id = sweep.id
        for job in s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                             .where(Job.trained_by.is_(None))
                             .where(Job.status.in_([JobStatus.paused, JobStatus.running]))
                             .with_for_update()).all():
            if lifecycle.resumable(job):
                lifecycle.resume(s, job)
    _advance_now(settings, sweep_id)
    return get_sweep(settings, sweep_id)


def _advance_now(settings: Settings, sweep_id: str) -> None:
    """The scheduler's pass for a command that has committed: one that fails is logged, and
    the background round does it."""
    try:
        scheduler.advance(settings, sweep_id, CelerySender(settings), wait_s=5)
    except Exception:
        log.warning("advancing sweep %s failed; the background round retries", sweep_id,
                    exc_info=True)


def list_sweeps(settings: Settings, status: str | None = None, limit: int = 50,
                cursor: str | None = None) -> dict:
    check_status(status, SWEEP_STATUSES)
    query = select(Sweep)
    if status:
        query = query.where(Sweep.status == status)
    with session_scope(settings.database_url) as s:
        rows = s.scalars(keyset_page(query, Sweep, cursor, limit)).all()
        page = rows[:limit]
        ids = [sw.id for sw in page]
        jobs = s.scalars(select(Job).where(Job.sweep_id.in_(ids))).all() if ids else []
        by_sweep: dict[str, list[Job]] = {}
        for j in jobs:
            by_sweep.setdefault(j.sweep_id, []).append(j)
        return {"sweeps": [serialize(settings, sw, by_sweep.get(sw.id, []), with_trials=False)
                           for sw in page],
                "next_cursor": next_cursor(rows, limit)}


def serialize(settings: Settings, sweep: Sweep, jobs: list[Job], with_trials: bool) -> dict:
    trials = trials_of(sweep, jobs)
    done = sum(1 for t in trials if JobStatus(t.state).terminal)
    out = {
        "id": sweep.id,
        "name": sweep.name,
        "experiment": sweep.experiment,
        "status": sweep.status.value,
        "method": sweep.method,
        "objective": sweep.spec["objective"],
        "max_trials": sweep.spec["max_trials"],
        "max_parallel": sweep.spec["max_parallel"],
        "repeats": sweep.spec["repeats"],
        "early_stopping": sweep.spec["early_stopping"],
        "share_epochs": {"on": sweep.plan["share_epochs"], "why": sweep.plan["share_epochs_why"]},
        "pack": {"on": sweep.plan.get("pack", False),
                 "why": sweep.plan.get("pack_why", "the sweep was planned before packing"),
                 "trainings": len(sweep.plan.get("packs") or []) or None},
        "progress": {"done": done, "total": sweep.plan["total"],
                     "running": sum(1 for t in trials if t.state == "running"),
                     "queued": sum(1 for t in trials if t.state == "queued"),
                     "paused": sum(1 for t in trials if t.state == "paused"),
                     "trainings_running": sum(1 for j in jobs if j.trained_by is None and
                                              j.status == JobStatus.running)},
        "best": best_trial(sweep, trials),
        "spec": sweep.spec,
        "mlflow": mlflow_ref(settings, sweep.mlflow_experiment_id, sweep.mlflow_run_id),
        "report": sweep.report,
        "error": sweep.error,
        "cancel_requested": sweep.cancel_requested,
        "created_at": iso(sweep.created_at),
        "started_at": iso(sweep.started_at),
        "finished_at": iso(sweep.finished_at),
    }
    if with_trials:
        out["trials"] = [t.as_dict() for t in trials + pending_grid_trials(sweep, trials)]
    return out
