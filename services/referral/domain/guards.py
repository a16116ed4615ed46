"""The guards a new referral must pass (docs/domain.md rules 1, 4 and 5) and the consent in force: which
referrals it covers, and who may read a referral's free text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.referral.domain.vocabulary import OPEN_STATES, DataCategory, Party, Pathway, Status
from shared.consent import provisions_permit

# --- guards on a new referral -------------------------------------------------------------------------------

GuardName = Literal[
    "consent-missing", "child-bia-missing", "child-bid-missing", "non-refoulement", "recipient-suspended",
    "service-full",
]


@dataclass(frozen=True)
class CaseFacts:
    """What intake's clearance tells about the case, at the moment of the request (no personal data)."""

    is_minor: bool
    bia_completed: bool
    bid_completed: bool
    fear_of_return: bool
    status: str = "active"


@dataclass(frozen=True)
class Recipient:
    agency_id: str
    status: str  # active | suspended


@dataclass(frozen=True)
class ServiceOffer:
    service_id: str
    agency_id: str
    taxonomy: str
    capacity_status: str  # accepting | full | closed
    available: int


@dataclass(frozen=True)
class GuardFailure:
    guard: GuardName
    detail: str


@dataclass(frozen=True)
class NewReferral:
    pathway: Pathway
    consent_permitted: bool
    facts: CaseFacts
    recipient: Recipient
    service: ServiceOffer | None
    open_pathways_of_case: tuple[Pathway, ...]  # pathways of the case's referrals in an open state


def check_guards(new: NewReferral) -> GuardFailure | None:
    """The first SOP rule a new referral breaks, or None. Order: consent first (rule 1), then the
    child safeguards (rule 4), non-refoulement (rule 5), then the recipient's own situation."""
    if not new.consent_permitted:
        return GuardFailure("consent-missing", "The case has no active consent permitting this referral to this "
                                               "recipient for every shared data category.")
    if new.facts.is_minor and not new.facts.bia_completed:
        return GuardFailure("child-bia-missing", "A child's referral needs a recorded best-interests assessment.")
    if new.facts.is_minor and new.pathway in (Pathway.avrr, Pathway.resettlement) and not new.facts.bid_completed:
        return GuardFailure("child-bid-missing",
                            f"An {new.pathway} referral for a child needs a completed best-interests determination.")
    if new.pathway is Pathway.avrr:
        if new.facts.fear_of_return:
            return GuardFailure("non-refoulement", "No avrr referral while the case records fear of return.")
        if Pathway.protection in new.open_pathways_of_case:
            return GuardFailure("non-refoulement",
                                "No avrr referral while a protection referral for the case is open or accepted.")
    if new.recipient.status != "active":
        return GuardFailure("recipient-suspended", "The recipient agency is suspended.")
    if new.service is not None and (new.service.capacity_status != "accepting" or new.service.available <= 0):
        return GuardFailure("service-full", "The service is not accepting referrals now.")
    return None


# --- consent in force (docs/domain.md rules 1 and 2) ---------------------------------------------------------


@dataclass(frozen=True)
class KnownConsent:
    """The latest consent version of a case that intake's events told us of. Versions are append-only: a
    new grant replaces the one before, a withdrawal ends it and leaves none in force."""

    version: int
    kind: Literal["grant", "withdrawal"]
    provisions: tuple[Mapping[str, Any], ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def consent_covers(consent: KnownConsent | None, *, recipient: str, categories: Iterable[str],
                   at: datetime) -> bool:
    """Whether the case's consent in force at ``at`` permits a referral to ``recipient`` of ``categories``
    (intake's rule: only the latest version counts, and only while it is valid)."""
    if consent is None or consent.kind != "grant":
        return False
    if (consent.valid_from is not None and consent.valid_from > at) or (
            consent.valid_until is not None and consent.valid_until <= at):
        return False
    return provisions_permit(consent.provisions, purpose="referral", recipient=recipient, categories=categories)


@dataclass(frozen=True)
class OpenReferral:
    referral_id: str
    to_agency: str
    shared_categories: tuple[str, ...]
    consent_id: str | None  # None: made under a risk-to-life override, not under consent


def no_longer_consented(consent: KnownConsent | None, referrals: Sequence[OpenReferral], at: datetime) -> list[str]:
    """The open referrals made under consent that the consent now in force no longer covers -- whichever
    version they were made under. Those made under an override stand or fall with the override."""
    return [r.referral_id for r in referrals if r.consent_id is not None
            and not consent_covers(consent, recipient=r.to_agency, categories=r.shared_categories, at=at)]


#: The data category a referral's free text (its reason, its transitions' notes) is shared under. Free text
#: can say anything about the person -- where she hides, what was done to her, her health -- so no narrower
#: category covers it: the recipient reads it only if the sender shared ``notes`` and the consent permits
#: that recipient ``notes`` (clearance checks every shared category), as intake shows a case's notes.
FREE_TEXT_CATEGORY = DataCategory.notes


def free_text_shown(*, viewer: Party, author: Party | None, status: Status, shared_categories: Iterable[str],
                    consented: bool) -> bool:
    """May ``viewer`` read a free text of a referral written by ``author``? The sender registered the case
    (its own data, until erasure); a party reads back what it wrote itself; the recipient reads the rest
    only while the referral is open, the free-text category shared and a consent in force covering it."""
    if viewer is Party.sender or (author is not None and author is viewer):
        return True
    return status in OPEN_STATES and FREE_TEXT_CATEGORY in set(shared_categories) and consented


def consent_still_current(cleared_version: int | None, known_version: int | None) -> bool:
    """intake cleared a referral under consent ``cleared_version`` (None: under an override); a later version
    we already heard of -- a withdrawal, or a grant that may not cover it -- means the clearance is stale."""
    return cleared_version is None or known_version is None or known_version <= cleared_version
