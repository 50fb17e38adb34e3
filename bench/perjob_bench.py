"""Cost per job: many one-epoch lecture jobs through the service, the recording of a packed
sweep's carried trials, and where a job's time goes; the lean recording against the old one,
in one run.

    .venv/bin/python -m bench.perjob_bench [--jobs 200] [--blocks 4] [--profile-jobs 5]
                                           [--sweep-batch-sizes 40,200] [--sweep-epochs 2,5,10]
                                           [--modes baseline,lean] [--no-sweep] [--json out.json]

(from the repository root).

The stack is the embedded one ``make run`` starts (:mod:`devstack`): an ``mlflow server`` on
SQLite, the jobs database on SQLite, kombu's filesystem broker, the API in this process
through Flask's test client, and **one Celery worker with one prefork child** (``make
run``'s concurrency, 1) per mode. Each mode's worker is started and warmed up (two untimed
one-epoch jobs) before it is timed:

- ``baseline``: ``KERASYARD_LEAN_RECORDING=false``, the recording as it was before
  2026-12-02 (matplotlib PNG plots, MLflow's ``Model.log``);
- ``lean``: the default (SVG plots written as text, the model logged in a few requests).

Per mode it measures:

1. **jobs**: ``--jobs`` copies of ``examples/lecture_mlp.json`` with ``fit.epochs`` 1, in
   ``--blocks`` blocks, each block POSTed at once; wall time from a block's first POST to its
   last job's ``finished_at``, summed over the blocks, over the number of jobs (the issue's
   1.78 s a job was this, at 200 jobs in one block). Both modes' workers are up together,
   each on a queue of its own (``cpu``, ``gpu``; the gpu one trains on the CPU), and the modes
   take turns block by block, the order flipping each block, so a machine whose load drifts
   weighs on both alike; the idle worker only polls its broker folder;
2. **carried trials**: ``examples/sweep_lecture.json`` cut to ``--sweep-batch-sizes`` x its
   three activations x ``--sweep-epochs`` (one seed), packed, on the ``cpu`` queue with the
   mode's worker alone: each batch size trains once, its towers and shorter epoch counts are
   carried trials. The seconds the trainings spent recording them (their summaries'
   ``pack.record_s``, and its parts) over their number;
3. **breakdown**: ``--profile-jobs`` one-epoch jobs run by this process under cProfile (the
   task body, :func:`worker.jobs.run.run_job`, on jobs POSTed to a queue no worker reads),
   the modes taking turns job by job, their time split by the functions that do each part
   (claim, MLflow run and params, fit,
   plots, artifacts upload, logged model, final database write, ending the run), with the
   number of MLflow HTTP requests and database commits a job makes. cProfile slows Python
   code down, so the shares are what to read, not the seconds.

Ratios lean / baseline are printed for each. Information only: it exits 0 unless a job
failed or a process died. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.lecture_bench import ROOT, BenchError, start_mlflow, versions
from bench.perjob_profile import PARTS, profile_jobs
from devstack import Process, StackError, WorkerProcess

LECTURE = ROOT / "examples" / "lecture_mlp.json"
SWEEP = ROOT / "examples" / "sweep_lecture.json"
MODES = {"baseline": "false", "lean": "true"}  # mode -> KERASYARD_LEAN_RECORDING
TRIAL_PARTS = ("checkpoint_load_s", "model_log_s", "artifacts_s", "database_s")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_epoch(name: str, experiment: str, queue: str = "cpu") -> dict:
    spec = json.loads(LECTURE.read_text())
    spec["fit"]["epochs"] = 1
    spec["name"], spec["experiment"] = name, experiment
    spec["resources"] = {"queue": queue}
    return spec


def post(client, path: str, body: dict) -> str:
    resp = client.post(path, json=body)
    if resp.status_code != 202:
        raise BenchError(f"POST {path} answered {resp.status_code}: {resp.get_data(True)}")
    return resp.get_json()["id"]


def finished(client, experiment: str) -> list[dict]:
    """Every job of ``experiment`` (at most 500 a page, all pages)."""
    out, cursor = [], None
    while True:
        url = f"/api/v1/jobs?experiment={experiment}&limit=500" + \
            (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        out += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def run_jobs(client, worker: WorkerProcess, mode: str, n: int, timeout: float,
             queue: str = "cpu", block: int = 0) -> dict:
    """``n`` one-epoch jobs POSTed at once to ``queue``; wall time from the first POST to the
    last ``finished_at``."""
    experiment = f"perjob-{mode}-{block}"
    specs = [one_epoch(f"perjob-{mode}-{block}-{i}", experiment, queue) for i in range(n)]
    start = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    for spec in specs:
        post(client, "/api/v1/jobs", spec)
    posted = time.perf_counter() - t0
    while True:
        time.sleep(1.0)  # the bench shares the cores with the stack: poll rarely
        worker.check_alive()
        jobs = finished(client, experiment)
        ended = [j for j in jobs if j["status"] in ("succeeded", "failed", "cancelled")]
        if len(ended) == n:
            break
        if time.perf_counter() - t0 > timeout:
            raise BenchError(f"{mode}: {len(ended)} of {n} jobs ended within {timeout:.0f} s")
    bad = [j for j in jobs if j["status"] != "succeeded"]
    if bad:
        raise BenchError(f"{mode}: {len(bad)} jobs did not succeed; the first: "
                         f"{json.dumps(bad[0].get('error'))}\n{worker.tail()}")
    last = max(dt.datetime.fromisoformat(j["finished_at"]) for j in jobs)
    wall = (last - start).total_seconds()
    fits = sorted(j["summary"]["fit_time_s"] for j in jobs)
    return {"jobs": n, "wall_s": wall, "per_job_s": wall / n, "posting_s": posted,
            "fit_median_s": fits[len(fits) // 2]}


def sweep_body(args, mode: str) -> dict:
    body = json.loads(SWEEP.read_text())
    body["name"] = f"perjob sweep ({mode})"
    body["experiment"] = body["base"]["experiment"] = f"perjob-sweep-{mode}"
    body["parameters"]["fit.batch_size"] = [int(x) for x in args.sweep_batch_sizes.split(",")]
    body["parameters"]["fit.epochs"] = [int(x) for x in args.sweep_epochs.split(",")]
    body["repeats"] = 1
    return body


def run_sweep(client, worker: WorkerProcess, args, mode: str) -> dict:
    """The packed sweep; seconds spent recording its carried trials, per trial."""
    t0 = time.perf_counter()
    sweep_id = post(client, "/api/v1/sweeps", sweep_body(args, mode))
    while True:
        time.sleep(1.0)
        worker.check_alive()
        sw = client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
        if sw["status"] in ("succeeded", "failed", "cancelled") and \
                (sw["report"] or {}).get("state") in ("done", "failed"):
            break
        if time.perf_counter() - t0 > args.timeout:
            raise BenchError(f"{mode}: sweep {sweep_id} did not end within {args.timeout:.0f} s")
    wall = time.perf_counter() - t0
    if sw["status"] != "succeeded":
        raise BenchError(f"{mode}: sweep {sweep_id} ended {sw['status']}\n{worker.tail()}")
    jobs = client.get(f"/api/v1/jobs?sweep_id={sweep_id}&limit=500").get_json()["jobs"]
    trainings = [j for j in jobs if not j["trained_by"]]
    packs = [j["summary"].get("pack") or {} for j in trainings]
    carried = len(jobs) - len(trainings)
    record = sum(p.get("record_s", 0.0) for p in packs)
    model = sum(p.get("model_log_s", 0.0) for p in packs)
    fit = sum(p.get("fit_time_s", j["summary"]["fit_time_s"]) for p, j in zip(packs, trainings))
    # The parts of record_s the trainings time (worker/sweeps/shared_trials.py), per trial.
    parts = {k: sum(p.get(k, 0.0) for p in packs) / carried if carried else None
             for k in TRIAL_PARTS}
    return {"trials": len(jobs), "trainings": len(trainings), "carried": carried,
            "record_s": record, "model_log_s": model, "fit_s": fit, "wall_s": wall,
            "per_trial_s": record / carried if carried else None,
            "model_per_trial_s": model / carried if carried else None, "parts": parts}


def start_worker(client, tmp: Path, env: dict, mode: str, timeout: float,
                 queue: str = "cpu") -> WorkerProcess:
    """The mode's worker on ``queue``, ready and warmed up by two untimed one-epoch jobs (the
    first MLflow experiment, the child's first traces)."""
    # The gpu queue is only a second queue here: its worker trains on the CPU on purpose.
    worker = WorkerProcess(dict(env, KERASYARD_LEAN_RECORDING=MODES[mode]),
                           tmp / f"worker-{mode}-{queue}.log", queues=queue, concurrency=1,
                           name=f"perjob-{mode}-{os.getpid()}@%h", cwd=tmp, new_session=True)
    try:
        log(f"{mode}: worker ready in {worker.wait_ready(timeout):.1f} s; two warm-up jobs")
        ids = [post(client, "/api/v1/jobs", one_epoch(f"warm-{mode}-{i}", "perjob-warm", queue))
               for i in range(2)]
        t0 = time.perf_counter()
        for job_id in ids:
            while client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] in \
                    ("queued", "running"):
                worker.check_alive()
                if time.perf_counter() - t0 > timeout:
                    raise BenchError(f"{mode}: the warm-up jobs did not end")
                time.sleep(0.2)
    except BaseException:
        worker.stop()
        raise
    return worker


