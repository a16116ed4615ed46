"""intake's pure rules: derived facts, what stays in clear, consent evaluation, overrides, and the disclosure
rule (may this agency see these categories of this case now). No I/O, no clock: the time is an argument.

Everything a route or a use case decides about a case is decided here, so there is one place to read it. The
request bodies are in ``schemas``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.consent import provisions_permit

if TYPE_CHECKING:  # the bodies the rules read; schemas imports this module's types
    from services.intake.schemas import ConsentBody, Person

# --- enumerations (docs/domain.md, "The case record"; HTCDS 2.0) -------------------------------------------

Gender = Literal["feminine", "masculine", "transgender_feminine", "transgender_masculine", "non_conforming",
                 "unknown"]
TraffickingStatus = Literal["possible", "actual", "not_victim"]
IdentifiedBy = Literal["police", "ngo", "court", "other_government", "other"]
ExploitationType = Literal["forced_labour", "sexual_exploitation", "forced_marriage", "forced_criminality",
                           "begging", "organ_removal", "military", "domestic_servitude", "other"]
MeansOfControl = Literal[
    "debt_bondage", "takes_earnings", "withheld_wages", "restricts_financial_access", "threats",
    "psychological_abuse", "physical_abuse", "sexual_abuse", "false_promises", "substance_abuse",
    "restricted_movement", "restricts_medical_care", "excessive_working_hours", "uses_children",
    "threat_of_law_enforcement", "withholds_necessities", "confiscated_documents", "isolation", "other",
    "unknown",
]
RecruiterRelation = Literal["intimate_partner", "friend", "family", "other", "unknown"]
MigrationStatus = Literal["asylum_seeker", "refugee", "complementary_protection", "stateless",
                          "irregular_migrant", "national", "other"]
RiskLevel = Literal["low", "medium", "high"]
ServiceCode = Literal[
    "shelter", "safety_security", "food_nfi_cash", "wash", "health.medical", "health.srh", "mhpss",
    "legal.counselling", "legal.representation", "protection.rsd", "protection.resettlement", "avrr",
    "reintegration.livelihood", "reintegration.education", "family_tracing", "child_protection.bia_bid",
    "child_protection.guardianship", "law_enforcement_liaison", "interpretation", "case_management",
]
DocumentKind = Literal["none", "passport", "national_id", "birth_certificate", "travel_document",
                       "refugee_id", "residence_permit", "work_permit", "other"]
CaseStatus = Literal["active", "follow_up", "closed", "closed_referred", "erased"]
OPEN_STATUSES: frozenset[str] = frozenset({"active", "follow_up"})

Grantor = Literal["self", "guardian", "proxy"]
ConsentMethod = Literal["written", "oral", "implicit"]
Purpose = Literal["case_management", "referral", "law_enforcement", "family_tracing", "research"]
DataCategory = Literal["identity", "contact", "demographics", "trafficking_experience", "health",
                       "protection_needs", "documents", "notes"]
Decision = Literal["permit", "deny"]

#: X-Purpose values a reader may name (consent purposes, plus "audit" for oversight bodies).
READ_PURPOSES: frozenset[str] = frozenset({*Purpose.__args__, "audit"})  # type: ignore[attr-defined]
ALL_CATEGORIES: tuple[str, ...] = DataCategory.__args__  # type: ignore[attr-defined]

#: Referral states in which the recipient may read (docs/contract.md, "Open states" plus accepted).
READABLE_REFERRAL_STATES: frozenset[str] = frozenset(
    {"requested", "received", "accepted", "in_progress", "on_hold"}
)

# --- derived facts ------------------------------------------------------------------------------------


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


_AGE_BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 8, "0-8"), (9, 17, "9-17"), (18, 20, "18-20"), (21, 23, "21-23"), (24, 26, "24-26"),
    (27, 29, "27-29"), (30, 38, "30-38"), (39, 47, "39-47"),
)


def age_band(age: int | None) -> str:
    """The CTDC age band of an age in years; ``unknown`` when the age is not known."""
    if age is None:
        return "unknown"
    for low, high, label in _AGE_BANDS:
        if low <= age <= high:
            return label
    return "48+"


def age_at_intake(person: Person, intake_day: date) -> int | None:
    if person.birth_date is not None:
        return age_on(person.birth_date, intake_day)
    return person.estimated_age


def is_minor(age: int | None) -> bool | None:
    """A child is anyone under 18 on the day of intake; unknown age stays unknown (recorded as such)."""
    return None if age is None else age < 18


def presumed_minor(recorded: bool | None) -> bool:
    """Rule 4: whoever's age is unknown is presumed a child until an age is recorded -- for every child rule,
    so a decision never has to stop at "unknown"."""
    return recorded is not False


# --- what of the screening record stays in clear (finding 13) -------------------------------------------

#: Screening facts kept in clear: what a decision or a listing needs (the non-refoulement guard, the owner's
#: case list filters and statistics). Everything else of the screening is sealed under the case's data key,
#: so erasure destroys it with the names.
CLEAR_FACTS: tuple[str, ...] = ("trafficking_status", "fear_of_return", "needs")
#: Trafficking facts sealed with the person (and gone with the case key): together they describe one person's
#: exploitation, and nothing outside the case view uses them.
SEALED_FACTS: tuple[str, ...] = ("identified_by", "country_of_exploitation", "exploitation_types",
                                 "means_of_control", "recruiter_relation", "migration_status", "risk_level")


# --- data categories -> fields (docs/contract.md) -----------------------------------------------------------

#: Where each category's fields sit in the case view: (section, field). Section "" is the top level.
CATEGORY_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "identity": (("person", "given_name"), ("person", "family_name"), ("person", "other_names"),
                 ("person", "birth_date"), ("person", "estimated_age")),
    "contact": (("person", "phone"), ("person", "email"), ("person", "address")),
    "demographics": (("person", "gender"), ("", "age_band"), ("", "is_minor"), ("person", "citizenship"),
                     ("person", "languages")),
    "trafficking_experience": (("screening", "trafficking_status"), ("screening", "identified_by"),
                               ("screening", "country_of_exploitation"), ("screening", "exploitation_types"),
                               ("screening", "means_of_control"), ("screening", "recruiter_relation")),
    "protection_needs": (("screening", "needs"), ("screening", "fear_of_return"), ("screening", "risk_level"),
                         ("screening", "migration_status"), ("screening", "bia_completed_at"),
                         ("screening", "bid_completed_at")),
    "health": (),
    "documents": (("person", "documents"),),
    "notes": (("screening", "notes"),),
}
ALWAYS_VISIBLE = ("id", "status", "owner_agency", "created_at")


def project(view: dict[str, Any], categories: Iterable[str]) -> dict[str, Any]:
    """The case view holding only the fields of ``categories`` (others absent), plus what any party sees."""
    out: dict[str, Any] = {key: view[key] for key in ALWAYS_VISIBLE if key in view}
    for category in sorted(set(categories)):
        for section, name in CATEGORY_FIELDS.get(category, ()):
            source = view if not section else view.get(section) or {}
            if name in source:
                if section:
                    out.setdefault(section, {})[name] = source[name]
                else:
                    out[name] = source[name]
    return out


# --- a recipient's purpose (finding 14) ---------------------------------------------------------------


def recipient_purposes(claimed: str) -> frozenset[str] | None:
    """The consent purposes a recipient's read under ``claimed`` (its X-Purpose) needs, or None if no consent
    can permit it. The referral itself is the purpose ``referral``; any other consent purpose must be
    permitted too, for that recipient; ``audit`` is an oversight body's purpose, never a recipient's."""
    if claimed == "referral":
        return frozenset({"referral"})
    if claimed in Purpose.__args__:  # type: ignore[attr-defined]
        return frozenset({"referral", claimed})
    return None


# --- consent ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentState:
    """One stored consent version, as the rules need it."""

    id: str
    version: int
    kind: Literal["grant", "withdrawal"]
    provisions: Sequence[dict[str, Any]]
    valid_from: datetime
    valid_until: datetime | None


def current_consent(versions: Sequence[ConsentState], at: datetime) -> ConsentState | None:
    """The consent in force at ``at``: the latest version, if it is a grant valid at that moment.

    Versions are append-only; a new version replaces the previous one and a withdrawal ends it. An expired
    consent is no consent, exactly like a withdrawn one.
    """
    if not versions:
        return None
    latest = max(versions, key=lambda v: v.version)
    if latest.kind != "grant":
        return None
    if latest.valid_from > at or (latest.valid_until is not None and latest.valid_until <= at):
        return None
    return latest


def permits(consent: ConsentState | None, *, purpose: str, recipient: str, categories: Iterable[str]) -> bool:
    """Does ``consent`` permit ``purpose`` to ``recipient`` for every one of ``categories``? Deny wins."""
    if consent is None:
        return False
    return provisions_permit(consent.provisions, purpose=purpose, recipient=recipient, categories=categories)


class ConsentRefused(ValueError):
    """A consent body that is well-formed but breaks a rule about this case (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_consent_for_case(body: ConsentBody, *, case_is_minor: bool | None) -> None:
    """Rule 4: a child's consent is given by a guardian, with the child's assent recorded.

    A person whose age is unknown is presumed a child (the benefit of the doubt of child-protection
    guidance): record a birth date or an estimated age to consent as an adult.
    """
    if case_is_minor is None or case_is_minor:
        if body.grantor != "guardian":
            raise ConsentRefused("grantor", "a child's consent (or, age unknown, a presumed child's) must be "
                                            "given by a guardian")
        if body.child_assent is not True:
            raise ConsentRefused("child_assent", "a child's assent must be recorded as given")
    elif body.grantor == "proxy" and body.capacity_note is None:
        raise ConsentRefused("capacity_note", "consent by proxy needs a capacity note")


def provisions_summary(body: ConsentBody) -> list[dict[str, Any]]:
    """Provisions as events carry them: enumerations and ids only."""
    return [p.model_dump(mode="json") for p in body.provisions]


# --- risk-to-life override (rule 6) -----------------------------------------------------------------


#: The life of an override: ``pending`` (requested, no effect), ``active`` (approved, in force until its
#: ``valid_until``), ``expired`` (its time ran out, or the request went unapproved for as long), ``revoked``.
OverrideState = Literal["pending", "active", "expired", "revoked"]

#: What approving needs beside the supervisor role: the scope the registry gives that role only.
APPROVE_SCOPE = "overrides:approve"
SUPERVISOR = "supervisor"
#: The ``acr`` of a sign-in with a second factor (issue 20's token profile).
ACR_MFA = "urn:refnet:acr:mfa"


class OverrideRefused(ValueError):
    """An act on an override that the rule refuses: ``status`` 403 (not this person) or 409 (not now)."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug
        self.message = message


@dataclass(frozen=True)
class Signer:
    """Who acts on an override, as their verified access token says (``person`` None: a system's token)."""

    person: str | None
    agency: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    acr: str | None = None


@dataclass(frozen=True)
class OverrideFacts:
    """An override as the rule reads it: who asked and when, who approved and when, whether revoked."""

    agency: str
    requested_by: str
    requested_at: datetime
    approved_by: str | None = None
    approved_at: datetime | None = None
    valid_until: datetime | None = None
    revoked_at: datetime | None = None


def override_state(override: OverrideFacts, at: datetime, validity: timedelta) -> OverrideState:
    """Where ``override`` stands at ``at``. A request not approved within ``validity`` lapses: an approval
    days later would rest on a threat to life assessed days earlier."""
    if override.revoked_at is not None and override.revoked_at <= at:
        return "revoked"
    if override.approved_at is None:
        return "pending" if at < override.requested_at + validity else "expired"
    if override.valid_until is not None and at < override.valid_until:
        return "active"
    return "expired"


def _person(signer: Signer, act: str) -> str:
    # Rule 6: each person signed in as themselves. A system's token says only that an agency's system called.
    if signer.person is None:
        raise OverrideRefused(403, "person-token-required",
                              f"{act} a risk-to-life override needs a person's own access token, not a system's")
    return signer.person


def check_override_request(signer: Signer) -> str:
    """Who requests: a person with their own token (the justification is checked by the body's schema)."""
    return _person(signer, "Requesting")


def check_override_approval(override: OverrideFacts, signer: Signer, at: datetime, validity: timedelta) -> str:
    """The approver, if ``signer`` may approve ``override`` now: a different person than the requester, a
    supervisor of the same agency holding the approval scope, signed in with a second factor, while the
    override is pending."""
    approver = _person(signer, "Approving")
    if signer.agency != override.agency:
        raise OverrideRefused(403, "approver-of-another-agency",
                              "only a supervisor of the agency that requested an override can approve it")
    if approver == override.requested_by:
        raise OverrideRefused(403, "self-approval",
                              "the approver must be a different person from the one who requested the override")
    if SUPERVISOR not in signer.roles or APPROVE_SCOPE not in signer.scopes:
        raise OverrideRefused(403, "supervisor-required",
                              "only a supervisor (role supervisor, scope overrides:approve) can approve an override")
    if signer.acr != ACR_MFA:
        raise OverrideRefused(403, "second-factor-required",
                              "approving an override needs a sign-in with a second factor")
    _check_state(override, at, validity, ("pending",), "approved")
    return approver


def check_override_revocation(override: OverrideFacts, signer: Signer, at: datetime, validity: timedelta) -> str:
    """The revoker, if ``signer`` may revoke ``override`` now: its requester or a supervisor of its agency, while
    it is pending or active."""
    revoker = _person(signer, "Revoking")
    if signer.agency != override.agency or (
            revoker != override.requested_by and SUPERVISOR not in signer.roles):
        raise OverrideRefused(403, "revoker-not-allowed",
                              "only the requester or a supervisor of the agency can revoke an override")
    _check_state(override, at, validity, ("pending", "active"), "revoked")
    return revoker


def _check_state(override: OverrideFacts, at: datetime, validity: timedelta, allowed: tuple[str, ...],
                 act: str) -> None:
    state = override_state(override, at, validity)
    if state not in allowed:
        raise OverrideRefused(409, f"override-{state}", f"the override is {state}; it cannot be {act}")


def override_valid_until(approved_at: datetime, validity: timedelta) -> datetime:
    """An approved override is in force for at most ``validity`` from its approval."""
    return approved_at + validity


#: How long a risk-to-life override lets its recipient read without consent (``override_valid_hours``).
OVERRIDE_VALIDITY = timedelta(hours=72)


# --- the disclosure rule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """What one referral of the case shares with its recipient (intake's read model of referral's referral)."""

    status: str
    categories: frozenset[str]
    consent_id: str | None  # the consent the referral was made under; None: made under an override


@dataclass(frozen=True)
class OverrideGrant:
    """A risk-to-life override naming the recipient (rule 6): in force from its approval until ``valid_until``,
    unless revoked before. One not approved (``approved_at`` None) is in force never."""

    id: str
    approved_at: datetime | None
    valid_until: datetime | None
    revoked_at: datetime | None = None

    def in_force(self, at: datetime) -> bool:
        if self.approved_at is None or self.valid_until is None:
            return False
        return self.approved_at <= at < self.valid_until and (self.revoked_at is None or at < self.revoked_at)


DisclosureReason = Literal["not-a-party", "referral-not-open", "case-erased", "recipient-suspended",
                           "purpose-not-permitted", "consent-missing"]


@dataclass(frozen=True)
class Disclosure:
    """The answer of the disclosure rule: permitted or not (``reason``), which categories, and on what basis
    (the owner's own case, the consent in force, a risk-to-life override -- or consent and override, each for
    the categories of its own referrals)."""

    permitted: bool
    reason: DisclosureReason | None = None
    categories: frozenset[str] = frozenset()
    owner: bool = False
    consent: ConsentState | None = None
    override_id: str | None = None

    @property
    def basis(self) -> tuple[str, ...]:
        if self.owner:
            return ("owner",)
        return (*(("consent",) if self.consent else ()), *(("override",) if self.override_id else ()))


def disclosure(
    *, owner: str, case_status: str, recipient: str, referrals: Sequence[Shared], suspended: bool,
    consents: Sequence[ConsentState], overrides: Sequence[OverrideGrant], purpose: str, at: datetime,
) -> Disclosure:
    """May ``recipient`` see this case now, and which categories of it?

    The owner sees all of its case. Anyone else only through a referral from the owner (``referrals``: those
    from the owner to ``recipient``; a referral about to be made, for the referral service's clearance) that
    is still open, while the case is not erased and the recipient not suspended, for a purpose (``purpose``,
    what the reader names) the consent in force permits to that recipient for the referral's categories -- or,
    for the referral's own purpose only, under a risk-to-life override in force when the referral was made
    without consent.
    """
    if recipient == owner:
        return Disclosure(True, categories=frozenset(ALL_CATEGORIES), owner=True)
    if not referrals:
        return Disclosure(False, "not-a-party")
    readable = [r for r in referrals if r.status in READABLE_REFERRAL_STATES]
    if not readable:
        return Disclosure(False, "referral-not-open")
    if case_status == "erased":
        return Disclosure(False, "case-erased")
    if suspended:
        return Disclosure(False, "recipient-suspended")
    # The purpose the recipient claims must be one the consent permits it (the referral's own is "referral");
    # a risk-to-life override permits the referral's purpose only.
    purposes = recipient_purposes(purpose)
    if purposes is None:
        return Disclosure(False, "purpose-not-permitted")
    consent = current_consent(consents, at)
    in_force = [o for o in overrides if o.in_force(at)]
    granted: set[str] = set()
    by_consent = by_override = False
    for referral in readable:
        if all(permits(consent, purpose=p, recipient=recipient, categories=referral.categories) for p in purposes):
            granted |= referral.categories
            by_consent = True
        elif referral.consent_id is None and in_force and purposes == {"referral"}:
            granted |= referral.categories
            by_override = True
    if not granted:
        return Disclosure(False, "consent-missing" if purposes == {"referral"} else "purpose-not-permitted")
    return Disclosure(True, categories=frozenset(granted), consent=consent if by_consent else None,
                      override_id=in_force[-1].id if by_override else None)
