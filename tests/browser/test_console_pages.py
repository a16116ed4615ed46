"""The console's pages in a real browser, against a stand-in provider and APIs (tests/integration/console/
fake_network.py; the flow against the real stack is test_console_flow.py): signing in through the provider, the
inbox showing a new referral without reloading, errors beside their fields, Arabic right to left, a phone's
width, the inactivity warning, the quick exit from the keyboard. axe-core on every page, no CSP violation, a
screenshot per step."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from deploy.launcher.infra import free_port
from services.console.app import create_app
from services.console.settings import ConsoleSettings
from shared.kek import KeyEncryptionKey, write_key_file
from shared.migrations import upgrade
from tests.browser.harness import axe, console_errors, horizontal_overflow, phone_width, screenshot
from tests.conftest import Infra
from tests.integration.console.fake_network import FakeNetwork

REFERRAL = {"id": "ref-browser-1", "status": "requested", "case_id": "case-b1", "from_agency": "agy_iom",
            "to_agency": "agy_unhcr", "service_id": None, "pathway": "protection", "service_type": None,
            "priority": "urgent", "reason": None, "shared_categories": ["identity", "protection_needs"],
            "due_at": "2026-12-05T10:00:00+00:00", "overdue": False}


class ServedConsole:
    """The console app under uvicorn in a thread (its own event loop), on 127.0.0.1."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def __enter__(self) -> ServedConsole:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the console did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def network() -> Iterator[FakeNetwork]:
    net = FakeNetwork()
    net.person.agency = "agy_unhcr"
    net.start()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture
def serve_console(tmp_path: Path, infra: Infra, new_database: Callable[[str], str], network: FakeNetwork,
                  page: webdriver.Chrome) -> Iterator[Callable[..., ServedConsole]]:
    kek = tmp_path / "kek.b64"
    write_key_file(kek, KeyEncryptionKey.generate())
    started: list[ServedConsole] = []

    def serve(**overrides: Any) -> ServedConsole:
        port = free_port()
        values: dict[str, Any] = {
            "database_url": new_database("console"), "kafka_bootstrap": infra.bootstrap, "log_json": False,
            "kek_file": str(kek), "oidc_issuer": network.url, "issuer": network.url, "port": port,
            "registry_url": network.url, "intake_url": network.url, "referral_url": network.url,
            "audit_url": network.url, "inbox_refresh_seconds": 2, **overrides}
        settings = ConsoleSettings(**values)
        asyncio.run(asyncio.to_thread(upgrade, "console", settings.database_url))
        served = ServedConsole(settings).__enter__()
        started.append(served)
        return served

    try:
        yield serve
    finally:
        page.get("about:blank")  # the inbox's refresh stops before its server does (or the next test sees it fail)
        for served in started:
            served.__exit__()


def checked(driver: webdriver.Chrome, name: str) -> None:
    """Each step: a screenshot, axe-core (no serious or critical violation), no console error (CSP included)."""
    # Chromium's capture beyond the viewport shifts a right-to-left page sideways: those are shot as seen.
    rtl = driver.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    screenshot(driver, f"console-{name}", full_page=not rtl)
    axe(driver)
    # A page answered with its own 4xx (a form with errors: 422) is logged by Chromium too: not an error here.
    document = driver.current_url.split("#", 1)[0]
    assert [e for e in console_errors(driver) if not e.startswith(f"{document} - Failed to load resource")] == []


def sign_in(driver: webdriver.Chrome, console: ServedConsole) -> None:
    driver.delete_all_cookies()
    driver.get(f"{console.url}/signin")
    checked(driver, "signin")
    driver.find_element(By.ID, "signin").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(f"{console.url}/inbox"))


