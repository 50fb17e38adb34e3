"""The CUDA libraries this process has loaded, and which versions they are.

A framework's build info says what it was compiled against (``tf.sysconfig.get_build_info()``:
CUDA 12.5.1, cuDNN 9); what runs is whatever the dynamic loader found. This reads the shared
objects mapped into the process (``/proc/self/maps``), keeps the CUDA ones, and names each by
the ``nvidia-*`` wheel that installed that very file (its ``RECORD``) and that wheel's version:
``libcudnn.so.9`` from ``nvidia-cudnn-cu12`` 9.3.0.75. The driver (``libcuda.so``) comes from the
host, not from a wheel; its version is in the file's own name (``libcuda.so.570.86.15``).

A process that loaded no CUDA library (a CPU worker, or before the backend touched the GPU)
gets ``{}``: "none loaded".
"""

from __future__ import annotations

import os
import re
from importlib import metadata

# The libraries a Keras backend loads to train on an NVIDIA GPU, by their name up to ".so".
CUDA_LIBRARIES = {
    "libcuda": "driver",
    "libcudart": "CUDA runtime",
    "libcudnn": "cuDNN",
    "libcublas": "cuBLAS",
    "libcublasLt": "cuBLASLt",
    "libcufft": "cuFFT",
    "libcurand": "cuRAND",
    "libcusolver": "cuSOLVER",
    "libcusparse": "cuSPARSE",
    "libnccl": "NCCL",
    "libnvrtc": "NVRTC",
    "libnvJitLink": "nvJitLink",
    "libcupti": "CUPTI",
    "libnvshmem_host": "NVSHMEM",
}
_DRIVER_FILE = re.compile(r"^libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")


def mapped_libraries(maps_text: str) -> dict[str, str]:
    """``{"libcudnn": "/…/libcudnn.so.9", …}``: the CUDA libraries among the files mapped in a
    ``/proc/<pid>/maps`` text (the first path of each)."""
    found: dict[str, str] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path = parts[5].strip()
        stem = os.path.basename(path).split(".so", 1)[0]
        if stem in CUDA_LIBRARIES and ".so" in os.path.basename(path):
            found.setdefault(stem, path)
    return found


def _owners(paths: set[str], dists) -> dict[str, tuple[str, str]]:
    """``{path: (distribution, version)}`` for the paths an ``nvidia-*`` distribution's RECORD
    lists (compared by real path)."""
    wanted = {os.path.realpath(p): p for p in paths}
    owners: dict[str, tuple[str, str]] = {}
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if not name.startswith("nvidia-"):
            continue
        for file in dist.files or ():
            if ".so" not in file.name:
                continue
            real = os.path.realpath(str(dist.locate_file(file)))
            if real in wanted:
                owners[wanted[real]] = (name, dist.version)
    return owners


def loaded_cuda_libraries(maps_path: str = "/proc/self/maps", dists=None) -> dict[str, dict]:
    """The CUDA libraries mapped into the process: ``{"libcudnn": {"library": "cuDNN", "path":
    …, "package": "nvidia-cudnn-cu12", "version": "9.3.0.75"}, "libcuda": {"library": "driver",
    "path": …, "package": None, "version": "570.86.15"}, …}``; ``{}`` when none is.

    ``dists`` defaults to the installed distributions (``importlib.metadata``).
    """
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as f:
            mapped = mapped_libraries(f.read())
    except OSError:  # not Linux: nothing to tell
        return {}
    if not mapped:
        return {}
    owners = _owners(set(mapped.values()),
                     metadata.distributions() if dists is None else dists)
    out: dict[str, dict] = {}
    for stem, path in sorted(mapped.items()):
        package, version = owners.get(path, (None, None))
        if stem == "libcuda":
            match = _DRIVER_FILE.match(os.path.basename(os.path.realpath(path)))
            version = match.group(1) if match else None
        out[stem] = {"library": CUDA_LIBRARIES[stem], "path": path, "package": package,
                     "version": version}
    return out


def loaded_versions(libraries: dict[str, dict]) -> dict[str, str | None]:
    """The versions the device tags report, from :func:`loaded_cuda_libraries`: the CUDA
    runtime's and cuDNN's wheel versions and the driver's, ``None`` for what was not loaded."""
    def version(stem: str) -> str | None:
        return (libraries.get(stem) or {}).get("version")

    return {"cuda_version": version("libcudart"), "cudnn_version": version("libcudnn"),
            "driver_version": version("libcuda")}


def describe_loaded(libraries: dict[str, dict]) -> str:
    """One line for the log: ``nvidia-cudnn-cu12 9.3.0.75 (cuDNN), …, driver 570.86.15``, or
    ``none loaded``."""
    if not libraries:
        return "none loaded"
    parts = []
    for stem, lib in sorted(libraries.items()):
        if stem == "libcuda":
            parts.append(f"driver {lib['version'] or os.path.basename(lib['path'])}")
        elif lib["package"]:
            parts.append(f"{lib['package']} {lib['version']} ({lib['library']})")
        else:
            parts.append(f"{lib['library']} from {lib['path']} (no nvidia-* wheel owns it)")
    return ", ".join(parts)
