"""The OpenAPI document declares what the server enforces: each pattern it gives is held
against the code that enforces the rule, over every short string of the characters that
matter, so that a schema-valid request is not refused for it and a refused one is not valid."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest

from service.api.openapi import CSV_PATTERN, document
from service.errors import ApiError
from service.jobspec import JobSpec, SpecError
from service.jobspec.models import MAX_TAG_KEY, TAG_KEY_PATTERN
from service.jobspec.sweep import PARAMETER_PATH_PATTERN
from service.jobspec.sweep_checks import validate_sweep
from service.store.paging import CURSOR_PATTERN, decode_cursor, encode_cursor
from service.uploads.datasets import CsvError, read_rows
from tests.helpers import tiny_spec


def _strings(alphabet: str, longest: int):
    for n in range(longest + 1):
        for chars in itertools.product(alphabet, repeat=n):
            yield "".join(chars)


def _tag_key_ok(key: str) -> bool:
    try:
        JobSpec._mlflow_tag_keys({key: "v"})
    except ValueError:
        return False
    return True


def test_the_tag_key_pattern_is_the_validators_rule():
    pattern = re.compile(TAG_KEY_PATTERN)
    for key in _strings("a./ -\n\t_é", 5):
        declared = bool(pattern.search(key)) and 1 <= len(key) <= MAX_TAG_KEY
        assert declared == _tag_key_ok(key), repr(key)
    for key in ("a" * MAX_TAG_KEY, "a" * (MAX_TAG_KEY + 1), "x" * (MAX_TAG_KEY - 1) + "\n"):
        assert (bool(pattern.search(key)) and len(key) <= MAX_TAG_KEY) == _tag_key_ok(key)


def test_every_csv_the_server_reads_matches_the_declared_pattern():
    pattern = re.compile(CSV_PATTERN)
    for text in _strings('a\n\r\x0b\u2028",  ', 5):
        try:
            read_rows(text.encode())
        except CsvError:
            continue
        assert pattern.search(text) and len(text) >= 5, repr(text)
    assert not pattern.search("x,label\n1,0\n")  # one data row: refused by both


@pytest.mark.parametrize("path", ["", ".", "fit.", "fit..epochs", ".fit", "fitx", "0",
                                  "epochs", "fit\x00"])
def test_a_parameter_path_outside_the_pattern_is_refused(path):
    assert not re.search(PARAMETER_PATH_PATTERN, path)
    sweep = {"name": "s", "base": tiny_spec("p"), "parameters": {path: [1, 2]}}
    with pytest.raises(SpecError):
        validate_sweep(sweep)


def test_the_parameter_paths_of_the_examples_match():
    for path in ("fit.batch_size", "fit.epochs", "model.hidden_activation",
                 "model.layers.0.units", "compile.optimizer.learning_rate", "tags.team"):
        assert re.search(PARAMETER_PATH_PATTERN, path), path


@pytest.mark.parametrize("created", [dt.datetime(2024, 6, 11, 10, 0, 0, 123456, dt.timezone.utc),
                                     dt.datetime(2024, 6, 11, 10, 0, 0),  # SQLite's, naive
                                     dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)])
def test_a_cursor_names_its_row_and_matches_the_pattern(created):
    cursor = encode_cursor(created, "0123456789abcdef0123456789abcdef")
    assert re.search(CURSOR_PATTERN, cursor)
    when, row_id = decode_cursor(cursor)
    assert when == created.replace(tzinfo=created.tzinfo or dt.timezone.utc)
    assert row_id == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("cursor", ["0.x", "99999999999999999.a", "1.a.b", "12.\n", "5.é"])
def test_every_cursor_the_pattern_admits_is_read(cursor):
    assert re.search(CURSOR_PATTERN, cursor)
    decode_cursor(cursor)


@pytest.mark.parametrize("cursor", ["garbage!", "1", ".a", "a.b", "123456789012345678.a", "1.",
                                    "WyIyMDI0LTA2LTExVDEwOjAwOjAwKzAwOjAwIiwgImEiXQ"])
def test_any_other_cursor_is_a_400_naming_it(cursor):
    assert not re.search(CURSOR_PATTERN, cursor)
    with pytest.raises(ApiError) as err:
        decode_cursor(cursor)
    assert err.value.status == 400 and err.value.details[0]["loc"] == "cursor"


def test_the_document_declares_them():
    doc = document()
    schemas = doc["components"]["schemas"]
    tags = schemas["JobSpec"]["properties"]["tags"]
    assert tags["propertyNames"]["pattern"] == TAG_KEY_PATTERN
    assert tags["additionalProperties"]["maxLength"] == 5000
    names = schemas["SweepSpec"]["properties"]["parameters"]["propertyNames"]
    assert names["pattern"] == PARAMETER_PATH_PATTERN and names["minLength"] == 1
    for path in ("/api/v1/jobs", "/api/v1/sweeps"):
        cursor = next(p for p in doc["paths"][path]["get"]["parameters"]
                      if p["name"] == "cursor")
        assert cursor["schema"]["pattern"] == CURSOR_PATTERN
    for page in ("JobList", "SweepList"):
        assert schemas[page]["properties"]["next_cursor"]["pattern"] == CURSOR_PATTERN
    upload = doc["paths"]["/api/v1/datasets"]["post"]["requestBody"]
    assert "at least 2 data rows" in upload["description"]
    assert upload["content"]["text/csv"]["schema"]["pattern"] == CSV_PATTERN
