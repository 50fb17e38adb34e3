"""What bench/fleet.py watches while its fleet runs: PostgreSQL's connections and
transactions (pg_stat_activity, pg_stat_database), and the API as a person uses it (POST /jobs,
GET /jobs, GET /jobs/{id} with how old the progress it shows is)."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
import urllib.error
import urllib.request

CONNECTIONS = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
               "AND pid <> pg_backend_pid()")
COMMITS = ("SELECT datname, xact_commit + xact_rollback FROM pg_stat_database "
           "WHERE datname IN ('kerasyard', 'mlflow')")


class Database:
    """Samples pg_stat_* once a second from a connection of its own (not counted)."""

    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.peak = 0
        self.samples: list[tuple[float, int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> tuple[float, int, dict]:
        in_use = self.conn.execute(CONNECTIONS).fetchone()[0]
        # pg_stat_database lags by up to stats_fetch_consistency; a new snapshot each call.
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        xacts = dict(self.conn.execute(COMMITS).fetchall())
        return time.time(), in_use, xacts

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                at, in_use, xacts = self.sample()
            except Exception:
                continue
            self.peak = max(self.peak, in_use)
            self.samples.append((at, in_use, xacts))

    def rate(self, t0: float, t1: float, db: str) -> float:
        """Transactions a second in database ``db`` between the samples nearest t0 and t1."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return float("nan")
        a, b = inside[0], inside[-1]
        return (b[2].get(db, 0) - a[2].get(db, 0)) / (b[0] - a[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def _call(method: str, url: str, body: dict | None = None) -> tuple[int, dict | None, float]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            payload, status = json.loads(r.read() or b"null"), r.status
    except urllib.error.HTTPError as e:
        payload, status = None, e.code
    except Exception:
        payload, status = None, 0
    return status, payload, time.perf_counter() - started


class Prober:
    """A person at the API while the fleet runs: every ``pause_s`` a POST /jobs, a GET /jobs
    and a GET /jobs/{id} of a fleet job (whose progress carries the wall time of its last
    epoch: ``fleet_wall_s``)."""

    def __init__(self, api_url: str, spec: dict, fleet_ids: list[str], pause_s: float = 0.25):
        self.base = f"{api_url}/api/v1/jobs"
        self.spec, self.ids, self.pause_s = spec, fleet_ids, pause_s
        self.latency: dict[str, list[float]] = {"POST /jobs": [], "GET /jobs": [],
                                                "GET /jobs/{id}": []}
        self.ages: list[float] = []
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _note(self, what: str, status: int, took: float) -> None:
        if 200 <= status < 300:
            self.latency[what].append(took)
        else:
            key = f"ERROR: {what} answered {status or 'no connection'}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def _loop(self) -> None:
        while not self._stop.wait(self.pause_s):
            status, _, took = _call("POST", self.base, self.spec)
            self._note("POST /jobs", status, took)
            status, _, took = _call("GET", f"{self.base}?limit=50")
            self._note("GET /jobs", status, took)
            status, job, took = _call("GET", f"{self.base}/{random.choice(self.ids)}")
            self._note("GET /jobs/{id}", status, took)
            stamp = ((job or {}).get("progress") or {}).get("metrics", {}) or {}
            if job and job.get("status") == "running" and stamp.get("fleet_wall_s"):
                self.ages.append(time.time() - stamp["fleet_wall_s"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
