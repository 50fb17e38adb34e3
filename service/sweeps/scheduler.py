"""The sweep scheduler: keeps a sweep moving; no Flask and no Celery inside.

The database is the sweep's state: its trials are job rows (``Job.sweep_id``), one per
(trial, seed), unique on ``(sweep_id, trial_number, repeat)``; Optuna's study, in the same
database, holds what its sampler and pruner need. :func:`advance` looks at those rows and
does what is due: tells Optuna about finished trials, cancels, pauses (a paused sweep starts
nothing), asks for new trials up to
``max_parallel`` running trainings and ``max_trials`` in all, sends them with the caller's
:class:`~service.lifecycle.Sender`, and ends the sweep. It is idempotent, and one caller at a
time holds the sweep's lease; the API calls it on submit and on cancel, a worker's
``worker.advance_sweep`` task after each trial (with the worker's own sender), and
:mod:`service.background` every round, so a sweep carries on after any of them restarts.
Job rows change state only through :mod:`service.lifecycle`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import statistics
import time
from typing import Any

from sqlalchemy import select, update

from service import lifecycle
from service.config import Settings
from service.jobspec import SpecError
from service.jobspec.sweep import apply_params, next_trials, ordered, trial_name
from service.lifecycle import Sender
from service.store.db import session_scope
from service.store.models import (
    SWEEP_TERMINAL,
    Job,
    JobStatus,
    Sweep,
    SweepStatus,
    as_utc,
    new_id,
    utcnow,
)
from service.sweeps import studies
from service.sweeps.trials import best_trial, by_trial, seed_values, trials_of
from service.validation import validate

log = logging.getLogger(__name__)

LEASE_S = 60
REPORT_RESEND_S = 600
# A trial recorded from another job's training ends when that job ended without recording it
# (its worker gave up, say), after this grace period for the recording itself.
ORPHAN_GRACE_S = 60


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


def advance(settings: Settings, sweep_id: str, sender: Sender, wait_s: float = 2.0) -> bool:
    """Do what is due for the sweep; False when another caller held the lease throughout
    (it will have done the work, and the API's background round catches anything left)."""
    deadline = time.monotonic() + wait_s
    while not _take_lease(settings, sweep_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    try:
        _advance(settings, sweep_id, sender)
    finally:
        _release_lease(settings, sweep_id)
    return True


def tick(settings: Settings, sender: Sender) -> None:
    """The background round: advance every live sweep, re-send lost report tasks."""
    resend_before = utcnow() - dt.timedelta(seconds=REPORT_RESEND_S)
    with session_scope(settings.database_url) as s:
        live = s.scalars(select(Sweep.id).where(Sweep.status.in_(
            [SweepStatus.queued, SweepStatus.running, SweepStatus.paused]))).all()
        ended = s.scalars(select(Sweep).where(Sweep.status.in_(SWEEP_TERMINAL))).all()
        lost_reports = [sw.id for sw in ended if _report_lost(sw, resend_before)]
    for sweep_id in live:
        try:
            advance(settings, sweep_id, sender, wait_s=0)
        except Exception:
            log.warning("advancing sweep %s failed", sweep_id, exc_info=True)
    for sweep_id in lost_reports:
        _send_report(settings, sweep_id, sender)


def _report_lost(sweep: Sweep, resend_before: dt.datetime) -> bool:
    report = sweep.report or {}
    if report.get("state") in ("done", "failed"):
        return False
    sent = report.get("sent_at")
    return sent is None or dt.datetime.fromisoformat(sent) < resend_before


def _send_report(settings: Settings, sweep_id: str, sender: Sender) -> None:
    sent = sender.report(sweep_id)
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is not None and (sweep.report or {}).get("state") not in ("done", "failed"):
            sweep.report = {"state": "queued", "sent_at": utcnow().isoformat() if sent else None}


def _advance(settings: Settings, sweep_id: str, sender: Sender) -> None:
    """One pass over the sweep: what finished, cancels, lost trials, new trainings, the end."""
    loaded = _load(settings, sweep_id)
    # Trials recorded from a training that ended without them end first; once they have, the
    # rows are read again (those trials count as finished below).
    while loaded is not None and _end_orphaned_shared(settings, loaded.jobs):
        loaded = _load(settings, sweep_id)
    if loaded is None:
        return
    groups = by_trial(loaded.jobs)
    # 1. Tell Optuna what finished.
    _tell_finished(settings, loaded.study, groups, loaded.spec["objective"])
    # 2. Cancel: queued, running and paused jobs cancel, idle trials end FAIL.
    if loaded.cancel:
        with session_scope(settings.database_url) as s:
            for j in s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                               .where(Job.status.in_([JobStatus.queued, JobStatus.running,
                                                      JobStatus.paused]))
                               .with_for_update()).all():
                lifecycle.cancel(s, j)
        _fail_idle_trials(loaded.study, loaded.optuna_trials, groups)
    elif loaded.paused:
        # Paused: its trainings pause (again: one started by a pass that raced the pause),
        # and nothing new starts.
        _pause_trainings(settings, sweep_id)
    else:
        # 3. Trials Optuna holds that no job row knows (a scheduler died between ask and
        # commit), then 4. the trainings that are due.
        _fail_unknown_trials(loaded)
        _start_trainings(settings, sweep_id, sender, loaded, groups)
    _maybe_finish(settings, sweep_id, sender, loaded.study)


def _pause_trainings(settings: Settings, sweep_id: str) -> None:
    """The sweep's queued and running trainings pause (the trials recorded from them follow
    them), while the sweep is still paused: its row is locked and read again, so a resume
    that committed since this pass loaded the sweep is not undone."""
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id, with_for_update=True)
        if sweep is None or sweep.status != SweepStatus.paused:
            return
        for j in s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                           .where(Job.trained_by.is_(None))
                           .where(Job.status.in_(lifecycle.PAUSABLE))
                           .with_for_update()).all():
            lifecycle.pause(s, j)


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A live sweep as :func:`_advance` reads it: its row's fields, its jobs, its study."""

    spec: dict
    plan: dict
    cancel: bool
    paused: bool
    jobs: list[Job]
    study: Any
    optuna_trials: dict[int, Any]  # Optuna's trial id -> its FrozenTrial


