"""A fleet on one control plane: N simulated trainings at once against a real PostgreSQL, Redis,
MLflow server and API, before and after the fleet settings, in one run.

    .venv/bin/python -m bench.fleet --trainings 100 [--seconds 60] [--modes before,after]
                                    [--processes 8] [--pool per-write]

(from the repository root; needs the dev extra's PostgreSQL and Redis, and gunicorn).
bench/README.md "Fleet" has the figures and docs/fleet.md what they mean.

For each mode a fresh stack (bench/fleet_stack.py: configured as docker-compose.yml configures
it) gets N jobs through ``POST /api/v1/jobs``; then ``--processes`` processes run N trainings
between them, one thread each (bench/fleet_training.py: the worker's real path, fit replaced by
a timer; each training starts within the first ``--ramp-s`` (30 s), has an epoch every
0.1-1.0 s and lasts ``--seconds``). Meanwhile bench/fleet_watch.py samples PostgreSQL and
uses the API.

Modes:

- ``before``: the settings before the fleet work: a progress write every 0.25 s and a
  heartbeat write every 0.25 s per training, 5 + 5 pooled connections per training process,
  PostgreSQL's default max_connections (100);
- ``after``: progress writes backing off from 0.25 s to ``KERASYARD_REPORT_INTERVAL_MAX_S``
  (worker/recording/pace.py) and counting as the heartbeat, ``--pool`` (``per-write``: no
  connection kept between writes; ``training``: one kept), compose's max_connections.

Printed per mode: trainings through (their final write landed), peak PostgreSQL connections
in use, transactions a second in the jobs database and in MLflow's (whole run, and the steady
window from 10 s after the last start to the first end), MLflow requests a second (counted at the
client), API p50/p99 of each route, how old the progress read through GET /jobs/{id} was
(p50/p99/max), and every error (by kind, with its count). Then after / before ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.fleet_stack import Stack
from bench.fleet_training import Plan, run_share
from bench.fleet_watch import Database, Prober, _call, quantile

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_MAX_CONNECTIONS = 200  # docker-compose.yml's POSTGRES_MAX_CONNECTIONS default


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    baseline: bool
    pool: str
    max_connections: int


def spec(epochs: int) -> dict:
    data = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    data["experiment"] = "fleet"
    data["fit"]["epochs"] = epochs
    return data


def submit(api_url: str, n: int, epochs: int) -> list[str]:
    body = spec(epochs)

    def one(_):
        status, job, _took = _call("POST", f"{api_url}/api/v1/jobs", body)
        if status != 202:
            raise RuntimeError(f"POST /api/v1/jobs answered {status} while preparing the fleet")
        return job["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def settings_for(stack: Stack, mode: Mode, db_retry_s: float):
    from service.config import Settings

    base = Settings.from_env()
    extra = {"report_interval_s": 0.25, "report_interval_max_s": 0.25} if mode.baseline else {}
    return dataclasses.replace(
        base, data_dir=stack.base / "data", database_url=stack.database_url,
        broker_url=stack.broker_url, mlflow_tracking_uri=stack.mlflow_url,
        mlflow_ui_url=stack.mlflow_url, db_retry_s=db_retry_s,
        **extra)


def plans(ids: list[str], seconds: float, start: float, ramp_s: float,
          seed: int) -> list[Plan]:
    rng = random.Random(seed)
    out = []
    for i, job_id in enumerate(ids):
        epoch_s = rng.uniform(0.1, 1.0)
        out.append(Plan(job_id, i, round(epoch_s, 3), max(1, round(seconds / epoch_s)),
                        start + rng.uniform(0, ramp_s)))
    return out


def run_mode(mode: Mode, args) -> dict:
    stack = Stack(mode.max_connections)
    try:
        settings = settings_for(stack, mode, args.db_retry_s)
        epochs = math.ceil(args.seconds / 0.1)
        prep = time.time()
        ids = submit(stack.api_url, args.trainings, epochs)
        print(f"  [{mode.name}] stack up, {len(ids)} jobs submitted in "
              f"{time.time() - prep:.1f} s", flush=True)
        # Seconds after the fleet's start, which comes once every process is ready. Steady:
        # every training has started and backed off (10 s), none has ended yet.
        window = (args.ramp_s + 10, max(args.seconds, args.ramp_s + 20))
        deadline = args.ramp_s + args.seconds + args.grace_s
        return _fleet(stack, settings, mode, args,
                      plans(ids, args.seconds, 0.0, args.ramp_s, args.seed),
                      window, deadline, ids)
    finally:
        stack.stop()


def _fleet(stack, settings, mode, args, all_plans, window, deadline, ids) -> dict:
    ctx = mp.get_context("spawn")
    results, ready, go = ctx.Queue(), ctx.Queue(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=run_share, daemon=True,
                         args=(settings, all_plans[i::args.processes], mode.baseline, mode.pool,
                               window, deadline, results, ready, go))
             for i in range(args.processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    start = go.value = time.time() + 1
    window, deadline = (start + window[0], start + window[1]), start + deadline
    db = Database(stack.stats_url)
    db.start()
    time.sleep(max(0.0, start - time.time()))
    prober = Prober(stack.api_url, spec(5), ids)
    prober.start()
    shares = []
    for _ in procs:
        try:
            shares.append(results.get(timeout=max(1.0, deadline - time.time() + 30)))
        except Exception:
            break
    end = time.time()
    prober.stop()
    db.stop()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.terminate()
    return tally(shares, db, prober, window, start, end, len(procs))


def tally(shares, db, prober, window, start, end, n_procs) -> dict:
    ends, errors = {}, dict(prober.errors)
    for share in shares:
        for k, v in share["ends"].items():
            ends[k] = ends.get(k, 0) + v
        for k, v in share["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if len(shares) < n_procs:
        errors[f"ERROR: {n_procs - len(shares)} fleet processes sent no result"] = 1
    calls = sum(s.get("calls", 0) for s in shares)
    steady_calls = sum(s.get("calls_w1", 0) - s.get("calls_w0", 0) for s in shares)
    xacts = sum(s.get("xacts", 0) for s in shares)
    steady_xacts = sum(s.get("xacts_w1", 0) - s.get("xacts_w0", 0) for s in shares)
    lat = {k: (quantile(v, 0.5) * 1000, quantile(v, 0.99) * 1000, len(v))
           for k, v in prober.latency.items()}
    return {
        "through": ends.get("succeeded", 0), "ends": ends, "errors": errors,
        "peak_connections": db.peak,
        "xact_s": db.rate(start, end, "kerasyard"),
        "xact_s_steady": db.rate(*window, "kerasyard"),
        "mlflow_xact_s": db.rate(start, end, "mlflow"),
        "fleet_xact_s": xacts / max(end - start, 1e-9),
        "fleet_xact_s_steady": steady_xacts / (window[1] - window[0]),
        "mlflow_req_s": calls / max(end - start, 1e-9),
        "mlflow_req_s_steady": steady_calls / (window[1] - window[0]),
        "api": lat,
        "age": (quantile(prober.ages, 0.5), quantile(prober.ages, 0.99),
                max(prober.ages, default=float("nan")), len(prober.ages)),
    }


ROWS = [
    ("trainings through", lambda r: r["through"], "{:.0f}"),
    ("peak PostgreSQL connections", lambda r: r["peak_connections"], "{:.0f}"),
    ("fleet's transactions/s (run)", lambda r: r["fleet_xact_s"], "{:.0f}"),
    ("fleet's transactions/s (steady)", lambda r: r["fleet_xact_s_steady"], "{:.0f}"),
    ("jobs db transactions/s (run)", lambda r: r["xact_s"], "{:.0f}"),
    ("jobs db transactions/s (steady)", lambda r: r["xact_s_steady"], "{:.0f}"),
    ("MLflow db transactions/s (run)", lambda r: r["mlflow_xact_s"], "{:.0f}"),
    ("MLflow requests/s (run)", lambda r: r["mlflow_req_s"], "{:.1f}"),
    ("MLflow requests/s (steady)", lambda r: r["mlflow_req_s_steady"], "{:.1f}"),
    *[(f"API {route} p{q} ms", (lambda r, route=route, i=i: r["api"][route][i]), "{:.0f}")
      for route in ("POST /jobs", "GET /jobs", "GET /jobs/{id}") for q, i in ((50, 0), (99, 1))],
    ("progress age p50 s", lambda r: r["age"][0], "{:.2f}"),
    ("progress age p99 s", lambda r: r["age"][1], "{:.2f}"),
    ("progress age max s", lambda r: r["age"][2], "{:.2f}"),
    ("errors (logged ERROR, raised, API)",
     lambda r: sum(v for k, v in r["errors"].items() if not k.startswith("WARNING")), "{:.0f}"),
    ("warnings logged", lambda r: sum(v for k, v in r["errors"].items()
                                      if k.startswith("WARNING")), "{:.0f}"),
]


def report(args, modes: list[Mode], results: dict[str, dict]) -> None:
    names = [m.name for m in modes]
    print(f"\nfleet N={args.trainings}: {args.seconds:.0f} s trainings (an epoch every "
          f"0.1-1.0 s), {args.processes} processes; " +
          "; ".join(f"{m.name}: pool {m.pool}, max_connections {m.max_connections}"
                    for m in modes))
    head = f"{'':34}" + "".join(f"{n:>12}" for n in names)
    if len(names) == 2:
        head += f"{'after/before':>14}"
    print(head)
    for label, get, fmt in ROWS:
        values = [get(results[n]) for n in names]
        line = f"{label:34}" + "".join(f"{fmt.format(v):>12}" for v in values)
        if len(values) == 2 and values[0] and not math.isnan(values[0]):
            line += f"{values[1] / values[0]:>14.3f}"
        print(line)
    for n in names:
        r = results[n]
        print(f"\n[{n}] ends: {r['ends']}; API samples: "
              f"{ {k: v[2] for k, v in r['api'].items()} }; progress reads: {r['age'][3]}")
        for what, count in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {count:6d} x {what}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainings", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--modes", default="before,after")
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--pool", default="per-write", choices=["per-write", "training"])
    p.add_argument("--max-connections", type=int, default=COMPOSE_MAX_CONNECTIONS)
    p.add_argument("--db-retry-s", type=float, default=30.0,
                   help="the workers' KERASYARD_DB_RETRY_S (300 s by default: a fleet run "
                        "would wait that long on each refused connection)")
    p.add_argument("--ramp-s", type=float, default=30.0,
                   help="the trainings start at random times within this many seconds")
    p.add_argument("--grace-s", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    known = {"before": Mode("before", True, "service", 100),
             "after": Mode("after", False, args.pool, args.max_connections)}
    modes = [known[m] for m in args.modes.split(",")]
    results = {}
    for mode in modes:
        print(f"running {mode.name} with N={args.trainings} ...", flush=True)
        results[mode.name] = run_mode(mode, args)
    report(args, modes, results)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "fleet"
    sys.exit(main())