def test_the_inbox_shows_a_new_referral_without_reloading(page: webdriver.Chrome, network: FakeNetwork,
                                                           serve_console: Callable[..., ServedConsole]) -> None:
    console = serve_console()
    sign_in(page, console)
    assert "No referrals." in page.find_element(By.ID, "inbox").text
    checked(page, "inbox-empty")
    page.execute_script("window.__notReloaded = true")
    network.referrals[REFERRAL["id"]] = dict(REFERRAL)
    WebDriverWait(page, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-referral="{REFERRAL["id"]}"]'),
                                  message="the new referral did not appear")
    assert page.execute_script("return window.__notReloaded") is True
    checked(page, "inbox-new-referral")
    with phone_width(page):
        assert horizontal_overflow(page) == 0
        screenshot(page, "console-inbox-phone")
    page.find_element(By.LINK_TEXT, REFERRAL["id"][:18]).click()
    WebDriverWait(page, 10).until(lambda d: "/referrals/" in d.current_url)
    assert REFERRAL["id"] in page.current_url and "Amina" not in page.current_url
    assert "Amina" not in page.title  # the title says what the page is, never whose
    assert page.find_element(By.ID, "move-received").is_displayed()
    checked(page, "referral")


def test_a_case_form_shows_each_error_beside_its_field(page: webdriver.Chrome,
                                                        serve_console: Callable[..., ServedConsole]) -> None:
    console = serve_console()
    sign_in(page, console)
    page.get(f"{console.url}/cases/new")
    checked(page, "case-new")
    page.find_element(By.ID, "register").click()
    WebDriverWait(page, 10).until(lambda d: d.find_elements(By.ID, "error-given_name"))
    given = page.find_element(By.ID, "given_name")
    assert given.get_attribute("aria-invalid") == "true"
    assert given.get_attribute("aria-describedby") == "error-given_name"
    assert page.find_element(By.ID, "error-trafficking_status").is_displayed()
    checked(page, "case-new-errors")


def test_arabic_renders_right_to_left(page: webdriver.Chrome, serve_console: Callable[..., ServedConsole]) -> None:
    console = serve_console()
    sign_in(page, console)
    Select(page.find_element(By.ID, "language-choice")).select_by_value("ar")
    page.find_element(By.CSS_SELECTOR, "form.language button").click()
    WebDriverWait(page, 10).until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl")
    assert page.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ar"
    assert "الإحالات" in page.find_element(By.TAG_NAME, "h1").text
    # Right to left for real: the quick exit sits on the left, the layout mirrors.
    assert page.execute_script("return getComputedStyle(document.body).direction") == "rtl"
    exit_box = page.find_element(By.ID, "quick-exit").rect
    assert exit_box["x"] < 400
    checked(page, "inbox-arabic")
    with phone_width(page):
        assert horizontal_overflow(page) == 0


def test_inactivity_warns_then_signs_out(page: webdriver.Chrome,
                                         serve_console: Callable[..., ServedConsole]) -> None:
    console = serve_console(session_idle_seconds=60, session_warn_seconds=57)
    sign_in(page, console)
    warning = page.find_element(By.ID, "idle-warning")
    assert not warning.is_displayed()
    WebDriverWait(page, 15).until(lambda d: warning.is_displayed(), message="no inactivity warning")
    assert page.switch_to.active_element.get_attribute("id") == "idle-stay"  # the warning takes the focus
    checked(page, "idle-warning")


def test_quick_exit_from_the_keyboard(page: webdriver.Chrome, serve_console: Callable[..., ServedConsole]) -> None:
    console = serve_console()
    sign_in(page, console)
    # The first thing the keyboard reaches is the quick exit.
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert page.switch_to.active_element.get_attribute("id") == "quick-exit"
    body = page.find_element(By.TAG_NAME, "body")
    for _ in range(3):
        body.send_keys(Keys.ESCAPE)
    WebDriverWait(page, 10).until(lambda d: d.current_url == f"{console.url}/neutral")
    assert "RefNet" not in page.page_source
    checked(page, "neutral")
    page.get(f"{console.url}/inbox")
    WebDriverWait(page, 10).until(lambda d: "/signin" in d.current_url)  # the session ended


