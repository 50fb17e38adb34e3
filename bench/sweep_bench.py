"""Sweep benchmark: packed trials, unpacked trials and the plain loop a user would write, in
one run.

    .venv/bin/python -m bench.sweep_bench [--epochs 10,50,200] [--batch-sizes 1,5,40,200]
                                          [--activations sigmoid,relu,tanh] [--json out.json]

(from the repository root).

It runs examples/sweep_lecture.json (the lecture MLP; batch size x hidden activation x
epochs, 36 trials by default) twice through the service on its embedded stack (SQLite jobs
database with Optuna's study in it, kombu's filesystem broker, an ``mlflow server`` on SQLite,
one Celery worker with two prefork children, warmed up with two untimed 1-epoch jobs, the
API in this process): ``packed`` (the defaults: each configuration trains once to its largest
epoch count, and the configurations of one batch size train together as one model, one tower
each) and ``unpacked`` (``pack: false``: one training per configuration). Both log every
trial's child run, metrics, artifacts and model. Then ``plain``: bench/plain_sweep.py, one
Python process looping over the 36 configurations with plain Keras and no tracking, timed
start to exit. Everything else is the same, ``max_parallel`` 2 included; the service modes
alternate which goes first with ``--repeats``.

Printed, per mode: trainings, epochs trained, fit time, wall time (POST /api/v1/sweeps until
the sweep has ended and its report is written; the plain loop's whole process), the ratios
packed / plain, unpacked / plain and packed / unpacked, and where the packed sweep's time
went (fit, recording the carried trials: MLflow child runs and artifacts, model logging). It
checks that packed and unpacked give every trial the same objective, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.lecture_bench import ROOT, BenchError, start_mlflow
from devstack import Process, StackError, WorkerProcess

EXAMPLE = ROOT / "examples" / "sweep_lecture.json"


PLAIN = ROOT / "bench" / "plain_sweep.py"


def sweep_body(args, pack: bool, tag: str) -> dict:
    body = json.loads(EXAMPLE.read_text())
    body["name"] = f"{body['name']} ({tag})"
    body["pack"] = pack
    body["parameters"] = {
        "fit.batch_size": [int(x) for x in args.batch_sizes.split(",")],
        "model.hidden_activation": args.activations.split(","),
        "fit.epochs": [int(x) for x in args.epochs.split(",")],
    }
    body["max_parallel"] = args.max_parallel
    body["repeats"] = 1  # one seed per configuration, as the plain loop trains (the example: 3)
    return body


def run_sweep(client, body: dict, worker: WorkerProcess, timeout: float) -> dict:
    t0 = time.perf_counter()
    resp = client.post("/api/v1/sweeps", json=body)
    if resp.status_code != 202:
        raise BenchError(f"POST /sweeps: {resp.status_code} {resp.get_json()}")
    sweep_id = resp.get_json()["id"]
    while True:
        worker.check_alive()
        sw = client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
        if sw["status"] in ("succeeded", "failed", "cancelled") and \
                (sw["report"] or {}).get("state") in ("done", "failed"):
            break
        if time.perf_counter() - t0 > timeout:
            raise BenchError(f"sweep {sweep_id} did not end within {timeout:.0f} s")
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if sw["status"] != "succeeded" or any(t["state"] != "succeeded" for t in sw["trials"]):
        raise BenchError(f"sweep {sweep_id} ended {sw['status']}: "
                         f"{[(t['name'], t['state']) for t in sw['trials']]}")
    jobs = client.get(f"/api/v1/jobs?sweep_id={sweep_id}&limit=500").get_json()["jobs"]
    trainings = [j for j in jobs if not j["trained_by"]]
    packs = [j["summary"].get("pack") or {} for j in trainings]
    return {
        "record_s": sum(p.get("record_s", 0.0) for p in packs),
        "model_log_s": sum(p.get("model_log_s", 0.0) for p in packs),
        "wall_s": wall,
        "trials": len(sw["trials"]),
        "trainings": len(trainings),
        "epochs_trained": sum(j["summary"]["epochs_completed"] for j in trainings),
        "epochs_of_trials": sum(j["plan"]["epochs"] for j in jobs),
        # A pack's training job reports its own tower's share; the pack's fit is the whole.
        "fit_s": sum(p.get("fit_time_s", j["summary"]["fit_time_s"])
                     for p, j in zip(packs, trainings)),
        "objectives": {t["name"]: t["objective"] for t in sw["trials"]},
    }


def embedded_service(tmp: Path, env: dict, children: list[Process], name: str):
    """The embedded stack the benches time, in the folder ``tmp`` (the working directory):
    an MLflow server, SQLite, the filesystem broker, the API as a Flask test client, and one
    worker with two prefork children. ``env`` (the worker's environment) gains the service's
    variables, as this process's environment does; the MLflow server and the worker are
    appended to ``children`` (the caller stops them). Returns ``(client, worker)``."""
    mlflow_url = start_mlflow(tmp, env, children).url
    service_env = {"DATABASE_URL": f"sqlite:///{tmp / 'ky.db'}",
                   "BROKER_URL": "filesystem://", "MLFLOW_TRACKING_URI": mlflow_url,
                   "KERASYARD_DATA_DIR": str(tmp)}
    os.environ.update(service_env)
    env.update(service_env)  # WorkerProcess puts this checkout on PYTHONPATH
    from service.api import create_app
    from service.config import Settings
    from service.migrate import upgrade

    settings = Settings.from_env()
    upgrade(settings.database_url)
    client = create_app(settings).test_client()
    worker = WorkerProcess(env, tmp / "worker.log", queues="cpu", concurrency=2,
                           name=f"{name}-{os.getpid()}@%h", cwd=tmp, new_session=True)
    children.append(worker)
    return client, worker


def warm_up(client, worker: WorkerProcess, timeout: float) -> None:
    """Two untimed 1-epoch jobs, one per prefork child, so neither mode pays first-use costs
    (the first MLflow experiment, a child's first graph trace)."""
    base = json.loads(EXAMPLE.read_text())["base"]
    ids = []
    for i in range(2):
        spec = dict(base, name=f"warm-up {i}")
        spec["fit"] = dict(base["fit"], epochs=1)
        ids.append(client.post("/api/v1/jobs", json=spec).get_json()["id"])
    t0 = time.perf_counter()
    for job_id in ids:
        while client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] in ("queued", "running"):
            worker.check_alive()
            if time.perf_counter() - t0 > timeout:
                raise BenchError("the warm-up jobs did not finish")
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", default="10,50,200")
    parser.add_argument("--batch-sizes", default="1,5,40,200")
    parser.add_argument("--activations", default="sigmoid,relu,tanh")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    print(f"kerasyard sweep bench: {EXAMPLE.relative_to(ROOT)}, batch sizes {args.batch_sizes},"
          f" activations {args.activations}, epochs {args.epochs}, max_parallel "
          f"{args.max_parallel}, {args.repeats} repeat(s)", flush=True)
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs",
          flush=True)
    json_path = Path(args.json).resolve() if args.json else None
    children: list[Process] = []
    worker = None
    old_cwd = os.getcwd()
    results: dict[str, list[dict]] = {"packed": [], "unpacked": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="kerasyard-sweep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            os.chdir(tmp)
            env = os.environ.copy()
            env["PYTHONUNBUFFERED"] = "1"
            client, worker = embedded_service(tmp, env, children, "sweep-bench")
            children.remove(worker)  # stopped before the plain loop, below
            log(f"worker ready in {worker.wait_ready(300):.1f} s; warming up both children")
            warm_up(client, worker, args.timeout)
            for i in range(args.repeats):
                order = ("packed", "unpacked") if i % 2 == 0 else ("unpacked", "packed")
                for mode in order:
                    res = run_sweep(client, sweep_body(args, mode == "packed", f"{mode} {i + 1}"),
                                    worker, args.timeout)
                    results[mode].append(res)
                    log(f"repeat {i + 1} {mode}: {res['trials']} trials, {res['trainings']} "
                        f"trainings, {res['epochs_trained']} epochs trained, wall "
                        f"{res['wall_s']:.1f} s")
            worker.stop()  # the plain loop gets the machine to itself, as the sweeps did
            worker = None
            for i in range(args.repeats):
                res = run_plain(args, env, args.timeout)
                results["plain"].append(res)
                log(f"repeat {i + 1} plain: {res['trials']} trials, wall {res['wall_s']:.1f} s")
        except (BenchError, StackError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            os.chdir(old_cwd)
            if worker is not None:
                worker.stop()
            for child in children:
                child.stop()

    report = summarize(results)
    if json_path:
        json_path.write_text(json.dumps({"args": vars(args), "results": results,
                                         "summary": report}, indent=2))
    return 0


def run_plain(args, env: dict, timeout: float) -> dict:
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(PLAIN), "--epochs", args.epochs,
                           "--batch-sizes", args.batch_sizes, "--activations", args.activations],
                          env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"the plain loop failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    epochs = [int(e) for e in args.epochs.split(",")]
    return {"wall_s": wall, "trials": out["trials"], "trainings": out["trials"],
            "epochs_trained": sum(epochs) * out["trials"] // len(epochs),
            "fit_s": out["fit_time_s"], "objectives": out["val_loss"]}


def summarize(results: dict[str, list[dict]]) -> dict:
    import statistics

    med = lambda rows, key: statistics.median(r[key] for r in rows)
    modes = ("packed", "unpacked", "plain")
    out: dict = {"trials": results["packed"][0]["trials"]}
    for mode in modes:
        for key in ("trainings", "epochs_trained", "fit_s", "wall_s"):
            out[f"{key}_{mode}"] = med(results[mode], key)
    for key in ("record_s", "model_log_s"):
        out[f"{key}_packed"] = med(results["packed"], key)
    out["wall_packed_over_plain"] = out["wall_s_packed"] / out["wall_s_plain"]
    out["wall_unpacked_over_plain"] = out["wall_s_unpacked"] / out["wall_s_plain"]
    out["wall_packed_over_unpacked"] = out["wall_s_packed"] / out["wall_s_unpacked"]
    same = all(p["objectives"] == u["objectives"] for p in results["packed"]
               for u in results["unpacked"])
    out["identical_objectives"] = same
    print(f"\ntrials per sweep: {out['trials']}")
    print(f"{'':24}{'packed':>10}{'unpacked':>10}{'plain':>10}{'pk/plain':>10}"
          f"{'unpk/plain':>11}{'pk/unpk':>9}")
    for key, label, fmt in (("trainings", "trainings", "{:>10.0f}"),
                            ("epochs_trained", "epochs trained", "{:>10.0f}"),
                            ("fit_s", "fit time, summed (s)", "{:>10.1f}"),
                            ("wall_s", "wall time (s)", "{:>10.1f}")):
        p, u, pl = (out[f"{key}_{m}"] for m in modes)
        print(f"{label:24}" + fmt.format(p) + fmt.format(u) + fmt.format(pl)
              + f"{p / pl:>10.3f}{u / pl:>11.3f}{p / u:>9.3f}")
    print(f"packed, summed over its trainings: fit {out['fit_s_packed']:.1f} s, recording the "
          f"carried trials {out['record_s_packed']:.1f} s (of which model logging "
          f"{out['model_log_s_packed']:.1f} s)")
    print(f"every trial's objective identical packed and unpacked: {same}")
    return out


if __name__ == "__main__":
    sys.exit(main())
