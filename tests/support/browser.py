"""A real headless Chromium for the console tests: Debian's ``chromium`` package driven by Playwright (the Python
package; its bundled driver talks to the browser over CDP). No browser is downloaded: ``executable_path`` points at
the system binary, which ``make test`` installs with apt when it is missing (Makefile ``browser``).

Screenshots go to ``tests/artifacts/screenshots/`` (kept by CI as artifacts; the best are copied into docs/img/).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from tests.support.gateway import REPO_ROOT

SCREENSHOTS = REPO_ROOT / "tests" / "artifacts" / "screenshots"


def chromium_path() -> str:
    """The system Chromium, or a clear failure (never a skip: the console tests are part of the suite)."""
    for candidate in (os.environ.get("PORTCULLIS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(
        "Chromium is not installed: `make test` installs Debian's chromium package (apt-get install chromium); "
        "or set PORTCULLIS_CHROMIUM to a Chromium binary"
    )


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            timeout=30_000,
        )
        try:
            yield browser
        finally:
            await browser.close()


def screenshot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"{name}.png")
