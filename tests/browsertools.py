"""Chromium for the browser tests: Debian's, driven by Playwright (never `playwright
install`, which would download a browser this machine may not fetch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
#: Quiet and offline: no background fetches, updates or sync that a test would not see.
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """A headless Chromium, closed on exit. Missing, it fails the test where the browser
    tests are wanted (`SERVICELAB_TEST_BROWSER`, CI) and skips it elsewhere."""
    if not CHROMIUM.exists():
        if os.environ.get("SERVICELAB_TEST_BROWSER") or os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: run scripts/setup-browser.sh")
        pytest.skip("no /usr/bin/chromium: run scripts/setup-browser.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()
