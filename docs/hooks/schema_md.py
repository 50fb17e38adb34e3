"""JSON Schema (pydantic's, or an OpenAPI document's) to Markdown tables, for the docs hooks.

One section per object the schema describes, in the order a reader meets them: a heading with
the object's path (``fit.early_stopping``, ``model.layers[]`` with ``type: dense``) and a table
of its fields, each row its full path, type, default (or "required"), allowed values and
description. A field that holds an object links to that object's section. Nothing here knows
kerasyard's models: the hooks in reference.py say which schema and which page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# The free-text pattern the OpenAPI document puts on strings the API stores (no NUL character).
NO_NUL = "^[^\\u0000]*$"


@dataclass
class Section:
    anchor: str
    path: str
    variant: str  # "type: dense" for one member of a discriminated union, else ""
    model: str  # the pydantic model (or OpenAPI schema) name, "" when inline
    description: str
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(value) -> str:
    """A JSON value as inline code (``"relu"``, ``0.01``, ``null``)."""
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top"


class SchemaTables:
    """Walks one schema. ``defs`` resolves ``$ref``s; ``links`` maps a referenced name to a
    Markdown link target to use instead of a section (a model documented on another page);
    ``notes`` maps ``Model.field`` to a description for fields whose model has none."""

    def __init__(self, defs: dict, *, links: dict[str, str] | None = None,
                 notes: dict[str, str] | None = None, anchor_prefix: str = "",
                 refs_by_name: bool = False, responses: bool = False):
        self.defs = defs
        # A response's fields are "always" there or "optional", where a request's have a
        # default or are "required".
        self.responses = responses
        # True (an OpenAPI document's components): a $ref links to the section of that name,
        # which the caller adds once; False (a pydantic model): it is written out in place.
        self.refs_by_name = refs_by_name
        self.links = links or {}
        self.notes = notes or {}
        self.prefix = anchor_prefix
        self.sections: list[Section] = []
        self.used_notes: set[str] = set()
        self.fields: set[str] = set()  # "Model.field" for every row with a model name

    # --- walking ---------------------------------------------------------------------------

    def _ref_name(self, node: dict) -> str | None:
        ref = node.get("$ref")
        return ref.rsplit("/", 1)[-1] if ref else None

    def resolve(self, node: dict) -> tuple[dict, str]:
        name = self._ref_name(node)
        if name is None:
            return node, ""
        target = dict(self.defs[name])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return target, name

    def add_object(self, node: dict, path: str, *, variant: str = "", model: str = "",
                   description: str = "") -> str:
        """Adds the section for an object schema (and, after it, those of the objects it
        holds); returns its anchor."""
        node, ref_model = self.resolve(node)
        model = model or ref_model or node.get("title", "")
        anchor = self.prefix + slug(f"{path} {variant.split(':')[-1]}" if variant else path)
        section = Section(anchor, path, variant, model, description or node.get("description", ""))
        self.sections.append(section)
        pending: list[tuple] = []
        required = set(node.get("required", ()))
        for name, sub in (node.get("properties") or {}).items():
            sub_path = f"{path}.{name}" if path else name
            type_text, allowed, children = self.describe(sub, sub_path)
            pending.extend(children)
            default = self.default(sub, name in required)
            key = f"{model}.{name}" if model else ""
            desc = self._description(sub, key)
            if key:
                self.fields.add(key)
            section.rows.append((f"`{sub_path}`", type_text, default, allowed, desc))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            type_text, allowed, children = self.describe(extra, f"{path}.<key>")
            pending.extend(children)
            section.rows.append((f"`{path}.<key>`", type_text, "optional", allowed,
                                 "any other key" if node.get("properties") else ""))
        for child in pending:
            self.add_object(*child[:2], variant=child[2], model=child[3])
        return anchor

    def _description(self, sub: dict, key: str) -> str:
        parts = [sub.get("description", "")]
        if key in self.notes:
            self.used_notes.add(key)
            parts.append(self.notes[key])
        return " ".join(p.strip() for p in parts if p and p.strip())

    def default(self, sub: dict, required: bool) -> str:
        if self.responses:
            return "always" if required else "optional"
        if required:
            return "required"
        if "default" in sub:
            return code(sub["default"])
        resolved, _ = self.resolve(sub)
        kinds = self._types(resolved)
        if "array" in kinds:
            return "`[]`"
        if "object" in kinds or "properties" in resolved:
            return "`{}`"
        return "optional"

    def _types(self, node: dict) -> list[str]:
        kinds = node.get("type", [])
        return [kinds] if isinstance(kinds, str) else list(kinds)

    def describe(self, sub: dict, path: str) -> tuple[str, str, list[tuple]]:
        """(type, allowed values and bounds, objects to give a section of their own)."""
        name = self._ref_name(sub)
        if name and name in self.links:
            return f"[{name}]({self.links[name]})", "", []
        if name and self.refs_by_name:
            return f"[{name}](#{self.prefix}{slug(name)})", "", []
        if name:
            target = self.defs[name]
            if "properties" in target or target.get("type") == "object":
                anchor = self.prefix + slug(path)
                return (f"object ([`{path}`](#{anchor}))", self.bounds(target),
                        [(sub, path, "", name)])
            return self.describe(target, path)
        union = sub.get("oneOf") or sub.get("anyOf")
        if union:
            return self._union(sub, union, path)
        if "const" in sub:
            return self._types(sub)[0] if sub.get("type") else "constant", code(sub["const"]), []
        kinds = [k for k in self._types(sub) if k != "null"]
        nullable = "null" in self._types(sub)
        children: list[tuple] = []
        if kinds == ["array"] and "items" in sub:
            item_type, item_allowed, children = self.describe(sub["items"], f"{path}[]")
            text, allowed = f"list of {item_type}", item_allowed
        elif kinds == ["object"] and sub.get("properties"):
            anchor = self.prefix + slug(path)
            text, allowed = f"object ([`{path}`](#{anchor}))", ""
            children = [(sub, path, "", "")]
        elif kinds == ["object"] and isinstance(sub.get("additionalProperties"), dict):
            value_type, value_allowed, children = self.describe(sub["additionalProperties"],
                                                                f"{path}.<key>")
            text, allowed = f"map of string to {value_type}", value_allowed
        else:
            text = " or ".join(kinds) if kinds else "any"
            allowed = ""
        if "enum" in sub:
            allowed = ", ".join(code(v) for v in sub["enum"])
        bounds = self.bounds(sub)
        allowed = "; ".join(p for p in (allowed, bounds) if p)
        if nullable:
            text += " or null"
        return text, allowed, children

    def _union(self, sub: dict, union: list[dict], path: str) -> tuple[str, str, list[tuple]]:
        members = [m for m in union if m.get("type") != "null"]
        nullable = len(members) < len(union)
        disc = sub.get("discriminator") or next(
            (m.get("discriminator") for m in members if m.get("discriminator")), None)
        if disc and all(self._ref_name(m) for m in members) or (disc and len(members) == 1):
            if len(members) == 1 and "oneOf" in members[0]:
                members = members[0]["oneOf"]
            prop = disc["propertyName"]
            links, children = [], []
            for member in members:
                target, name = self.resolve(member)
                value = target["properties"][prop].get("const")
                variant = f"{prop}: {value}"
                anchor = self.prefix + slug(f"{path} {value}")
                links.append(f"[`{value}`](#{anchor})")
                children.append((member, path, variant, name))
            text = f"object, by `{prop}`: " + ", ".join(links)
            return text + (" or null" if nullable else ""), "", children
        texts, allowed, children = [], [], []
        for member in members:
            t, a, c = self.describe(member, path)
            texts.append(t)
            if a:
                allowed.append(a)
            children.extend(c)
        text = " or ".join(dict.fromkeys(texts)) + (" or null" if nullable else "")
        return text, "; ".join(allowed), children

    def bounds(self, node: dict) -> str:
        out = []
        for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                          ("exclusiveMaximum", "<")):
            if key in node:
                out.append(f"{sign} {node[key]}")
        for low, high, unit in (("minLength", "maxLength", "characters"),
                                ("minItems", "maxItems", "items"),
                                ("minProperties", "maxProperties", "keys")):
            if low in node or high in node:
                lo, hi = node.get(low), node.get(high)
                unit = unit[:-1] if (lo, hi) in ((1, None), (None, 1)) else unit
                span = (f"{lo}–{hi}" if lo is not None and hi is not None else
                        f"at least {lo}" if lo is not None else f"at most {hi}")
                out.append(f"{span} {unit}")
        pattern = node.get("pattern")
        if pattern == NO_NUL:
            out.append("no NUL character")
        elif pattern:
            out.append(f"matches `{pattern}`")
        if node.get("format"):
            out.append(f"format `{node['format']}`")
        return ", ".join(out)

    # --- output ----------------------------------------------------------------------------

    def markdown(self, level: int = 3) -> str:
        lines: list[str] = []
        for s in self.sections:
            title = f"`{s.path}`" if s.path else "Top level"
            if s.variant:
                title += f" with `{s.variant}`"
            lines.append(f"{'#' * level} {title} {{#{s.anchor}}}")
            lines.append("")
            about = [s.description.strip()] if s.description else []
            if s.model and s.model != s.path:
                about.append(f"Model: `{s.model}`.")
            if about:
                lines += [" ".join(about), ""]
            if not s.rows:
                lines += ["No fields of its own.", ""]
                continue
            lines.append(f"| field | type | {'present' if self.responses else 'default'} | "
                         "allowed | description |")
            lines.append("| --- | --- | --- | --- | --- |")
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in s.rows]
            lines.append("")
        return "\n".join(lines)