def test_the_other_pages_pass_axe(page: webdriver.Chrome, network: FakeNetwork,
                                  serve_console: Callable[..., ServedConsole]) -> None:
    console = serve_console()
    network.cases.append("case-b1")
    for roles, paths in ((["caseworker", "supervisor"], ["/cases", "/overrides", "/indicators"]),
                         (["agency_admin"], ["/staff"]), (["auditor"], ["/audit", "/audit/cases/case-b1"])):
        network.person.roles = roles
        page.delete_all_cookies()
        page.get(f"{console.url}/auth/login")
        WebDriverWait(page, 15).until(lambda d: "/auth/" not in d.current_url and "/signin" not in d.current_url)
        for path in paths:
            page.get(f"{console.url}{path}")
            assert page.find_element(By.TAG_NAME, "h1").text
            checked(page, path.strip("/").replace("/", "-"))
    page.find_element(By.CSS_SELECTOR, "form.signout button").click()
    WebDriverWait(page, 15).until(lambda d: "/signin" in d.current_url or "/signed-out" in d.current_url)
    checked(page, "after-sign-out")


def test_the_agency_admins_webhooks_and_services_pass_axe(page: webdriver.Chrome, network: FakeNetwork,
                                                           serve_console: Callable[..., ServedConsole]) -> None:
    """Issue #21's pages: the webhooks (a new one's secret shown once), a subscription's deliveries, the
    agency's services with a capacity refused beside its field; each at a phone's width too."""
    console = serve_console()
    network.person.roles = ["agency_admin"]
    network.subscriptions["sub_b1"] = {
        "id": "sub_b1", "agency_id": "agy_unhcr", "url": "https://cms.example.org/hooks", "event_types": None,
        "status": "disabled", "consecutive_failures": 12, "next_attempt_at": "2026-12-03T10:00:00Z",
        "created_at": "2026-12-01T10:00:00Z", "disabled_at": "2026-12-02T10:00:00Z"}
    network.deliveries["sub_b1"] = [
        {"id": str(n), "event_id": f"evt-{n}", "event_type": "org.refnet.referral.requested.v1", "attempt": n + 1,
         "outcome": "failed", "status_code": 503 if n else None, "error": None if n else "connect-error",
         "duration_ms": 120, "at": f"2026-12-02T10:00:0{n}Z"} for n in range(3)]
    network.services = [{"id": "svc-b1", "agency_id": "agy_unhcr", "name": "Refugee status determination",
                         "taxonomy": "protection.rsd", "status": "active",
                         "capacity": {"available": 3, "total": 10, "status": "accepting"}}]
    page.delete_all_cookies()
    page.get(f"{console.url}/auth/login")
    WebDriverWait(page, 15).until(lambda d: "/auth/" not in d.current_url and "/signin" not in d.current_url)
    page.get(f"{console.url}/webhooks")
    checked(page, "webhooks")
    page.find_element(By.ID, "url").send_keys("https://intake.example.org/refnet")
    page.find_element(By.ID, "subscribe").click()
    WebDriverWait(page, 10).until(lambda d: d.find_elements(By.ID, "signing-secret"))
    assert "whsec_SECRET-ONE" in page.find_element(By.ID, "signing-secret").text
    checked(page, "webhooks-secret")
    with phone_width(page):
        assert horizontal_overflow(page) == 0
    page.get(f"{console.url}/webhooks/sub_b1")
    assert len(page.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")) == 3
    checked(page, "webhook-deliveries")
    page.get(f"{console.url}/services")
    checked(page, "services")
    available = page.find_element(By.ID, "available-svc-b1")
    available.clear()
    available.send_keys("11")
    page.find_element(By.ID, "capacity-svc-b1").click()
    WebDriverWait(page, 10).until(lambda d: d.find_elements(By.ID, "error-available"))
    assert page.find_element(By.ID, "available-svc-b1").get_attribute("aria-describedby") == "error-available"
    checked(page, "services-errors")
    with phone_width(page):
        assert horizontal_overflow(page) == 0
