"""referral's API models (pydantic): what a POST body or a query may hold, checked before a use case runs, and
the shape of every answer.

The use cases (``service/views.py`` and friends) build answers as plain JSON objects; the routes declare these
models as their ``response_model``, so FastAPI checks each answer against them (``extra="forbid"``: a field a use
case adds but a model lacks fails loudly instead of being dropped) and the OpenAPI document shows them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from services.referral import domain
from services.referral.events import OVERDUE, state_event_type
from shared import reference
from shared.envelope import full_type
from shared.idempotency import IdempotencyKey
from shared.text import FreeText, Line

_REQUESTED = state_event_type("requested")  # the examples name real event types
_REQUESTED_FULL = full_type(_REQUESTED)

# Opaque ids: letters, digits and a few separators, bounded (they end up in events and logs).
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")]
#: A moment as the answers write it (``shared.times.utc_text``): kept as the text the use case wrote, so the
#: wire stays exactly what it was; documented as RFC 3339.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]

# Fake ids in RefNet's formats (shared/ids.py), the same in every example of this document.
CASE_ID = "case-6f1d3c9a2b8e4f70a1c2d3e4f5a6b7c8"
REFERRAL_ID = "4e8f2a6c0b1d3e5f7a9c8b6d4f2e0a1c"
SENDER = "agy_3f9c2b7e1d4a6058"
RECIPIENT = "agy_7a0d5c3e9b2f4186"
SERVICE_ID = "svc_2c4e6a8b0d1f3e5a"
CONSENT_ID = "consent-0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a59"
SUBSCRIPTION_ID = "9b1d3f5a7c9e0b2d4f6a8c0e1b3d5f7a"
EVENT_ID = "7c3e1a9b5d2f4e6a8b0c1d3e5f7a9b2c"
MOMENT = "2026-05-01T09:30:00.123456Z"
CURSOR_EXAMPLE = "ZGVsaXZlcnk6NDI"


def _taxonomy(code: str) -> str:
    if not reference.is_taxonomy_code(code):
        raise ValueError("not a service taxonomy code")
    return code


def _unique(values: list[domain.DataCategory]) -> list[domain.DataCategory]:
    if len(set(values)) != len(values):
        raise ValueError("categories must not repeat")
    return values


Taxonomy = Annotated[str, AfterValidator(_taxonomy)]


class CreateReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: Id = Field(description="The case to refer, as intake registered it (pseudonymous).",
                        examples=[CASE_ID])
    to_agency: Id | None = Field(default=None, description="The receiving agency; omit to let `service_id` name it.",
                                 examples=[RECIPIENT])
    service_id: Id | None = Field(default=None, description="A registry service to refer to; its agency receives "
                                  "the referral.", examples=[SERVICE_ID])
    pathway: domain.Pathway = Field(description="The referral pathway (which deadlines and guards apply).",
                                    examples=["protection"])
    service_type: Taxonomy | None = Field(default=None, description="The service taxonomy code needed; required "
                                          "unless `service_id` is given.", examples=["protection.rsd"])
    priority: domain.Priority = Field(description="How soon the recipient must acknowledge.", examples=["urgent"])
    reason: FreeText = Field(min_length=1, max_length=4000,  # personal: sealed under the case's key
                             description="Why the person is referred, for the recipient (sealed at rest; shown "
                             "only to whom may read it).", examples=["Example reason: needs a safe place to stay."])
    # max_length: pydantic then refuses a long list at once instead of validating (and reporting) every item.
    shared_categories: Annotated[list[domain.DataCategory], AfterValidator(_unique)] = Field(
        min_length=1, max_length=len(domain.DataCategory),
        description="The categories of the case's data the recipient may read; the consent must cover them.",
        examples=[["identity", "demographics", "protection_needs"]])
    idempotency_key: IdempotencyKey | None = Field(
        default=None, description="The same as the `Idempotency-Key` header (either will do; both must agree).",
        examples=["2b7f4c1e-referral-0001"])

    @model_validator(mode="after")
    def _recipient_named(self) -> CreateReferral:
        if self.to_agency is None and self.service_id is None:
            raise ValueError("name the recipient: to_agency or service_id")
        if self.service_id is None and self.service_type is None:
            raise ValueError("service_type is required unless service_id is given")
        return self


class Transition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Line = Field(min_length=1, max_length=32, description="The state to move the referral to.",
                     examples=["accepted"])
    reason_code: Line | None = Field(default=None, min_length=1, max_length=64,
                                     description="Why, from the reason codes of the target state (required to "
                                     "reject, fail or cancel).", examples=["no-capacity"])
    note: FreeText | None = Field(default=None, max_length=4000,  # personal: sealed under the case's key
                                  description="A free-text note for the other party (sealed at rest).",
                                  examples=["Example note: intake appointment booked."])


# --- answers -------------------------------------------------------------------------------------------------

class Answer(BaseModel):
    """An answer's model: every field the use case writes, no other (a new one fails the tests, not silently)."""

    model_config = ConfigDict(extra="forbid")


