"""Create (or re-password) the MLflow users of kerasyard's services through the basic-auth REST API.

docker-compose.yml runs it once as `mlflow-init`, after `mlflow` is healthy and before the
workers start:

    python /etc/mlflow/create_users.py

Environment:
    MLFLOW_TRACKING_URI           the server, e.g. http://mlflow:5000
    MLFLOW_AUTH_ADMIN_USERNAME    the admin the server created on its first start
    MLFLOW_AUTH_ADMIN_PASSWORD
    MLFLOW_WORKER_USERNAME        the workers' user (not an admin): created when missing, its
    MLFLOW_WORKER_PASSWORD        password set to this one when it exists (a rotation in .env)

Standard library only (it runs in the MLflow image and in the tests). Never prints a password.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def _need(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"create_users: environment variable {name} is empty or unset")
    return value


class Admin:
    def __init__(self, url: str, username: str, password: str):
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None,
             query: dict | None = None) -> tuple[int, str]:
        url = f"{self.url}/api/2.0/mlflow/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(2)
    raise SystemExit(f"create_users: MLflow at {url} not healthy after {timeout_s:.0f} s ({last})")


def ensure_user(admin: Admin, username: str, password: str) -> str:
    """'created' or 'updated'; raises SystemExit with the server's answer on anything else."""
    status, text = admin.call("GET", "users/get", query={"username": username})
    if status == 401:
        raise SystemExit("create_users: MLflow refused the admin credentials (401): "
                         "MLFLOW_ADMIN_USERNAME / MLFLOW_ADMIN_PASSWORD in .env must be the ones "
                         "the auth database was created with (they are read on its first start "
                         "only)")
    if status == 200:
        status, text = admin.call("PATCH", "users/update-password",
                                  {"username": username, "password": password})
        action = "updated"
    elif status == 404:
        status, text = admin.call("POST", "users/create",
                                  {"username": username, "password": password})
        action = "created"
    if status != 200:
        raise SystemExit(f"create_users: user {username!r}: HTTP {status}: {text[:300]}")
    return action


def main() -> None:
    url = _need("MLFLOW_TRACKING_URI")
    admin_user = _need("MLFLOW_AUTH_ADMIN_USERNAME")
    admin = Admin(url, admin_user, _need("MLFLOW_AUTH_ADMIN_PASSWORD"))
    worker_user = _need("MLFLOW_WORKER_USERNAME")
    worker_password = _need("MLFLOW_WORKER_PASSWORD")
    if worker_user == admin_user:
        raise SystemExit(f"create_users: MLFLOW_WORKER_USERNAME={worker_user!r} is the admin; "
                         "give the workers a user of their own")
    wait_healthy(url, float(os.environ.get("MLFLOW_INIT_TIMEOUT_S", "300")))
    action = ensure_user(admin, worker_user, worker_password)
    print(f"create_users: MLflow user {worker_user!r} {action}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
