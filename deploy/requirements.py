"""Print pyproject.toml's requirements, one per line, for the Docker images to pip-install.

    python deploy/requirements.py                    the package's own dependencies (API image)
    python deploy/requirements.py --extra worker     ... plus the worker extra (CPU worker image)
    python deploy/requirements.py --extra worker --without tensorflow --without tensorflow-cpu
                                                     ... minus TensorFlow (the GPU image
                                                     installs tensorflow[and-cuda] instead)
    python deploy/requirements.py --no-base --extra cuda
                                                     only the extra's own lines: the pinned
                                                     tensorflow[and-cuda] of the GPU image

The images install dependencies from this list before copying the source (so a code change does
not reinstall them), then the package itself with ``pip install --no-deps -e .``. pyproject.toml
stays the only place where dependencies are declared.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11 (an older TensorFlow base image); pip install tomli
    import tomli as tomllib

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    """PEP 503 normalised project name: ``TensorFlow_CPU`` -> ``tensorflow-cpu``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str], without: list[str],
                 base: bool = True) -> list[str]:
    """The base dependencies (unless ``base`` is false) plus those of ``extras`` (self-references
    expanded), minus ``without``.

    Raises:
        SystemExit: an extra that pyproject.toml does not define.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    own = canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    skip = {canonical(n) for n in without}
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(lines: list[str]) -> None:
        for line in lines:
            match = _NAME.match(line)
            if match is None:
                raise SystemExit(f"cannot read the requirement {line!r} in {pyproject}")
            name, nested = canonical(match.group(1)), match.group(2)
            if name == own:  # "kerasyard[worker,jax]": expand the extras it names
                for extra in (nested or "").split(","):
                    add_extra(extra.strip())
            elif name not in skip and line not in out:
                out.append(line)

    def add_extra(extra: str) -> None:
        if not extra or extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}; it has: "
                             f"{', '.join(sorted(optional)) or 'none'}")
        seen_extras.add(extra)
        add(optional[extra])

    if base:
        add(project.get("dependencies", []))
    for extra in extras:
        add_extra(extra)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyproject", type=Path,
                        default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependencies "
                        "group to add (repeatable)")
    parser.add_argument("--without", action="append", default=[], help="a project to leave out "
                        "(repeatable), e.g. tensorflow when the base image has it")
    parser.add_argument("--no-base", action="store_true", help="leave the base dependencies "
                        "out: only the lines of the extras named")
    args = parser.parse_args(argv)
    lines = requirements(args.pyproject, args.extra, args.without, base=not args.no_base)
    if not lines:
        raise SystemExit(f"no requirements to print for --extra {args.extra} "
                         f"--without {args.without} (--no-base={args.no_base})")
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()
