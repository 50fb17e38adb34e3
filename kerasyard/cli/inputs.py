"""What a command reads besides its options: a spec file, and an ID that may be a job's or a
sweep's, in full or as a prefix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..client import Client
from ..errors import ApiError


class UsageError(Exception):
    """A mistake on the command line or in a local file: exit code 2."""


# --- specs and ids ----------------------------------------------------------------------------


def load_spec(path: str) -> dict:
    """A job or sweep spec from a .json or .yaml file ('-' reads standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML (or JSON): {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold one object (a mapping of fields), not "
                         f"{type(data).__name__}")
    return data


def resolve(client: Client, ident: str | None) -> tuple[str, dict]:
    """A job or sweep by full id or unique id prefix (the API resolves prefixes): ('job', job)
    or ('sweep', sweep); jobs first. No id: the newest job."""
    if ident is None:
        jobs = client.list_jobs(limit=1)["jobs"]
        if not jobs:
            raise UsageError("no jobs yet; submit one with `kerasyard submit SPEC`")
        return "job", jobs[0]
    ident = ident.strip()
    if not ident:
        raise UsageError("an empty id")
    try:
        return "job", client.get_job(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
    try:
        return "sweep", client.get_sweep(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
    raise ApiError(404, "not_found", f"no job or sweep with id {ident!r}")


def resolve_job(client: Client, ident: str | None, what: str) -> dict:
    kind, item = resolve(client, ident)
    if kind != "job":
        raise UsageError(f"{ident} is a sweep; {what} is per job. `kerasyard show {ident}` "
                         "lists its trials and their job ids")
    return item
