"""intake's request bodies (pydantic): what a caller may send, refused field by field when it is not valid.

The enumerations and the rules they feed live in ``domain``; the answers are plain dictionaries the use cases
shape (``service``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
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

from services.intake.domain import (
    ALL_CATEGORIES,
    ConsentMethod,
    DataCategory,
    Decision,
    DocumentKind,
    ExploitationType,
    Gender,
    Grantor,
    IdentifiedBy,
    MeansOfControl,
    MigrationStatus,
    Purpose,
    RecruiterRelation,
    RiskLevel,
    ServiceCode,
    TraffickingStatus,
    age_on,
)
from shared import reference
from shared.text import FreeText, Line


def today() -> date:
    """The day a date of birth or an age is checked against (validation reads the clock; the rules do not)."""
    return datetime.now(UTC).date()


MIN_BIRTH_DATE = date(1900, 1, 1)
MAX_AGE = 120

# --- small value types -------------------------------------------------------------------------------

def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _country(value: str) -> str:
    if not reference.is_country(value):
        raise ValueError("must be an officially assigned ISO 3166-1 alpha-2 country code")
    return value


def _not_in_future(value: date) -> date:
    if value > today():
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
    """A request for a risk-to-life override, by the person whose token calls: no approver here -- a second
    person approves with their own token (POST .../approval)."""

    recipient_agency: AgencyId
    justification: Annotated[FreeText, StringConstraints(min_length=20, max_length=4000)]


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
