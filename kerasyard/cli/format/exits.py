"""Exit codes and API errors as the command reports them."""

from __future__ import annotations

from ...errors import ApiError

# Exit codes (documented in `kerasyard --help` and docs/cli.md).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2          # bad arguments, unreadable spec, or any 4xx from the API
EXIT_CANCELLED = 3
EXIT_OTHER = 4          # pruned, paused, a 5xx, or a result that is none of the above
EXIT_UNREACHABLE = 5

EXIT_CODES_HELP = """exit codes:
  0  succeeded (or the command did what it was asked)
  1  the job or sweep failed
  2  usage or validation error: bad arguments, unreadable spec, any 4xx from the API
  3  the job or sweep was cancelled
  4  pruned, paused (a watch ends there), or another outcome (a 5xx from the API, no
     MLflow run yet)
  5  cannot reach the service"""

_STATUS_EXIT = {"succeeded": EXIT_SUCCEEDED, "failed": EXIT_FAILED,
                "cancelled": EXIT_CANCELLED, "pruned": EXIT_OTHER, "paused": EXIT_OTHER}


def exit_code_for_status(status: str | None) -> int:
    """The process exit code for a job's or sweep's final status."""
    return _STATUS_EXIT.get(status or "", EXIT_OTHER)


def exit_code_for_error(exc: ApiError) -> int:
    """4xx (the request was wrong) is a usage error; anything else is 'other'."""
    return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_OTHER


def render_api_error(exc: ApiError) -> list[str]:
    """``error: code: message``, then one ``  field.path: message`` line per detail. A message
    that spells its details out again ("the job spec is invalid: 2 errors: fit.epochs: ...")
    is cut before the first of them, so nothing is printed twice."""
    message = exc.message
    lines = []
    for d in exc.details:
        if isinstance(d, dict):
            loc = d.get("loc")
            loc = ".".join(map(str, loc)) if isinstance(loc, list) else (loc or "(request)")
            lines.append(f"  {loc}: {d.get('msg', '')}")
            at = message.find(f"{loc}: ")
            if at > 0 and len(lines) == 1:
                message = message[:at].rstrip(": ;")
        else:
            lines.append(f"  {d}")
    return [f"error: {exc.code}: {message}"] + lines
