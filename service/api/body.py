"""Request-body parsing shared by the routes: JSON (or YAML) objects with clear errors."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from ..errors import ApiError

# YAML 1.1 (PyYAML) reads 1e-3 as a string: its floats need a dot and a signed exponent.
# JSON and YAML 1.2 read a number, and so do we, so that "learning_rate: 1e-3" is a number
# in a YAML body as in a JSON one (the spec's number fields do not take strings).
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def load_yaml(raw: bytes | str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT,
                                 list("-+0123456789."))
    return yaml.load(raw, Loader=Loader)  # a SafeLoader subclass


def json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "bad_request", "the request body is empty; send a JSON object "
                       "(Content-Type: application/json)")
    ctype = (request.mimetype or "").lower()
    if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
        import yaml

        try:
            return load_yaml(raw)
        except yaml.YAMLError as exc:
            raise ApiError(400, "bad_request", f"the body is not valid YAML: {exc}") from None
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc.msg} at line "
                       f"{exc.lineno} column {exc.colno}",
                       [{"loc": "(body)", "msg": exc.msg}]) from None


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name}={raw!r} must be an integer from {low} to "
                       f"{high}", [{"loc": name, "msg": f"integer {low}..{high}", "value": raw}])
    return value
