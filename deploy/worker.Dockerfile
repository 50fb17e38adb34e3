# The data plane: a Celery worker that trains with Keras 3. One Dockerfile, three images
# (docker-compose.yml builds them), all on python:3.11-slim; WORKER_VARIANT picks the framework:
#
#   cpu   pyproject.toml's worker extra as declared (tensorflow-cpu on x86_64)    worker-cpu
#   cuda  the worker extra minus tensorflow-cpu, plus the `cuda` extra:            worker-gpu
#         tensorflow[and-cuda]==<pinned>, its CUDA, cuDNN, cuBLAS, NCCL... (the nvidia-* wheels)
#         pinned exactly by deploy/constraints/cuda.txt to the versions that TensorFlow release
#         was built and tested with (CUDA 12.5.1, cuDNN 9.3.0 for 2.21.0). No CUDA in the base
#         image, so no mismatch: tensorflow/tensorflow:2.21.0-gpu shipped CUDA 12.3 / cuDNN 8.9
#         while TF 2.21 needs cuDNN >= 9.3, and TensorFlow then registered no GPU at all (and its
#         Ubuntu 22.04 has apt's distutils blinker 1.4, which pip cannot uninstall for Flask 3.1).
#   jax   the worker extra plus the `jax-cuda` extra (jax[cuda12]==<pinned>), its nvidia-* wheels
#         pinned by deploy/constraints/jax-cuda.txt to the versions that JAX release was built
#         with (CUDA 12.9.1, cuDNN 9.8.0 for 0.10.2); KERAS_BACKEND=jax.         worker-gpu-jax
#
# Without the constraints pip would take the newest wheels the extras' ranges allow (CUDA 12.9
# and cuDNN 9.28 for TensorFlow when this was written). Only the host's NVIDIA driver comes from
# outside (the NVIDIA Container Toolkit mounts it); docs/deployment.md names the driver each
# image needs. The build ends with a smoke test (python -m worker.gpu --smoke: the variant's
# imports, its CUDA plugin, and every pin installed as pinned); the worker checks at start that
# its backend computes on a GPU when it consumes the gpu queue (worker/gpu/) and refuses gpu
# jobs when it does not.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# An ARG declared before FROM is out of scope after it unless declared again.
ARG BASE_IMAGE
ARG WORKER_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    XLA_PYTHON_CLIENT_PREALLOCATE=false \
    MPLBACKEND=Agg

WORKDIR /app

COPY pyproject.toml ./
COPY deploy/requirements.py deploy/requirements.py
COPY deploy/constraints/ deploy/constraints/
RUN python3 -c "import sys; assert sys.version_info >= (3, 11), sys.version" \
      || { echo "BASE_IMAGE=${BASE_IMAGE} has no Python >= 3.11 (python3: $(python3 --version 2>&1))" >&2; exit 1; }; \
    case "$WORKER_VARIANT" in \
      cpu)  python3 deploy/requirements.py --extra worker > /tmp/requirements.txt \
            && : > /tmp/pins.txt ;; \
      cuda) python3 deploy/requirements.py --extra worker --without tensorflow --without tensorflow-cpu > /tmp/requirements.txt \
            && python3 deploy/requirements.py --no-base --extra cuda >> /tmp/requirements.txt \
            && cp deploy/constraints/cuda.txt /tmp/pins.txt ;; \
      jax)  python3 deploy/requirements.py --extra worker > /tmp/requirements.txt \
            && python3 deploy/requirements.py --no-base --extra jax-cuda >> /tmp/requirements.txt \
            && cp deploy/constraints/jax-cuda.txt /tmp/pins.txt ;; \
      *)    echo "WORKER_VARIANT=${WORKER_VARIANT} is not one of cpu, cuda, jax (BASE_IMAGE=${BASE_IMAGE})" >&2; exit 1 ;; \
    esac \
 && python3 deploy/requirements.py --no-base --extra mlflow-server | grep -E '^mlflow' | sed 's/\[auth\]//' > /tmp/constraints.txt \
 && cat /tmp/pins.txt >> /tmp/constraints.txt \
 && cat /tmp/requirements.txt /tmp/constraints.txt \
 && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps -e . \
 && pip check \
 && python3 -m worker.gpu --smoke "$WORKER_VARIANT" --pins /tmp/pins.txt

RUN useradd --system --create-home --uid 10001 kerasyard
USER kerasyard
# Prefork, one training per child; GPU workers also recycle the child after every task, since
# TensorFlow never gives GPU memory back. docker-compose.yml sets the queue and concurrency.
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "cpu", "--pool", "prefork", \
     "--concurrency", "1", "--loglevel", "INFO"]
