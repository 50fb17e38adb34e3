"""The breakdown half of :mod:`bench.perjob_bench`: one-epoch jobs run by this process under
cProfile, their time split by the functions that do each part of a job.

The jobs are POSTed to the ``gpu`` queue, which no worker of the bench reads, and trained by
calling the task body (:func:`worker.jobs.run.run_job`) here, with the worker's environment
(importing :mod:`worker.celery_app` sets it, as in a worker's child). Only this thread is
profiled: the heartbeat's and the reporter's threads run beside it unmeasured.
"""

from __future__ import annotations

import cProfile
import dataclasses
import pstats

# part -> the functions whose inclusive time is that part: (file suffix, function name, and
# the caller's file suffix and name when only the calls from there count).
PARTS: dict[str, list[tuple]] = {
    "claim (database)": [("worker/jobs/claim.py", "claim", None)],
    "dataset, model build": [("worker/jobs/trainers.py", "prepare", None),
                             ("worker/jobs/trainers.py", "build", None)],
    "MLflow run, tags, params, inputs": [("worker/jobs/mlflow_run.py", "start", None)],
    "fit (tracing included)": [("worker/jobs/run.py", "_fit", None)],
    "epochs to MLflow and the database": [
        ("worker/recording/reporter.py", "flush", ("worker/jobs/run.py", "_train"))],
    "run metrics (best epoch, fit time)": [("worker/recording/tracking.py", "log_values", None)],
    "plots": [("worker/training/plots.py", "learning_curve", None),
              ("worker/training/plots.py", "confusion_matrix", None),
              ("worker/training/svg_plots.py", "learning_curve", None),
              ("worker/training/svg_plots.py", "confusion_matrix", None)],
    "other artifacts, their upload": [("worker/recording/artifacts.py", "write_artifacts",
                                       None)],
    "logged model": [("worker/recording/artifacts.py", "log_model", None)],
    "final database write": [("worker/jobs/finish.py", "final_write", None)],
    "ending the MLflow run": [("worker/jobs/mlflow_run.py", "end", None)],
}


def _inclusive(stats: dict, suffix: str, name: str, caller) -> float:
    total = 0.0
    for (file, _line, func), (_cc, _nc, _tt, ct, callers) in stats.items():
        if func != name or not file.endswith(suffix):
            continue
        if caller is None:
            total += ct
        else:
            total += sum(v[3] for (cf, _l, cn), v in callers.items()
                         if cn == caller[1] and cf.endswith(caller[0]))
    return total


def _calls(stats: dict, suffix: str, name: str) -> int:
    return sum(v[1] for (file, _l, func), v in stats.items()
               if func == name and file.endswith(suffix))


def breakdown(prof: cProfile.Profile, n: int) -> dict:
    """Seconds a job per part, ``other`` and ``total``; MLflow requests and commits a job."""
    stats = pstats.Stats(prof).stats
    parts = {part: sum(_inclusive(stats, *fn) for fn in fns) / n for part, fns in PARTS.items()}
    # The plots are inside write_artifacts: that part is what is left of it.
    parts["other artifacts, their upload"] -= parts["plots"]
    total = _inclusive(stats, "worker/jobs/run.py", "run_job", None) / n
    parts["other"] = total - sum(parts.values())
    parts["total"] = total
    return {"parts": parts,
            "mlflow_requests": _calls(stats, "mlflow/utils/rest_utils.py", "http_request") / n,
            "db_commits": _calls(stats, "sqlalchemy/orm/session.py", "commit") / n}


def profile_jobs(client, settings, modes: list[str], n: int, spec_of, log) -> dict:
    """For each mode (``baseline``: lean recording off, ``lean``: on), two untimed jobs, then
    ``n`` jobs under cProfile, the modes taking turns job by job; their :func:`breakdown`."""
    import worker.celery_app  # noqa: F401  (the worker's environment: MLflow, TensorFlow)
    from worker.jobs.run import run_job

    def one(mode: str, i: int) -> None:
        st = dataclasses.replace(settings, lean_recording=mode == "lean")
        resp = client.post("/api/v1/jobs",
                           json=spec_of(f"profile-{mode}-{i}", "perjob-profile", "gpu"))
        status = run_job(resp.get_json()["id"], st)
        if status != "succeeded":
            raise RuntimeError(f"profiled job {i} ({mode}) ended {status}")

    for mode in modes:
        for i in range(2):
            one(mode, -1 - i)
    profs = {mode: cProfile.Profile() for mode in modes}
    for i in range(n):
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            profs[mode].enable()
            one(mode, i)
            profs[mode].disable()
    out = {mode: breakdown(profs[mode], n) for mode in modes}
    for mode in modes:
        log(f"{mode}: profiled {n} jobs, {out[mode]['parts']['total']:.3f} s a job under cProfile")
    return out
