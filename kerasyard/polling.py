"""Waiting on the API: every page of a listing, and polling one job or sweep until it ends,
riding out an API restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from .errors import ServiceUnreachable


def pages(fetch: Callable[..., dict], key: str, page_size: int, **filters) -> Iterator[dict]:
    """Every item of a paged listing: ``fetch(limit=, cursor=, **filters)[key]``, page after
    page, following ``next_cursor`` until a page has none.

    Args:
        fetch: a listing method such as :meth:`kerasyard.Client.list_jobs`.
        key: where the page holds its items (``"jobs"``, ``"sweeps"``).
        page_size: the ``limit`` of each request.
        **filters: passed to every call.

    Returns:
        Iterator[dict]: the items; a page is fetched when the one before is used up.

    Raises:
        ApiError, ServiceUnreachable: what ``fetch`` raises, while iterating.
    """
    cursor = None
    while True:
        page = fetch(limit=page_size, cursor=cursor, **filters)
        yield from page[key]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def wait_until_ended(fetch: Callable[[], dict], terminal: frozenset, what: str, poll: float,
                     timeout: float | None, on_update: Callable[[dict], None] | None,
                     unreachable_grace: float) -> dict:
    """``fetch()`` every ``poll`` seconds until the item's ``status`` is in ``terminal``.

    Args:
        fetch: reads the item (:meth:`kerasyard.Client.get_job`, bound to an id).
        terminal: the statuses that end the wait.
        what: the item in the timeout's message (``"job 3f2c..."``).
        poll: seconds between polls.
        timeout: seconds before giving up; None waits forever.
        on_update: called with the item after every answered poll.
        unreachable_grace: seconds of :class:`ServiceUnreachable` in a row to ride out.

    Returns:
        dict: the item in a terminal status.

    Raises:
        TimeoutError: ``timeout`` passed first.
        ServiceUnreachable: the service stayed unreachable for ``unreachable_grace`` seconds.
        ApiError: what ``fetch`` raises (not retried).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    down_since = None
    while True:
        try:
            item = fetch()
            down_since = None
        except ServiceUnreachable:
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= unreachable_grace:
                raise
            item = None
        if item is not None:
            if on_update is not None:
                on_update(item)
            if item.get("status") in terminal:
                return item
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what} had not ended after {timeout:g} s")
        time.sleep(poll)
