"""One HTTP call to the kerasyard API, with the standard library: the URL, the token, the JSON
in and out, and the two ways it fails (:mod:`kerasyard.errors`). :class:`kerasyard.Client`
builds every endpoint on :meth:`Transport.request`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import ApiError, ServiceUnreachable, api_error_from_response

DEFAULT_URL = "http://127.0.0.1:8000"


class Transport:
    """Where the service is and how to call it: the base of :class:`kerasyard.Client`, whose
    docstring documents the arguments (``base_url``, ``token``, ``timeout``)."""

    def __init__(self, base_url: str | None = None, token: str | None = None,
                 timeout: float = 30.0):
        base = (base_url or os.environ.get("KERASYARD_URL") or DEFAULT_URL).rstrip("/")
        base = base.removesuffix("/api/v1")
        if "://" not in base:
            base = "http://" + base
        self.base_url = base
        self.token = token if token is not None else os.environ.get("KERASYARD_API_TOKEN") or None
        self.timeout = timeout

    def request(self, method: str, path: str, *, params: dict | None = None,
                json_body: Any = None, data: bytes | None = None,
                content_type: str | None = None) -> Any:
        """One HTTP call to ``/api/v1{path}``: the way to a route this class has no method for.

        Args:
            method: ``GET`` or ``POST``.
            path: the route below ``/api/v1``, e.g. ``/jobs``; ids in it must be quoted.
            params: the query string; ``None`` and ``""`` values are left out.
            json_body: a body sent as JSON (it takes precedence over ``data``).
            data: a raw body, with ``content_type``.
            content_type: the ``Content-Type`` of ``data``.

        Returns:
            Any: the decoded JSON body, or None for an empty one.

        Raises:
            ApiError: the API answered 4xx or 5xx, or with a body that is not JSON (status 502,
                code ``bad_response``).
            ServiceUnreachable: no HTTP answer (connection refused, DNS failure, timeout).
        """
        url = f"{self.base_url}/api/v1{path}"
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": "kerasyard-client"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise api_error_from_response(exc.code, exc.read(), exc.reason) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable(self.base_url, str(reason)) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(502, "bad_response", f"{method} {url} answered with something that "
                           f"is not JSON: {raw[:200]!r}") from None


def quote(value: str) -> str:
    """An id as one path segment (``/`` and everything else reserved percent-encoded)."""
    return urllib.parse.quote(str(value), safe="")
