"""/api/v1/openapi.json and /api/v1/docs: Swagger UI over the document, served from this app.

Swagger UI's files come from the ``flask-swagger-ui`` package (its ``dist`` folder: the
upstream swagger-ui-dist build); we serve the three the page loads from ``/api/v1/docs/<asset>``,
so the page works with no internet. We do not use that package's blueprint: our page picks its
own settings (no top bar that loads other URLs, no online validator badge) and lives at the path
the document declares.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, redirect, send_from_directory

from service.api.context import settings_of
from service.api.openapi import DOCS_ASSETS, document
from service.errors import ApiError

bp = Blueprint("docs", __name__)

ASSET_MAX_AGE_S = 3600


def swagger_ui_dist():
    """The folder of Swagger UI's built files inside the installed ``flask-swagger-ui``."""
    return resources.files("flask_swagger_ui").joinpath("dist")


@bp.get("/api/v1/openapi.json")
def openapi():
    # What this deployment asks: the bearer token when KERASYARD_API_TOKEN is set, none if not.
    return document(token_required=bool(settings_of().api_token))


@bp.get("/openapi.json")
def openapi_root():
    return redirect("/api/v1/openapi.json")


@bp.get("/api/v1/docs")
def docs():
    page = resources.files(__package__).joinpath("docs.html").read_text()
    return Response(page, mimetype="text/html")


@bp.get("/api/v1/docs/<asset>")
def docs_asset(asset: str):
    # Only the files the page loads (DOCS_ASSETS), each with its declared content type rather
    # than one guessed from the machine's mime.types, which maps .js differently on different
    # systems.
    if asset not in DOCS_ASSETS:
        raise ApiError(404, "not_found", f"no docs asset {asset[:80]!r}; the page loads "
                       f"{', '.join(DOCS_ASSETS)}")
    return send_from_directory(str(swagger_ui_dist()), asset, mimetype=DOCS_ASSETS[asset],
                               max_age=ASSET_MAX_AGE_S)


@bp.get("/docs")
def docs_root():
    return redirect("/api/v1/docs")