def _load(settings: Settings, sweep_id: str) -> _Loaded | None:
    """The sweep, its jobs and its Optuna study (created if missing); None once it ended."""
    url = settings.database_url
    with session_scope(url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or sweep.status in SWEEP_TERMINAL:
            return None
        spec, plan = sweep.spec, sweep.plan
        study_name, cancel = sweep.study_name, sweep.cancel_requested
        paused = sweep.status == SweepStatus.paused
        jobs = s.scalars(select(Job).where(Job.sweep_id == sweep_id)).all()
    studies.create_study(url, study_name, spec)  # a no-op once it exists
    study = studies.load_study(url, study_name, spec)
    optuna_trials = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    return _Loaded(spec, plan, cancel, paused, jobs, study, optuna_trials)


def _fail_unknown_trials(loaded: _Loaded) -> None:
    """Optuna's trials that no job row knows and grid points nobody asked for end FAIL."""
    import optuna
    from optuna.trial import TrialState

    study = loaded.study
    known = {j.optuna_trial_id for j in loaded.jobs}
    for tid, ot in loaded.optuna_trials.items():
        if ot.state == TrialState.RUNNING and tid not in known:
            study.tell(optuna.trial.Trial(study, tid), state=TrialState.FAIL,
                       skip_if_finished=True)
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        stray = study.ask()  # an enqueued grid point nobody asked for
        study.tell(stray, state=TrialState.FAIL)


def _start_trainings(settings: Settings, sweep_id: str, sender: Sender, loaded: _Loaded,
                     groups: dict[int, list[Job]]) -> None:
    """Trainings, never more than max_parallel at once: first the seeds already stored but
    not yet sent (a broker outage, or more seeds than room), then new trials."""
    url = settings.database_url
    max_parallel = loaded.spec["max_parallel"]
    created = set(groups)
    with session_scope(url) as s:
        if s.get(Sweep, sweep_id).status == SweepStatus.paused:
            return  # paused since this pass loaded it (the pause's own pass follows)
        rows = s.scalars(select(Job).where(Job.sweep_id == sweep_id)
                         .where(Job.trained_by.is_(None))
                         .where(Job.status.in_([JobStatus.queued, JobStatus.running]))
                         .order_by(Job.trial_number, Job.repeat)).all()
        active = sum(1 for j in rows if j.status == JobStatus.running
                     or j.dispatched_at is not None)
        waiting = [(j.id, j.queue) for j in rows
                   if j.status == JobStatus.queued and j.dispatched_at is None]
    while max_parallel - active > len(waiting):
        batch = next_trials(loaded.plan, created)
        if not batch:
            break
        waiting += _create_trials(settings, sweep_id, loaded.study, loaded.spec, loaded.plan,
                                  batch)
        created.update(batch)
    if created:
        with session_scope(url) as s:
            sweep = s.get(Sweep, sweep_id)
            if sweep.status == SweepStatus.queued:
                sweep.status, sweep.started_at = SweepStatus.running, utcnow()
    for job_id, queue in waiting[:max(0, max_parallel - active)]:
        if not lifecycle.dispatch(settings, sender, job_id, queue):
            break  # broker down: the background round sends them later


def _tell_finished(settings: Settings, study, groups: dict[int, list[Job]], objective: dict
                   ) -> None:
    """Tell Optuna about each configuration whose seeds have all ended (seeds of one
    configuration are one Optuna trial): the mean of its seeds' objective at the epoch
    ``objective["at"]`` says. One already told is left as it is."""
    import optuna
    from optuna.trial import TrialState

    optuna_trials = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    for group in groups.values():
        tid = group[0].optuna_trial_id
        ot = optuna_trials.get(tid)
        if ot is None or ot.state != TrialState.RUNNING:
            continue
        pruned_seed = any(j.status == JobStatus.pruned for j in group)
        if not all(j.status.terminal for j in group):
            if pruned_seed:
                _stop_siblings(settings, group)
            continue
        trial = optuna.trial.Trial(study, tid)
        values = seed_values(group, objective["metric"], objective.get("at", "last"))
        if pruned_seed:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        elif values:
            study.tell(trial, statistics.fmean(values), skip_if_finished=True)
        else:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def _end_orphaned_shared(settings: Settings, jobs: list[Job]) -> bool:
    """Trials recorded from a training that ended without recording them end too."""
    by_id = {j.id: j for j in jobs}
    cutoff = utcnow() - dt.timedelta(seconds=ORPHAN_GRACE_S)
    ended = 0
    for j in jobs:
        trainer = by_id.get(j.trained_by) if j.trained_by else None
        if trainer is None or j.status.terminal or not trainer.status.terminal or \
                trainer.finished_at is None or as_utc(trainer.finished_at) >= cutoff:
            continue
        status = JobStatus.cancelled if trainer.status == JobStatus.cancelled else \
            JobStatus.failed
        error = {"type": "NotReached", "message": f"recorded from the training of job "
                 f"{trainer.id}, which ended {trainer.status.value} without recording it"
                 + (f": {trainer.error.get('message')}" if trainer.error else "")}
        ended += lifecycle.end_unrecorded(settings, [j.id], status, error)
    return ended > 0


def _stop_siblings(settings: Settings, group: list[Job]) -> None:
    """A pruned seed prunes its configuration: the other seeds stop."""
    with session_scope(settings.database_url) as s:
        for j in group:
            row = s.get(Job, j.id, with_for_update=True)
            if not row.status.terminal:
                lifecycle.cancel(s, row, queued_ends=JobStatus.pruned)


def _fail_idle_trials(study, optuna_trials, groups: dict[int, list[Job]]) -> None:
    """A cancelled sweep: Optuna trials with no seed still training end FAIL."""
    import optuna
    from optuna.trial import TrialState

    for group in groups.values():
        ot = optuna_trials.get(group[0].optuna_trial_id)
        if ot is None or ot.state != TrialState.RUNNING:
            continue
        if any(j.status == JobStatus.running for j in group):
            continue
        study.tell(optuna.trial.Trial(study, ot._trial_id), state=TrialState.FAIL,
                   skip_if_finished=True)


def _create_trials(settings: Settings, sweep_id: str, study, spec: dict, plan: dict,
                   numbers: list[int]) -> list[tuple[str, str]]:
    """Ask Optuna for each trial, store its job rows (one per seed); returns what to queue.

    In a group or a pack, the first index trains and the others are recorded from its
    training (one per seed: a pack of several seeds trains once per seed).
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
            if rows[-1].status == JobStatus.failed:
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
            if j.trained_by is None and j.status == JobStatus.queued]


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
              cancel_requested=False, status=JobStatus.queued)
    try:
        parsed, job_plan = validate(settings, job_spec)  # the checks POST /jobs makes
        job.spec = parsed.model_dump(mode="json")  # stored as validated, like a job's
        job.plan = job_plan.as_dict()
        job.queue = parsed.resources.queue or settings.default_queue
        job.progress = lifecycle.initial_progress(job_plan.epochs)
    except SpecError as exc:
        # A sampled value the door could not rule out (a random int range, say): the trial is
        # recorded as failed with the reason, never dropped.
        job.plan, job.queue = {}, settings.default_queue
        lifecycle.fail_unstarted(job, {"type": "InvalidSpec",
                                       "message": f"trial {trial_name(params)}: {exc}",
                                       "details": [d.as_dict() for d in exc.details]})
    rows.append(job)
    return job.id


def _maybe_finish(settings: Settings, sweep_id: str, sender: Sender, study) -> None:
    def due(s) -> tuple[Sweep, list[Job]] | None:
        sweep = s.get(Sweep, sweep_id)
        if sweep.status in SWEEP_TERMINAL:
            return None
        jobs = s.scalars(select(Job).where(Job.sweep_id == sweep_id)).all()
        if not all(j.status.terminal for j in jobs):
            return None
        numbers = {j.trial_number for j in jobs}
        if not sweep.cancel_requested and len(numbers) < sweep.plan["total"]:
            return None
        return sweep, jobs

    with session_scope(settings.database_url) as s:
        found = due(s)
        if found is None:
            return
        jobs, objective = found[1], found[0].spec["objective"]
    # Step 1 of _advance told Optuna from the rows as they were when it began; a trial that
    # ended since is told now, before the sweep ends (outside the session: on SQLite, Optuna's
    # write would wait for this session's read).
    _tell_finished(settings, study, by_trial(jobs), objective)
    with session_scope(settings.database_url) as s:
        found = due(s)
        if found is None:
            return
        sweep, jobs = found
        trials = trials_of(sweep, jobs)
        sweep.best = best_trial(sweep, trials)
        sweep.finished_at = utcnow()
        if sweep.cancel_requested:
            sweep.status = SweepStatus.cancelled
        elif sweep.best is not None:
            sweep.status = SweepStatus.succeeded
        else:
            first = next((j.error for j in jobs if j.error), None)
            sweep.status = SweepStatus.failed
            sweep.error = {"type": "NoTrialSucceeded",
                           "message": f"none of the {len(trials)} trials succeeded"
                           + (f"; the first error: {first.get('message')}" if first else "")}
    _send_report(settings, sweep_id, sender)
