"""Jobs by full id or unique id prefix (service/store/ids.py), on an SQLite database in a file."""

from __future__ import annotations

import pytest

from service.errors import ApiError
from service.store.db import session_scope
from service.store.ids import full_id
from service.store.models import Base, Job


@pytest.fixture()
def db(tmp_path):
    from service.store.db import get_engine

    url = f"sqlite:///{tmp_path / 'ids.db'}"
    Base.metadata.create_all(get_engine(url))
    ids = ["abcd" + "1" * 28, "abcd" + "2" * 28, "f00d" + "3" * 28]
    with session_scope(url) as s:
        for i, job_id in enumerate(ids):
            s.add(Job(id=job_id, name=f"job{i}", experiment="e", queue="cpu", spec={}, plan={}))
    return url, ids


def resolve(url, ident):
    with session_scope(url) as s:
        return full_id(s, Job, ident, "job", "job_id")


def test_a_unique_prefix_gives_the_full_id(db):
    url, ids = db
    assert resolve(url, "abcd1") == ids[0]
    assert resolve(url, "F00D") == ids[2]  # hex digits in either case
    assert resolve(url, ids[1]) == ids[1]


def test_anything_else_comes_back_as_given_for_the_callers_404(db):
    url, _ = db
    assert resolve(url, "beef") == "beef"  # a prefix of nothing
    assert resolve(url, "nope") == "nope"  # not hex: not a prefix
    assert resolve(url, "abcd%") == "abcd%"


def test_an_ambiguous_prefix_is_409_naming_the_candidates(db):
    url, ids = db
    with pytest.raises(ApiError) as info:
        resolve(url, "abcd")
    exc = info.value
    assert (exc.status, exc.code) == (409, "ambiguous_id")
    assert exc.message == "id prefix 'abcd' matches 2 jobs; give more characters"
    assert sorted(d["value"] for d in exc.details) == ids[:2]
    assert sorted(d["msg"] for d in exc.details) == [f"{ids[0]}  job0 (queued)",
                                                     f"{ids[1]}  job1 (queued)"]
    assert all(d["loc"] == "job_id" for d in exc.details)


def test_a_prefix_under_4_characters_is_409_even_when_unique(db):
    url, ids = db
    with pytest.raises(ApiError) as info:
        resolve(url, "f0")
    assert info.value.status == 409
    assert info.value.message == "id prefix 'f0' is too short: give at least 4 characters " \
                                 "of the job id"
    assert [d["value"] for d in info.value.details] == [ids[2]]
