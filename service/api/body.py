"""Request bodies, read defensively: a JSON or YAML object in its declared content type.

What a body may be, for every route that takes a spec:
- ``Content-Type: application/json`` (or ``application/yaml``/``application/x-yaml``/
  ``text/yaml``); anything else, or none, is a 415. (A browser page on another site can only
  send text/plain or form bodies without a CORS preflight, which this API never grants: with
  no token set, no web page can submit or cancel jobs on a local kerasyard.)
- at most ``MAX_BODY_BYTES`` bytes (413), nested at most ``MAX_DEPTH`` levels (400);
- numbers finite (no ``NaN``, ``Infinity``, ``1e999``, ``.inf``) with integers of at most
  ``MAX_INT_DIGITS`` digits (400): bounds per field are the spec's business;
- no NUL character (``\u0000``) in any string or key (400): PostgreSQL's text and JSONB
  cannot hold one (the OpenAPI document says both: a ``maximum`` on every integer, a
  ``pattern`` on every free string);
- YAML without anchors, aliases or tags beyond the safe ones: nothing that expands.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import request

from service.errors import ApiError

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_INT_DIGITS = 30
# YAML 1.1 (PyYAML) reads 1e-3 as a string: its floats need a dot and a signed exponent.
# JSON and YAML 1.2 read a number, and so do we, so that "learning_rate: 1e-3" is a number
# in a YAML body as in a JSON one (the spec's number fields do not take strings).
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def _bad(message: str, loc: str = "(body)") -> ApiError:
    return ApiError(400, "bad_request", message, [{"loc": loc, "msg": message}])


def _parse_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise _bad(f"an integer of {len(digits)} digits ({text[:12]}…) is out of range; "
                   f"numbers here have at most {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else text[:24] + "…"
        raise _bad(f"{shown} is not a finite number; write a finite value")
    return value


def _parse_constant(name: str):
    raise _bad(f"{name} is not allowed: JSON numbers must be finite; write a finite value")


def _check(value: Any, depth: int = 0, loc: str = "") -> None:
    """Depth, finiteness, integer size and NUL-free strings of a parsed body (YAML needs all
    of them; JSON's parser hooks already did the numbers)."""
    if depth > MAX_DEPTH:
        raise _bad(f"the body is nested more than {MAX_DEPTH} levels deep", loc or "(body)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(f"key {str(key)[:40]!r} is not a string; keys must be strings",
                           loc or "(body)")
            if "\x00" in key:
                raise _bad(f"key {key[:40]!r} contains a NUL character (\\u0000), which "
                           "cannot be stored; remove it", loc or "(body)")
            _check(item, depth + 1, f"{loc}.{key}" if loc else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, depth + 1, f"{loc}.{i}" if loc else str(i))
    elif isinstance(value, str) and "\x00" in value:
        raise _bad(f"{loc or 'the body'}: the string contains a NUL character (\\u0000), which "
                   "cannot be stored; remove it", loc or "(body)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise _bad(f"{loc or 'the body'}: {value} is not a finite number; write a finite value",
                   loc or "(body)")
    elif isinstance(value, int) and not isinstance(value, bool) and \
            len(str(abs(value))) > MAX_INT_DIGITS:
        raise _bad(f"{loc or 'the body'}: an integer of more than {MAX_INT_DIGITS} digits is "
                   "out of range", loc or "(body)")


def _yaml_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """Safe YAML that refuses anchors and aliases: a few bytes of them can expand into
        gigabytes (the "billion laughs")."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.YAMLError("anchors and aliases (&name, *name, <<: *name) are not "
                                     "allowed; write the values out")
            return super().compose_node(parent, index)

    NoAliasLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT,
                                        list("-+0123456789."))
    return NoAliasLoader


def load_yaml(raw: bytes | str) -> Any:
    """Safe YAML without anchors or aliases, reading ``1e-3`` as a number."""
    import yaml

    return yaml.load(raw, Loader=_yaml_loader())  # a SafeLoader subclass


def _load_yaml(raw: bytes) -> Any:
    import yaml

    try:
        return load_yaml(raw)
    except RecursionError:
        raise _bad(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:
        message = str(exc)
        message = message if len(message) <= 300 else message[:300] + "…"
        raise _bad(f"the body is not valid YAML: {message}") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise _bad(f"the body has a value out of range: {str(exc)[:200]}") from None


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8 text") from None
    except RecursionError:
        raise _bad(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc.msg} at line "
                       f"{exc.lineno} column {exc.colno}",
                       [{"loc": "(body)", "msg": exc.msg}]) from None


def json_body() -> Any:
    """The request's JSON or YAML body, checked as the module docstring says."""
    ctype = (request.mimetype or "").lower()
    if ctype not in JSON_TYPES + YAML_TYPES:
        given = f"Content-Type {ctype!r}" if ctype else "no Content-Type"
        raise ApiError(415, "unsupported_media_type",
                       f"{given}: send the spec as 'Content-Type: application/json' (or "
                       "application/yaml)", [{"loc": "Content-Type", "msg": "expected "
                                              "application/json or application/yaml",
                                              "value": ctype[:80]}])
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is {length} bytes; a spec may be "
                       f"at most {MAX_BODY_BYTES} bytes")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is more than {MAX_BODY_BYTES} "
                       "bytes; a spec may be at most that")
    if not raw.strip():
        raise _bad("the request body is empty; send a JSON object "
                   "(Content-Type: application/json)")
    data = _load_yaml(raw) if ctype in YAML_TYPES else _load_json(raw)
    _check(data)
    return data


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:  # "?limit=" is not an integer (400), as the document says
        return default
    try:
        value = int(raw) if len(raw) <= 12 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise ApiError(400, "bad_request", f"{name}={shown!r} must be an integer from {low} "
                       f"to {high}", [{"loc": name, "msg": f"integer {low}..{high}",
                                       "value": shown}])
    return value


def bool_arg(name: str) -> bool | None:
    """``?name=true`` or ``?name=false``; None when left out. Anything else is a 400."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    raise ApiError(400, "bad_request", f"{name}={shown!r} must be true or false",
                   [{"loc": name, "msg": "true or false", "value": shown}])


# --- uploads (/datasets, /models) -------------------------------------------------------------


def upload_name() -> str | None:
    """An upload's name: ``?name=``, else the form field ``name``. The form's is refused with a
    NUL even where the query's wins: a request the document calls invalid is never accepted."""
    form_name = request.form.get("name")
    if form_name and "\x00" in form_name:
        raise ApiError(400, "bad_request", "the form field 'name' contains a NUL character; "
                       "remove it", [{"loc": "name", "msg": "contains a NUL character"}])
    return request.args.get("name") or form_name


def multipart_file(what: str):
    """The multipart field ``file`` (400 naming ``what`` is sent when it is missing), and the
    client's name for it: only shown back, and PostgreSQL cannot store a NUL in it."""
    file = request.files.get("file")
    if file is None:
        raise ApiError(400, "bad_request", f"send the {what} in the multipart field 'file'",
                       [{"loc": "file", "msg": "field required"}])
    return file, (file.filename or "").replace("\x00", "\ufffd")
