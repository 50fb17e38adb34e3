"""Which device a worker trains on, and the GPU check of workers that consume the ``gpu`` queue.

No silent CPU fallback: a worker started with ``-Q gpu`` (or ``-Q cpu,gpu``) asks its Keras
backend, at start, whether it computes on a GPU: the backend lists its GPUs and runs a small
compiled dense layer (a matmul and a ReLU) on GPU 0, checked against NumPy
(worker/gpu/backends.py). With no GPU (no driver, no device handed to the container, a
CUDA/cuDNN mismatch that makes TensorFlow register none...) or a check that fails (a driver too
old for the wheel's PTX, a kernel that cannot be compiled for this GPU, a wrong result) it
stops consuming ``gpu`` before its consumer starts, logs an ERROR with the reason, keeps serving
its other queues and publishes the refusal (worker/presence.py -> the ``workers`` table ->
/api/v1/health). ``KERASYARD_REQUIRE_GPU=false`` turns the refusal off (development machines).

The check runs the backend in a subprocess (``python -m worker.gpu --json``): the Celery parent
must not import TensorFlow or JAX (a CUDA context or thread pool does not survive fork).

For the training code (the prefork child, where Keras is imported anyway):

    device_tags()     -> MLflow tags of the device this process trains on (``kerasyard.device``...)
    device_summary()  -> the same as a dict for the job (``summary["device"]``)
    device_name()     -> one line, e.g. "GPU 0: NVIDIA H100 80GB HBM3 (79.1 GiB, CUDA 12.5.82,
                         cuDNN 9.3.0.75, driver 570.86.15)" or "CPU: AMD EPYC 7B13"

The CUDA and cuDNN versions are those of the libraries the backend loaded (worker/gpu/cuda_libs.py),
not the ones it was built with (kept as ``built_cuda_version``, ``built_cudnn_version``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from worker.gpu.backends import MATMUL_SIZE, cpu_name, detect
from worker.gpu.cuda_libs import describe_loaded

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"
# Set in the Celery parent by check_worker(); forked children inherit it.
_WORKER_PROBE: dict | None = None
_LOCAL_PROBE: dict | None = None
# Backend log lines worth quoting in a refusal (TensorFlow's and the driver's own words).
_HINT_WORDS = ("dlopen", "cuDNN", "cudnn", "CUDA", "cuda", "driver", "PTX", "ptx")
# A first matmul slower than this compiled kernels at first use (PTX JIT): say so.
SLOW_FIRST_CALL_S = 10.0


# --- the check, from the Celery parent ---------------------------------------------------------

def probe(backend: str, timeout_s: float) -> dict:
    """:func:`detect` in a subprocess (``python -m worker.gpu --json``), with the backend's own
    log (TF_CPP_MIN_LOG_LEVEL=0) kept so a "Cannot dlopen some GPU libraries" or a driver's PTX
    error reaches the reason."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "0",
           "CUDA_MODULE_LOADING": os.environ.get("CUDA_MODULE_LOADING", "LAZY")}
    try:
        proc = subprocess.run([sys.executable, "-m", "worker.gpu", "--json"], env=env,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "gpus": [], "reason": (
            f"the GPU check ({backend}) took longer than {timeout_s:g} s "
            "(KERASYARD_GPU_PROBE_TIMEOUT_S); on a GPU newer than the kernels the framework "
            "ships (TensorFlow 2.21 on Hopper or newer) the driver compiles them from PTX at "
            "first use, which can take minutes: raise KERASYARD_GPU_PROBE_TIMEOUT_S, or use the "
            "JAX image (docs/deployment.md)")}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"backend": backend, "gpus": [], "reason": f"the GPU check ({backend}) exited "
                f"with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}"}
    info = json.loads(lines[-1])
    if not info.get("gpus") or not (info.get("compute") or {}).get("ok"):
        hints = [ln.strip() for ln in proc.stderr.splitlines()
                 if any(k in ln for k in _HINT_WORDS)]
        if hints:
            info["hints"] = " | ".join(h[-200:] for h in hints[-3:])
    return info


def describe(info: dict) -> str:
    """One line: the first GPU with memory and the loaded CUDA, cuDNN and driver versions, or
    the CPU."""
    versions = ", ".join(f"{k} {info[v]}" for k, v in (
        ("CUDA", "cuda_version"), ("cuDNN", "cudnn_version"), ("driver", "driver_version"))
        if info.get(v))
    if info.get("gpus"):
        gpu = info["gpus"][0]
        extra = [f"{gpu['memory_bytes'] / 2**30:.1f} GiB"] if gpu.get("memory_bytes") else []
        extra += [versions] if versions else []
        more = f" (+{len(info['gpus']) - 1} more)" if len(info["gpus"]) > 1 else ""
        return f"GPU {gpu['index']}: {gpu['name']}" + (f" ({', '.join(extra)})" if extra else "") \
            + more
    return f"CPU: {info.get('cpu') or cpu_name()}"


