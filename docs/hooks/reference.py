"""MkDocs hook: the parts of the docs written by the code, so they cannot drift from it.

A page asks for a part with a marker on a line of its own:

- ``<!-- reference: jobspec -->``: the job spec's field tables, from the pydantic models
  (``service.jobspec.JobSpec.model_json_schema()``);
- ``<!-- reference: sweepspec -->``: the same for ``service.jobspec.sweep.SweepSpec``;
- ``<!-- reference: openapi -->``: every path and method of the OpenAPI document the API
  serves (``service.api.openapi.document()``): summary, parameters, request body, responses,
  and the response schemas;
- ``<!-- check: settings -->``: no output; warns about each environment variable that
  ``service/config.py`` or ``devstack/run.py`` reads and the page does not name;
- ``<!-- include: bench/README.md -->``: that file, its title dropped and its headings one
  level down.

Field descriptions the models do not carry come from ``field_notes.yml`` beside this file,
keyed by ``Model.field``; a key that is not a field of the models is a warning. Under
``mkdocs build --strict`` (CI, tests/unit/test_docs_site.py) every warning fails the build.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [p for p in (str(ROOT), str(HERE)) if p not in sys.path]

from schema_md import SchemaTables, cell, code

log = logging.getLogger("mkdocs.hooks.reference")  # under "mkdocs": counted by --strict

MARKER = re.compile(r"^<!-- (reference|check|include): (\S+) -->$", re.MULTILINE)
ENV_NAME = re.compile(r"[\"'](KERASYARD_[A-Z0-9_]+|DATABASE_URL|BROKER_URL|MLFLOW_TRACKING_URI|"
                      r"MLFLOW_UI_URL|KERAS_BACKEND)[\"']")
SETTINGS_SOURCES = ("service/config.py", "devstack/run.py")
JOBSPEC_PAGE = "jobspec.md"
SWEEPS_PAGE = "sweeps.md"


@functools.lru_cache(maxsize=1)
def notes() -> dict[str, str]:
    return yaml.safe_load((HERE / "field_notes.yml").read_text()) or {}


@functools.cache
def spec_tables(which: str) -> SchemaTables:
    if which == "jobspec":
        from service.jobspec.models import JobSpec as model
    else:
        from service.jobspec.sweep import SweepSpec as model
    schema = model.model_json_schema()
    tables = SchemaTables(schema.get("$defs", {}), notes=notes(),
                          anchor_prefix="ref-" if which == "jobspec" else "sweep-ref-")
    tables.add_object(schema, "", model=model.__name__)
    return tables


def on_config(config):
    # Every note must describe a field the models have: a renamed field leaves its note
    # behind, and the build says so.
    known = spec_tables("jobspec").fields | spec_tables("sweepspec").fields
    for key in notes():
        if key not in known:
            log.warning("docs/hooks/field_notes.yml: %r is not a field of JobSpec or SweepSpec "
                        "(or of a model they hold); rename or remove the note", key)
    return config


def on_page_markdown(markdown: str, page, config, files, **_):
    def replace(match: re.Match) -> str:
        kind, arg = match.groups()
        where = page.file.src_path
        if kind == "reference" and arg in ("jobspec", "sweepspec"):
            return spec_tables(arg).markdown(level=3)
        if kind == "reference" and arg == "openapi":
            return openapi_markdown()
        if kind == "check" and arg == "settings":
            check_settings(markdown, where)
            return ""
        if kind == "include":
            return include(arg)
        log.warning("%s: unknown marker %r", where, match.group(0))
        return ""

    return MARKER.sub(replace, markdown)


# --- settings --------------------------------------------------------------------------------

def settings_names() -> list[str]:
    names: list[str] = []
    for source in SETTINGS_SOURCES:
        names += ENV_NAME.findall((ROOT / source).read_text())
    return sorted(set(names))


def check_settings(markdown: str, where: str) -> None:
    names = settings_names()
    if not names:
        log.warning("%s: found no environment variable in %s; update docs/hooks/reference.py",
                    where, ", ".join(SETTINGS_SOURCES))
    for name in names:
        if f"`{name}`" not in markdown:
            log.warning("%s: the settings table does not name `%s` (read in %s); add a row",
                        where, name, " or ".join(SETTINGS_SOURCES))


# --- include ---------------------------------------------------------------------------------

def include(relative: str) -> str:
    text = (ROOT / relative).read_text()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    fenced = False
    out = []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out)


# --- the OpenAPI document --------------------------------------------------------------------

METHODS = ("get", "post", "put", "patch", "delete")
# Schemas documented on the spec pages rather than here.
SPEC_LINKS = {"JobSpec": f"{JOBSPEC_PAGE}#reference", "SweepSpec": f"{SWEEPS_PAGE}#reference"}


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict:
    from service.api.openapi import document

    return document()


def operation_anchor(method: str, path: str, op: dict) -> str:
    return "op-" + re.sub(r"[^a-z0-9]+", "-", op.get("operationId", f"{method} {path}").lower())


def _schema_text(schema: dict, components: SchemaTables) -> str:
    name = schema.get("$ref", "").rsplit("/", 1)[-1]
    if name in SPEC_LINKS:
        return f"[{name}]({SPEC_LINKS[name]})"
    if name:
        return f"[{name}](#schema-{name.lower()})"
    if schema.get("properties"):
        return "an object with the fields below"
    text, allowed, _ = components.describe(schema, "body")
    return text + (f" ({allowed})" if allowed else "")


def openapi_markdown() -> str:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    components = SchemaTables(schemas, links=SPEC_LINKS, anchor_prefix="schema-",
                              refs_by_name=True, responses=True)
    lines = [(f"Generated from the OpenAPI {doc['openapi']} document of kerasyard "
              f"{doc['info']['version']} (`GET /api/v1/openapi.json`). "
              f"{doc['info'].get('description', '')}"), ""]
    tag_names = [t["name"] for t in doc.get("tags", [])]
    by_tag: dict[str, list] = {name: [] for name in tag_names}
    for path, ops in doc["paths"].items():
        for method in METHODS:
            if method in ops:
                tag = (ops[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, ops[method]))
    lines += ["| method and path | summary |", "| --- | --- |"]
    for tag, ops in by_tag.items():
        for method, path, op in ops:
            anchor = operation_anchor(method, path, op)
            summary = cell(op.get("summary", ""))
            lines.append(f"| [`{method.upper()} {path}`](#{anchor}) | {summary} |")
    lines.append("")
    descriptions = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    for tag, ops in by_tag.items():
        lines += [f"## {tag}", "", descriptions.get(tag, ""), ""]
        for method, path, op in ops:
            lines += operation_markdown(method, path, op, doc, components)
    lines += ["## Schemas {#schemas}", "",
              ("The bodies the API answers with. The job and sweep specs are on their own "
               f"pages: [JobSpec]({SPEC_LINKS['JobSpec']}), "
               f"[SweepSpec]({SPEC_LINKS['SweepSpec']})."), ""]
    referenced, todo = set(), _refs(doc["paths"])
    while todo:  # the schemas the paths use, and the schemas those use
        name = todo.pop()
        if name not in referenced and name not in SPEC_LINKS:
            referenced.add(name)
            todo |= _refs(schemas[name])
    for name in [n for n in schemas if n in referenced]:
        components.add_object({"$ref": f"#/components/schemas/{name}"}, name, model=name)
    lines.append(components.markdown(level=3))
    return "\n".join(lines)


def _refs(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if "$ref" in node:
            found.add(node["$ref"].rsplit("/", 1)[-1])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def operation_markdown(method: str, path: str, op: dict, doc: dict,
                       components: SchemaTables) -> list[str]:
    anchor = operation_anchor(method, path, op)
    lines = [f"### `{method.upper()} {path}` {{#{anchor}}}", "", f"**{op.get('summary', '')}**"]
    if op.get("description"):
        lines += ["", op["description"]]
    lines += ["", _token_line(op, doc), ""]
    lines += _parameters(op, components)
    lines += _request_body(op, components)
    lines += _responses(op, components)
    return lines


def _token_line(op: dict, doc: dict) -> str:
    security = op.get("security", doc.get("security", []))
    if not any(security):
        token = "none"
    elif any(not s for s in security):  # {} among the alternatives: the token is optional
        token = "`Authorization: Bearer …` when the server sets `KERASYARD_API_TOKEN`"
    else:
        token = "required"
    operation = f" Operation id `{op['operationId']}`." if op.get("operationId") else ""
    return f"Token: {token}.{operation}"


def _parameters(op: dict, components: SchemaTables) -> list[str]:
    params = op.get("parameters", [])
    if not params:
        return []
    lines = ["| parameter | in | type | required | allowed | description |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in params:
        text, allowed, _ = components.describe(p.get("schema", {}), p["name"])
        default = p.get("schema", {}).get("default")
        if default is not None:
            allowed = "; ".join(x for x in (allowed, f"default {code(default)}") if x)
        lines.append(f"| `{p['name']}` | {p['in']} | {cell(text)} | "
                     f"{'yes' if p.get('required') else 'no'} | {cell(allowed)} | "
                     f"{cell(p.get('description', ''))} |")
    return lines + [""]


def _request_body(op: dict, components: SchemaTables) -> list[str]:
    body = op.get("requestBody")
    if not body:
        return []
    lines = ["Request body" + (" (required)" if body.get("required") else "") + ":", ""]
    for ctype, media in body.get("content", {}).items():
        schema = media.get("schema", {})
        lines.append(f"- `{ctype}`: {_schema_text(schema, components)}")
        for name, sub in (schema.get("properties") or {}).items():
            text, allowed, _ = components.describe(sub, name)
            lines.append(f"    - `{name}`: {text}" + (f" ({allowed})" if allowed else ""))
    lines.append("")
    example = next((m["example"] for m in body.get("content", {}).values() if "example" in m),
                   None)
    if example is not None:
        lines += ['??? example "Example body"', "", "    ```json"]
        lines += ["    " + line for line in json.dumps(example, indent=2).splitlines()]
        lines += ["    ```", ""]
    return lines


def _responses(op: dict, components: SchemaTables) -> list[str]:
    lines = ["| status | description | body |", "| --- | --- | --- |"]
    for status, response in op.get("responses", {}).items():
        bodies = [f"`{ctype}`: {_schema_text(media.get('schema', {}), components)}"
                  for ctype, media in (response.get("content") or {}).items()]
        headers = ", ".join(f"header `{h}`" for h in response.get("headers", {}))
        lines.append(f"| {status} | {cell(response.get('description', ''))} | "
                     f"{cell('; '.join(bodies + ([headers] if headers else [])))} |")
    return lines + [""]
