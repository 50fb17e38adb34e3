"""Which device a worker trains on, and the GPU check of workers that consume the ``gpu`` queue.

No silent CPU fallback: a worker started with ``-Q gpu`` (or ``-Q cpu,gpu``) asks its Keras
backend, at start, whether it sees a GPU. With none (no driver, no device handed to the
container, a CUDA/cuDNN mismatch that makes TensorFlow register no GPU...) it stops consuming
``gpu`` before its consumer starts, logs an ERROR with the reason, keeps serving its other queues
and publishes the refusal (worker/presence.py -> the ``workers`` table -> /api/v1/health).
``KERASYARD_REQUIRE_GPU=false`` turns the refusal off (development machines).

The check runs the backend in a subprocess (``python -m worker.gpu``): the Celery parent must not
import TensorFlow or JAX (a CUDA context or thread pool does not survive fork).

For the training code (the prefork child, where Keras is imported anyway):

    device_tags()     -> MLflow tags of the device this process trains on (``kerasyard.device``...)
    device_summary()  -> the same as a dict for the job (``summary["device"]``)
    device_name()     -> one line, e.g. "GPU 0: NVIDIA H100 80GB HBM3 (79.1 GiB, CUDA 12.5.1,
                         cuDNN 9)" or "CPU: AMD EPYC 7B13"
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"
# Set in the Celery parent by check_worker(); forked children inherit it.
_WORKER_PROBE: dict | None = None
_LOCAL_PROBE: dict | None = None


# --- detection, inside the process that imports the backend --------------------------------------

def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _dist_version(*names: str) -> str | None:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _tensorflow() -> dict:
    import tensorflow as tf

    info: dict[str, Any] = {"framework_version": tf.__version__, "gpus": []}
    build = dict(tf.sysconfig.get_build_info())
    info["built_with_cuda"] = bool(build.get("is_cuda_build"))
    info["cuda_version"] = build.get("cuda_version")
    info["cudnn_version"] = build.get("cudnn_version")
    gpus = tf.config.list_physical_devices("GPU")
    memory: dict[str, int] = {}
    if gpus:
        try:  # creates the devices (this is a throwaway process); memory_limit in bytes
            from tensorflow.python.client import device_lib

            for dev in device_lib.list_local_devices():
                if dev.device_type == "GPU":
                    memory[dev.name.rsplit("/device:", 1)[-1]] = int(dev.memory_limit)
        except Exception as exc:  # the names still tell which GPU
            info["memory_error"] = f"{type(exc).__name__}: {exc}"
    for i, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu) or {}
        cc = details.get("compute_capability")
        info["gpus"].append({"index": i, "name": details.get("device_name") or gpu.name,
                             "memory_bytes": memory.get(f"GPU:{i}"),
                             "compute_capability": ".".join(map(str, cc)) if cc else None})
    if not gpus:
        info["reason"] = ("TensorFlow registered no GPU" + (
            "" if info["built_with_cuda"] else
            f" (this TensorFlow, {_dist_version('tensorflow-cpu', 'tensorflow')}, has no CUDA "
            "support: the GPU image installs tensorflow[and-cuda])"))
    return info


def _jax() -> dict:
    import jax

    info: dict[str, Any] = {"framework_version": jax.__version__, "gpus": [],
                            "cuda_version": _dist_version("nvidia-cuda-runtime-cu12"),
                            "cudnn_version": _dist_version("nvidia-cudnn-cu12"),
                            "built_with_cuda": _dist_version("jax-cuda12-plugin") is not None}
    try:
        devices = [d for d in jax.devices() if d.platform in ("gpu", "cuda")]
    except RuntimeError as exc:
        devices, info["reason"] = [], f"JAX: {exc}"
    for i, dev in enumerate(devices):
        try:
            limit = (dev.memory_stats() or {}).get("bytes_limit")
        except Exception:
            limit = None
        info["gpus"].append({"index": i, "name": dev.device_kind, "memory_bytes": limit,
                             "compute_capability": getattr(dev, "compute_capability", None)})
    if not devices and "reason" not in info:
        info["reason"] = (f"JAX sees only {sorted({d.platform for d in jax.devices()})}" + (
            "" if info["built_with_cuda"] else " (no jax-cuda12-plugin: the JAX GPU image "
            "installs jax[cuda12])"))
    return info


def _torch() -> dict:
    import torch

    info: dict[str, Any] = {"framework_version": torch.__version__, "gpus": [],
                            "cuda_version": torch.version.cuda,
                            "cudnn_version": str(torch.backends.cudnn.version() or "") or None,
                            "built_with_cuda": torch.version.cuda is not None}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": props.name,
                                 "memory_bytes": int(props.total_memory),
                                 "compute_capability": f"{props.major}.{props.minor}"})
    else:
        info["reason"] = "torch.cuda.is_available() is False"
    return info


def detect(backend: str | None = None) -> dict:
    """What ``backend`` (default: KERAS_BACKEND) sees, in this process: ``gpus`` (name, memory,
    compute capability), CUDA and cuDNN versions, and ``reason`` when there is no GPU."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    probes = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
    base = {"backend": backend, "cpu": _cpu_name(), "gpus": []}
    if backend not in probes:
        return {**base, "reason": f"unknown KERAS_BACKEND {backend!r} (tensorflow, jax, torch)"}
    try:
        return {**base, **probes[backend]()}
    except Exception as exc:  # the framework is missing or broken: no GPU, and why
        return {**base, "reason": f"importing {backend} failed: {type(exc).__name__}: {exc}"}


