"""intake's pure rules: the screening record, derived facts, consent evaluation, overrides. No I/O.

Everything a route or a use case decides about a case is decided here, so there is one place to read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.intake.countries import is_country
from shared.consent import provisions_permit
from shared.text import FreeText, Line

# --- enumerations (DOMAIN.md, "The case record"; HTCDS 2.0) -------------------------------------------

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

#: Referral states in which the recipient may read (CONTRACT.md, "Open states" plus accepted).
READABLE_REFERRAL_STATES: frozenset[str] = frozenset(
    {"requested", "received", "accepted", "in_progress", "on_hold"}
)

MIN_BIRTH_DATE = date(1900, 1, 1)
MAX_AGE = 120

# --- small value types -------------------------------------------------------------------------------

def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _country(value: str) -> str:
    if not is_country(value):
        raise ValueError("must be an officially assigned ISO 3166-1 alpha-2 country code")
    return value


def _not_in_future(value: date) -> date:
    if value > datetime.now(UTC).date():
        raise ValueError("must not be in the future")
    return value


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat a value")
    return values


Text = Annotated[Line, StringConstraints(min_length=1, max_length=200), AfterValidator(_not_blank)]
LongText = Annotated[FreeText, StringConstraints(min_length=1, max_length=4000)]
Country = Annotated[str, StringConstraints(min_length=2, max_length=2), AfterValidator(_country)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]
Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
PastDate = Annotated[date, AfterValidator(_not_in_future)]
AgencyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+:\-]{0,127}$")]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# --- the screening record --------------------------------------------------------------------------


class Person(Strict):
    """Personal data: encrypted at rest, except gender and citizenship (non-identifying)."""

    given_name: Text
    family_name: Text | None = None
    other_names: Annotated[list[Text], Field(max_length=10)] = Field(default_factory=list)
    birth_date: PastDate | None = None
    estimated_age: Annotated[int, Field(ge=0, le=MAX_AGE)] | None = None
    gender: Gender = "unknown"
    citizenship: Country | None = None
    languages: Annotated[list[Language], Field(max_length=20), AfterValidator(_unique)] = Field(
        default_factory=list)
    phone: Phone | None = None
    email: Email | None = None
    address: LongText | None = None
    documents: Annotated[list[DocumentKind], Field(max_length=20), AfterValidator(_unique)] = Field(
        default_factory=list)

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth_date(cls, value: date | None) -> date | None:
        if value is not None and value < MIN_BIRTH_DATE:
            raise ValueError("must not be before 1900-01-01")
        return value

    @field_validator("estimated_age")
    @classmethod
    def _age_matches_birth_date(cls, value: int | None, info: ValidationInfo) -> int | None:
        birth = info.data.get("birth_date")
        if value is not None and birth is not None and abs(age_on(birth, today()) - value) > 1:
            raise ValueError("is not consistent with birth_date")
        return value


class Screening(Strict):
    trafficking_status: TraffickingStatus
    identified_by: IdentifiedBy
    country_of_exploitation: Country | None = None
    exploitation_types: Annotated[list[ExploitationType], Field(max_length=9), AfterValidator(_unique)] = Field(
        default_factory=list)
    means_of_control: Annotated[list[MeansOfControl], Field(max_length=20), AfterValidator(_unique)] = Field(
        default_factory=list)
    recruiter_relation: RecruiterRelation | None = None
    migration_status: MigrationStatus | None = None
    fear_of_return: bool = False
    needs: Annotated[list[ServiceCode], Field(max_length=20), AfterValidator(_unique)] = Field(
        default_factory=list)
    risk_level: RiskLevel | None = None
    notes: LongText | None = None  # free text: personal, encrypted


def _explained(value: bool) -> bool:
    if not value:
        raise ValueError("must be explained to the person before consent is recorded")
    return value


Explained = Annotated[bool, AfterValidator(_explained)]


class Checklist(Strict):
    """The HTCDS information checklist: informed consent means every item was explained."""

    purpose_explained: Explained
    use_explained: Explained
    research_use_explained: Explained
    access_right_explained: Explained
    retention_explained: Explained
    withdrawal_explained: Explained


class Provision(Strict):
    purpose: Purpose
    recipient_agency: AgencyId | None = None  # None: any agency
    # max_length: no more than there are categories; and pydantic stops at the length, not after validating
    # each of a million items (a 1 MiB body of them held the event loop for seconds).
    data_categories: Annotated[list[DataCategory], Field(min_length=1, max_length=len(ALL_CATEGORIES)),
                               AfterValidator(_unique)]
    decision: Decision


class ConsentBody(Strict):
    grantor: Grantor
    child_assent: bool | None = None
    capacity_note: LongText | None = None  # free text: encrypted
    method: ConsentMethod
    language: Language
    interpreter_used: bool = False
    provisions: Annotated[list[Provision], Field(min_length=1, max_length=50)]
    valid_from: datetime | None = None
    valid_until: datetime
    witness: Text | None = None  # may be a person's name: encrypted
    checklist: Checklist

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a UTC offset (RFC 3339)")
        return value

    @field_validator("valid_until")
    @classmethod
    def _in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("valid_from") or datetime.now(UTC)
        if value <= start or value <= datetime.now(UTC):
            raise ValueError("must be in the future and after valid_from")
        return value


class CaseBody(Strict):
    person: Person
    screening: Screening
    initial_consent: ConsentBody | None = None


class PersonPatch(Strict):
    """Personal fields an owner may correct. Birth date and age are facts of intake (they fixed is_minor)."""

    given_name: Text | None = None
    family_name: Text | None = None
    other_names: Annotated[list[Text], Field(max_length=10)] | None = None
    languages: Annotated[list[Language], Field(max_length=20), AfterValidator(_unique)] | None = None
    phone: Phone | None = None
    email: Email | None = None
    address: LongText | None = None
    documents: Annotated[list[DocumentKind], Field(max_length=20), AfterValidator(_unique)] | None = None


#: Fields a patch may not set to null (they always have a value).
NOT_NULLABLE = frozenset({"status", "fear_of_return", "trafficking_status", "identified_by", "needs", "person",
                          "given_name", "other_names", "languages", "documents"})


class CasePatch(Strict):
    person: PersonPatch | None = None
    notes: LongText | None = None
    status: Literal["active", "follow_up", "closed", "closed_referred"] | None = None
    bia_completed_at: PastDate | None = None
    bid_completed_at: PastDate | None = None
    fear_of_return: bool | None = None
    risk_level: RiskLevel | None = None
    needs: Annotated[list[ServiceCode], Field(max_length=20), AfterValidator(_unique)] | None = None
    trafficking_status: TraffickingStatus | None = None
    identified_by: IdentifiedBy | None = None
    migration_status: MigrationStatus | None = None


class WithdrawBody(Strict):
    reason: LongText | None = None  # free text: encrypted


class OverrideBody(Strict):
    recipient_agency: AgencyId
    justification: Annotated[FreeText, StringConstraints(min_length=20, max_length=4000)]
    approver: UserId


class ClearanceBody(Strict):
    case_id: AgencyId
    to_agency: AgencyId
    purpose: Purpose = "referral"
    # max_length: no more than there are categories; and pydantic stops at the length, not after validating
    # each of a million items (a 1 MiB body of them held the event loop for seconds).
    data_categories: Annotated[list[DataCategory], Field(min_length=1, max_length=len(ALL_CATEGORIES)),
                               AfterValidator(_unique)]
    pathway: Literal["protection", "assistance", "service", "avrr", "resettlement"]
    from_agency: AgencyId | None = None


# --- derived facts ------------------------------------------------------------------------------------


def today() -> date:
    return datetime.now(UTC).date()


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


# --- data categories -> fields (CONTRACT.md) -----------------------------------------------------------

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


class OverrideRefused(ValueError):
    def __init__(self, slug: str, field: str, message: str) -> None:
        super().__init__(message)
        self.slug = slug
        self.field = field
        self.message = message


def check_override(*, requested_by: str | None, approver: str) -> None:
    """Disclosure without consent needs a named requester and a second, different approver."""
    if requested_by is None:
        raise OverrideRefused("acting-user-required", "X-Acting-User",
                              "an override must name the person requesting it (X-Acting-User)")
    if approver.casefold() == requested_by.casefold():
        raise OverrideRefused("second-approver-required", "approver",
                              "the approver must be a different person from the requester")


OVERRIDE_VALIDITY = timedelta(hours=72)


def override_active(created_at: datetime, at: datetime, validity: timedelta = OVERRIDE_VALIDITY) -> bool:
    return created_at <= at < created_at + validity
