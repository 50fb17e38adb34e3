# The MLflow tracking server: PostgreSQL backend store (psycopg 3), artifacts on a volume,
# served through the server (--serve-artifacts) so workers need no access to the volume.
# The MLflow version range is the worker extra's in pyproject.toml, so client and server agree.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true

COPY pyproject.toml /tmp/kerasyard/pyproject.toml
COPY deploy/requirements.py /tmp/kerasyard/deploy/requirements.py
RUN python /tmp/kerasyard/deploy/requirements.py --extra worker | grep -E '^mlflow([<>=!~ ;]|$)' \
      > /tmp/mlflow-requirement.txt \
 && test -s /tmp/mlflow-requirement.txt \
 && pip install -r /tmp/mlflow-requirement.txt "psycopg[binary]>=3.1,<4" \
 && rm -rf /tmp/kerasyard

RUN useradd --system --create-home --uid 10001 mlflow \
 && mkdir -p /mlartifacts && chown mlflow:mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
