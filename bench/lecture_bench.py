"""Lecture benchmark: the lecture example (examples/lecture_mlp.json) three ways in one run.

    make bench                          (runs .venv/bin/python -m bench.lecture_bench)
    .venv/bin/python -m bench.lecture_bench [--epochs 300] [--repeats 3]
                                            [--backends tensorflow,jax] [--json out.json]

(from the repository root).

What it measures, per Keras backend (TensorFlow and JAX by default):

1. plain -- bench/plain_lecture.py, the example as a lecture writes it (plain Keras,
   ``model.fit(X, y, batch_size=5, epochs=N)``), run as a fresh process with KERAS_BACKEND
   set. "plain wall" is the whole process, start to exit, imports included: what a student
   waits for. "plain fit" is the script's own timing of ``model.fit``.
2. kerasyard end to end -- the service stack as local processes (an ``mlflow server`` on
   SQLite, the jobs database on SQLite, kombu's filesystem broker, one Celery worker, the API
   in this process through Flask's test client; the embedded default that ``make run`` uses).
   "end to end" is the wall time from POST /api/v1/jobs until GET /api/v1/jobs/{id} (polled
   every 0.05 s) says ``succeeded``: queueing, training, MLflow logging of every epoch and the
   artifacts (model, plots). "kerasyard fit" is the job's ``summary.fit_time_s``.
3. kerasyard with MLflow logging off -- the same with the worker started with
   KERASYARD_MLFLOW_LOGGING=false.

The jobs are the lecture example unchanged except ``fit.epochs`` and ``name``. Each worker is
started once per configuration (backend x logging) on its own queue, waited for until its
child has imported Keras and given one untimed warm-up job; then each repeat runs the plain
script and one job in each mode, alternating which mode goes first. One
untimed 1-epoch plain run per backend warms the page cache first (the idle workers cost next
to nothing meanwhile).

Everything lives in a temporary directory that is removed at the end; every child process is
stopped on the way out.

Ratios are computed pair-wise per repeat (repeat i of one way against repeat i of the other)
and the median of those ratios is printed, with min-max. Targets:

    end_to_end / plain_wall            <= 0.6   (the service beats running the script yourself)
    fit_with_mlflow / fit_without      <= 1.02  (per-epoch MLflow logging adds <= 2 % to fit)

and, as information without a target, kerasyard fit / plain fit (the speed-up from
steps_per_execution and the input pipeline) and jax / tensorflow for plain fit and kerasyard
fit. "met"/"missed" is printed for information only: the script exits 0 unless something
crashed or a job failed (then it prints the job's error and exits 1).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack import MlflowServer, Process, StackError, WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ROOT / "bench" / "plain_lecture.py"
EXAMPLE = ROOT / "examples" / "lecture_mlp.json"
POLL_S = 0.05
TERMINAL = {"succeeded", "failed", "cancelled"}

TARGETS = {  # ratio name -> largest value that meets the target
    "end_to_end / plain_wall": 0.6,
    "fit_with_mlflow / fit_without_mlflow": 1.02,
}


class BenchError(Exception):
    """Something went wrong that makes the numbers meaningless (a failed job, a dead worker)."""


# --- processes (devstack/ starts and stops them) ------------------------------------


def start_mlflow(tmp: Path, env: dict, children: list) -> MlflowServer:
    """An ``mlflow server`` on SQLite in ``tmp`` on a free port, as ``make run`` starts one;
    appended to ``children`` so the caller stops it."""
    server = MlflowServer(tmp, env=env, log_path=tmp / "mlflow-server.log", cwd=tmp,
                          new_session=True)
    children.append(server)
    return server


# --- the three ways ----------------------------------------------------------------------------


def run_plain(backend: str, epochs: int, timeout: float) -> dict:
    env = os.environ.copy()
    env.update({"KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(PLAIN), str(epochs)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"plain_lecture.py ({backend}) exited with {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"plain_lecture.py printed no JSON line:\n{proc.stdout[-2000:]}")
    out = json.loads(lines[-1])
    if out["backend"] != backend:
        raise BenchError(f"plain_lecture.py ran on {out['backend']!r}, not {backend!r}")
    out["wall_s"] = wall
    return out


def job_spec(epochs: int, name: str, queue: str) -> dict:
    spec = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    spec["fit"]["epochs"] = epochs
    spec["name"] = name
    spec["resources"] = {"queue": queue}  # routes the job to the worker of that mode
    return spec


def run_job(client, spec: dict, worker: WorkerProcess, backend: str, timeout: float) -> dict:
    """POST the job, poll until it ends; wall time from the POST to seeing 'succeeded'."""
    t0 = time.perf_counter()
    resp = client.post("/api/v1/jobs", json=spec)
    if resp.status_code != 202:
        raise BenchError(f"POST /api/v1/jobs answered {resp.status_code}: {resp.get_data(True)}")
    job_id = resp.get_json()["id"]
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] in TERMINAL:
            wall = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > timeout:
            raise BenchError(f"job {job_id} ({spec['name']}) still {job['status']} after "
                             f"{timeout:.0f} s; worker log:\n{worker.tail()}")
        worker.check_alive()
        time.sleep(POLL_S)
    if job["status"] != "succeeded":
        raise BenchError(f"job {job_id} ({spec['name']}) ended {job['status']}; error:\n"
                         f"{json.dumps(job.get('error'), indent=2)}\n"
                         f"worker log tail:\n{worker.tail()}")
    summary = job.get("summary") or {}
    if summary.get("keras_backend") not in (None, backend):
        raise BenchError(f"job {job_id} trained on {summary.get('keras_backend')!r}, "
                         f"not {backend!r}")
    return {"id": job_id, "wall_s": wall, "fit_time_s": summary.get("fit_time_s"),
            "steps_per_execution": summary.get("steps_per_execution"),
            "epochs_completed": summary.get("epochs_completed"),
            "mlflow_errors": summary.get("mlflow_errors"),
            "mlflow_run_id": (job.get("mlflow") or {}).get("run_id")}


# --- statistics and the report -----------------------------------------------------------------


def stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def pairwise(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den) if a is not None and b]


def ratio_entry(num: list[float], den: list[float], target: float | None = None) -> dict:
    entry = stats(pairwise(num, den))
    entry["values"] = pairwise(num, den)
    if target is not None:
        entry["target_max"] = target
        entry["met"] = entry["median"] is not None and entry["median"] <= target
    return entry


def fmt_s(st: dict) -> str:
    if st["median"] is None:
        return "n/a"
    return f"{st['median']:8.3f} s   [{st['min']:.3f} - {st['max']:.3f}]"


def fmt_ratio(name: str, entry: dict, note: str = "") -> str:
    if entry["median"] is None:
        return f"    {name:<40} n/a"
    line = f"    {name:<40} {entry['median']:7.3f}   [{entry['min']:.3f} - {entry['max']:.3f}]"
    if "target_max" in entry:
        line += f"   target <= {entry['target_max']:g}: {'met' if entry['met'] else 'missed'}"
    if note:
        line += f"   {note}"
    return line


def versions() -> dict:
    out = {}
    for pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "mlflow", "celery"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# --- main --------------------------------------------------------------------------------------


def bench_backend(backend: str, args, client, base_env: dict, tmp: Path, log) -> dict:
    raw: dict[str, list] = {"plain_wall_s": [], "plain_fit_s": [], "plain_import_s": [],
                            "e2e_mlflow_s": [], "fit_mlflow_s": [], "e2e_nolog_s": [],
                            "fit_nolog_s": [], "steps_per_execution": [], "jobs": []}
    log(f"== {backend}: warming up (1-epoch plain run, untimed)")
    run_plain(backend, 1, args.job_timeout)

    # Both workers stay up, each on its own queue (MLflow on: "cpu", off: "gpu"), so the two
    # modes alternate repeat by repeat and each pair is measured close together in time; the
    # order within a pair flips every repeat. An idle worker only polls its broker folder.
    queues = {"mlflow": "cpu", "nolog": "gpu"}
    workers: dict[str, WorkerProcess] = {}
    try:
        for mode, queue in queues.items():
            # The "gpu" queue is only a second queue here: its worker trains on the CPU on
            # purpose, so it must not refuse the queue for want of a GPU (worker/gpu/).
            env = dict(base_env, KERAS_BACKEND=backend, KERASYARD_REQUIRE_GPU="false",
                       KERASYARD_MLFLOW_LOGGING="true" if mode == "mlflow" else "false")
            workers[mode] = WorkerProcess(env, tmp / f"worker-{backend}-{mode}.log",
                                          queues=queue, cwd=tmp, new_session=True,
                                          name=f"bench-{backend}-{mode}-{os.getpid()}@%h")
        for mode, worker in workers.items():
            ready = worker.wait_ready(args.ready_timeout)
            log(f"   worker ({mode}) ready in {ready:.1f} s; warm-up job (untimed)")
            run_job(client, job_spec(args.epochs, f"bench-{backend}-{mode}-warmup",
                                     queues[mode]), worker, backend, args.job_timeout)
        for i in range(args.repeats):
            plain = run_plain(backend, args.epochs, args.job_timeout)
            raw["plain_wall_s"].append(plain["wall_s"])
            raw["plain_fit_s"].append(plain["fit_time_s"])
            raw["plain_import_s"].append(plain["import_s"])
            log(f"   repeat {i + 1}: plain wall {plain['wall_s']:.3f} s, "
                f"fit {plain['fit_time_s']:.3f} s")
            order = ("mlflow", "nolog") if i % 2 == 0 else ("nolog", "mlflow")
            for mode in order:
                job = run_job(client, job_spec(args.epochs, f"bench-{backend}-{mode}-{i + 1}",
                                               queues[mode]),
                              workers[mode], backend, args.job_timeout)
                raw[f"e2e_{mode}_s"].append(job["wall_s"])
                raw[f"fit_{mode}_s"].append(job["fit_time_s"])
                raw["steps_per_execution"].append(job["steps_per_execution"])
                raw["jobs"].append({"mode": mode, "repeat": i + 1, **job})
                log(f"   repeat {i + 1}: kerasyard ({mode}) end to end {job['wall_s']:.3f} s, "
                    f"fit {job['fit_time_s']:.3f} s, steps_per_execution "
                    f"{job['steps_per_execution']}")
    finally:
        for worker in workers.values():
            worker.stop()

    summary = {
        "plain_wall_s": stats(raw["plain_wall_s"]),
        "plain_fit_s": stats(raw["plain_fit_s"]),
        "plain_import_s": stats(raw["plain_import_s"]),
        "e2e_mlflow_s": stats(raw["e2e_mlflow_s"]),
        "e2e_nolog_s": stats(raw["e2e_nolog_s"]),
        "fit_mlflow_s": stats(raw["fit_mlflow_s"]),
        "fit_nolog_s": stats(raw["fit_nolog_s"]),
    }
    ratios = {
        "end_to_end / plain_wall": ratio_entry(raw["e2e_mlflow_s"], raw["plain_wall_s"],
                                               TARGETS["end_to_end / plain_wall"]),
        "fit_with_mlflow / fit_without_mlflow": ratio_entry(
            raw["fit_mlflow_s"], raw["fit_nolog_s"],
            TARGETS["fit_with_mlflow / fit_without_mlflow"]),
        "kerasyard fit / plain fit": ratio_entry(raw["fit_mlflow_s"], raw["plain_fit_s"]),
        "kerasyard fit (no MLflow) / plain fit": ratio_entry(raw["fit_nolog_s"],
                                                             raw["plain_fit_s"]),
        "end_to_end (no MLflow) / plain_wall": ratio_entry(raw["e2e_nolog_s"],
                                                           raw["plain_wall_s"]),
    }
    return {"raw": raw, "summary": summary, "ratios": ratios,
            "steps_per_execution": sorted({s for s in raw["steps_per_execution"] if s})}


def print_backend(backend: str, res: dict) -> None:
    s, r = res["summary"], res["ratios"]
    print(f"\n== {backend} ==  (steps_per_execution {res['steps_per_execution']})")
    print("  times: median   [min - max]")
    rows = [("plain process wall (imports included)", "plain_wall_s"),
            ("  of which importing keras + sklearn", "plain_import_s"),
            ("plain fit", "plain_fit_s"),
            ("kerasyard end to end, MLflow on", "e2e_mlflow_s"),
            ("kerasyard end to end, MLflow off", "e2e_nolog_s"),
            ("kerasyard fit, MLflow on", "fit_mlflow_s"),
            ("kerasyard fit, MLflow off", "fit_nolog_s")]
    for label, key in rows:
        print(f"    {label:<40} {fmt_s(s[key])}")
    print("  ratios: median of the per-repeat ratios   [min - max]")
    print(fmt_ratio("end_to_end / plain_wall", r["end_to_end / plain_wall"]))
    print(fmt_ratio("fit_with_mlflow / fit_without_mlflow",
                    r["fit_with_mlflow / fit_without_mlflow"]))
    kf = r["kerasyard fit / plain fit"]
    note = f"(speed-up {1 / kf['median']:.2f}x, info)" if kf["median"] else ""
    print(fmt_ratio("kerasyard fit / plain fit", kf, note))
    kn = r["kerasyard fit (no MLflow) / plain fit"]
    note = f"(speed-up {1 / kn['median']:.2f}x, info)" if kn["median"] else ""
    print(fmt_ratio("kerasyard fit (no MLflow) / plain fit", kn, note))
    print(fmt_ratio("end_to_end (no MLflow) / plain_wall",
                    r["end_to_end (no MLflow) / plain_wall"], "(info)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="tensorflow,jax",
                        help="comma-separated Keras backends (default: tensorflow,jax)")
    parser.add_argument("--json", metavar="PATH", help="also write all numbers as JSON here")
    parser.add_argument("--job-timeout", type=float, default=3600,
                        help="seconds one job or plain run may take (default 3600)")
    parser.add_argument("--ready-timeout", type=float, default=300,
                        help="seconds a worker may take to import Keras (default 300)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.epochs < 1 or args.repeats < 1 or not backends:
        parser.error("--epochs and --repeats must be >= 1 and --backends non-empty")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    print(f"kerasyard lecture bench: {EXAMPLE.relative_to(ROOT)} with {args.epochs} epochs, "
          f"{args.repeats} repeats, backends {', '.join(backends)}", flush=True)
    print(f"python {platform.python_version()} on {platform.platform()}, "
          f"{os.cpu_count()} CPUs; {versions()}", flush=True)

    json_path = Path(args.json).resolve() if args.json else None
    children: list[Process] = []
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="kerasyard-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            os.chdir(tmp)
            base_env = os.environ.copy()
            base_env["PYTHONUNBUFFERED"] = "1"
            mlflow_url = start_mlflow(tmp, base_env, children).url
            log(f"mlflow server on {mlflow_url}")

            db_url = f"sqlite:///{tmp / 'ky.db'}"
            service_env = {"DATABASE_URL": db_url, "BROKER_URL": "filesystem://",
                           "MLFLOW_TRACKING_URI": mlflow_url, "KERASYARD_DATA_DIR": str(tmp)}
            os.environ.update(service_env)
            base_env.update(service_env)  # WorkerProcess puts this checkout on PYTHONPATH

            from service.api import create_app
            from service.config import Settings
            from service.migrate import upgrade

            upgrade(db_url)
            client = create_app(Settings.from_env()).test_client()

            results = {}
            for backend in backends:
                results[backend] = bench_backend(backend, args, client, base_env, tmp, log)
        except (BenchError, StackError) as exc:
            print(f"\nBENCH FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            for child in reversed(children):
                child.stop()
            os.chdir(old_cwd)

    for backend in backends:
        print_backend(backend, results[backend])

    across = {}
    if "tensorflow" in results and "jax" in results:
        tf, jx = results["tensorflow"]["raw"], results["jax"]["raw"]
        across = {
            "plain fit": ratio_entry(jx["plain_fit_s"], tf["plain_fit_s"]),
            "kerasyard fit, MLflow on": ratio_entry(jx["fit_mlflow_s"], tf["fit_mlflow_s"]),
            "kerasyard fit, MLflow off": ratio_entry(jx["fit_nolog_s"], tf["fit_nolog_s"]),
            "plain process wall": ratio_entry(jx["plain_wall_s"], tf["plain_wall_s"]),
            "kerasyard end to end, MLflow on": ratio_entry(jx["e2e_mlflow_s"],
                                                           tf["e2e_mlflow_s"]),
        }
        print("\n== across backends: jax / tensorflow, median of the per-repeat ratios "
              "(repeat i vs repeat i)   [min - max] ==")
        for name, entry in across.items():
            print(fmt_ratio(name, entry))

    print("\nAll ratios are computed per repeat (repeat i of one way against repeat i of the "
          "other), then the median is taken. met/missed is information only.")

    if json_path:
        out = {"config": {"epochs": args.epochs, "repeats": args.repeats, "backends": backends,
                          "example": str(EXAMPLE.relative_to(ROOT)), "poll_s": POLL_S},
               "machine": {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "versions": versions()},
               "targets": TARGETS, "backends": results, "jax_over_tensorflow": across,
               "ratio_method": "median of per-repeat ratios"}
        json_path.write_text(json.dumps(out, indent=2))
        print(f"numbers written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
