"""What a route needs from the app it runs in."""

from __future__ import annotations

from flask import current_app

from service.config import Settings

SETTINGS_KEY = "kerasyard.settings"


def settings_of() -> Settings:
    return current_app.extensions[SETTINGS_KEY]