class ReferralHistoryEntry(Answer):
    """One move of a referral along its lifecycle."""

    from_: domain.Status | None = Field(alias="from", description="The state before the move (null: the referral "
                                        "was created by this move).", examples=["requested"])
    to: domain.Status = Field(description="The state after the move.", examples=["received"])
    by: domain.Party = Field(description="Who moved it: the sending agency, the recipient, or RefNet itself.",
                             examples=["recipient"])
    agency: str | None = Field(description="The agency that moved it (null when RefNet did).", examples=[RECIPIENT])
    acting_user: str | None = Field(description="The person acting inside that agency: their own access token's "
                                    "subject, or the `X-Acting-User` its system named (an identifier, never a "
                                    "name).", examples=["user-0042"])
    attested_by: Literal["token", "system"] | None = Field(
        description="On whose authentication `acting_user` is named: `token` (the person's own access token), "
                    "`system` (asserted by the agency's system client); null when nobody is named, or for moves "
                    "made before this was kept.", examples=["system"])
    reason_code: str | None = Field(description="The reason code given with the move.", examples=[None])
    note: str | None = Field(description="The note given with the move; null when there was none or when this "
                             "party may not read it.", examples=["Example note: intake appointment booked."])
    at: Timestamp = Field(description="When the move happened (RFC 3339, UTC).", examples=[MOMENT])


class Referral(Answer):
    """A referral as one of its two parties sees it."""

    id: str = Field(description="The referral's id.", examples=[REFERRAL_ID])
    status: domain.Status = Field(description="Where the referral is in its lifecycle.", examples=["requested"])
    case_id: str = Field(description="The referred case (pseudonymous).", examples=[CASE_ID])
    from_agency: str = Field(description="The sending agency.", examples=[SENDER])
    to_agency: str = Field(description="The receiving agency.", examples=[RECIPIENT])
    service_id: str | None = Field(description="The registry service referred to, if one was named.",
                                   examples=[SERVICE_ID])
    pathway: domain.Pathway = Field(description="The referral pathway.", examples=["protection"])
    service_type: str = Field(description="The service taxonomy code needed.", examples=["protection.rsd"])
    priority: domain.Priority = Field(description="How soon the recipient must acknowledge.", examples=["urgent"])
    reason: str | None = Field(description="Why the person is referred; null unless `free_text` is `shown`.",
                               examples=["Example reason: needs a safe place to stay."])
    free_text: Literal["shown", "withheld", "erased"] = Field(
        description="Whether this party may read the reason: `shown`; `withheld` (not this party's to read now: "
        "the referral closed, the category is not shared or the consent no longer covers it); `erased` (the case "
        "was erased).", examples=["shown"])
    shared_categories: list[domain.DataCategory] = Field(
        description="The categories of the case's data the recipient may read.",
        examples=[["identity", "demographics", "protection_needs"]])
    consent_id: str | None = Field(description="The consent the referral relies on (null: a risk-to-life override).",
                                   examples=[CONSENT_ID])
    consent_version: int | None = Field(description="The version of that consent.", examples=[1])
    due_at: Timestamp = Field(description="When the recipient must have acknowledged it (RFC 3339, UTC).",
                              examples=["2026-05-05T09:30:00Z"])
    overdue: bool = Field(description="Whether it missed its deadline.", examples=[False])
    overdue_at: Timestamp | None = Field(description="When it was flagged overdue (null: not flagged).",
                                         examples=[None])
    created_at: Timestamp = Field(description="When it was sent (RFC 3339, UTC).", examples=[MOMENT])
    updated_at: Timestamp = Field(description="When it last changed (RFC 3339, UTC).", examples=[MOMENT])


class ReferralWithHistory(Referral):
    """A referral with every move it made (a list of referrals leaves the history out)."""

    history: list[ReferralHistoryEntry] = Field(description="Its moves, oldest first.", examples=[[{
        "from": None, "to": "requested", "by": "sender", "agency": SENDER, "acting_user": "user-0042",
        "attested_by": "system", "reason_code": None, "note": None, "at": MOMENT}]])


