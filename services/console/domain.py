"""The console's rules, pure: who may see and do what, which moves a referral offers the person looking at it,
how a session ages, and what the APIs' refusals mean in plain words. No I/O, no clock (times are arguments).

The lifecycle and the reason codes restate the contract (docs/contract.md, "Referral states") for the pages:
the referral API decides; these only choose which forms to show and how to word them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


def N_(message: str) -> str:
    """Marks a message for the catalogs; the page translates it when it shows it."""
    return message


# --- people and what their roles let them do ---------------------------------------------------------------


class Role(StrEnum):
    caseworker = "caseworker"
    supervisor = "supervisor"
    agency_admin = "agency_admin"
    auditor = "auditor"


class Page(StrEnum):
    """What the console offers, each behind the roles that may use it."""

    inbox = "inbox"  # referrals received and sent
    cases = "cases"  # register a case, consent, refer
    overrides = "overrides"  # approve or refuse colleagues' risk-to-life overrides
    audit = "audit"  # a case's access and consent history, the signed checkpoint
    staff = "staff"  # the agency's staff: invite, reset a sign-in
    indicators = "indicators"  # the agency's own numbers
    webhooks = "webhooks"  # the agency's webhook subscriptions and their deliveries
    services = "services"  # the agency's services in the directory and their capacity


PAGE_ROLES: dict[Page, frozenset[Role]] = {
    Page.inbox: frozenset({Role.caseworker, Role.supervisor}),
    Page.cases: frozenset({Role.caseworker, Role.supervisor}),
    Page.overrides: frozenset({Role.supervisor}),
    Page.audit: frozenset({Role.auditor}),
    Page.staff: frozenset({Role.agency_admin}),
    Page.indicators: frozenset({Role.supervisor}),
    Page.webhooks: frozenset({Role.agency_admin}),
    Page.services: frozenset({Role.agency_admin}),
}


def known_roles(claimed: Iterable[object]) -> frozenset[Role]:
    """The roles a token's ``roles`` claim names that the console knows (others are ignored, not trusted)."""
    values = {r.value for r in Role}
    return frozenset(Role(r) for r in claimed if isinstance(r, str) and r in values)


def may_use(roles: Iterable[Role], page: Page) -> bool:
    return bool(PAGE_ROLES[page] & set(roles))


def pages_for(roles: Iterable[Role]) -> list[Page]:
    """The pages the navigation shows, in a stable order."""
    held = set(roles)
    return [page for page in Page if PAGE_ROLES[page] & held]


def home_page(roles: Iterable[Role]) -> Page | None:
    pages = pages_for(roles)
    return pages[0] if pages else None


