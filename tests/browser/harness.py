"""The browser tests' tools: headless Chromium through Selenium, screenshots, axe-core, a phone's width, pages.

Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them when missing). The fixtures in
``conftest.py`` hand these out; the helpers here take the WebDriver they give.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_JS = HERE / "vendor" / "axe-core" / "axe.min.js"
WINDOW = (1280, 900)
PHONE = (360, 780)  # a small phone's CSS pixels
# Without the background-networking flags Chromium calls Google's services at start, which this project's closed
# network refuses (and which a test has no business doing anyway).
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
# What the console serves (issue #21): the pages here are held to the same policy, so a script that needs an
# inline script, eval or a foreign origin fails here as it would there.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
BLOCKING = ("serious", "critical")


def artefacts_dir() -> Path:
    """Where screenshots and logs go: ``$REFNET_TEST_ARTEFACTS``, else tests/browser/artefacts/ (git-ignored)."""
    path = Path(os.environ.get("REFNET_TEST_ARTEFACTS") or HERE / "artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_chromium(profile: Path, log: Path | None = None) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile in ``profile``, its driver's log in ``log``."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        # Not a skip: the browser tests are part of make test, which installs these (make chromium).
        raise RuntimeError(f"{' and '.join(missing)} missing: run `make chromium` (Debian's chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(log) if log else os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    return driver


def screenshot(driver: webdriver.Chrome, name: str, *, full_page: bool = True) -> Path:
    """Save what the page shows as ``<artefacts>/<name>.png`` (the whole page unless ``full_page=False``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "screenshot"
    path = artefacts_dir() / f"{safe}.png"
    for attempt in (1, 2):
        try:
            if full_page:
                shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                              {"format": "png", "captureBeyondViewport": True})
                path.write_bytes(base64.b64decode(shot["data"]))
            else:
                path.write_bytes(driver.get_screenshot_as_png())
            return path
        except TimeoutException:
            # The renderer can miss chromedriver's deadline on two busy cores (seen in a full `make test`);
            # a screenshot is an artefact, so one more try, then the viewport only, rather than a failed test.
            if attempt == 2:
                full_page = False
    path.write_bytes(driver.get_screenshot_as_png())
    return path


@cache
def _axe_source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


class AccessibilityViolations(AssertionError):
    """axe-core found serious or critical violations; the message lists each rule and where it failed."""

    def __init__(self, url: str, violations: list[dict[str, Any]]) -> None:
        self.violations = violations
        lines = [f"axe-core found {len(violations)} serious or critical accessibility violation(s) on {url}:"]
        for v in violations:
            lines.append(f"- {v['id']} ({v.get('impact')}): {v.get('help')} <{v.get('helpUrl')}>")
            for node in v.get("nodes", [])[:5]:
                html = " ".join(str(node.get("html") or "").split())
                html = html if len(html) <= 100 else html[:99] + "…"
                said = [line.strip() for line in str(node.get("failureSummary") or "").splitlines() if line.strip()]
                summary = f"{said[0]} {'; '.join(said[1:])}" if said else ""
                lines.append(f"    at {' '.join(map(str, node.get('target', [])))} {html}: {summary}")
            if len(v.get("nodes", [])) > 5:
                lines.append(f"    ... and {len(v['nodes']) - 5} more")
        super().__init__("\n".join(lines))


def axe(driver: webdriver.Chrome, *, context: Any = None, options: Mapping[str, Any] | None = None,
        fail_on: tuple[str, ...] = BLOCKING) -> list[dict[str, Any]]:
    """Run axe-core (vendored) on the current page: every violation it finds, raising
    :class:`AccessibilityViolations` if any has an impact in ``fail_on`` (serious or critical)."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(_axe_source())  # through the driver: the page's CSP does not apply
    result = driver.execute_async_script(
        "const [context, options, done] = arguments;"
        "axe.run(context || document, options || {}).then("
        "  (r) => done({violations: r.violations}), (e) => done({error: String(e)}));",
        context, {"resultTypes": ["violations"], **(options or {})})
    if "error" in result:
        raise RuntimeError(f"axe-core failed on {driver.current_url}: {result['error']}")
    violations: list[dict[str, Any]] = result["violations"]
    blocking = [v for v in violations if v.get("impact") in fail_on]
    if blocking:
        raise AccessibilityViolations(driver.current_url, blocking)
    return violations


@contextmanager
def phone_width(driver: webdriver.Chrome, width: int = PHONE[0], height: int = PHONE[1]) -> Iterator[None]:
    """The page as a phone shows it (360 CSS px wide, a mobile viewport: a page without
    ``<meta name="viewport">`` is laid out 980 px wide and shrunk, as on a real phone); back to the desktop after."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def horizontal_overflow(driver: webdriver.Chrome) -> int:
    """How many CSS pixels the page is wider than its layout viewport (0: nothing to scroll sideways). Not
    ``innerWidth``: on a phone the browser zooms out of a page too wide, so that the window grows with the page."""
    overflow: int = driver.execute_script(
        "const root = document.documentElement; return Math.max(0, root.scrollWidth - root.clientWidth)")
    return overflow


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The browser console's errors since the last call (a CSP violation, an uncaught exception, a failed load)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


# --- pages served from this machine (127.0.0.1 is a secure context: WebCrypto works there) ----------------------


@dataclass(frozen=True)
class Page:
    body: bytes
    content_type: str


_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json", ".png": "image/png"}


class PageServer:
    """A local HTTP server of fixed pages, each sent with the console's Content-Security-Policy.

    ``add("/x.html", path_or_text)`` publishes a file or a text; ``url("/x.html")`` is where the browser finds it.
    """

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {"/favicon.ico": Page(b"", "image/x-icon")}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                page = pages.get(self.path.split("?", 1)[0])
                if page is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", page.content_type)
                self.send_header("Content-Length", str(len(page.body)))
                self.send_header("Content-Security-Policy", CSP)
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(page.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows failures, not every request

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="page-server", daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def add(self, path: str, content: Path | str | bytes, content_type: str | None = None) -> str:
        if isinstance(content, Path):
            content_type = content_type or _TYPES.get(content.suffix, "application/octet-stream")
            body = content.read_bytes()
        else:
            body = content.encode() if isinstance(content, str) else content
            content_type = content_type or _TYPES.get(Path(path).suffix, "application/octet-stream")
        self.pages[path] = Page(body, content_type)
        return self.url(path)

    def url(self, path: str = "/") -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"


def json_script(element_id: str, value: Any) -> str:
    """A ``<script type="application/json">`` data block (not executed, so the CSP allows it), safe to embed."""
    text = json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'
