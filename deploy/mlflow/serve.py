"""Start the MLflow tracking server with its CORS origins normalised: the `mlflow` service.

    python /etc/mlflow/serve.py server --app-name basic-auth --host 0.0.0.0 ...

Runs ``python -m mlflow <the arguments>`` in its place (exec: MLflow gets the signals), adding
``--cors-allowed-origins`` from MLFLOW_CORS_ORIGINS, or from MLFLOW_UI_URL when that is empty.
MLflow compares a browser's Origin header with each entry as an exact string, and an Origin is
``scheme://host[:port]`` with no trailing slash, so ``https://mlflow.example.com/`` as written in
.env would block every request from the UI it names; preflight.py's :func:`mlflow_cors_origins`
turns the list into origins (and `preflight` has already refused one that is not a URL).
"""

from __future__ import annotations

import os
import sys

from preflight import mlflow_cors_origins  # beside this file, in the image and in the repository


def command(argv: list[str], env) -> list[str]:
    """The argv that replaces this process."""
    origins, problems = mlflow_cors_origins(env)
    if problems:
        raise SystemExit("serve: " + "; ".join(problems))
    if "--cors-allowed-origins" in argv:
        raise SystemExit("serve: pass the CORS origins in MLFLOW_CORS_ORIGINS, not "
                         "--cors-allowed-origins (this script sets it)")
    return [sys.executable, "-m", "mlflow", *argv, "--cors-allowed-origins", ",".join(origins)]


if __name__ == "__main__":
    args = command(sys.argv[1:], os.environ)
    print(f"serve: mlflow accepts browser requests from {args[-1]}", flush=True)
    os.execv(sys.executable, args)
