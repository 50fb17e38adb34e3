# The data plane: a Celery worker that trains with Keras 3 on TensorFlow. One Dockerfile, two
# images (docker-compose.yml builds both):
#
#   GPU: BASE_IMAGE=tensorflow/tensorflow:<ver>-gpu  TENSORFLOW_FROM_BASE=1
#        TensorFlow (with CUDA and cuDNN) comes from the base image; pyproject.toml's worker
#        extra is installed without its tensorflow/tensorflow-cpu lines, which would overwrite it.
#   CPU: BASE_IMAGE=python:3.11-slim  TENSORFLOW_FROM_BASE=0
#        the worker extra as pyproject.toml declares it (tensorflow-cpu on x86_64).
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}
ARG TENSORFLOW_FROM_BASE=1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    MPLBACKEND=Agg

WORKDIR /app

COPY pyproject.toml ./
COPY deploy/requirements.py deploy/requirements.py
RUN python3 -c "import tomllib" 2>/dev/null || pip install tomli; \
    if [ "$TENSORFLOW_FROM_BASE" = 1 ]; then \
      python3 -c "import tensorflow" || { echo "TENSORFLOW_FROM_BASE=1 but $BASE_IMAGE has no TensorFlow" >&2; exit 1; }; \
      skip="--without tensorflow --without tensorflow-cpu"; \
    else skip=""; fi; \
    python3 deploy/requirements.py --extra worker $skip > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps -e . \
 && python3 -c "import tensorflow as tf, keras, mlflow; \
print('tensorflow', tf.__version__, 'keras', keras.__version__, 'mlflow', mlflow.__version__)"

RUN useradd --system --create-home --uid 10001 kerasyard
USER kerasyard
# Prefork, one training per child; GPU workers also recycle the child after every task, since
# TensorFlow never gives GPU memory back. docker-compose.yml sets the queue and concurrency.
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "cpu", "--pool", "prefork", \
     "--concurrency", "1", "--loglevel", "INFO"]
