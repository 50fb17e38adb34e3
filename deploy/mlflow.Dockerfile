# The MLflow tracking server: PostgreSQL backend store (psycopg 3), artifacts on a volume,
# served through the server (--serve-artifacts) so workers need no access to the volume, behind
# MLflow's basic-auth app (docker-compose.yml: --app-name basic-auth, deploy/mlflow/).
# The version is pyproject.toml's `mlflow-server` extra, an exact pin: a rebuild never moves the
# server past its database schema, and the worker images take the same pin as a constraint.
# It also runs the stack's settings check (compose's `preflight`: /etc/mlflow/preflight.py, the
# standard library only) and starts the server through /etc/mlflow/serve.py, which adds the
# normalised CORS origins (MLFLOW_CORS_ORIGINS).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true

COPY pyproject.toml /tmp/kerasyard/pyproject.toml
COPY deploy/requirements.py /tmp/kerasyard/deploy/requirements.py
RUN python /tmp/kerasyard/deploy/requirements.py --no-base --extra mlflow-server \
      > /tmp/mlflow-requirement.txt \
 && grep -qE '^mlflow(\[auth\])?==[0-9]' /tmp/mlflow-requirement.txt \
      || { echo "pyproject.toml's mlflow-server extra must pin mlflow[auth]==<version> (PYTHON_IMAGE=${PYTHON_IMAGE}):" >&2; cat /tmp/mlflow-requirement.txt >&2; exit 1; } \
 && pip install -r /tmp/mlflow-requirement.txt \
 && rm -rf /tmp/kerasyard

COPY deploy/mlflow/ /etc/mlflow/
RUN useradd --system --create-home --uid 10001 mlflow \
 && mkdir -p /mlartifacts /mlauth && chown mlflow:mlflow /mlartifacts /mlauth
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--app-name", "basic-auth"]
