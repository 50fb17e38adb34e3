"""A small Python client for the kerasyard REST API (standard library only).

    from kerasyard import Client

    api = Client("http://127.0.0.1:8000")
    job = api.submit_job(spec)
    job = api.wait_job(job["id"], on_update=lambda j: print(j["progress"]["epoch"]))

Every API error raises :class:`ApiError` with the API's ``status``, ``code``, ``message`` and
``details`` (a list of ``{"loc", "msg"}``). A service that cannot be reached at all raises
:class:`ServiceUnreachable`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "pruned"})
SWEEP_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """The API answered with an error: ``{"error": {"code", "message", "details"}}``.

    Attributes:
        status: the HTTP status (400, 401, 404, 409, 413, 422, 5xx).
        code: the API's error code, e.g. ``invalid_spec``.
        message: the API's message.
        details: a list of ``{"loc": "model.layers.2.units", "msg": "...", ...}``.
        body: the decoded response body, when it was JSON.
    """

    def __init__(self, status: int, code: str, message: str, details: list[dict] | None = None,
                 body: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = list(details or [])
        self.body = body


class ServiceUnreachable(Exception):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the kerasyard service at {url}: {reason}")
        self.url, self.reason = url, reason


class Client:
    """The kerasyard REST API (``/api/v1``) as Python methods returning the API's JSON.

    Args:
        base_url: where the service listens; default ``$KERASYARD_URL`` or
            ``http://127.0.0.1:8000``. A trailing ``/api/v1`` is accepted.
        token: bearer token when the server sets ``KERASYARD_API_TOKEN``; default
            ``$KERASYARD_API_TOKEN``.
        timeout: seconds per HTTP request.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None,
                 timeout: float = 30.0):
        base = (base_url or os.environ.get("KERASYARD_URL") or DEFAULT_URL).rstrip("/")
        base = base.removesuffix("/api/v1")
        if "://" not in base:
            base = "http://" + base
        self.base_url = base
        self.token = token if token is not None else os.environ.get("KERASYARD_API_TOKEN") or None
        self.timeout = timeout

    # --- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict | None = None,
                json_body: Any = None, data: bytes | None = None,
                content_type: str | None = None) -> Any:
        """One HTTP call to ``/api/v1{path}``; returns the decoded JSON body."""
        url = f"{self.base_url}/api/v1{path}"
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": "kerasyard-client"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read(), exc.reason) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable(self.base_url, str(reason)) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(502, "bad_response", f"{method} {url} answered with something that "
                           f"is not JSON: {raw[:200]!r}") from None

    # --- jobs ---------------------------------------------------------------------------------

    def submit_job(self, spec: dict) -> dict:
        """Validate, store and queue a job; returns the job (status ``queued``)."""
        return self.request("POST", "/jobs", json_body=spec)

    def get_job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{_q(job_id)}")

    def list_jobs(self, status: str | None = None, sweep_id: str | None = None,
                  experiment: str | None = None, limit: int | None = None,
                  cursor: str | None = None) -> dict:
        """One page, newest first: ``{"jobs": [...], "next_cursor": str | None}``."""
        return self.request("GET", "/jobs", params={
            "status": status, "sweep_id": sweep_id, "experiment": experiment, "limit": limit,
            "cursor": cursor})

    def iter_jobs(self, status: str | None = None, sweep_id: str | None = None,
                  experiment: str | None = None, page_size: int = 200) -> Iterator[dict]:
        """Every matching job, newest first, following ``next_cursor`` page by page."""
        return self._pages(self.list_jobs, "jobs", page_size, status=status,
                           sweep_id=sweep_id, experiment=experiment)

    def job_history(self, job_id: str) -> dict:
        """``{"job_id", "status", "epochs": [{"epoch": 1, "loss": ..., ...}, ...]}``."""
        return self.request("GET", f"/jobs/{_q(job_id)}/history")

    def cancel_job(self, job_id: str) -> dict:
        """Cooperative cancel; the job ends at its next epoch boundary (409 once ended)."""
        return self.request("POST", f"/jobs/{_q(job_id)}/cancel")

    def wait_job(self, job_id: str, poll: float = 0.5, timeout: float | None = None,
                 on_update: Callable[[dict], None] | None = None,
                 unreachable_grace: float = 30.0) -> dict:
        """Poll until the job has ended; returns its final state.

        Args:
            poll: seconds between polls.
            timeout: give up after this many seconds (``TimeoutError``); None waits forever.
            on_update: called with the job after every poll, the final one included.
            unreachable_grace: keep polling through an unreachable service for this long
                (an API restart) before raising ``ServiceUnreachable``.
        """
        return self._wait(lambda: self.get_job(job_id), JOB_TERMINAL, f"job {job_id}", poll,
                          timeout, on_update, unreachable_grace)

    # --- sweeps -------------------------------------------------------------------------------

    def submit_sweep(self, spec: dict) -> dict:
        return self.request("POST", "/sweeps", json_body=spec)

    def get_sweep(self, sweep_id: str) -> dict:
        return self.request("GET", f"/sweeps/{_q(sweep_id)}")

    def list_sweeps(self, status: str | None = None, limit: int | None = None,
                    cursor: str | None = None) -> dict:
        """One page, newest first: ``{"sweeps": [...], "next_cursor": str | None}``."""
        return self.request("GET", "/sweeps", params={"status": status, "limit": limit,
                                                      "cursor": cursor})

    def iter_sweeps(self, status: str | None = None, page_size: int = 100) -> Iterator[dict]:
        return self._pages(self.list_sweeps, "sweeps", page_size, status=status)

    def cancel_sweep(self, sweep_id: str) -> dict:
        return self.request("POST", f"/sweeps/{_q(sweep_id)}/cancel")

    def wait_sweep(self, sweep_id: str, poll: float = 1.0, timeout: float | None = None,
                   on_update: Callable[[dict], None] | None = None,
                   unreachable_grace: float = 30.0) -> dict:
        """Poll until the sweep has ended; same arguments as :meth:`wait_job`."""
        return self._wait(lambda: self.get_sweep(sweep_id), SWEEP_TERMINAL, f"sweep {sweep_id}",
                          poll, timeout, on_update, unreachable_grace)

    # --- datasets and health ------------------------------------------------------------------

    def upload_dataset(self, path: str | os.PathLike, name: str | None = None) -> dict:
        """Upload a CSV file (multipart field ``file``); returns its id and column profile."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        filename = path.name.replace('"', "_")
        body = b"".join([
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: text/csv\r\n\r\n",
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        return self.request("POST", "/datasets", params={"name": name}, data=body,
                            content_type=f"multipart/form-data; boundary={boundary}")

    def list_datasets(self, limit: int | None = None) -> dict:
        return self.request("GET", "/datasets", params={"limit": limit})

    def get_dataset(self, dataset_id: str) -> dict:
        return self.request("GET", f"/datasets/{_q(dataset_id)}")

    def health(self) -> dict:
        """Database, broker and MLflow reachability. A degraded service (503) still returns the
        body, with ``status`` ``degraded``, rather than raising."""
        try:
            return self.request("GET", "/health")
        except ApiError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "components" in exc.body:
                return exc.body
            raise

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _pages(fetch: Callable[..., dict], key: str, page_size: int, **filters) -> Iterator[dict]:
        cursor = None
        while True:
            page = fetch(limit=page_size, cursor=cursor, **filters)
            yield from page[key]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    @staticmethod
    def _wait(fetch: Callable[[], dict], terminal: frozenset, what: str, poll: float,
              timeout: float | None, on_update: Callable[[dict], None] | None,
              unreachable_grace: float) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        down_since = None
        while True:
            try:
                item = fetch()
                down_since = None
            except ServiceUnreachable:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since >= unreachable_grace:
                    raise
                item = None
            if item is not None:
                if on_update is not None:
                    on_update(item)
                if item.get("status") in terminal:
                    return item
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{what} had not ended after {timeout:g} s")
            time.sleep(poll)


def _q(value: str) -> str:
    return urllib.parse.quote(str(value), safe="")


def _api_error(status: int, raw: bytes, reason: str) -> ApiError:
    """The API's error JSON as an ApiError; anything else (a proxy's HTML page) as best we can."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        details = err.get("details") if isinstance(err.get("details"), list) else []
        return ApiError(status, str(err.get("code") or "http_error"),
                        str(err.get("message") or reason), details, body)
    if isinstance(body, dict) and body.get("status") == "degraded":
        down = [f"{name}: {c.get('detail')}" for name, c in (body.get("components") or {}).items()
                if isinstance(c, dict) and not c.get("ok")]
        return ApiError(status, "degraded", "the service is degraded: " + "; ".join(down),
                        body=body)
    text = raw.decode("utf-8", "replace").strip()
    return ApiError(status, "http_error",
                    f"HTTP {status} {reason}" + (f": {text[:300]}" if text else ""), body=body)
