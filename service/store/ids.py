"""Jobs and sweeps by full id or by a unique prefix of one (the 8 characters the command
line's tables show), as git and docker take them."""

from __future__ import annotations

import re

from sqlalchemy import and_, func, select

from service.errors import ApiError

MIN_PREFIX = 4  # shorter prefixes name a row by accident too easily (`cancel a`)
SHOWN = 5  # candidates named in an ambiguous prefix's error
_PREFIX = re.compile(r"^[0-9a-fA-F]{1,31}$")  # ids are 32 lowercase hex digits


def prefix_match(column, prefix: str):
    """``column`` begins with ``prefix`` (lowercase hex digits), as the range
    [prefix, prefix + "g"): "g" sorts after every hex digit, in byte order and in the
    locales' collations alike. A btree index (the primary key) serves a range under any
    collation; ``LIKE 'prefix%'`` only under the C collation, and the official PostgreSQL
    image initialises its databases with en_US.utf8."""
    return and_(column >= prefix, column < prefix + "g")


def full_id(s, model, ident: str, what: str, loc: str) -> str:
    """The id ``ident`` stands for: itself when it is not a prefix of an id (the caller looks
    it up and answers 404 if it is none), else the one id it begins.

    Raises ApiError 409 ``ambiguous_id`` naming the candidates when several ids begin with
    it, or when it is shorter than MIN_PREFIX characters.
    """
    if not _PREFIX.match(ident):
        return ident
    prefix = ident.lower()
    match = prefix_match(model.id, prefix)
    rows = s.execute(select(model.id, model.name, model.status).where(match)
                     .order_by(model.created_at.desc(), model.id).limit(SHOWN + 1)).all()
    if not rows:
        return ident
    if len(rows) == 1 and len(prefix) >= MIN_PREFIX:
        return rows[0].id
    details = [{"loc": loc, "msg": f"{r.id}  {r.name} ({getattr(r.status, 'value', r.status)})",
                "value": r.id} for r in rows[:SHOWN]]
    # The candidates are in the details (id, name, status), one each.
    if len(rows) == 1:
        raise ApiError(409, "ambiguous_id", f"id prefix {ident!r} is too short: give at least "
                       f"{MIN_PREFIX} characters of the {what} id", details)
    n = len(rows) if len(rows) <= SHOWN else s.scalar(select(func.count()).where(match))
    shown = "" if n <= SHOWN else f" (the newest {SHOWN} in details)"
    raise ApiError(409, "ambiguous_id", f"id prefix {ident!r} matches {n} {what}s{shown}; "
                   "give more characters", details)