def refusal_reason(info: dict, backend: str) -> str | None:
    """Why the gpu queue is refused, or None when the backend computes on its GPU."""
    hints = f"; the backend said: {info['hints']}" if info.get("hints") else ""
    if not info.get("gpus"):
        return (f"no GPU visible to the Keras backend {backend}: "
                f"{info.get('reason', 'no GPU device')}{hints}")
    compute = info.get("compute")
    if compute is None:
        return (f"the Keras backend {backend} lists {describe(info)} but the GPU check ran no "
                "computation on it")
    if not compute.get("ok"):
        return (f"the Keras backend {backend} lists {describe(info)} but a matmul on it failed: "
                f"{compute.get('error')}{hints}. A driver older than the CUDA the framework was "
                "built with cannot compile its PTX (TensorFlow 2.21: CUDA 12.5, driver >= "
                "555.42.06; docs/deployment.md names each image's driver)")
    return None


def _log_device(info: dict, backend: str) -> None:
    compute = info["compute"]
    timings = ", ".join(f"{k.removesuffix('_first_call_s')} {v:g} s"
                        for k, v in compute.items() if k.endswith("_first_call_s"))
    log.info("GPU check: Keras backend %s trains on %s; a %dx%d dense layer (matmul, ReLU) on "
             "it matched NumPy's (first call: %s)", backend, describe(info), MATMUL_SIZE,
             MATMUL_SIZE, timings)
    log.info("GPU check: CUDA libraries loaded: %s%s", describe_loaded(info.get(
        "cuda_libraries") or {}), "; built with CUDA {}, cuDNN {}".format(
        info.get("built_cuda_version"), info.get("built_cudnn_version"))
        if info.get("built_cuda_version") else "")
    slowest = max((v for k, v in compute.items() if k.endswith("_first_call_s")), default=0)
    if slowest > SLOW_FIRST_CALL_S:
        log.warning("GPU check: the first matmul took %.0f s: the driver compiled the kernels "
                    "from PTX (this GPU is newer than the framework's kernels); every new kernel "
                    "a training uses pays this once per process unless the CUDA cache keeps it "
                    "(docs/deployment.md, \"The GPU image\")", slowest)
    for gpu in info["gpus"][1:]:
        log.info("GPU check: also visible: GPU %s: %s", gpu["index"], gpu["name"])


def check_worker(queues: list[str], backend: str, require_gpu: bool,
                 timeout_s: float) -> tuple[dict | None, dict[str, str]]:
    """The probe result (None when ``gpu`` is not consumed) and the queues to refuse, each with
    its reason. Logs the device, or an ERROR when the gpu queue is refused."""
    global _WORKER_PROBE
    if GPU_QUEUE not in queues:
        return None, {}
    info = probe(backend, timeout_s)
    _WORKER_PROBE = info
    reason = refusal_reason(info, backend)
    if reason is None:
        _log_device(info, backend)
        return info, {}
    if not require_gpu:
        log.warning("GPU check: %s; KERASYARD_REQUIRE_GPU=false, so this worker trains gpu jobs "
                    "on the CPU", reason)
        return info, {}
    others = [q for q in queues if q != GPU_QUEUE]
    log.error("GPU check: %s. This worker refuses the %r queue (it will not train gpu jobs on a "
              "CPU)%s. Check the NVIDIA driver (nvidia-smi; docs/deployment.md names the driver "
              "each image needs), the device reservation (docker-compose.yml "
              "deploy.resources.reservations) and the image's CUDA/cuDNN.",
              reason, GPU_QUEUE,
              f" and keeps serving {', '.join(others)}" if others else
              "; it consumes no queue until restarted on a host with a GPU")
    return info, {GPU_QUEUE: reason}


# --- what the training code records -----------------------------------------------------------

def _current() -> dict:
    """The device of this process: the worker's check when there was one (inherited through
    fork), otherwise :func:`detect` here (cached; the training child imports Keras anyway)."""
    global _LOCAL_PROBE
    if _WORKER_PROBE is not None and _WORKER_PROBE.get("gpus") and \
            refusal_reason(_WORKER_PROBE, _WORKER_PROBE.get("backend", "")) is None:
        return _WORKER_PROBE
    if _LOCAL_PROBE is None:
        _LOCAL_PROBE = detect()
    return _LOCAL_PROBE


def device_name() -> str:
    return describe(_current())


def device_summary() -> dict:
    """For the job (``summary["device"]``): type, name, memory, the loaded CUDA/cuDNN and the
    driver, backend."""
    info = _current()
    gpu = (info.get("gpus") or [None])[0]
    return {"type": "gpu" if gpu else "cpu", "name": gpu["name"] if gpu else info.get("cpu"),
            "description": describe(info),
            "memory_bytes": gpu.get("memory_bytes") if gpu else None,
            "cuda_version": info.get("cuda_version") if gpu else None,
            "cudnn_version": info.get("cudnn_version") if gpu else None,
            "driver_version": info.get("driver_version") if gpu else None,
            "backend": info.get("backend")}


def device_tags() -> dict[str, str]:
    """MLflow tags of the device, to add to the run's tags when it is created."""
    summary = device_summary()
    tags = {"kerasyard.device": summary["description"], "kerasyard.device_type": summary["type"]}
    for key in ("cuda_version", "cudnn_version", "driver_version"):
        if summary.get(key):
            tags[f"kerasyard.{key}"] = str(summary[key])
    return tags


