"""What :class:`kerasyard.Client` raises: :class:`ApiError` when the API answered with an error,
:class:`ServiceUnreachable` when nothing answered at all. Standard library only."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """The API answered with an error: ``{"error": {"code", "message", "details"}}``.

    Attributes:
        status: the HTTP status (400, 401, 404, 409, 413, 422, 5xx).
        code: the API's error code, e.g. ``invalid_spec``.
        message: the API's message.
        details: a list of ``{"loc": "model.layers.2.units", "msg": "...", ...}``.
        body: the decoded response body, when it was JSON.

    Example:
        >>> try:
        ...     api.submit_job({"name": "x"})
        ... except ApiError as exc:
        ...     for d in exc.details:
        ...         print(d["loc"], d["msg"])
    """

    def __init__(self, status: int, code: str, message: str, details: list[dict] | None = None,
                 body: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = list(details or [])
        self.body = body


class ServiceUnreachable(Exception):
    """No HTTP answer at all: connection refused, DNS failure, timeout.

    Attributes:
        url: the service's base URL.
        reason: what the network layer said.
    """

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the kerasyard service at {url}: {reason}")
        self.url, self.reason = url, reason


def api_error_from_response(status: int, raw: bytes, reason: str) -> ApiError:
    """An HTTP error response as an :class:`ApiError`.

    Args:
        status: the HTTP status.
        raw: the response body as received.
        reason: the HTTP reason phrase, the message when the body has none.

    Returns:
        ApiError: the API's error JSON field by field; a degraded health body as code
        ``degraded`` naming the components down; anything else (a proxy's HTML page) as code
        ``http_error`` with the start of the text.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        details = err.get("details") if isinstance(err.get("details"), list) else []
        return ApiError(status, str(err.get("code") or "http_error"),
                        str(err.get("message") or reason), details, body)
    if isinstance(body, dict) and body.get("status") == "degraded":
        down = [f"{name}: {c.get('detail')}" for name, c in (body.get("components") or {}).items()
                if isinstance(c, dict) and not c.get("ok")]
        return ApiError(status, "degraded", "the service is degraded: " + "; ".join(down),
                        body=body)
    text = raw.decode("utf-8", "replace").strip()
    return ApiError(status, "http_error",
                    f"HTTP {status} {reason}" + (f": {text[:300]}" if text else ""), body=body)