class ReferralPage(Answer):
    items: list[Referral] = Field(description="One page of referrals, oldest first.",
                                  examples=[[]])
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: the last page.",
                                    examples=[CURSOR_EXAMPLE])


class Capacity(Answer):
    available: int = Field(description="Places free now, as the service last reported.", examples=[3])
    total: int = Field(description="All its places.", examples=[12])
    status: str = Field(description="`accepting`, `full` or `closed`, as the service reported it.",
                        examples=["accepting"])


class Suggestion(Answer):
    """A registry service that fits the need, with why it ranked where it did."""

    service_id: str = Field(description="The registry service.", examples=[SERVICE_ID])
    agency_id: str = Field(description="The agency that runs it.", examples=[RECIPIENT])
    taxonomy: str = Field(description="Its service taxonomy code.", examples=["shelter"])
    score: int = Field(description="Its rank score (higher first).", examples=[8])
    reasons: list[str] = Field(description="What earned or cost it points: `taxonomy-exact`, `taxonomy-related`, "
                               "`accepting`, `full`, `language`, `accepts-children`, `country`.",
                               examples=[["taxonomy-exact", "accepting", "language"]])
    distance_km: float | None = Field(description="How far from `near`, in km (null: no `near`, or the service "
                                      "has no location).", examples=[4.2])
    capacity: Capacity = Field(description="Its capacity, as the registry last said.",
                               examples=[{"available": 3, "total": 12, "status": "accepting"}])
    languages: list[str] = Field(description="The ISO 639 languages it works in.", examples=[["en", "fr"]])
    countries: list[str] = Field(description="The ISO 3166-1 countries it serves.", examples=[["BE"]])
    accepts_children: bool = Field(description="Whether it takes children.", examples=[False])


class SuggestionList(Answer):
    items: list[Suggestion] = Field(description="Services fit for the need, best first.", examples=[[]])
    next_cursor: None = Field(description="Always null: the list is one page (`limit` bounds it).",
                              examples=[None])


class FeedEvent(Answer):
    """One of the caller's referral events, as webhooks deliver it (CloudEvents attributes)."""

    cursor: str = Field(description="Its position in the feed: pass as `after` to read on from it.",
                        examples=["1042"])
    id: str = Field(description="The event's id (repeats on a redelivery: deduplicate on it).", examples=[EVENT_ID])
    type: str = Field(description="The event type (`org.refnet.referral.<state>.v1`, `org.refnet.referral."
                      "overdue.v1`).", examples=[_REQUESTED_FULL])
    time: str = Field(description="When the event happened (RFC 3339).", examples=["2026-05-01T09:30:00.123456+00:00"])
    subject: str = Field(description="The referral it is about.", examples=[REFERRAL_ID])
    data: dict[str, Any] = Field(description="The event's payload, as the event type's schema in the contract "
                                 "(docs/events) defines it.", examples=[{
                                     "referral_id": REFERRAL_ID, "case_id": CASE_ID, "status": "requested",
                                     "from_agency": SENDER, "to_agency": RECIPIENT, "pathway": "protection"}])


class EventFeed(Answer):
    items: list[FeedEvent] = Field(description="The caller's events after `after`, oldest first.", examples=[[]])
    next_cursor: str = Field(description="Pass as `after` to read on (the same `after` when nothing came).",
                             examples=["1042"])


# --- statistics -----------------------------------------------------------------------------------------------

#: A count, or ``"suppressed"``: under 11, or hidden so that such a count cannot be worked out from others.
Count = int | Literal["suppressed"]
#: A share of two published counts, null when the denominator is 0, suppressed when either count is.
Share = float | Literal["suppressed"] | None
#: A median to the whole hour, null when there was nothing to measure, suppressed with its count.
Hours = float | Literal["suppressed"] | None


class StatisticsPeriod(Answer):
    label: str = Field(description="The period as asked for: a month or a quarter.", examples=["2026-Q3"])
    start: Timestamp = Field(description="Its first moment (UTC).", examples=["2026-07-01T00:00:00Z"])
    end: Timestamp = Field(description="The moment after its last (UTC).", examples=["2026-10-01T00:00:00Z"])


