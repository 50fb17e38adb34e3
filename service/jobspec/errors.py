"""Errors a user can act on: each names the field's path as written, the value, and the fix.

pydantic's errors are rewritten here (``_humanize``): union-member segments are dropped from
the path, type errors say what was expected, what came (``true (a boolean)``) and what to
write instead, and a near-miss name gets a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from typing import Any

from service.jobspec.layers import LAYER_TYPES


@dataclasses.dataclass
class ErrorDetail:
    loc: str
    msg: str
    value: Any = None

    def as_dict(self) -> dict:
        out = {"loc": self.loc, "msg": self.msg}
        if self.value is not None:
            out["value"] = self.value
        return out


class SpecError(Exception):
    """An invalid spec; ``details`` name each offending field."""

    def __init__(self, details: list[ErrorDetail]):
        self.details = details
        each = "; ".join(f"{d.loc}: {d.msg}" for d in details)
        super().__init__(each if len(details) == 1 else f"{len(details)} errors: {each}")


# Discriminated unions: pydantic puts the tag in the path ("model.layers.0.dense.units").
_UNION_TAGS = {*LAYER_TYPES, "synthetic", "sklearn", "upload", "median", "asha"}
_TAGGED_PARENTS = {"dataset", "early_stopping", "layer"}
# Plain unions: one error per member, the member in the path ("fit.steps_per_execution.int").
_MEMBER = re.compile(r"^(?:int|float|bool|str|none)$|^(?:literal|list|dict|union)\[|"
                     r"^constrained-(?:int|float|str)$")

# What a type error expected, in words.
_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list", "dict_type": "an object", "model_type": "an object",
    "model_attributes_type": "an object",
}
TYPE_ERRORS = frozenset(_EXPECTED)


def _loc(parts: tuple) -> str:
    # Drop pydantic's union segments so the path reads like the JSON the user wrote
    # ("model.layers.0.units", "fit.steps_per_execution").
    out: list = []
    for i, p in enumerate(parts):
        prev = parts[i - 1] if i else None
        if p in _UNION_TAGS and (isinstance(prev, int) or prev in _TAGGED_PARENTS):
            continue
        if isinstance(p, str) and _MEMBER.match(p) and i:
            continue  # "kernel_size.list[constrained-int].0" is "kernel_size.0"
        out.append(p)
    return ".".join(str(p) for p in out) or "(body)"


def _suggest(value: Any, choices: tuple[str, ...]) -> str:
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]!r}?"
    return ""


def _literal_choices(err: dict) -> tuple[str, ...]:
    expected = (err.get("ctx") or {}).get("expected", "")
    return tuple(part.strip().strip("'") for part in expected.replace(" or ", ",").split(",")
                 if part.strip())


def describe(value: Any) -> str:
    """A value as JSON spells it, with what kind of value it is: ``true (a boolean)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{json.dumps(value)} (a boolean)"
    if isinstance(value, str):
        return f"{json.dumps(value)} (a string)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a number with a fraction)" if not value.is_integer() \
            else f"{value!r} (a decimal number)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _number_in(text: str, kind: type) -> str | None:
    try:
        kind(text.strip())
    except ValueError:
        return None
    return text.strip()


def _fix(kind: str, value: Any) -> str:
    """What to write instead, for a type error of ``kind`` on ``value``."""
    if kind.startswith("int"):
        if isinstance(value, str) and _number_in(value, int):
            return f"write {_number_in(value, int)} without quotes"
        if isinstance(value, float) and value.is_integer():
            return f"write {int(value)}"
        return "write a whole number such as 100"
    if kind.startswith("float"):
        if isinstance(value, str) and _number_in(value, float):
            return f"write {_number_in(value, float)} without quotes"
        return "write a number such as 0.01"
    if kind.startswith("bool"):
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return f"write {value.strip().lower()} without quotes"
        return "write true or false"
    if kind == "string_type":
        if isinstance(value, (bool, int, float)):
            return f"put it in quotes: {json.dumps(json.dumps(value))}"
        return "write a string in quotes"
    if kind == "list_type":
        return "write a list: [...]"
    return "write an object: {...}"


def type_message(expected: str, kind: str, value: Any) -> str:
    return f"expected {expected}, got {describe(value)}; {_fix(kind, value)}"


