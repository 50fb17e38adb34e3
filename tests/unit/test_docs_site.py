"""The docs site builds strictly, and its generated references match the code.

The job-spec reference (docs/jobspec.md) and the sweep-spec reference (docs/sweeps.md) are
generated from the pydantic models by docs/hooks/reference.py, and the REST reference
(docs/api.md) from the OpenAPI document. These tests walk the models and the document on their
own, not through the hook, and check that every field and every path is on its page and that
the tables hold no field the models lack. `mkdocs build --strict` also fails on a broken link or
anchor, a settings table without a variable service/config.py reads, and a field note in
docs/hooks/field_notes.yml that names no field.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("mkdocs", reason="the docs site needs the dev extra's mkdocs")
pytest.importorskip("material", reason="the docs site needs the dev extra's mkdocs-material")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def page(site: Path, name: str) -> str:
    """The page's HTML, entities left as they are (``&lt;key&gt;``)."""
    return (site / name / "index.html").read_text()


# --- the models, walked by their annotations -------------------------------------------------

def _models_in(annotation) -> list[tuple[type[BaseModel], str]]:
    """The models an annotation can hold, each with the path suffix that reaches it: ``""``
    for the field itself, ``"[]"`` for a list's items, ``".<key>"`` for a map's values."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _models_in(arg)]
    if origin is list:
        return [(m, "[]" + rest) for m, rest in _models_in(args[0])]
    if origin is dict:
        return [(m, ".<key>" + rest) for m, rest in _models_in(args[1])]
    return []


def field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field's path as the reference writes it (``model.layers[].units``)."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        paths.add(path)
        for sub, suffix in _models_in(info.annotation):
            paths |= field_paths(sub, path + suffix)
    return paths


def reference_paths(text: str, marker: str) -> set[str]:
    """The first-column paths of the tables after ``marker`` (the reference's heading)."""
    section = text.split(marker, 1)[1]
    return {html.unescape(cell)
            for cell in re.findall(r"<tr>\s*<td><code>([^<]+)</code></td>", section)}


def test_the_job_spec_reference_lists_every_field_of_the_models_and_no_other(site):
    from service.jobspec.models import JobSpec

    expected = field_paths(JobSpec)
    assert {"dataset.n_classes", "model.layers[].units", "compile.optimizer.momentum",
            "fit.early_stopping.patience", "resources.queue", "tags"} <= expected
    shown = reference_paths(page(site, "jobspec"), 'id="reference"')
    assert expected - shown == set(), "fields missing from docs/jobspec.md's reference"
    assert shown - expected == set(), "rows in docs/jobspec.md's reference that are no field"


def test_the_sweep_spec_reference_lists_every_field_of_the_models_and_no_other(site):
    from service.jobspec.sweep import SweepSpec

    expected = field_paths(SweepSpec)
    assert {"parameters.<key>.low", "early_stopping.reduction_factor", "objective.goal"} <= expected
    shown = reference_paths(page(site, "sweeps"), 'id="reference"')
    assert expected - shown == set(), "fields missing from docs/sweeps.md's reference"
    assert shown - expected == set(), "rows in docs/sweeps.md's reference that are no field"


def test_the_rest_reference_has_every_path_and_method_of_the_openapi_document(site):
    from service.api.openapi import document

    text = html.unescape(page(site, "api"))
    doc = document()
    operations = [(method.upper(), path, op) for path, ops in doc["paths"].items()
                  for method, op in ops.items() if method in ("get", "post", "put", "delete")]
    assert len(operations) >= 15
    for method, path, op in operations:
        heading = re.search(rf"<h3 id=\"[^\"]+\"><code>{re.escape(f'{method} {path}')}</code>",
                            text)
        assert heading, f"{method} {path} has no section in docs/api.md"
        section = text[heading.end():].split("<h3", 1)[0]
        assert op["summary"] in section, (method, path)
        for parameter in op.get("parameters", []):
            assert f"<code>{parameter['name']}</code>" in section, (method, path, parameter)
        for status in op["responses"]:
            assert f"<td>{status}</td>" in section, (method, path, status)
    for name in ("Job", "Sweep", "Trial", "Error", "Health"):
        assert f'id="schema-{name.lower()}"' in text, name


def test_no_page_points_at_the_teams_folder():
    pages = [ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")]
    for path in pages:
        text = path.read_text()
        for needle in ("shared/", "ARCHITECTURE.md"):
            assert needle not in text, f"{path.relative_to(ROOT)} names {needle}"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md is {len(lines)} lines; move detail to docs/"