class ReferralCounts(Answer):
    total: Count = Field(description="Referrals sent in the period.", examples=[120])
    by_pathway: dict[str, Count] = Field(
        description="Referrals by pathway (pathway -> count, or `\"suppressed\"`).",
        examples=[{"protection": 64, "assistance": 45, "service": "suppressed", "avrr": "suppressed"}])
    by_sending_agency: dict[str, Count] = Field(
        description="Referrals by sending agency (agency id -> count, or `\"suppressed\"`).",
        examples=[{SENDER: 70, RECIPIENT: "suppressed"}])
    by_receiving_agency: dict[str, Count] = Field(
        description="Referrals by receiving agency (agency id -> count, or `\"suppressed\"`).",
        examples=[{RECIPIENT: 81, SENDER: "suppressed"}])
    with_consent: Count = Field(description="Referrals relying on a consent.", examples=[108])
    without_consent: Count = Field(
        description="Referrals made under a risk-to-life override.", examples=[12])
    share_with_consent: Share = Field(description="`with_consent` / `total`, to 4 places.", examples=[0.9])


class PathwayFigures(Answer):
    decisions: Count = Field(description="Referrals accepted or rejected in the period.",
                                                   examples=[40])
    accepted: Count = Field(description="Referrals accepted.", examples=[29])
    rejected: Count = Field(description="Referrals rejected.", examples=[11])
    acknowledged: Count = Field(description="Referrals acknowledged (received).",
                                                      examples=[52])
    acknowledged_within_deadline: Count = Field(
        description="Acknowledged before their deadline.", examples=[41])
    acknowledged_late: Count = Field(description="Acknowledged after their deadline.",
                                                           examples=[11])
    overdue: Count = Field(description="Referrals flagged overdue.", examples=["suppressed"])
    acceptance_rate: Share = Field(description="`accepted` / `decisions`, to 4 places.", examples=[0.725])
    share_acknowledged_within_deadline: Share = Field(
        description="`acknowledged_within_deadline` / `acknowledged`, to 4 places.", examples=[0.7885])
    median_hours_to_acknowledge: Hours = Field(description="Median hours from sending to acknowledgement.",
                                               examples=[6.0])
    median_hours_to_accept: Hours = Field(description="Median hours from sending to acceptance.", examples=[30.0])


class Statistics(Answer):
    """De-identified indicators of one closed period (docs/domain.md rule 9)."""

    period: StatisticsPeriod = Field(description="The period the figures cover.", examples=[{
        "label": "2026-Q3", "start": "2026-07-01T00:00:00Z", "end": "2026-10-01T00:00:00Z"}])
    k_anonymity: int = Field(description="The smallest count published (smaller ones show as `\"suppressed\"`).",
                             examples=[11])
    referrals: ReferralCounts = Field(description="Referrals sent in the period.", examples=[{
        "total": 120, "by_pathway": {"protection": 64}, "by_sending_agency": {SENDER: 70},
        "by_receiving_agency": {RECIPIENT: 81}, "with_consent": 108, "without_consent": 12,
        "share_with_consent": 0.9}])
    by_pathway: dict[str, PathwayFigures] = Field(description="Per pathway (every pathway, in a fixed order): "
                                                  "decisions, acknowledgements and how long they took.",
                                                  examples=[{"protection": {
                                                      "decisions": 40, "accepted": 29, "rejected": 11,
                                                      "acknowledged": 52, "acknowledged_within_deadline": 41,
                                                      "acknowledged_late": 11, "overdue": "suppressed",
                                                      "acceptance_rate": 0.725,
                                                      "share_acknowledged_within_deadline": 0.7885,
                                                      "median_hours_to_acknowledge": 6.0,
                                                      "median_hours_to_accept": 30.0}}])


# --- an agency's own indicators -------------------------------------------------------------------------------

_REASONS_EXAMPLE = {"duplicate": 0, "no-capacity": 2, "not-eligible": 1, "other": 0, "outside-mandate": 0}


class SentIndicators(Answer):
    """The referrals the agency sent, and what their recipients did with them, in one month."""

    referrals: int = Field(description="Referrals the agency sent in the month.", examples=[14])
    accepted: int = Field(description="Of the referrals it sent, how many were accepted in the month.",
                          examples=[9])
    rejected: int = Field(description="Of the referrals it sent, how many were declined (moved to `rejected`) "
                          "in the month.", examples=[3])
    cancelled: int = Field(description="Of the referrals it sent, how many were cancelled in the month (by it, or "
                           "by RefNet: consent withdrawn, recipient suspended, case erased).", examples=[1])
    completed: int = Field(description="Of the referrals it sent, how many were completed in the month.",
                           examples=[4])
    acceptance_rate: float | None = Field(description="`accepted` / (`accepted` + `rejected`), to 4 places; null "
                                          "when nothing was decided in the month.", examples=[0.75])
    rejection_reasons: dict[str, int] = Field(
        description="Reason code -> how many of its referrals were declined with it in the month (every code of "
        "`rejected`, zero or not).", examples=[_REASONS_EXAMPLE])


