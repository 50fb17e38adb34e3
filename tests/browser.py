"""A real browser for the tests: headless Chromium from Debian's ``chromium`` and
``chromium-driver`` packages, driven by Selenium. ``.ci/run`` installs both packages; elsewhere
a machine without them skips the browser tests (in CI, where ``KERASYARD_REQUIRE_BROWSER`` is
set, it fails them instead, saying what to install).

Screenshots go under :data:`SHOTS` (``test-output/screenshots``, or ``$KERASYARD_TEST_OUTPUT``),
where CI keeps test output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHOTS = Path(os.environ.get("KERASYARD_TEST_OUTPUT", "test-output")) / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} not found: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver, quit on exit."""
    why = _missing()
    if why:
        if os.environ.get("KERASYARD_REQUIRE_BROWSER"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.TemporaryDirectory(prefix="kerasyard-chromium-")
    # No background connections: this machine's network is closed, and the tests talk to
    # loopback only.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile.name}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def screenshot(driver, name: str) -> Path:
    """Save a PNG of the page under SHOTS; returns its path."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