def measure_jobs(client, tmp: Path, env: dict, modes: list[str], args) -> dict:
    """Each mode's worker up at once, on a queue of its own; the jobs in ``--blocks`` blocks a
    mode, the modes taking turns (the order flips every block), so both see the machine's
    load alike. A mode's wall time is its blocks' summed."""
    queues = dict(zip(modes, ("cpu", "gpu")))
    workers: dict[str, WorkerProcess] = {}
    out = {m: {"jobs": 0, "wall_s": 0.0, "posting_s": 0.0, "blocks": []} for m in modes}
    try:
        for mode in modes:
            workers[mode] = start_worker(client, tmp, env, mode, args.ready_timeout,
                                         queues[mode])
        sizes = [args.jobs // args.blocks + (i < args.jobs % args.blocks)
                 for i in range(args.blocks)]
        for b, n in enumerate(sizes):
            for mode in (modes if b % 2 == 0 else modes[::-1]):
                r = run_jobs(client, workers[mode], mode, n, args.timeout, queues[mode], b)
                o = out[mode]
                o["jobs"] += n
                o["wall_s"] += r["wall_s"]
                o["posting_s"] += r["posting_s"]
                o["blocks"].append(r)
                log(f"{mode}: block {b + 1}: {n} jobs in {r['wall_s']:.1f} s, "
                    f"{r['per_job_s']:.3f} s a job (load {os.getloadavg()[0]:.1f})")
    finally:
        for worker in workers.values():
            worker.stop()
    for o in out.values():
        o["per_job_s"] = o["wall_s"] / o["jobs"]
        o["fit_median_s"] = sorted(r["fit_median_s"] for r in o["blocks"])[len(o["blocks"]) // 2]
    return out


def measure_sweep(client, tmp: Path, env: dict, mode: str, args) -> dict:
    """The packed sweep on the cpu queue (as a user sends it) with the mode's worker alone."""
    worker = start_worker(client, tmp, env, mode, args.ready_timeout)
    try:
        s = run_sweep(client, worker, args, mode)
    finally:
        worker.stop()
    log(f"{mode}: sweep of {s['trials']} trials, {s['carried']} carried: recording "
        f"{s['record_s']:.1f} s, {s['per_trial_s']:.3f} s a carried trial")
    return s


def ratio(a, b) -> str:
    return f"{a / b:.3f}" if a is not None and b else "n/a"


def report(results: dict, profiles: dict, modes: list[str]) -> None:
    base = "baseline" if "baseline" in modes else None
    print("\n== one-epoch jobs through the service (one worker, concurrency 1) ==")
    for m in modes:
        j = results[m]["jobs"]
        blocks = "/".join(f"{b['per_job_s']:.2f}" for b in j["blocks"])
        line = (f"  {m:<9} {j['jobs']} jobs in {j['wall_s']:.1f} s: {j['per_job_s']:.3f} s a job"
                f" (blocks {blocks}; posting {j['posting_s']:.1f} s; median fit "
                f"{j['fit_median_s']:.3f} s)")
        if base and m != base:
            line += f"   {m} / baseline {ratio(j['per_job_s'], results[base]['jobs']['per_job_s'])}"
        print(line)
    if all("sweep" in results[m] for m in modes):
        print("\n== carried trials of a packed sweep ==")
        for m in modes:
            s = results[m]["sweep"]
            line = (f"  {m:<9} {s['carried']} carried trials of {s['trials']}: recording "
                    f"{s['record_s']:.2f} s ({s['per_trial_s']:.3f} s a trial, model logging "
                    f"{s['model_per_trial_s']:.3f} s of it); fit {s['fit_s']:.1f} s; "
                    f"wall {s['wall_s']:.1f} s")
            if base and m != base:
                line += (f"   {m} / baseline "
                         f"{ratio(s['per_trial_s'], results[base]['sweep']['per_trial_s'])}")
            print(line)
            known = {k: v for k, v in s["parts"].items() if v}
            if known:
                rest = s["per_trial_s"] - sum(known.values())
                print("            a trial: " + ", ".join(
                    f"{k[:-2].replace('_', ' ')} {v:.3f} s" for k, v in known.items())
                    + f", the rest (its MLflow run, params, epochs, end) {rest:.3f} s")
    if profiles:
        print("\n== where a one-epoch job's time goes (task body under cProfile, per job) ==")
        print(f"  {'part':<34}" + "".join(f"{m:>18}" for m in modes))
        for part in [*PARTS, "other", "total"]:
            cells = []
            for m in modes:
                p = profiles[m]["parts"][part]
                cells.append(f"{p:8.3f} s {100 * p / profiles[m]['parts']['total']:5.1f}%")
            print(f"  {part:<34}" + "".join(f"{c:>18}" for c in cells))
        for key in ("mlflow_requests", "db_commits"):
            print(f"  {key.replace('_', ' ') + ' a job':<34}"
                  + "".join(f"{profiles[m][key]:>18.1f}" for m in modes))
    print("\nInformation only; every figure above was measured in this run.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=4,
                        help="the jobs of a mode in this many blocks, the modes taking turns")
    parser.add_argument("--profile-jobs", type=int, default=5,
                        help="jobs run under cProfile per mode (0: no breakdown)")
    parser.add_argument("--sweep-batch-sizes", default="40,200")
    parser.add_argument("--sweep-epochs", default="2,5,10")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--modes", default="baseline,lean")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--ready-timeout", type=float, default=300)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if args.jobs < 1 or not 1 <= args.blocks <= args.jobs or not 1 <= len(modes) <= 2 or \
            any(m not in MODES for m in modes):
        parser.error(f"--jobs must be >= --blocks >= 1 and --modes one or two of {sorted(MODES)}")
    print(f"kerasyard per-job bench: {args.jobs} one-epoch jobs, modes {', '.join(modes)}; "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs; {versions()}", flush=True)
    json_path = Path(args.json).resolve() if args.json else None
    children: list[Process] = []
    old_cwd = os.getcwd()
    results, profiles = {}, {}
    with tempfile.TemporaryDirectory(prefix="kerasyard-perjob-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            os.chdir(tmp)
            env = dict(os.environ, PYTHONUNBUFFERED="1", KERASYARD_REQUIRE_GPU="false")
            mlflow_url = start_mlflow(tmp, env, children).url
            service_env = {"DATABASE_URL": f"sqlite:///{tmp / 'ky.db'}",
                           "BROKER_URL": "filesystem://", "MLFLOW_TRACKING_URI": mlflow_url,
                           "KERASYARD_DATA_DIR": str(tmp)}
            os.environ.update(service_env)
            env.update(service_env)
            from service.api import create_app
            from service.config import Settings
            from service.migrate import upgrade

            settings = Settings.from_env()
            upgrade(settings.database_url)
            client = create_app(settings).test_client()
            jobs = measure_jobs(client, tmp, env, modes, args)
            results = {mode: {"jobs": jobs[mode]} for mode in modes}
            for mode in ([] if args.no_sweep else modes):
                results[mode]["sweep"] = measure_sweep(client, tmp, env, mode, args)
            if args.profile_jobs > 0:  # in this process, with no worker running
                profiles = profile_jobs(client, settings, modes, args.profile_jobs, one_epoch,
                                        log)
        except (BenchError, StackError) as exc:
            print(f"\nBENCH FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            for child in reversed(children):
                child.stop()
            os.chdir(old_cwd)
    report(results, profiles, modes)
    if json_path:
        json_path.write_text(json.dumps({"config": vars(args), "results": results,
                                         "profiles": copy.deepcopy(profiles)}, indent=2))
        print(f"numbers written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