def _humanize(err: dict) -> ErrorDetail:
    loc = _loc(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return ErrorDetail(loc, "field required; add it to the spec")
    if kind == "extra_forbidden":
        key = err["loc"][-1] if err["loc"] else None
        return ErrorDetail(loc, "unknown field; remove it or check its spelling"
                           f"{_suggest(key, err.get('known', ()))}", value)
    if kind in TYPE_ERRORS:
        shown = value if not isinstance(value, (dict, list)) else None
        return ErrorDetail(loc, type_message(_EXPECTED[kind], kind, value), shown)
    if kind == "literal_error":
        choices = _literal_choices(err)
        return ErrorDetail(loc, f"{value!r} is not allowed; expected one of: "
                                f"{', '.join(choices)}{_suggest(value, choices)}", value)
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        expected = (err.get("ctx") or {}).get("expected_tags")
        choices = tuple(t.strip().strip("'") for t in str(expected).split(","))
        return ErrorDetail(loc, f"{tag!r} is not a known type; expected one of: {expected}"
                           f"{_suggest(tag, choices)}", tag)
    if kind == "union_tag_not_found":
        return ErrorDetail(loc, f"the discriminator field is missing: "
                                f"{(err.get('ctx') or {}).get('discriminator')}")
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg = f"{value!r} is out of range: {msg[0].lower()}{msg[1:]}"
    return ErrorDetail(loc, msg, value if not isinstance(value, (dict, list)) else None)


def _union_member(err: dict) -> bool:
    last = err["loc"][-1] if err["loc"] else None
    return isinstance(last, str) and bool(_MEMBER.match(last))


def _merge_union(errs: list[dict]) -> ErrorDetail:
    """One detail for a value no member of a plain union accepts (``int | Literal['auto']``)."""
    loc = _loc(errs[0]["loc"][:-1])
    value = errs[0].get("input")
    expected: list[str] = []
    for e in errs:
        if e["type"] == "literal_error":
            expected.extend(repr(c) for c in _literal_choices(e))
        else:
            expected.append(_EXPECTED[e["type"]])
    kinds = [e["type"] for e in errs if e["type"] in TYPE_ERRORS]
    expected = list(dict.fromkeys(expected))
    words = expected[0] if len(expected) == 1 else \
        f"{', '.join(expected[:-1])} or {expected[-1]}"
    msg = f"expected {words}, got {describe(value)}"
    # One type besides literals (int | 'auto'): say how to write it; else list the choices.
    msg += f"; {_fix(kinds[0], value)}" if len(kinds) == 1 else "; write one of those"
    return ErrorDetail(loc, msg, value if not isinstance(value, (dict, list)) else None)


def _member_at(loc: tuple) -> int | None:
    return next((i for i, p in enumerate(loc) if i and isinstance(p, str) and _MEMBER.match(p)),
                None)


def _written_for(errors: list[dict]) -> list[dict]:
    """Of a union of a number and a list (``kernel_size: 3`` or ``[3, 2]``), only the errors
    of the member the value was written for: ``0`` is out of range, not "not a list"."""
    members: dict[tuple, set] = {}
    for err in errors:
        i = _member_at(err["loc"])
        if i is not None:
            members.setdefault(tuple(err["loc"][:i]), set()).add(err["loc"][i])
    keep = []
    for err in errors:
        i = _member_at(err["loc"])
        names = members.get(tuple(err["loc"][:i]), set()) if i is not None else set()
        lists = {m for m in names if m.startswith("list[")}
        if lists and names - lists and len(err["loc"]) == i + 1:
            is_list = err["loc"][i] in lists
            if is_list and err["type"] == "list_type":
                continue  # a number was written
            if not is_list and isinstance(err.get("input"), list):
                continue  # a list was written
        keep.append(err)
    return keep


def _known_fields(err: dict, errors: list[dict]) -> tuple[str, ...]:
    """The names an unknown key may have meant: its layer type's fields (the tag before it in
    pydantic's path, ``layers.1.conv2d.filter``), else the required fields missing beside it."""
    loc = tuple(err["loc"])
    if len(loc) >= 2 and loc[-2] in LAYER_TYPES:
        return tuple(f for f in LAYER_TYPES[loc[-2]].model_fields if f != "type")
    return tuple(e["loc"][-1] for e in errors if e["type"] == "missing"
                 and tuple(e["loc"][:-1]) == loc[:-1] and isinstance(e["loc"][-1], str))


def humanize_all(errors: list[dict]) -> list[ErrorDetail]:
    """pydantic's ``exc.errors()`` as details, one per offending field."""
    errors = _written_for(errors)
    errors = [{**e, "known": _known_fields(e, errors)} if e["type"] == "extra_forbidden" else e
              for e in errors]
    unions: dict[tuple, list[dict]] = {}
    for err in errors:
        if _union_member(err) and err["type"] in TYPE_ERRORS | {"literal_error"}:
            unions.setdefault(tuple(err["loc"][:-1]), []).append(err)
    out, done = [], set()
    for err in errors:
        key = tuple(err["loc"][:-1])
        group = unions.get(key) if _union_member(err) else None
        if group and len(group) > 1:
            if key not in done:
                done.add(key)
                out.append(_merge_union(group))
            continue
        out.append(_humanize(err))
    return out
