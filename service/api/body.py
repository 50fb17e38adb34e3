"""Request-body parsing shared by the routes: JSON (or YAML) objects with clear errors."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from ..errors import ApiError


def json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "bad_request", "the request body is empty; send a JSON object "
                       "(Content-Type: application/json)")
    ctype = (request.mimetype or "").lower()
    if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
        import yaml

        try:
            return yaml.safe_load(raw)
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
