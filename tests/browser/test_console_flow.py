"""The console against the stack as `make run` starts it (the e2e session's, tests/conftest.py), in headless
Chromium: people sign in at the registry (code + PKCE, password and TOTP from their credentials files) and work
through the pages only.

IOM's caseworker registers a case, records consent and refers it to UNHCR; UNHCR's caseworker, whose inbox is
open, sees it arrive without reloading, reads only the shared categories, accepts and completes it (in Arabic, right
to left); IOM's supervisor approves an override a colleague requested and cannot approve their own; the oversight
office's auditor sees both agencies' reads and verifies the entry's inclusion proof in the page; a caseworker of an
agency that is no party gets "not found". axe-core on every page, a screenshot per step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.harness import axe, console_errors, screenshot, start_chromium
from tests.e2e.network import Network
from tests.support.sign_in import next_totp_step

WAIT = 30


def _wait(driver: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    """Waiting across a navigation: an element found on the page being left goes stale, which is only a
    reason to look again (seen on two busy cores, after choosing a language)."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))


@pytest.fixture(scope="module")
def network(e2e_stack: Network) -> Network:
    """The e2e session's stack (its console included): one stack boot fewer in `make test`."""
    return e2e_stack


@pytest.fixture(scope="module")
def second_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """UNHCR's desk: a browser of its own (cookies are per host, not per port or person)."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium-unhcr"))
    try:
        yield driver
    finally:
        driver.quit()


class Desk:
    """One person at one browser, working through the console's pages."""

    def __init__(self, driver: webdriver.Chrome, network: Network, login: str) -> None:
        self.driver = driver
        self.network = network
        self.login = login
        self.console = network.url("console")

    @property
    def person(self) -> dict[str, str]:
        path: Path = self.network.home / "credentials" / "people" / f"{self.login}.json"
        return dict(json.loads(path.read_text()))

    def step(self, name: str) -> None:
        """Each step: a screenshot, axe-core, and no console error but the page's own 4xx."""
        rtl = self.driver.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
        screenshot(self.driver, f"console-flow-{name}", full_page=not rtl)
        axe(self.driver)
        document = self.driver.current_url.split("#", 1)[0]
        errors = [e for e in console_errors(self.driver) if not e.startswith(f"{document} - Failed to load")]
        assert errors == [], errors

    def go(self, path: str) -> None:
        self.driver.get(f"{self.console}{path}")

    def sign_in(self) -> None:
        driver = self.driver
        driver.delete_all_cookies()
        self.go("/signin")
        self.step(f"{self.login}-signin")
        driver.find_element(By.ID, "signin").click()
        _wait(driver).until(lambda d: d.find_elements(By.NAME, "password"))
        person = self.person
        driver.find_element(By.NAME, "agency").send_keys(person["agency"])
        driver.find_element(By.NAME, "login").send_keys(person["login"])
        driver.find_element(By.NAME, "password").send_keys(person["password"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        totp = pyotp.TOTP(person["totp_secret"])
        for _ in range(3):
            # A code is good once, and this stack's other tests sign the same demo people in (the README's from
            # another process): a refused code is followed by a later one, as a person would type the next.
            _wait(driver).until(lambda d: d.find_elements(By.NAME, "code"))
            step = next_totp_step(totp, person["totp_secret"])
            driver.find_element(By.NAME, "code").send_keys(totp.at(step * totp.interval))
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            _wait(driver).until(lambda d: d.current_url.startswith(self.console) or d.find_elements(By.NAME, "code"))
            if driver.current_url.startswith(self.console):
                break
        _wait(driver).until(lambda d: d.current_url.startswith(self.console)
                                          and "/signin" not in d.current_url and "/auth/" not in d.current_url,
                                          message=f"{self.login} was not signed in: {driver.current_url}")

    def submit(self, button_id: str) -> None:
        before = self.driver.current_url
        button = self.driver.find_element(By.ID, button_id)
        self.driver.execute_script("arguments[0].scrollIntoView()", button)
        button.click()
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.current_url != before or d.execute_script("return document.readyState") == "complete")

    def fill(self, element_id: str, value: str) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)

    def check(self, element_id: str) -> None:
        box = self.driver.find_element(By.ID, element_id)
        if not box.is_selected():
            self.driver.execute_script("arguments[0].click()", box)

    def choose(self, element_id: str, value: str) -> None:
        Select(self.driver.find_element(By.ID, element_id)).select_by_value(value)


