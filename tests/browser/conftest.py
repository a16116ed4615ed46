"""Fixtures of the browser tests: one headless Chromium per test session (per xdist worker), local pages.

``browser``: a Selenium 4 WebDriver (Chromium, a fresh profile under the session's tmp, 1280x900). Helpers
that take it -- ``screenshot``, ``axe``, ``phone_width``, ``horizontal_overflow``, ``console_errors`` -- are in
``tests/browser/harness.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver

from tests.browser.harness import PageServer, artefacts_dir, start_chromium


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[webdriver.Chrome]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"),
                            log=artefacts_dir() / f"chromedriver-{worker_id}.log")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The session's browser, left for the next test as this one found it: no emulation, its console read."""
    browser.get_log("browser")
    yield browser
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    """A local server for a test's own pages, sent with the console's Content-Security-Policy."""
    with PageServer() as server:
        yield server
