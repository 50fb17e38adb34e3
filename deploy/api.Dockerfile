# The control plane: the Flask API (gunicorn), `python -m service.migrate`, nothing else.
# No TensorFlow, no Keras: only pyproject.toml's base dependencies are installed, and the build
# fails if a deep-learning framework slipped in through one of them.
#
#   docker build -f deploy/api.Dockerfile -t kerasyard-api .     (docker-compose.yml does this)
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml ./
COPY deploy/requirements.py deploy/requirements.py
RUN python deploy/requirements.py > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY . .
# Editable: service.migrate finds alembic.ini and migrations/ next to the package, in /app.
RUN pip install --no-deps -e . \
 && python -c "import importlib.util as u, sys; \
bad = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if u.find_spec(m)]; \
sys.exit(f'the API image must not contain {bad}' if bad else 0)"

RUN useradd --system --create-home --uid 10001 kerasyard
USER kerasyard
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "service.wsgi:app"]
