"""A stand-in for a spec that failed field validation, so the cross-field rules can still run
on the parts that did validate.

Each field pydantic refused is set, in a copy, to a value its JSON Schema allows (its default,
its first allowed name, the low end of its range); an unknown field is dropped. The copy is
validated again (a replaced value can uncover an error one level up, such as an optimizer
option that belongs to another optimizer), and the paths replaced are returned with it: a rule
that reads one of them is not run (:func:`service.jobspec.checks.rule_errors`), so every error
reported is one the user's own values cause.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ValidationError

from service.jobspec.errors import _MEMBER, _TAGGED_PARENTS, _UNION_TAGS

MAX_ROUNDS = 4
_SCHEMAS: dict[type, dict] = {}


def data_path(loc: tuple) -> tuple:
    """pydantic's error location as a path into the submitted data: union tags
    (``layers.0.dense.units``) and union members (``steps_per_execution.int``) dropped."""
    out: list = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        if isinstance(part, str):
            if part in _UNION_TAGS and (isinstance(prev, int) or prev in _TAGGED_PARENTS):
                continue
            if _MEMBER.match(part) or part.startswith(("tagged-union[", "function-")):
                continue
        out.append(part)
    return tuple(out)


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def touches(a: str, b: str) -> bool:
    """One path is the other or lies inside it (``fit`` and ``fit.epochs``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


# --- the JSON Schema: what a valid value at a path looks like ---------------------------------


def _schema(model: type[BaseModel]) -> dict:
    if model not in _SCHEMAS:
        _SCHEMAS[model] = model.model_json_schema()
    return _SCHEMAS[model]


def _deref(node: Any, defs: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node if isinstance(node, dict) else {}


def _kind_of(node: dict) -> set:
    kinds = node.get("type") or ("object" if "properties" in node else None)
    return set(kinds) if isinstance(kinds, list) else {kinds}


def _member(node: dict, defs: dict, value: Any) -> dict:
    """Of a union, the member ``value`` was written for: by its tag, else by its kind."""
    members = node.get("oneOf") or node.get("anyOf")
    if not members:
        return node
    disc = node.get("discriminator")
    if disc and isinstance(value, dict):
        ref = (disc.get("mapping") or {}).get(value.get(disc.get("propertyName")))
        if isinstance(ref, str):
            return _deref({"$ref": ref}, defs)
    want = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None
    for m in members:
        m = _deref(m, defs)
        if want and want in _kind_of(m):
            return m
    return _deref(members[0], defs)


def _schema_at(root: dict, data: Any, path: tuple) -> dict:
    defs = root.get("$defs", {})
    node, value = root, data
    for part in path:
        node = _member(_deref(node, defs), defs, value)
        if isinstance(part, int):
            node = node.get("items") or {}
            value = value[part] if isinstance(value, list) and 0 <= part < len(value) else None
        else:
            props = node.get("properties") or {}
            extra = node.get("additionalProperties")
            node = props.get(part, extra if isinstance(extra, dict) else {})
            value = value.get(part) if isinstance(value, dict) else None
    return _deref(node, defs)


def example(node: dict, defs: dict, depth: int = 0) -> Any:
    """A value ``node`` (a JSON Schema) accepts: its default, its first allowed value, the low
    end of its range, or the smallest object with its required fields."""
    node = _deref(node, defs)
    if depth > 20:
        return None
    if "default" in node:
        return copy.deepcopy(node["default"])
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    members = node.get("oneOf") or node.get("anyOf")
    if members:
        real = [m for m in members if _deref(m, defs).get("type") != "null"]
        return example((real or members)[0], defs, depth + 1)
    kinds = _kind_of(node) - {None, "null"}
    kind = sorted(kinds)[0] if kinds else None
    if kind == "integer":
        low = node.get("minimum", node.get("exclusiveMinimum", 0) + 1
                       if "exclusiveMinimum" in node else 1)
        high = node.get("maximum", node.get("exclusiveMaximum", low + 1) - 1
                        if "exclusiveMaximum" in node else None)
        return low if high is None else min(low, high)
    if kind == "number":
        if "minimum" in node:
            return float(node["minimum"])
        if "exclusiveMinimum" in node:
            low = node["exclusiveMinimum"]
            high = node.get("maximum", node.get("exclusiveMaximum"))
            return float(low + 1) if high is None else (low + high) / 2
        return 1.0
    if kind == "boolean":
        return False
    if kind == "string":
        return "x" * max(1, node.get("minLength", 1))
    if kind == "array":
        return [example(node.get("items") or {}, defs, depth + 1)
                for _ in range(node.get("minItems", 0))]
    if kind == "object":
        props = node.get("properties") or {}
        return {k: example(props.get(k) or {}, defs, depth + 1) for k in node.get("required", [])}
    return None


# --- the stand-in ------------------------------------------------------------------------------


def _replace(data: dict, path: tuple, root: dict, drop: bool) -> tuple | None:
    """Set ``path`` in ``data`` to an example value (or drop it); where the path cannot be
    reached (a string where an object belongs), its parent is replaced. Returns the path
    replaced, None for the whole body."""
    while path:
        parent: Any = data
        for part in path[:-1]:
            ok = (isinstance(parent, dict) and part in parent) or \
                (isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent))
            if not ok:
                break
            parent = parent[part]
        else:
            last = path[-1]
            if isinstance(parent, dict) and isinstance(last, str):
                if drop:
                    parent.pop(last, None)
                else:
                    parent[last] = example(_schema_at(root, data, path), root.get("$defs", {}))
                return path
            if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
                parent[last] = example(_schema_at(root, data, path), root.get("$defs", {}))
                return path
        path, drop = path[:-1], False
    return None


def stand_in(model: type[BaseModel], data: dict, errors: list[dict]
             ) -> tuple[BaseModel | None, list[str]]:
    """``data`` with every field in pydantic's ``errors`` replaced, validated as ``model``;
    and the dotted paths replaced. (None, paths) when no stand-in validates."""
    root = _schema(model)
    work = copy.deepcopy(data)
    replaced: list[tuple] = []
    for _ in range(MAX_ROUNDS):
        this_round: list[tuple] = []
        for err in errors:
            path = data_path(tuple(err.get("loc") or ()))
            if any(path[:len(r)] == r for r in this_round):
                continue  # inside a value this round replaced already
            # Replaced in an earlier round and still refused: replace what holds it.
            while path and any(path[:len(r)] == r for r in replaced):
                path = path[:-1]
            where = _replace(work, path, root, drop=err.get("type") == "extra_forbidden")
            if where is None:
                return None, [dotted(r) for r in replaced + this_round]
            this_round.append(where)
        replaced += this_round
        try:
            return model.model_validate(work), list(dict.fromkeys(dotted(r) for r in replaced))
        except ValidationError as exc:
            errors = exc.errors()
    return None, [dotted(r) for r in replaced]
