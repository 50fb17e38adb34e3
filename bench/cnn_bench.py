"""CNN benchmark: the digits CNN (examples/digits_cnn.json) through the service against the same
model in plain Keras, and a sweep over its conv filters packed against unpacked, in one run.

    .venv/bin/python -m bench.cnn_bench [--epochs 20] [--repeats 3] [--backend tensorflow]
                                        [--filters 4,8,16,32] [--sweep-epochs 20] [--no-sweep]
                                        [--json out.json]

(from the repository root).

1. **plain**: bench/plain_cnn.py, the example as plain Keras (same data, split, model,
   optimizer, batch size and epochs), a fresh process; "plain wall" is the whole process,
   imports included, "plain fit" its own ``model.fit`` time.
2. **kerasyard end to end**: POST /api/v1/jobs with the example (``fit.epochs`` set) until
   GET /api/v1/jobs/{id} says ``succeeded``: queueing, training, every epoch and the artifacts
   and model in MLflow. The embedded stack of bench/lecture_bench.py (SQLite, the filesystem
   broker, an ``mlflow server``, one Celery worker with two prefork children, warmed up with
   two untimed 1-epoch jobs, the API in this process).

Target: ``end_to_end / plain_wall <= 0.3`` (median of the per-repeat ratios).

3. **the filters sweep**: the example as a grid sweep over the first conv layer's filters
   (``model.layers.1.filters``, 4/8/16/32 by default), ``max_parallel`` 2, once packed (the
   four configurations differ only in the model: one training, one tower each) and once
   unpacked (``pack: false``: four trainings); wall time POST /api/v1/sweeps until its report
   is written, trainings, fit time summed, and whether every trial got the same objective.

met/missed is information only: the script exits 0 unless something crashed or a job failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lecture_bench import (
    ROOT,
    BenchError,
    fmt_ratio,
    fmt_s,
    ratio_entry,
    run_job,
    stats,
    versions,
)
from bench.sweep_bench import embedded_service, run_sweep
from devstack import Process, StackError, WorkerProcess

EXAMPLE = ROOT / "examples" / "digits_cnn.json"
PLAIN = ROOT / "bench" / "plain_cnn.py"
FILTERS_PATH = "model.layers.1.filters"
TARGET = 0.3  # end_to_end / plain_wall


def job_spec(epochs: int, name: str) -> dict:
    spec = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    spec["fit"]["epochs"] = epochs
    spec["name"] = name
    return spec


def sweep_body(filters: list[int], epochs: int, pack: bool) -> dict:
    return {"name": f"digits-cnn filters ({'packed' if pack else 'unpacked'})",
            "base": job_spec(epochs, "digits-cnn"), "method": "grid",
            "parameters": {FILTERS_PATH: filters},
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "max_parallel": 2, "pack": pack}


def run_plain(backend: str, epochs: int, timeout: float) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(PLAIN), str(epochs)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"plain_cnn.py ({backend}) exited with {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-4000:]}")
    return dict(json.loads(lines[-1]), wall_s=wall)


def warm_up(client, worker: WorkerProcess, backend: str, timeout: float) -> None:
    """Two untimed 1-epoch jobs at once, one per prefork child."""
    t0 = time.perf_counter()
    ids = [client.post("/api/v1/jobs", json=job_spec(1, f"warm-up {i}")).get_json()["id"]
           for i in range(2)]
    for job_id in ids:
        while True:
            job = client.get(f"/api/v1/jobs/{job_id}").get_json()
            if job["status"] not in ("queued", "running"):
                break
            worker.check_alive()
            if time.perf_counter() - t0 > timeout:
                raise BenchError("the warm-up jobs did not finish")
            time.sleep(0.1)
        if job["status"] != "succeeded":
            raise BenchError(f"warm-up job ended {job['status']}: {job.get('error')}\n"
                             f"{worker.tail()}")


def bench_end_to_end(args, client, worker: WorkerProcess, log) -> dict:
    raw: dict[str, list] = {"plain_wall_s": [], "plain_fit_s": [], "e2e_s": [], "fit_s": [],
                            "plain_val_accuracy": [], "jobs": []}
    for i in range(args.repeats):
        plain = run_plain(args.backend, args.epochs, args.timeout)
        raw["plain_wall_s"].append(plain["wall_s"])
        raw["plain_fit_s"].append(plain["fit_time_s"])
        raw["plain_val_accuracy"].append(plain["final_val_accuracy"])
        job = run_job(client, job_spec(args.epochs, f"bench digits-cnn {i + 1}"), worker,
                      args.backend, args.timeout)
        raw["e2e_s"].append(job["wall_s"])
        raw["fit_s"].append(job["fit_time_s"])
        raw["jobs"].append(job)
        log(f"repeat {i + 1}: plain wall {plain['wall_s']:.2f} s (fit "
            f"{plain['fit_time_s']:.2f} s), kerasyard end to end {job['wall_s']:.2f} s "
            f"(fit {job['fit_time_s']:.2f} s)")
    return {"raw": raw,
            "summary": {k: stats(raw[k]) for k in ("plain_wall_s", "plain_fit_s", "e2e_s",
                                                   "fit_s")},
            "ratios": {"end_to_end / plain_wall": ratio_entry(raw["e2e_s"],
                                                              raw["plain_wall_s"], TARGET),
                       "kerasyard fit / plain fit": ratio_entry(raw["fit_s"],
                                                                raw["plain_fit_s"])}}


def bench_sweep(args, client, worker: WorkerProcess, log) -> dict:
    filters = [int(f) for f in args.filters.split(",")]
    out = {}
    for pack in (True, False):
        mode = "packed" if pack else "unpacked"
        res = run_sweep(client, sweep_body(filters, args.sweep_epochs, pack), worker,
                        args.timeout)
        out[mode] = res
        log(f"sweep {mode}: {res['trials']} trials, {res['trainings']} trainings, wall "
            f"{res['wall_s']:.1f} s, fit summed {res['fit_s']:.1f} s")
    out["identical_objectives"] = out["packed"]["objectives"] == out["unpacked"]["objectives"]
    return out


def report(e2e: dict, sweep: dict | None) -> None:
    s, r = e2e["summary"], e2e["ratios"]
    print("\n== the digits CNN, end to end against plain Keras ==  median   [min - max]")
    for label, key in (("plain process wall (imports included)", "plain_wall_s"),
                       ("plain fit", "plain_fit_s"),
                       ("kerasyard end to end (POST -> succeeded)", "e2e_s"),
                       ("kerasyard fit", "fit_s")):
        print(f"    {label:<40} {fmt_s(s[key])}")
    print(fmt_ratio("end_to_end / plain_wall", r["end_to_end / plain_wall"]))
    print(fmt_ratio("kerasyard fit / plain fit", r["kerasyard fit / plain fit"], "(info)"))
    if sweep is None:
        return
    p, u = sweep["packed"], sweep["unpacked"]
    print(f"\n== sweep over {FILTERS_PATH}: packed against unpacked ==")
    print(f"{'':28}{'packed':>10}{'unpacked':>10}{'pk/unpk':>9}")
    for key, label in (("trainings", "trainings"), ("epochs_trained", "epochs trained"),
                       ("fit_s", "fit time, summed (s)"), ("wall_s", "wall time (s)")):
        print(f"{label:28}{p[key]:>10.1f}{u[key]:>10.1f}{p[key] / u[key]:>9.3f}")
    print(f"packed: recording the carried trials {p['record_s']:.1f} s (model logging "
          f"{p['model_log_s']:.1f} s)")
    print(f"every trial's objective identical packed and unpacked: "
          f"{sweep['identical_objectives']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--filters", default="4,8,16,32")
    parser.add_argument("--sweep-epochs", type=int, default=20)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    print(f"kerasyard CNN bench: {EXAMPLE.relative_to(ROOT)}, {args.epochs} epochs, "
          f"{args.repeats} repeats, backend {args.backend}", flush=True)
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs;"
          f" {versions()}", flush=True)
    json_path = Path(args.json).resolve() if args.json else None
    children: list[Process] = []
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="kerasyard-cnn-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            os.chdir(tmp)
            env = dict(os.environ, PYTHONUNBUFFERED="1", KERAS_BACKEND=args.backend)
            client, worker = embedded_service(tmp, env, children, "cnn-bench")
            log(f"worker ready in {worker.wait_ready(300):.1f} s; warming up both children")
            warm_up(client, worker, args.backend, args.timeout)
            run_plain(args.backend, 1, args.timeout)  # untimed: the page cache
            e2e = bench_end_to_end(args, client, worker, log)
            sweep = None if args.no_sweep else bench_sweep(args, client, worker, log)
        except (BenchError, StackError) as exc:
            print(f"\nBENCH FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            os.chdir(old_cwd)
            for child in reversed(children):
                child.stop()
    report(e2e, sweep)
    if json_path:
        json_path.write_text(json.dumps({"args": vars(args), "end_to_end": e2e,
                                         "sweep": sweep, "versions": versions()}, indent=2))
        print(f"numbers written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