class ReceivedIndicators(Answer):
    """The referrals the agency received, and what it did with them, in one month."""

    referrals: int = Field(description="Referrals sent to the agency in the month.", examples=[20])
    acknowledged: int = Field(description="Referrals it acknowledged (moved to `received`) in the month.",
                              examples=[19])
    accepted: int = Field(description="Referrals it accepted in the month.", examples=[12])
    rejected: int = Field(description="Referrals it declined (moved to `rejected`) in the month.", examples=[3])
    cancelled: int = Field(description="Referrals to it that were cancelled in the month (by their sender or by "
                           "RefNet).", examples=[1])
    completed: int = Field(description="Referrals it completed in the month.", examples=[7])
    acceptance_rate: float | None = Field(description="`accepted` / (`accepted` + `rejected`), to 4 places; null "
                                          "when it decided nothing in the month. An accepted referral counts as "
                                          "accepted whatever became of it later.", examples=[0.8])
    median_hours_to_acknowledge: float | None = Field(
        description="Median hours from sending to its acknowledgement, over the acknowledgements made in the month, "
        "to 0.1 h; null when there were none.", examples=[5.5])
    median_hours_to_accept: float | None = Field(
        description="Median hours from sending to its acceptance, over the acceptances made in the month, to 0.1 h; "
        "null when there were none.", examples=[30.2])
    rejection_reasons: dict[str, int] = Field(
        description="Reason code -> how many referrals it declined with it in the month (every code of `rejected`, "
        "zero or not).", examples=[_REASONS_EXAMPLE])


class MonthIndicators(Answer):
    """One calendar month (UTC) of the agency's figures: events that happened in it."""

    month: str = Field(description="The month, `YYYY-MM`.", examples=["2026-05"])
    start: Timestamp = Field(description="Its first moment (UTC).", examples=["2026-05-01T00:00:00Z"])
    end: Timestamp = Field(description="The moment after its last (UTC).", examples=["2026-06-01T00:00:00Z"])
    complete: bool = Field(description="`false` for the current month: its figures still grow.", examples=[True])
    sent: SentIndicators = Field(description="The referrals the agency sent.", examples=[{
        "referrals": 14, "accepted": 9, "rejected": 3, "cancelled": 1, "completed": 4, "acceptance_rate": 0.75,
        "rejection_reasons": _REASONS_EXAMPLE}])
    received: ReceivedIndicators = Field(description="The referrals the agency received.", examples=[{
        "referrals": 20, "acknowledged": 19, "accepted": 12, "rejected": 3, "cancelled": 1, "completed": 7,
        "acceptance_rate": 0.8, "median_hours_to_acknowledge": 5.5, "median_hours_to_accept": 30.2,
        "rejection_reasons": _REASONS_EXAMPLE}])


class AgencyIndicators(Answer):
    """The calling agency's own indicators, month by month (issue #21): counts, rates, medians and reason codes
    about its own referrals; no case, no person, no free text, no other agency named."""

    agency_id: str = Field(description="The agency the figures are about: always the caller's own.",
                           examples=[SENDER])
    from_: str = Field(alias="from", description="The first month covered, `YYYY-MM`.", examples=["2026-05"])
    to: str = Field(description="The last month covered, `YYYY-MM`.", examples=["2026-05"])
    months: list[MonthIndicators] = Field(description="One entry per month from `from` to `to`, oldest first; a "
                                          "month without referrals has zeros.", examples=[[{
                                              "month": "2026-05", "start": "2026-05-01T00:00:00Z",
                                              "end": "2026-06-01T00:00:00Z", "complete": True,
                                              "sent": {"referrals": 14, "accepted": 9, "rejected": 3,
                                                       "cancelled": 1, "completed": 4, "acceptance_rate": 0.75,
                                                       "rejection_reasons": _REASONS_EXAMPLE},
                                              "received": {"referrals": 20, "acknowledged": 19, "accepted": 12,
                                                           "rejected": 3, "cancelled": 1, "completed": 7,
                                                           "acceptance_rate": 0.8,
                                                           "median_hours_to_acknowledge": 5.5,
                                                           "median_hours_to_accept": 30.2,
                                                           "rejection_reasons": _REASONS_EXAMPLE}}]])


