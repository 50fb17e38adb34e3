"""The worker images' build-time smoke test: ``python -m worker.gpu --smoke VARIANT [--pins FILE]``.

deploy/worker.Dockerfile runs it as the last step of each image's build, where there is no GPU:
it proves that the image holds what its variant trains with, not that a GPU computes (the
worker's start-up check does that, worker/gpu/backends.py).

    cpu    imports TensorFlow, Keras and MLflow
    cuda   the same, and TensorFlow must be a CUDA build (tensorflow[and-cuda], not -cpu)
    jax    imports JAX, its CUDA plugin (jax_cuda12_plugin, and jax_plugins.xla_cuda12 with the
           PJRT library it loads), Keras and MLflow; the plugin's and jaxlib's versions must be
           JAX's own

``--pins FILE``: every ``name==version`` line of a constraints file (deploy/constraints/) must be
installed at exactly that version: a pin whose name is wrong would otherwise constrain nothing.

Prints what it found; exits 1 naming each problem.
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata
from pathlib import Path

VARIANTS = {
    "cpu": ("tensorflow", "keras", "mlflow"),
    "cuda": ("tensorflow", "keras", "mlflow"),
    "jax": ("jax", "jax_cuda12_plugin", "jax_plugins.xla_cuda12", "keras", "mlflow"),
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def read_pins(path: Path) -> dict[str, str]:
    """``{name: version}`` from a constraints file's ``name==version`` lines (comments and
    blank lines skipped).

    Raises:
        ValueError: a line that is not an exact pin, with its number.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: {raw.strip()!r} is not an exact pin "
                             "(name==version)")
        pins[match.group(1).lower()] = match.group(2)
    return pins


def pin_problems(pins: dict[str, str]) -> list[str]:
    """Each pinned package that is missing or installed at another version."""
    problems = []
    for name, wanted in sorted(pins.items()):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed; the constraints pin {wanted}")
            continue
        if found != wanted:
            problems.append(f"{name} is {found}; the constraints pin {wanted}")
    return problems


def _variant_problems(variant: str, modules: dict) -> list[str]:
    problems = []
    if variant == "cuda" and "tensorflow" in modules:
        build = dict(modules["tensorflow"].sysconfig.get_build_info())
        if not build.get("is_cuda_build"):
            problems.append("TensorFlow is not a CUDA build: the cuda image installs "
                            "tensorflow[and-cuda], not tensorflow-cpu")
    if variant == "jax" and "jax" in modules:
        version = modules["jax"].__version__
        for dist in ("jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt"):
            try:
                found = metadata.version(dist)
            except metadata.PackageNotFoundError:
                found = None
            if found != version:
                problems.append(f"{dist} is {found or 'not installed'}, JAX is {version}: "
                                "the jax image installs jax[cuda12]==<JAX's version>")
        plugin = modules.get("jax_plugins.xla_cuda12")
        locate = getattr(plugin, "_get_library_path", None)
        if plugin is not None and locate is not None and locate() is None:
            problems.append("jax_plugins.xla_cuda12 finds no PJRT CUDA library "
                            "(xla_cuda_plugin.so): the jax-cuda12-pjrt install is broken")
    return problems


def smoke(variant: str, pins_file: Path | None = None) -> tuple[list[str], list[str]]:
    """``(found, problems)`` for ``variant`` (cpu, cuda, jax): what was imported, at which
    version, and what is wrong."""
    if variant not in VARIANTS:
        return [], [f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}"]
    found, problems, modules = [], [], {}
    for name in VARIANTS[variant]:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as exc:  # ImportError, or a library that fails as it loads
            problems.append(f"cannot import {name}: {type(exc).__name__}: {exc}")
            continue
        found.append(f"{name} {getattr(modules[name], '__version__', '')}".strip())
    problems += _variant_problems(variant, modules)
    if pins_file is not None:
        try:
            pins = read_pins(pins_file)
        except (OSError, ValueError) as exc:
            return found, problems + [str(exc)]
        problems += pin_problems(pins)
        found.append(f"{len(pins)} pins of {pins_file.name} installed as pinned"
                     if not pin_problems(pins) else f"pins of {pins_file.name} checked")
    return found, problems


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m worker.gpu --smoke cpu|cuda|jax [--pins FILE]", file=sys.stderr)
        return 2
    pins = Path(argv[argv.index("--pins") + 1]) if "--pins" in argv else None
    found, problems = smoke(argv[0], pins)
    print(f"smoke test ({argv[0]}): " + ", ".join(found))
    for problem in problems:
        print(f"smoke test ({argv[0]}): {problem}", file=sys.stderr)
    return 1 if problems else 0