# --- sessions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionClock:
    idle: timedelta
    lifetime: timedelta

    def expired(self, created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
        """A session ends after ``idle`` without a page asked for, and after ``lifetime`` in any case."""
        return now - last_seen_at >= self.idle or now - created_at >= self.lifetime

    def seconds_left(self, last_seen_at: datetime, now: datetime) -> int:
        return max(0, int((last_seen_at + self.idle - now).total_seconds()))


def session_key(session_id: str) -> str:
    """What the database keeps of a session id: its SHA-256 (a copy of the table opens no session)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's form token: an HMAC of a fixed label under the session id itself, so it is bound to the
    session and needs no storage; another site can neither read the cookie nor compute it."""
    return hmac.new(session_id.encode(), b"refnet-console-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_id: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session_id), presented)


def token_needs_refresh(expires_at: datetime, now: datetime, margin: timedelta = timedelta(seconds=30)) -> bool:
    return now >= expires_at - margin


# --- languages ----------------------------------------------------------------------------------------------

RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur"})


def direction(language: str) -> str:
    return "rtl" if language in RTL_LANGUAGES else "ltr"


def choose_language(preferred: str | None, accept_language: str | None, offered: list[str], default: str) -> str:
    """The person's remembered choice, else the browser's first offered language, else the default."""
    if preferred in offered:
        return preferred
    for part in (accept_language or "").split(","):
        code = part.split(";", 1)[0].strip().lower().split("-", 1)[0]
        if code in offered:
            return code
    return default


# --- referrals: the moves a party may offer -----------------------------------------------------------------

OPEN_STATES = frozenset({"requested", "received", "accepted", "in_progress", "on_hold"})
#: (from, to) the recipient may make (docs/contract.md); the sender may cancel any open referral.
RECIPIENT_MOVES: dict[str, list[str]] = {
    "requested": ["received"],
    "received": ["accepted", "rejected"],
    "accepted": ["in_progress"],
    "in_progress": ["completed", "on_hold", "failed"],
    "on_hold": ["in_progress"],
}
REASONS: dict[str, list[str]] = {
    "rejected": ["no-capacity", "not-eligible", "outside-mandate", "duplicate", "other"],
    "failed": ["lost-contact", "person-declined", "no-capacity", "not-eligible", "service-unavailable", "other"],
    "cancelled": ["no-longer-needed", "person-declined", "duplicate", "wrong-recipient", "referred-elsewhere",
                  "other"],
    "on_hold": ["awaiting-person", "awaiting-documents", "awaiting-capacity", "safety-concern", "other"],
}
#: Reason codes a move needs (on_hold takes one optionally).
REASON_REQUIRED = frozenset({"rejected", "failed", "cancelled"})


@dataclass(frozen=True)
class NextMove:
    to: str
    reasons: tuple[str, ...]
    reason_required: bool


def next_moves(status: str, *, my_agency: str, from_agency: str, to_agency: str | None) -> list[NextMove]:
    """The moves the person's agency may make on a referral now: as recipient, as sender, or none."""
    targets: list[str] = []
    if to_agency == my_agency:
        targets += RECIPIENT_MOVES.get(status, [])
    if from_agency == my_agency and status in OPEN_STATES:
        targets.append("cancelled")
    return [NextMove(to, tuple(REASONS.get(to, ())), to in REASON_REQUIRED) for to in targets]


def is_party(*, my_agency: str, from_agency: str, to_agency: str | None) -> bool:
    return my_agency in (from_agency, to_agency)


# --- risk-to-life overrides: two people's act ----------------------------------------------------------------


def may_approve(override: dict[str, object], *, me: str, roles: Iterable[Role]) -> bool:
    """A pending override, requested by someone else, and the person is a supervisor (the API decides too)."""
    return (override.get("state") == "pending" and override.get("requested_by") != me
            and Role.supervisor in set(roles))


def may_end(override: dict[str, object], *, me: str, roles: Iterable[Role]) -> bool:
    """Refuse (a pending one) or revoke (one in force): its requester or a supervisor."""
    return override.get("state") in ("pending", "active") and (
        override.get("requested_by") == me or Role.supervisor in set(roles))


def pending_for(overrides: Iterable[dict[str, object]], *, me: str, roles: Iterable[Role]) -> list[dict[str, object]]:
    """The overrides the supervisor's page lists: pending ones, each marked with whether this person may approve."""
    held = list(roles)
    return [{**o, "mine": o.get("requested_by") == me, "approvable": may_approve(o, me=me, roles=held)}
            for o in overrides if o.get("state") == "pending"]


# --- what an API's refusal means, in plain words ------------------------------------------------------------

#: The last segment of a problem's ``type`` -> a message id (translated in the page). Unknown ones get the
#: generic message: a problem's own detail is shown only when it names a field.
GUARD_MESSAGES: dict[str, str] = {
    "consent-missing": N_("There is no consent in force that covers this recipient, purpose and these categories. "
                       "Record the person's consent first."),
    "consent-withdrawn": N_("The person withdrew the consent this needs."),
    "child-bia-missing": N_("This is a child: a best-interests assessment must be recorded before a referral."),
    "non-refoulement": N_("This referral could send the person back to where they are at risk: it is refused "
                       "unless a risk-to-life override is in force."),
    "child-bid-missing": N_("This is a child: a best-interests determination must be recorded before this "
                         "pathway."),
    "recipient-suspended": N_("The receiving agency is suspended in the registry."),
    "service-full": N_("The chosen service has no capacity left: choose another one."),
    "case-erased": N_("This case was erased."),
    "consent-not-current": N_("The consent changed since this page was shown: look at it again."),
    "invalid-transition": N_("That move is no longer possible: the referral changed in the meantime."),
    "not-found": N_("Not found."),
    "forbidden": N_("Your role does not allow this."),
    "self-approval": N_("You cannot approve an override you requested yourself."),
    "supervisor-required": N_("Only a supervisor of the agency can approve an override."),
    "second-factor-required": N_("Approving an override needs a sign-in with your second factor."),
    "person-token-required": N_("This needs a person signed in, not a system."),
    "override-active": N_("This override is already in force."),
    "override-expired": N_("This override has expired."),
    "override-revoked": N_("This override was revoked."),
    "revoker-not-allowed": N_("Only the requester or a supervisor can end this override."),
    "too-many-subscriptions": N_("The agency has as many webhook subscriptions as allowed: delete one first."),
    "master-key-unavailable": N_("Webhook secrets cannot be made now. Try again later."),
}
GENERIC_REFUSAL = N_("The request was refused.")

_SLUG = re.compile(r"[a-z0-9-]{1,60}")


#: The vocabularies' codes the pages show, each translated (Babel extracts them from here).
VOCABULARY: tuple[str, ...] = (
    N_("requested"), N_("received"), N_("accepted"), N_("rejected"), N_("in_progress"), N_("on_hold"),
    N_("completed"), N_("failed"), N_("cancelled"), N_("protection"), N_("assistance"), N_("service"), N_("avrr"),
    N_("resettlement"), N_("emergency"), N_("urgent"), N_("normal"), N_("no-capacity"), N_("not-eligible"),
    N_("outside-mandate"), N_("duplicate"), N_("other"), N_("lost-contact"), N_("person-declined"),
    N_("service-unavailable"), N_("no-longer-needed"), N_("wrong-recipient"), N_("referred-elsewhere"),
    N_("awaiting-person"), N_("awaiting-documents"), N_("awaiting-capacity"), N_("safety-concern"),
    N_("consent-withdrawn"), N_("recipient-suspended"), N_("case-erased"), N_("identity"), N_("contact"),
    N_("demographics"), N_("trafficking_experience"), N_("protection_needs"), N_("health"), N_("documents"),
    N_("notes"), N_("case_management"), N_("referral"), N_("law_enforcement"), N_("family_tracing"), N_("research"),
    N_("self"), N_("guardian"), N_("proxy"), N_("written"), N_("oral"), N_("implicit"), N_("active"), N_("withdrawn"),
    N_("withdrawal"), N_("pending"), N_("expired"), N_("grant"), N_("revoked"), N_("invited"),
    N_("follow_up"), N_("closed"), N_("closed_referred"), N_("caseworker"), N_("supervisor"), N_("agency_admin"),
    N_("auditor"),
    N_("erased"), N_("feminine"), N_("masculine"), N_("transgender_feminine"), N_("transgender_masculine"),
    N_("non_conforming"), N_("unknown"), N_("possible"), N_("actual"), N_("not_victim"), N_("police"), N_("ngo"),
    N_("court"), N_("other_government"), N_("forced_labour"), N_("sexual_exploitation"), N_("forced_marriage"),
    N_("forced_criminality"), N_("begging"), N_("organ_removal"), N_("military"), N_("domestic_servitude"),
    N_("purpose_explained"), N_("use_explained"), N_("research_use_explained"), N_("access_right_explained"),
    N_("retention_explained"), N_("withdrawal_explained"),
    N_("disabled"), N_("deleted"), N_("delivered"), N_("accepting"), N_("full"),
)

FORM_EXPIRED = N_("This form has expired or did not come from this page. Open the page again.")
NO_SUCH_LANGUAGE = N_("No such language.")


def problem_slug(problem_type: object) -> str | None:
    """The slug an RFC 9457 ``type`` ends with (RefNet's are ``urn:refnet:problem:<slug>``), if it is one."""
    if not isinstance(problem_type, str):
        return None
    slug = re.split(r"[/:]", problem_type.rstrip("/"))[-1]
    return slug if _SLUG.fullmatch(slug) else None


def refusal_message(problem_type: object, status: int) -> str:
    slug = problem_slug(problem_type)
    if slug in GUARD_MESSAGES:
        return GUARD_MESSAGES[slug]
    if status == 404:
        return GUARD_MESSAGES["not-found"]
    if status == 403:
        return GUARD_MESSAGES["forbidden"]
    return GENERIC_REFUSAL


def field_errors(errors: object) -> dict[str, str]:
    """A 422's ``errors[]`` as {form field: message}, the first message per field."""
    found: dict[str, str] = {}
    if not isinstance(errors, list):
        return found
    for error in errors:
        if not isinstance(error, dict):
            continue
        loc = error.get("loc")
        msg = error.get("msg")
        if not isinstance(loc, list) or not isinstance(msg, str):
            continue
        names = [str(part) for part in loc if not isinstance(part, int)]
        if names and names[0] in ("body", "query"):
            names = names[1:]
        # The form's field is the last name: the forms flatten the body (person.given_name -> given_name).
        found.setdefault(names[-1] if names else "_form", msg[:200])
    return found


# --- forms: what the pages post, as the APIs' bodies ---------------------------------------------------------

#: The choices the forms offer, read from intake's OpenAPI document (its schemas are the HTCDS fields):
#: (schema, property) -> form field name.
CHOICES: dict[str, tuple[str, str]] = {
    "gender": ("Person", "gender"),
    "documents": ("Person", "documents"),
    "trafficking_status": ("Screening", "trafficking_status"),
    "identified_by": ("Screening", "identified_by"),
    "exploitation_types": ("Screening", "exploitation_types"),
    "needs": ("Screening", "needs"),
    "grantor": ("ConsentBody", "grantor"),
    "method": ("ConsentBody", "method"),
    "purpose": ("Provision", "purpose"),
    "data_categories": ("Provision", "data_categories"),
    "checklist": ("Checklist", ""),
}
PATHWAYS = ["protection", "assistance", "service", "avrr", "resettlement"]
PRIORITIES = ["normal", "urgent", "emergency"]
STATUSES = ["requested", "received", "accepted", "rejected", "in_progress", "on_hold", "completed", "failed",
            "cancelled"]


def _enum_of(prop: object) -> list[str]:
    if not isinstance(prop, dict):
        return []
    if isinstance(prop.get("enum"), list):
        return [str(v) for v in prop["enum"]]
    if isinstance(prop.get("items"), dict):
        return _enum_of(prop["items"])
    for option in prop.get("anyOf", []) or []:
        found = _enum_of(option)
        if found:
            return found
    return []


def choices_of(openapi: Mapping[str, Any]) -> dict[str, list[str]]:
    """The forms' choices from an OpenAPI document (intake's); a missing one is an empty list."""
    components = openapi.get("components")
    schemas = components.get("schemas", {}) if isinstance(components, dict) else {}
    found: dict[str, list[str]] = {}
    for name, (schema, prop) in CHOICES.items():
        shape = schemas.get(schema, {}) if isinstance(schemas, dict) else {}
        props = shape.get("properties", {}) if isinstance(shape, dict) else {}
        if not prop:  # every property of the schema (the checklist's items)
            found[name] = sorted(props) if isinstance(props, dict) else []
        else:
            found[name] = _enum_of(props.get(prop) if isinstance(props, dict) else None)
    return found


class Form:
    """A posted form's values: single ones stripped, empty ones absent."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self.values: dict[str, list[str]] = {}
        for key, value in items:
            self.values.setdefault(key, []).append(value.strip())

    def one(self, name: str) -> str | None:
        found = [v for v in self.values.get(name, []) if v]
        return found[0] if found else None

    def many(self, name: str) -> list[str]:
        return list(dict.fromkeys(v for v in self.values.get(name, []) if v))

    def flag(self, name: str) -> bool:
        return self.one(name) in ("on", "true", "yes", "1")


def _codes(text: str | None) -> list[str]:
    return list(dict.fromkeys(part.strip().lower() for part in (text or "").split(",") if part.strip()))


def _int(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else text  # not a number: the API names the field


def consent_body(form: Form, checklist_items: list[str], valid_until: str) -> dict[str, object]:
    """One consent version: purpose x recipient x categories, with who gave it (self, guardian) and the
    child's assent when a guardian consents for a child."""
    body: dict[str, object] = {
        "grantor": form.one("grantor") or "self",
        "method": form.one("method") or "written",
        "language": form.one("consent_language") or "",
        "interpreter_used": form.flag("interpreter_used"),
        "provisions": [{
            "purpose": form.one("purpose") or "referral",
            "recipient_agency": form.one("recipient_agency"),
            "data_categories": form.many("data_categories"),
            "decision": "permit",
        }],
        "valid_until": form.one("valid_until") or valid_until,
        "checklist": {item: form.flag(f"checklist_{item}") for item in checklist_items},
    }
    if form.one("child_assent") is not None:
        body["child_assent"] = form.one("child_assent") == "yes"
    if form.one("witness"):
        body["witness"] = form.one("witness")
    return body


def case_body(form: Form) -> dict[str, object]:
    """A new case from the registration form (HTCDS person and screening)."""
    person: dict[str, object] = {"given_name": form.one("given_name") or ""}
    for name in ("family_name", "birth_date", "citizenship", "phone"):
        if form.one(name):
            person[name] = form.one(name) if name != "citizenship" else (form.one(name) or "").upper()
    if form.one("estimated_age"):
        person["estimated_age"] = _int(form.one("estimated_age"))
    if form.one("gender"):
        person["gender"] = form.one("gender")
    if form.one("languages"):
        person["languages"] = _codes(form.one("languages"))
    if form.many("documents"):
        person["documents"] = form.many("documents")
    screening: dict[str, object] = {
        "trafficking_status": form.one("trafficking_status") or "",
        "identified_by": form.one("identified_by") or "",
        "fear_of_return": form.flag("fear_of_return"),
    }
    if form.one("country_of_exploitation"):
        screening["country_of_exploitation"] = (form.one("country_of_exploitation") or "").upper()
    for name in ("exploitation_types", "needs"):
        if form.many(name):
            screening[name] = form.many(name)
    return {"person": person, "screening": screening}


def referral_body(form: Form, case_id: str) -> dict[str, object]:
    body: dict[str, object] = {
        "case_id": case_id,
        "pathway": form.one("pathway") or "",
        "priority": form.one("priority") or "normal",
        "reason": form.one("reason") or "",
        "shared_categories": form.many("shared_categories"),
    }
    if form.one("service_id"):
        body["service_id"] = form.one("service_id")
    if form.one("to_agency"):
        body["to_agency"] = form.one("to_agency")
    if form.one("service_type"):
        body["service_type"] = form.one("service_type")
    return body


# --- the agency admin: webhooks and the agency's services -----------------------------------------------------

CAPACITY_STATUSES = ["accepting", "full", "closed"]
RECENT_DELIVERIES = 50


def subscription_body(form: Form) -> dict[str, object]:
    """The new subscription: its URL, and the event types (comma-separated; none: all of them)."""
    return {"url": form.one("url") or "", "event_types": _codes(form.one("event_types")) or None}


def recent_deliveries(log: Iterable[dict[str, Any]], count: int = RECENT_DELIVERIES) -> list[dict[str, Any]]:
    """The log's last ``count`` attempts, newest first (the API gives the log oldest first)."""
    return list(log)[-count:][::-1]


def own_services(found: Iterable[dict[str, Any]], agency: str) -> list[dict[str, Any]]:
    """The directory's services that are the agency's (the directory lists every agency's)."""
    return [s for s in found if s.get("agency_id") == agency]


def capacity_body(form: Form) -> dict[str, object]:
    return {"total": _int(form.one("total")), "available": _int(form.one("available")),
            "status": form.one("status")}