# --- webhooks -------------------------------------------------------------------------------------------------

EVENT_TYPES = frozenset({f"org.refnet.{state_event_type(s)}" for s in domain.Status} | {f"org.refnet.{OVERDUE}"})


def _event_types(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    full = [v if v.startswith("org.refnet.") else "org.refnet." + v for v in values]
    unknown = [v for v in full if v not in EVENT_TYPES]
    if unknown:
        raise ValueError("unknown event type; use referral.<state>.v1 or referral.overdue.v1")
    return sorted(set(full))


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(max_length=2048, description="Where to POST the events (https; RefNet's outbound policy "
                         "refuses private addresses).", examples=["https://case-system.example.org/refnet/hooks"])
    event_types: Annotated[list[str] | None, AfterValidator(_event_types)] = Field(
        default=None, max_length=20, description="The event types to deliver (`referral.<state>.v1`, "
        "`referral.overdue.v1`, with or without `org.refnet.`); omit for all.",
        examples=[[_REQUESTED, OVERDUE]])


class Subscription(Answer):
    """A webhook subscription as its agency sees it (never its secret, except once: see `SubscriptionSecret`)."""

    id: str = Field(description="The subscription's id.", examples=[SUBSCRIPTION_ID])
    url: str = Field(description="Where the events are delivered.",
                     examples=["https://case-system.example.org/refnet/hooks"])
    event_types: list[str] | None = Field(description="The event types delivered (null: all).",
                                          examples=[[_REQUESTED_FULL]])
    status: Literal["active", "disabled", "deleted"] = Field(
        description="`active`; `disabled` after repeated failures (reactivate it); `deleted`.", examples=["active"])
    consecutive_failures: int = Field(description="Failed deliveries in a row.", examples=[0])
    next_attempt_at: Timestamp = Field(description="When the next delivery may be attempted (RFC 3339, UTC).",
                                       examples=[MOMENT])
    created_at: Timestamp = Field(description="When it was created (RFC 3339, UTC).", examples=[MOMENT])
    disabled_at: Timestamp | None = Field(description="When it was disabled (null: it is not).", examples=[None])
    # Present only while the previous secret still signs (absent, not null, otherwise: as the answer always was).
    previous_secret_valid_until: Timestamp | None = Field(
        default=None, exclude_if=lambda value: value is None,
        description="Present after a rotation: until when deliveries are also signed with the previous secret.",
        examples=["2026-05-02T09:30:00Z"])


class SubscriptionSecret(Subscription):
    """A subscription with its signing secret: only in the answer that creates it or rotates it."""

    secret: str = Field(description="The Standard Webhooks signing secret (`whsec_...`); shown once, keep it safe.",
                        examples=["whsec_RXhhbXBsZVNlY3JldE5vdFJlYWxBdEFsbDEyMzQ="])


class SubscriptionList(Answer):
    items: list[Subscription] = Field(description="The caller's subscriptions.", examples=[[]])
    next_cursor: None = Field(description="Always null: an agency has only a few subscriptions.", examples=[None])


class Delivery(Answer):
    """One attempt to deliver one event to the subscription's URL."""

    id: str = Field(description="The attempt's id.", examples=["42"])
    event_id: str = Field(description="The event delivered.", examples=[EVENT_ID])
    event_type: str = Field(description="Its type.", examples=[_REQUESTED_FULL])
    attempt: int = Field(description="Which attempt at this event (1 the first).", examples=[1])
    outcome: Literal["delivered", "failed"] = Field(description="Whether the receiver took it (a 2xx).",
                                                    examples=["delivered"])
    status_code: int | None = Field(description="The receiver's HTTP status (null: no answer).", examples=[204])
    error: str | None = Field(description="What went wrong without an answer (the kind of error, never a body).",
                              examples=[None])
    duration_ms: int = Field(description="How long the attempt took, in milliseconds.", examples=[87])
    at: Timestamp = Field(description="When it was made (RFC 3339, UTC).", examples=[MOMENT])


class DeliveryPage(Answer):
    items: list[Delivery] = Field(description="One page of the delivery log, oldest first.", examples=[[]])
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: the last page.",
                                    examples=[CURSOR_EXAMPLE])
