"""What the Keras backend sees, and whether it computes on the GPU, in the process that imports it.

:func:`detect` runs in the throwaway subprocess of the worker's GPU check (``python -m
worker.gpu --json``) or in the training child: it imports the backend, lists its GPUs and, when
there is one, runs a small dense layer on GPU 0, compiled (``relu(a @ b - 1)``: a matmul, which
is cuBLAS's, then a subtraction and a ReLU, which are the framework's own GPU kernels), and
compares the result with NumPy's (:func:`compute_check`). Listing a device proves little: a
driver too old for the wheel's PTX, a missing cuBLAS or a kernel that cannot be compiled for
this GPU shows only when something runs. TensorFlow runs it twice, as a graph
(``tf.function``) and compiled by XLA (``jit_compile=True``, what Keras's ``jit_compile``
uses); JAX and torch once (``jax.jit``, torch's eager kernels). The first-call times are kept:
on a GPU newer than the kernels the wheel carries (TensorFlow 2.21 on Hopper or newer) they
include the driver's PTX compilation.

The operands are small integers, so the result is exact in float32, TF32 and bfloat16 alike:
any difference from NumPy is a wrong result, not rounding.
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any, Callable

from worker.gpu.cuda_libs import loaded_cuda_libraries, loaded_versions

MATMUL_SIZE = 64


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


# --- the matmul ----------------------------------------------------------------------------------

def matmul_operands():
    """``a``, ``b`` (float32, 64 x 64, entries 0..6) and NumPy's exact ``relu(a @ b - 1)``
    (every 8th row of ``a`` is zero, so both sides of the ReLU are taken)."""
    import numpy as np

    n = MATMUL_SIZE
    a = (np.arange(n * n) % 7).reshape(n, n).astype(np.float32)
    a[::8] = 0
    b = np.ascontiguousarray((np.arange(n * n) % 5).reshape(n, n).astype(np.float32).T)
    return a, b, np.maximum(a @ b - 1, 0)


def _same(got, expected, what: str) -> None:
    import numpy as np

    got = np.asarray(got)
    if got.shape != expected.shape or not np.array_equal(got, expected):
        error = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else None
        raise ArithmeticError(f"{what} gave a wrong result (shape {got.shape}, largest error "
                              f"{error}); expected NumPy's exact product")


def compute_check(run: Callable[[], dict]) -> dict:
    """``run()`` (one backend's matmul on the GPU, returning its timings), as a verdict:
    ``{"ok": True, <timings>, "seconds"}`` or ``{"ok": False, "error": "<type>: <message>"}``."""
    t0 = time.perf_counter()
    try:
        timings = run()
    except Exception as exc:  # the verdict carries it: the worker refuses the gpu queue with it
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        text = " | ".join(lines[:3])[:600]
        return {"ok": False, "error": f"{type(exc).__name__}: {text}",
                "seconds": round(time.perf_counter() - t0, 3)}
    return {"ok": True, **timings, "seconds": round(time.perf_counter() - t0, 3)}


def tf_matmul(tf, device: str = "/GPU:0") -> dict:
    """A matmul on ``device`` as a ``tf.function`` graph and compiled by XLA, each compared
    with NumPy. Soft placement is off meanwhile, so TensorFlow raises instead of quietly running
    it on the CPU. Returns the first-call seconds of each."""
    a, b, expected = matmul_operands()
    soft = tf.config.get_soft_device_placement()
    tf.config.set_soft_device_placement(False)
    out: dict[str, float] = {}
    try:
        for label, jit in (("graph", False), ("xla", True)):
            with tf.device(device):
                fn = tf.function(lambda x, y: tf.nn.relu(tf.linalg.matmul(x, y) - 1.0),
                                 jit_compile=jit)
                t0 = time.perf_counter()
                result = fn(tf.constant(a), tf.constant(b))
                got = result.numpy()
            out[f"{label}_first_call_s"] = round(time.perf_counter() - t0, 3)
            where = device.lstrip("/").upper()
            if not result.device.upper().endswith(where):
                raise RuntimeError(f"TensorFlow ran the {label} matmul on {result.device}, "
                                   f"not {device}")
            _same(got, expected, f"TensorFlow's {label} matmul on {device}")
    finally:
        tf.config.set_soft_device_placement(soft)
    return out


def jax_matmul(jax, device) -> dict:
    """The jitted dense layer on ``device`` (a ``jax.Device``), compared with NumPy."""
    a, b, expected = matmul_operands()
    fn = jax.jit(lambda x, y: jax.nn.relu(x @ y - 1.0))
    x, y = jax.device_put(a, device), jax.device_put(b, device)
    t0 = time.perf_counter()
    result = fn(x, y).block_until_ready()
    seconds = round(time.perf_counter() - t0, 3)
    if set(result.devices()) != {device}:
        raise RuntimeError(f"JAX ran the matmul on {sorted(map(str, result.devices()))}, "
                           f"not {device}")
    _same(result, expected, f"JAX's jitted matmul on {device}")
    return {"xla_first_call_s": seconds}


def torch_matmul(torch, device: str = "cuda:0") -> dict:
    """The dense layer with torch's kernels on ``device``, compared with NumPy."""
    a, b, expected = matmul_operands()
    t0 = time.perf_counter()
    result = torch.relu(torch.from_numpy(a).to(device) @ torch.from_numpy(b).to(device) - 1.0)
    torch.cuda.synchronize(device)
    seconds = round(time.perf_counter() - t0, 3)
    _same(result.cpu().numpy(), expected, f"torch's matmul on {device}")
    return {"eager_first_call_s": seconds}


# --- the backends --------------------------------------------------------------------------------

def _loaded(info: dict) -> dict:
    """The CUDA libraries this process loaded and the versions they report (after the matmul:
    by then the backend has loaded what it trains with)."""
    libraries = loaded_cuda_libraries()
    info["cuda_libraries"] = libraries
    info.update(loaded_versions(libraries))
    return info


def _tensorflow() -> dict:
    import tensorflow as tf

    info: dict[str, Any] = {"framework_version": tf.__version__, "gpus": []}
    build = dict(tf.sysconfig.get_build_info())
    info["built_with_cuda"] = bool(build.get("is_cuda_build"))
    info["built_cuda_version"] = build.get("cuda_version")
    info["built_cudnn_version"] = build.get("cudnn_version")
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
    if gpus:
        info["compute"] = compute_check(lambda: tf_matmul(tf, "/GPU:0"))
    else:
        info["reason"] = ("TensorFlow registered no GPU" + (
            "" if info["built_with_cuda"] else
            f" (this TensorFlow, {dist_version('tensorflow-cpu', 'tensorflow')}, has no CUDA "
            "support: the GPU image installs tensorflow[and-cuda])"))
    return _loaded(info)


def _jax() -> dict:
    import jax

    info: dict[str, Any] = {"framework_version": jax.__version__, "gpus": [],
                            "built_with_cuda": dist_version("jax-cuda12-plugin") is not None}
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
    if devices:
        info["compute"] = compute_check(lambda: jax_matmul(jax, devices[0]))
    elif "reason" not in info:
        info["reason"] = (f"JAX sees only {sorted({d.platform for d in jax.devices()})}" + (
            "" if info["built_with_cuda"] else " (no jax-cuda12-plugin: the JAX GPU image "
            "installs jax[cuda12])"))
    return _loaded(info)


def _torch() -> dict:
    import torch

    info: dict[str, Any] = {"framework_version": torch.__version__, "gpus": [],
                            "built_cuda_version": torch.version.cuda,
                            "built_with_cuda": torch.version.cuda is not None}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": props.name,
                                 "memory_bytes": int(props.total_memory),
                                 "compute_capability": f"{props.major}.{props.minor}"})
        info["compute"] = compute_check(lambda: torch_matmul(torch, "cuda:0"))
    else:
        info["reason"] = "torch.cuda.is_available() is False"
    return _loaded(info)


def detect(backend: str | None = None) -> dict:
    """What ``backend`` (default: KERAS_BACKEND) sees, in this process: ``gpus`` (name, memory,
    compute capability), ``compute`` (the matmul's verdict on GPU 0, when there is a GPU), the
    CUDA libraries loaded and their versions, the versions the framework was built with, and
    ``reason`` when there is no GPU."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    probes = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
    base = {"backend": backend, "cpu": cpu_name(), "gpus": []}
    if backend not in probes:
        return {**base, "reason": f"unknown KERAS_BACKEND {backend!r} (tensorflow, jax, torch)"}
    try:
        return {**base, **probes[backend]()}
    except Exception as exc:  # the framework is missing or broken: no GPU, and why
        return {**base, "reason": f"importing {backend} failed: {type(exc).__name__}: {exc}"}
