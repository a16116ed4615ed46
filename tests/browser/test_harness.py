"""The browser harness itself: each helper finds what it is there to find (else a browser test could pass blind)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from selenium import webdriver

from tests.browser.harness import (
    AccessibilityViolations,
    PageServer,
    axe,
    console_errors,
    horizontal_overflow,
    phone_width,
    screenshot,
)

HEAD = '<!doctype html><html lang="en"><head><meta charset="utf-8">' \
       '<meta name="viewport" content="width=device-width, initial-scale=1"><title>t</title>' \
       '<link rel="stylesheet" href="/harness.css"></head>'
CSS = ".faint { color: #c8c8c8; background: #fff; } .wide { width: 600px; height: 2000px; }"


@pytest.fixture
def served(page_server: PageServer) -> PageServer:
    page_server.add("/harness.css", CSS)
    return page_server


def test_axe_fails_on_serious_and_critical_violations_naming_each(page: webdriver.Chrome, served: PageServer) -> None:
    page.get(served.add("/inaccessible.html", '<!doctype html><html><head><meta charset="utf-8"><title>t</title>'
                        '<link rel="stylesheet" href="/harness.css"></head><body><main>'
                        '<img src="/favicon.ico"><button></button><p class="faint">hard to read</p>'
                        "</main></body></html>"))
    with pytest.raises(AccessibilityViolations) as caught:
        axe(page)
    found = {v["id"] for v in caught.value.violations}
    assert {"image-alt", "button-name", "color-contrast", "html-has-lang"} <= found
    message = str(caught.value)
    assert message.startswith(f"axe-core found {len(found)} serious or critical accessibility violation(s) on ")
    assert "- color-contrast (serious): Elements must meet minimum color contrast ratio thresholds" in message
    assert 'at p <p class="faint">hard to read</p>: Fix any of the following: Element has insufficient color ' \
           "contrast of 1.67" in message
    assert "at img <img" in message
    # Asked to fail on nothing, it reports the same violations instead.
    assert {v["id"] for v in axe(page, fail_on=())} >= found


def test_axe_passes_an_accessible_page(page: webdriver.Chrome, served: PageServer) -> None:
    page.get(served.add("/accessible.html", HEAD + '<body><main><h1>Referrals</h1><p>None yet.</p>'
                        '<button type="button">Refresh</button></main></body></html>'))
    violations = axe(page)
    assert all(v["impact"] not in ("serious", "critical") for v in violations)


def test_phone_width_and_overflow(page: webdriver.Chrome, served: PageServer) -> None:
    page.get(served.add("/wide.html", HEAD + '<body><main><h1>Wide</h1><div class="wide"></div></main></body></html>'))
    assert page.execute_script("return window.innerWidth") > 600
    assert horizontal_overflow(page) == 0
    with phone_width(page):
        assert page.execute_script("return [document.documentElement.clientWidth, screen.width]") == [360, 360]
        assert horizontal_overflow(page) >= 600 - 360
    assert page.execute_script("return window.innerWidth") > 600


def test_screenshots_go_where_artefacts_go(page: webdriver.Chrome, served: PageServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFNET_TEST_ARTEFACTS", str(tmp_path / "artefacts"))
    page.get(served.url("/wide.html") if "/wide.html" in served.pages else served.add(
        "/long.html", HEAD + '<body><main><h1>Long</h1><div class="wide"></div></main></body></html>'))
    whole, viewport = screenshot(page, "a long page / step 1"), screenshot(page, "viewport", full_page=False)
    assert whole == tmp_path / "artefacts" / "a-long-page-step-1.png"
    sizes = []
    for path in (whole, viewport):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        sizes.append(struct.unpack(">II", data[16:24]))  # IHDR: width, height
    assert sizes[0][1] > 2000 > sizes[1][1]  # the whole page, not only what the window shows


def test_the_page_server_enforces_the_csp(page: webdriver.Chrome, page_server: PageServer) -> None:
    # Pages served here run as under the console's policy: an inline script is blocked, and the console says so.
    page.get(page_server.add("/inline.html", "<!doctype html><html lang=en><title>t</title>"
                                             "<script>document.title = 'ran'</script>"))
    assert page.title == "t"
    assert any("Content Security Policy" in message for message in console_errors(page))