def test_one_referral_through_the_console(page: webdriver.Chrome, second_browser: webdriver.Chrome,
                                          network: Network) -> None:
    iom = Desk(page, network, "iom-caseworker")
    unhcr = Desk(second_browser, network, "unhcr-caseworker")
    unhcr_agency = network.agency("unhcr")

    # UNHCR's caseworker has the inbox open before anything is sent.
    unhcr.sign_in()
    unhcr.go("/inbox?role=received")
    unhcr.step("unhcr-inbox-before")
    second_browser.execute_script("window.__notReloaded = true")

    # IOM's caseworker registers a case, records consent, refers it.
    iom.sign_in()
    iom.go("/cases/new")
    iom.step("iom-case-new")
    iom.fill("given_name", "Fictional")
    iom.fill("family_name", "Console-Person")
    page.execute_script("document.getElementById('birth_date').value = '1995-04-02'")
    iom.fill("phone", "+15555550177")
    iom.choose("trafficking_status", "possible")
    iom.choose("identified_by", "ngo")
    iom.check("fear_of_return")
    iom.submit("register")
    _wait(page).until(lambda d: "/cases/case" in d.current_url or ("/cases/" in d.current_url
                                    and not d.current_url.endswith("/new")))
    case_id = page.current_url.rsplit("/", 1)[1]
    assert "Fictional" not in page.current_url and "Fictional" not in page.title
    iom.step("iom-case")
    iom.fill("recipient_agency", unhcr_agency)
    for category in ("identity", "protection_needs"):
        iom.check(f"category-{category}")
    for item in ("purpose_explained", "use_explained", "research_use_explained", "access_right_explained",
                 "retention_explained", "withdrawal_explained"):
        iom.check(f"checklist-{item}")
    iom.submit("record-consent")
    _wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#consents button[id^=withdraw-]"),
                                    message="the consent was not recorded")
    iom.step("iom-consent")
    iom.go(f"/cases/{case_id}/refer?need=protection.rsd&country=IT")
    assert unhcr_agency in page.find_element(By.ID, "services").text  # the directory's search
    assert unhcr_agency in page.find_element(By.ID, "suggestions").text  # the referral service's ranking
    iom.step("iom-refer")
    iom.fill("to_agency", unhcr_agency)
    iom.choose("pathway", "protection")
    iom.fill("service_type", "protection.rsd")
    for category in ("identity", "protection_needs"):
        iom.check(f"share-{category}")
    iom.fill("reason", "Fears return; needs refugee status determination.")
    iom.submit("send-referral")
    _wait(page).until(lambda d: "/referrals/" in d.current_url, message="the referral was not sent")
    referral_id = page.current_url.rsplit("/", 1)[1]
    iom.step("iom-referral-sent")

    # UNHCR sees it arrive without reloading.
    _wait(second_browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-referral="{referral_id}"]'),
        message="the referral did not appear in UNHCR's inbox")
    assert second_browser.execute_script("return window.__notReloaded") is True
    unhcr.step("unhcr-inbox-arrived")

    # UNHCR reads only the shared categories, in Arabic, and moves it to completed.
    unhcr.go(f"/referrals/{referral_id}")
    shared = second_browser.find_element(By.ID, "shared-case").text
    assert "Fictional" in shared  # identity is shared
    assert "+15555550177" not in second_browser.page_source  # contact is not
    unhcr.step("unhcr-referral")
    unhcr.choose("language-choice", "ar")
    second_browser.find_element(By.CSS_SELECTOR, "form.language button").click()
    _wait(second_browser).until(
        lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl")
    unhcr.go(f"/referrals/{referral_id}")
    assert second_browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    unhcr.step("unhcr-referral-arabic")
    for move in ("received", "accepted", "in_progress", "completed"):
        unhcr.submit(f"move-{move}")
        _wait(second_browser).until(
            lambda d, m=move: d.find_element(By.ID, "referral-status").get_attribute("class").endswith(f"-{m}"))
    unhcr.step("unhcr-completed-arabic")

    # A caseworker of an agency that is no party: not found, for the case and for the referral.
    shelter = Desk(second_browser, network, "shelter-caseworker")
    shelter.sign_in()
    for what, path in (("case", f"/cases/{case_id}"), ("referral", f"/referrals/{referral_id}")):
        shelter.go(path)
        assert second_browser.find_element(By.TAG_NAME, "h1").text in ("Not found", "Introuvable", "غير موجود")
        assert "Fictional" not in second_browser.page_source
        shelter.step(f"shelter-{what}-not-found")

    # Overrides: IOM's caseworker requests one; IOM's supervisor approves it, and cannot approve their own.
    iom.go(f"/cases/{case_id}")
    iom.fill("override_recipient", network.agency("shelter"))
    iom.fill("justification", "Credible threat reported today; the shelter must be told at once.")
    iom.submit("request-override")
    _wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overrides tr[data-override]"))
    supervisor = Desk(page, network, "iom-supervisor")
    supervisor.sign_in()
    supervisor.go(f"/cases/{case_id}")
    supervisor.fill("override_recipient", network.agency("clinic"))
    supervisor.fill("justification", "A second threat, reported by the clinic; disclosure is urgent.")
    supervisor.submit("request-override")
    supervisor.go("/overrides")
    supervisor.step("supervisor-overrides")
    rows = page.find_elements(By.CSS_SELECTOR, "#pending-overrides tr[data-override]")
    assert len(rows) == 2
    approvable = [r for r in rows if r.find_elements(By.CSS_SELECTOR, "button[value=approve]")]
    own = [r for r in rows if not r.find_elements(By.CSS_SELECTOR, "button[value=approve]")]
    assert len(approvable) == 1 and len(own) == 1  # the colleague's, and their own without approval
    approvable[0].find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    _wait(page).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pending-overrides tr[data-override]")) == 1)
    supervisor.step("supervisor-approved")
    # Their own, forged as a form the page never offered: intake refuses it, the page says why.
    own_id = page.find_element(By.CSS_SELECTOR, "#pending-overrides tr[data-override]").get_attribute(
        "data-override")
    page.execute_script(
        "const form = document.createElement('form'); form.method = 'post';"
        "form.action = `/cases/${arguments[0]}/overrides/${arguments[1]}/decision`;"
        "for (const [name, value] of [['csrf', arguments[2]], ['decision', 'approve']]) {"
        "  const input = document.createElement('input'); input.type = 'hidden'; input.name = name;"
        "  input.value = value; form.append(input); }"
        "document.body.append(form); form.submit();",
        case_id, own_id, page.find_element(By.NAME, "csrf").get_attribute("value"))
    _wait(page).until(lambda d: "/decision" in d.current_url)
    assert "You cannot approve an override you requested yourself." in page.page_source
    supervisor.step("supervisor-own-refused")
    supervisor.go("/indicators")
    sent = page.find_element(By.ID, "sent").text  # the agency's own numbers: the referral it sent this month
    assert "*" in sent and "1" in sent
    supervisor.step("supervisor-indicators")

    # The auditor sees both agencies' reads and verifies an entry's inclusion proof in the page.
    auditor = Desk(page, network, "oversight-auditor")
    auditor.sign_in()
    auditor.go(f"/audit/cases/{case_id}")
    access = page.find_element(By.ID, "access").text
    assert network.agency("iom") in access and unhcr_agency in access
    auditor.step("auditor-case")
    entry = page.find_element(By.CSS_SELECTOR, "#access a[href*='index=']")
    entry.click()
    _wait(page).until(
        lambda d: "Verified" in d.find_element(By.ID, "proof-result").text,
        message="the inclusion proof was not verified in the page")
    # From the entry itself, hashed in the page -- not from a leaf hash the server handed over.
    assert "canonical JSON" in page.find_element(By.ID, "proof-result").text
    auditor.step("auditor-proof")

    # Signing out ends the sign-in here and at the registry, and comes back to the console's sign-in page.
    page.find_element(By.CSS_SELECTOR, "form.signout button").click()
    _wait(page).until(lambda d: d.current_url.startswith(f"{auditor.console}/signin"),
                                    message=f"not back at the console after signing out: {page.current_url}")
    auditor.go("/audit")
    assert "/signin" in page.current_url
