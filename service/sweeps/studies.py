"""Optuna in the service's own database: one study per sweep, driven by ask-and-tell.

Optuna's tables (studies, trials, trial_params, trial_values, trial_intermediate_values, ...)
live next to kerasyard's; they are created by :func:`init_storage`, which the migration step
calls, so a running API or worker never races to create them. Optuna keeps its Alembic
revision in ``alembic_version``; kerasyard's own is in ``kerasyard_alembic_version``.
"""

from __future__ import annotations

import logging
import threading

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from service.store import db

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

_lock = threading.Lock()
_storages: dict[str, optuna.storages.RDBStorage] = {}


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    # The process role's pool (service.store.db.set_pool), as the service's own engine: a
    # training process keeps one connection for Optuna too, the per-write roles none.
    kwargs = {"connect_args": db.connect_args(url), **db.pool_kwargs(url)}
    if db.pool_role() == "service":  # the API's: sweeps' asks and tells, fewer than its reads
        kwargs.update(pool_size=2, max_overflow=4)
    return kwargs


def init_storage(url: str) -> None:
    """Create (or upgrade) Optuna's tables; idempotent."""
    storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                         skip_compatibility_check=True)
    if storage.get_current_version() != storage.get_head_version():
        storage.upgrade()
    storage.engine.dispose()


def storage(url: str) -> optuna.storages.RDBStorage:
    with _lock:
        st = _storages.get(url)
        if st is None:
            st = _storages[url] = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), skip_table_creation=True)
        return st


def dispose_storages() -> None:
    """A forked worker child must not reuse its parent's connections."""
    with _lock:
        for st in _storages.values():
            st.engine.dispose(close=False)
        _storages.clear()


def distribution(d: dict) -> BaseDistribution:
    if d["type"] == "categorical":
        return CategoricalDistribution(d["values"])
    if d["type"] == "float":
        return FloatDistribution(d["low"], d["high"], log=d.get("log", False),
                                 step=d.get("step"))
    return IntDistribution(d["low"], d["high"], log=d.get("log", False), step=d.get("step", 1))


def distributions(plan: dict) -> dict[str, BaseDistribution]:
    return {path: distribution(d) for path, d in plan["distributions"].items()}


def sampler(spec: dict, n_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded for the next trial.

    The scheduler builds a fresh sampler in each process and round, so a fixed seed would
    draw the same values every time; seeding with the sweep's seed plus the number of trials
    the study holds gives every trial its own draw, reproducibly across restarts.
    """
    # numpy's generators take seeds below 2**32 only.
    seed = (spec["seed"] * 1_000_003 + n_trials) % 2**32
    if spec["method"] == "tpe":
        # Few trials in a teaching sweep: start modelling after a handful of random ones.
        n_startup = max(2, min(10, spec["max_trials"] // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    # grid: every trial's values are fixed by the scheduler (enqueue + ask); the sampler is
    # never consulted. random: independent uniform draws.
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(spec: dict) -> optuna.pruners.BasePruner:
    """The sweep's ``early_stopping``; its fields are the pruner's keyword arguments."""
    es = spec["early_stopping"]
    if not es:
        return optuna.pruners.NopPruner()
    kwargs = {k: v for k, v in es.items() if k != "type"}
    if es["type"] == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    return optuna.pruners.SuccessiveHalvingPruner(**kwargs)


def create_study(url: str, study_name: str, spec: dict) -> None:
    """Create the sweep's study unless it exists (a cheap lookup, no failing INSERT)."""
    st = storage(url)
    try:
        st.get_study_id_from_name(study_name)
        return
    except KeyError:
        pass
    optuna.create_study(storage=st, study_name=study_name, direction=spec["objective"]["goal"],
                        load_if_exists=True)


def load_study(url: str, study_name: str, spec: dict) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=storage(url),
                             sampler=sampler(spec), pruner=pruner(spec))


def ask(study: optuna.Study, spec: dict, dists: dict) -> optuna.Trial:
    """``study.ask`` with the sampler seeded for this trial (see :func:`sampler`)."""
    study.sampler = sampler(spec, len(study.get_trials(deepcopy=False)))
    return study.ask(dists)