# --- the check, from the Celery parent ---------------------------------------------------------

def probe(backend: str, timeout_s: float) -> dict:
    """:func:`detect` in a subprocess (``python -m worker.gpu``), with the backend's own log
    (TF_CPP_MIN_LOG_LEVEL=0) kept so a "Cannot dlopen some GPU libraries" reaches the reason."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "0",
           "CUDA_MODULE_LOADING": os.environ.get("CUDA_MODULE_LOADING", "LAZY")}
    try:
        proc = subprocess.run([sys.executable, "-m", "worker.gpu", "--json"], env=env,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "gpus": [], "reason": f"the GPU check ({backend}) took "
                f"longer than {timeout_s:g} s (KERASYARD_GPU_PROBE_TIMEOUT_S)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"backend": backend, "gpus": [], "reason": f"the GPU check ({backend}) exited "
                f"with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}"}
    info = json.loads(lines[-1])
    if not info.get("gpus"):
        hints = [ln.strip() for ln in proc.stderr.splitlines()
                 if any(k in ln for k in ("dlopen", "cuDNN", "cudnn", "CUDA", "cuda", "driver"))]
        if hints:
            info["reason"] = f"{info.get('reason', 'no GPU')}; the backend said: " + \
                " | ".join(h[-200:] for h in hints[-3:])
    return info


def describe(info: dict) -> str:
    """One line: the first GPU with memory and CUDA/cuDNN versions, or the CPU."""
    versions = ", ".join(f"{k} {info[v]}" for k, v in (("CUDA", "cuda_version"),
                                                      ("cuDNN", "cudnn_version")) if info.get(v))
    if info.get("gpus"):
        gpu = info["gpus"][0]
        extra = [f"{gpu['memory_bytes'] / 2**30:.1f} GiB"] if gpu.get("memory_bytes") else []
        extra += [versions] if versions else []
        more = f" (+{len(info['gpus']) - 1} more)" if len(info["gpus"]) > 1 else ""
        return f"GPU {gpu['index']}: {gpu['name']}" + (f" ({', '.join(extra)})" if extra else "") \
            + more
    return f"CPU: {info.get('cpu') or _cpu_name()}"


def check_worker(queues: list[str], backend: str, require_gpu: bool,
                 timeout_s: float) -> tuple[dict | None, dict[str, str]]:
    """The probe result (None when ``gpu`` is not consumed) and the queues to refuse, each with
    its reason. Logs the device, or an ERROR when the gpu queue is refused."""
    global _WORKER_PROBE
    if GPU_QUEUE not in queues:
        return None, {}
    info = probe(backend, timeout_s)
    _WORKER_PROBE = info
    if info.get("gpus"):
        log.info("GPU check: Keras backend %s trains on %s", backend, describe(info))
        for gpu in info["gpus"][1:]:
            log.info("GPU check: also visible: GPU %s: %s", gpu["index"], gpu["name"])
        return info, {}
    reason = (f"no GPU visible to the Keras backend {backend}: "
              f"{info.get('reason', 'no GPU device')}")
    if not require_gpu:
        log.warning("GPU check: %s; KERASYARD_REQUIRE_GPU=false, so this worker trains gpu jobs "
                    "on the CPU", reason)
        return info, {}
    others = [q for q in queues if q != GPU_QUEUE]
    log.error("GPU check: %s. This worker refuses the %r queue (it will not train gpu jobs on a "
              "CPU)%s. Check the NVIDIA driver (nvidia-smi), the device reservation "
              "(docker-compose.yml deploy.resources.reservations) and the image's CUDA/cuDNN.",
              reason, GPU_QUEUE,
              f" and keeps serving {', '.join(others)}" if others else
              "; it consumes no queue until restarted on a host with a GPU")
    return info, {GPU_QUEUE: reason}


# --- what the training code records -----------------------------------------------------------

def _current() -> dict:
    """The device of this process: the worker's check when there was one (inherited through
    fork), otherwise :func:`detect` here (cached; the training child imports Keras anyway)."""
    global _LOCAL_PROBE
    if _WORKER_PROBE is not None and _WORKER_PROBE.get("gpus"):
        return _WORKER_PROBE
    if _LOCAL_PROBE is None:
        _LOCAL_PROBE = detect()
    return _LOCAL_PROBE


def device_name() -> str:
    return describe(_current())


def device_summary() -> dict:
    """For the job (``summary["device"]``): type, name, memory, CUDA/cuDNN, backend."""
    info = _current()
    gpu = (info.get("gpus") or [None])[0]
    return {"type": "gpu" if gpu else "cpu", "name": gpu["name"] if gpu else info.get("cpu"),
            "description": describe(info),
            "memory_bytes": gpu.get("memory_bytes") if gpu else None,
            "cuda_version": info.get("cuda_version") if gpu else None,
            "cudnn_version": info.get("cudnn_version") if gpu else None,
            "backend": info.get("backend")}


def device_tags() -> dict[str, str]:
    """MLflow tags of the device, to add to the run's tags when it is created."""
    summary = device_summary()
    tags = {"kerasyard.device": summary["description"], "kerasyard.device_type": summary["type"]}
    for key in ("cuda_version", "cudnn_version"):
        if summary.get(key):
            tags[f"kerasyard.{key}"] = str(summary[key])
    return tags


if __name__ == "__main__":
    if "--json" in sys.argv:
        print(json.dumps(detect()), flush=True)
    else:
        result = detect()
        print(describe(result))
        if not result.get("gpus"):
            print(f"no GPU: {result.get('reason')}")
