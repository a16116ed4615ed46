"""intake's request bodies and answers (pydantic): what a caller may send, refused field by field when it is not
valid, and the shape of every answer (the use cases return plain dictionaries; the routes declare these models, so
FastAPI checks each answer against its model and the OpenAPI document shows it).

The enumerations and the rules they feed live in ``domain``. Every field has a description and an example for
integrators; examples are fake ids and obviously fake people, never realistic personal data.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from services.intake.domain import (
    ALL_CATEGORIES,
    CaseStatus,
    ConsentMethod,
    DataCategory,
    Decision,
    DisclosureReason,
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


#: An instant as the answers have always carried it: Python's ISO 8601 (``2026-01-15T09:30:00.123456+00:00``),
#: passed through as written (pydantic would re-write the offset as ``Z``).
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]

CASE_ID = "case-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CONSENT_ID = "consent-1b2c3d4e5f60718293a4b5c6d7e8f90a"
OVERRIDE_ID = "override-2c3d4e5f60718293a4b5c6d7e8f90a1b"
AGENCY_ID = "agy_0f1e2d3c4b5a6978"
OTHER_AGENCY_ID = "agy_8796a5b4c3d2e1f0"
USER_ID = "caseworker-0042"
# People acting with their own access tokens are named by the registry's person ids (issue 20).
REQUESTER_ID = "person-3d4e5f60718293a4b5c6d7e8f90a1b2c"
APPROVER_ID = "person-4e5f60718293a4b5c6d7e8f90a1b2c3d"
WHEN = "2026-01-15T09:30:00.123456+00:00"
UNTIL = "2027-01-15T09:30:00+00:00"


def doc(docs: dict[str, tuple[str, Any]], name: str, more: str = "", **field: Any) -> Any:
    """A field described once for its request and answer models: ``docs[name]`` is (description, example);
    ``more`` is added to the description."""
    description, example = docs[name]
    return Field(description=f"{description} {more}".strip(), examples=[example], **field)


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Answer(BaseModel):
    """Answers: a field the use case returns but the model lacks fails the response check (a 500 in the tests)
    instead of being dropped. A field typed ``| MISSING`` may be absent (the reader may not see it); absent stays
    absent on the wire and ``null`` stays ``null``."""

    model_config = ConfigDict(extra="forbid")


# --- the screening record --------------------------------------------------------------------------

#: The person's fields, as registered, corrected and read. Names and contact details are personal data, sealed
#: under the case's data key (erasure destroys the key).
PERSON: dict[str, tuple[str, Any]] = {
    "given_name": ("The person's given name, as they give it.", "Example"),
    "family_name": ("The person's family name, if they give one.", "Person"),
    "other_names": ("Other names the person is or was known by (aliases, earlier names).", ["Sample Alias"]),
    "birth_date": ("Date of birth (ISO 8601), if known; not in the future nor before 1900.", "1990-01-01"),
    "estimated_age": ("Age in years estimated at intake when the birth date is not known (within a year of it "
                      "when both are given).", 34),
    "gender": ("Gender as the person identifies (HTCDS).", "unknown"),
    "citizenship": ("Citizenship, an ISO 3166-1 alpha-2 country code.", "NL"),
    "languages": ("Languages the person speaks, ISO 639 codes, without repeats.", ["en", "fr"]),
    "phone": ("Phone number in E.164 form.", "+15555550100"),
    "email": ("Email address.", "example.person@example.org"),
    "address": ("Where the person can be reached or lives now, as free text.", "1 Example Street, Example Town"),
    "documents": ("Kinds of identity or travel document the person holds, without repeats.", ["passport"]),
}


class Person(Strict):
    """Personal data: encrypted at rest, except gender and citizenship (non-identifying)."""

    given_name: Text = doc(PERSON, "given_name")
    family_name: Text | None = doc(PERSON, "family_name", default=None)
    other_names: Annotated[list[Text], Field(max_length=10)] = doc(PERSON, "other_names", default_factory=list)
    birth_date: PastDate | None = doc(PERSON, "birth_date", default=None)
    estimated_age: Annotated[int, Field(ge=0, le=MAX_AGE)] | None = doc(PERSON, "estimated_age", default=None)
    gender: Gender = doc(PERSON, "gender", default="unknown")
    citizenship: Country | None = doc(PERSON, "citizenship", default=None)
    languages: Annotated[list[Language], Field(max_length=20), AfterValidator(_unique)] = doc(
        PERSON, "languages", default_factory=list)
    phone: Phone | None = doc(PERSON, "phone", default=None)
    email: Email | None = doc(PERSON, "email", default=None)
    address: LongText | None = doc(PERSON, "address", default=None)
    documents: Annotated[list[DocumentKind], Field(max_length=20), AfterValidator(_unique)] = doc(
        PERSON, "documents", default_factory=list)

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


#: The screening's fields, as registered, corrected and read (HTCDS 2.0 screening).
SCREENING: dict[str, tuple[str, Any]] = {
    "trafficking_status": ("Whether the person is a victim of trafficking: possible (being assessed), actual "
                           "(identified) or not a victim.", "possible"),
    "identified_by": ("Who identified the person as a possible victim.", "ngo"),
    "country_of_exploitation": ("Where the exploitation took place, an ISO 3166-1 alpha-2 country code.", "BE"),
    "exploitation_types": ("Forms of exploitation the person experienced, without repeats.", ["forced_labour"]),
    "means_of_control": ("How the traffickers controlled the person, without repeats.", ["debt_bondage"]),
    "recruiter_relation": ("The recruiter's relation to the person.", "unknown"),
    "migration_status": ("The person's migration status where they are now.", "asylum_seeker"),
    "fear_of_return": ("The person fears return to their country: referrals for return (AVRR) are refused "
                       "(non-refoulement).", False),
    "needs": ("Services the person needs, as RefNet service codes, without repeats.", ["shelter", "mhpss"]),
    "risk_level": ("The caseworker's assessment of the risk the person faces.", "medium"),
    "notes": ("The caseworker's free-text notes (personal data, sealed).", "Example note: prefers phone contact."),
    "bia_completed_at": ("For a child: the day the Best Interests Assessment was completed (ISO 8601 date); "
                         "null until then.", "2026-01-20"),
    "bid_completed_at": ("For a child: the day the Best Interests Determination was completed (ISO 8601 date); "
                         "null until then.", None),
}


class Screening(Strict):
    trafficking_status: TraffickingStatus = doc(SCREENING, "trafficking_status")
    identified_by: IdentifiedBy = doc(SCREENING, "identified_by")
    country_of_exploitation: Country | None = doc(SCREENING, "country_of_exploitation", default=None)
    exploitation_types: Annotated[list[ExploitationType], Field(max_length=9), AfterValidator(_unique)] = doc(
        SCREENING, "exploitation_types", default_factory=list)
    means_of_control: Annotated[list[MeansOfControl], Field(max_length=20), AfterValidator(_unique)] = doc(
        SCREENING, "means_of_control", default_factory=list)
    recruiter_relation: RecruiterRelation | None = doc(SCREENING, "recruiter_relation", default=None)
    migration_status: MigrationStatus | None = doc(SCREENING, "migration_status", default=None)
    fear_of_return: bool = doc(SCREENING, "fear_of_return", default=False)
    needs: Annotated[list[ServiceCode], Field(max_length=20), AfterValidator(_unique)] = doc(
        SCREENING, "needs", default_factory=list)
    risk_level: RiskLevel | None = doc(SCREENING, "risk_level", default=None)
    notes: LongText | None = doc(SCREENING, "notes", default=None)  # free text: personal, encrypted


def _explained(value: bool) -> bool:
    if not value:
        raise ValueError("must be explained to the person before consent is recorded")
    return value


Explained = Annotated[bool, AfterValidator(_explained)]


class Checklist(Strict):
    """The HTCDS information checklist: informed consent means every item was explained."""

    purpose_explained: Explained = Field(
        description="The purpose of the referral was explained to the person (must be true).", examples=[True])
    use_explained: Explained = Field(
        description="How their data will be used was explained (must be true).", examples=[True])
    research_use_explained: Explained = Field(
        description="Possible research use of anonymised data was explained (must be true).", examples=[True])
    access_right_explained: Explained = Field(
        description="Their right to see their data was explained (must be true).", examples=[True])
    retention_explained: Explained = Field(
        description="How long their data is kept was explained (must be true).", examples=[True])
    withdrawal_explained: Explained = Field(
        description="That they may withdraw consent at any time was explained (must be true).", examples=[True])


class Provision(Strict):
    """One rule of a consent: for this purpose, this recipient (or any), these data categories: permit or deny."""

    purpose: Purpose = Field(description="The purpose the person consents to (or refuses).", examples=["referral"])
    recipient_agency: AgencyId | None = Field(  # None: any agency
        default=None, description="The agency the provision is for; null: any agency.", examples=[OTHER_AGENCY_ID])
    # max_length: no more than there are categories; and pydantic stops at the length, not after validating
    # each of a million items (a 1 MiB body of them held the event loop for seconds).
    data_categories: Annotated[list[DataCategory], Field(min_length=1, max_length=len(ALL_CATEGORIES)),
                               AfterValidator(_unique)] = Field(
        description="The categories of the case's data the provision covers, without repeats.",
        examples=[["identity", "contact", "protection_needs"]])
    decision: Decision = Field(description="Whether the provision permits or denies the disclosure.",
                               examples=["permit"])


#: A consent version's fields, as recorded and read.
CONSENT: dict[str, tuple[str, Any]] = {
    "grantor": ("Who gave consent: the person themself, a guardian (required for a child) or a proxy.", "self"),
    "child_assent": ("For a child: whether the child assented as well as the guardian consenting.", None),
    "capacity_note": ("Free-text note on the person's capacity to consent (personal data, sealed).",
                      "Example note: consent given after a rest day."),
    "method": ("How consent was given.", "written"),
    "language": ("The language consent was explained in, an ISO 639 code.", "en"),
    "interpreter_used": ("Whether an interpreter explained the consent.", False),
    "provisions": ("What the person consents to: one provision per purpose, recipient and set of categories.",
                   [{"purpose": "referral", "recipient_agency": OTHER_AGENCY_ID,
                     "data_categories": ["identity", "contact", "protection_needs"], "decision": "permit"}]),
    "valid_from": ("When the consent starts (RFC 3339 with offset); absent: now.", WHEN),
    "valid_until": ("When the consent ends (RFC 3339 with offset), in the future; consent is never open-ended.",
                    UNTIL),
    "witness": ("Who witnessed the consent (may be a name: personal data, sealed).", "Example Witness"),
    "checklist": ("The information checklist: every item must have been explained.",
                  {"purpose_explained": True, "use_explained": True, "research_use_explained": True,
                   "access_right_explained": True, "retention_explained": True, "withdrawal_explained": True}),
}


class ConsentBody(Strict):
    grantor: Grantor = doc(CONSENT, "grantor")
    child_assent: bool | None = doc(CONSENT, "child_assent", default=None)
    capacity_note: LongText | None = doc(CONSENT, "capacity_note", default=None)  # free text: encrypted
    method: ConsentMethod = doc(CONSENT, "method")
    language: Language = doc(CONSENT, "language")
    interpreter_used: bool = doc(CONSENT, "interpreter_used", default=False)
    provisions: Annotated[list[Provision], Field(min_length=1, max_length=50)] = doc(CONSENT, "provisions")
    valid_from: datetime | None = doc(CONSENT, "valid_from", default=None)
    valid_until: datetime = doc(CONSENT, "valid_until")
    witness: Text | None = doc(CONSENT, "witness", default=None)  # may be a person's name: encrypted
    checklist: Checklist = doc(CONSENT, "checklist")

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
    person: Person = Field(description="The person being referred (personal data, sealed).",
                           examples=[{"given_name": "Example", "family_name": "Person", "estimated_age": 34}])
    screening: Screening = Field(description="The screening record.",
                                 examples=[{"trafficking_status": "possible", "identified_by": "ngo",
                                            "needs": ["shelter"]}])
    initial_consent: ConsentBody | None = Field(
        default=None, description="The person's first consent, recorded with the case (version 1); absent: none yet.",
        examples=[None])


class PersonPatch(Strict):
    """Personal fields an owner may correct. Birth date and age are facts of intake (they fixed is_minor)."""

    given_name: Text | None = doc(PERSON, "given_name", default=None)
    family_name: Text | None = doc(PERSON, "family_name", default=None)
    other_names: Annotated[list[Text], Field(max_length=10)] | None = doc(PERSON, "other_names", default=None)
    languages: Annotated[list[Language], Field(max_length=20), AfterValidator(_unique)] | None = doc(
        PERSON, "languages", default=None)
    phone: Phone | None = doc(PERSON, "phone", default=None)
    email: Email | None = doc(PERSON, "email", default=None)
    address: LongText | None = doc(PERSON, "address", default=None)
    documents: Annotated[list[DocumentKind], Field(max_length=20), AfterValidator(_unique)] | None = doc(
        PERSON, "documents", default=None)


#: Fields a patch may not set to null (they always have a value).
NOT_NULLABLE = frozenset({"status", "fear_of_return", "trafficking_status", "identified_by", "needs", "person",
                          "given_name", "other_names", "languages", "documents"})

#: The case's own fields, as listed and read.
CASE: dict[str, tuple[str, Any]] = {
    "id": ("The case's id, minted by intake.", CASE_ID),
    "status": ("Where the case stands: active, follow_up, closed, closed_referred, or erased (its personal data "
               "crypto-shredded).", "active"),
    "owner_agency": ("The agency that registered the case and owns it.", AGENCY_ID),
    "created_at": ("When the case was registered (ISO 8601 with offset).", WHEN),
    "is_minor": ("Whether the person was under 18 on the day of intake; null: age unknown (then treated as a "
                 "child).", False),
    "age_band": ("The CTDC age band of the person's age at intake (`unknown` when not known); null once the case "
                 "is erased.", "30-38"),
}


class CasePatch(Strict):
    person: PersonPatch | None = Field(default=None, description="Corrections to the person's personal fields; "
                                                                 "only the fields sent change.",
                                       examples=[{"phone": "+15555550101"}])
    notes: LongText | None = doc(SCREENING, "notes", default=None)
    status: Literal["active", "follow_up", "closed", "closed_referred"] | None = Field(
        default=None, description="A new status; `closed` or `closed_referred` closes the case (erasure is "
                                  "`POST /cases/{case_id}/erase`).", examples=["follow_up"])
    bia_completed_at: PastDate | None = doc(SCREENING, "bia_completed_at", default=None)
    bid_completed_at: PastDate | None = doc(SCREENING, "bid_completed_at", default=None)
    fear_of_return: bool | None = doc(SCREENING, "fear_of_return", default=None)
    risk_level: RiskLevel | None = doc(SCREENING, "risk_level", default=None)
    needs: Annotated[list[ServiceCode], Field(max_length=20), AfterValidator(_unique)] | None = doc(
        SCREENING, "needs", default=None)
    trafficking_status: TraffickingStatus | None = doc(SCREENING, "trafficking_status", default=None)
    identified_by: IdentifiedBy | None = doc(SCREENING, "identified_by", default=None)
    migration_status: MigrationStatus | None = doc(SCREENING, "migration_status", default=None)


class WithdrawBody(Strict):
    reason: LongText | None = Field(  # free text: encrypted
        default=None, description="Why consent is withdrawn, as the person puts it (personal data, sealed).",
        examples=["Example reason: wants to decide later."])


class OverrideBody(Strict):
    """A request for a risk-to-life override by the person whose own access token calls. There is no approver
    here: a different person, a supervisor of the agency, approves with their own token
    (``POST /cases/{case_id}/overrides/{override_id}/approval``)."""

    recipient_agency: AgencyId = Field(description="The agency the case may be disclosed to without consent.",
                                       examples=[OTHER_AGENCY_ID])
    justification: Annotated[FreeText, StringConstraints(min_length=20, max_length=4000)] = Field(
        description="Why there is a risk to life that justifies disclosure without consent (at least 20 "
                    "characters; sealed under the case key, never shown in an answer or event).",
        examples=["Example justification: credible threat reported by the shelter today."])


class ClearanceBody(Strict):
    case_id: AgencyId = Field(description="The case the referral is about.", examples=[CASE_ID])
    to_agency: AgencyId = Field(description="The agency the case would be referred to.", examples=[OTHER_AGENCY_ID])
    purpose: Purpose = Field(default="referral", description="The purpose of the referral.", examples=["referral"])
    # max_length: no more than there are categories; and pydantic stops at the length, not after validating
    # each of a million items (a 1 MiB body of them held the event loop for seconds).
    data_categories: Annotated[list[DataCategory], Field(min_length=1, max_length=len(ALL_CATEGORIES)),
                               AfterValidator(_unique)] = Field(
        description="The categories of the case's data the referral would share, without repeats.",
        examples=[["identity", "protection_needs"]])
    pathway: Literal["protection", "assistance", "service", "avrr", "resettlement"] = Field(
        description="The referral's pathway (`avrr`, return, is refused when the person fears return).",
        examples=["service"])
    from_agency: AgencyId | None = Field(
        default=None, description="The referring agency; if given and not the case's owner, the case is unknown "
                                  "(404).", examples=[AGENCY_ID])


# --- answers ---------------------------------------------------------------------------------------


class PersonView(Answer):
    """The person as the reader may see them: a field of a category the reader may not see is absent."""

    given_name: str | MISSING = doc(PERSON, "given_name", default=MISSING)
    family_name: str | MISSING | None = doc(PERSON, "family_name", default=MISSING)
    other_names: list[str] | MISSING = doc(PERSON, "other_names", default=MISSING)
    birth_date: date | MISSING | None = doc(PERSON, "birth_date", default=MISSING)
    estimated_age: int | MISSING | None = doc(PERSON, "estimated_age", default=MISSING)
    gender: Gender | MISSING | None = doc(PERSON, "gender", default=MISSING)
    citizenship: str | MISSING | None = doc(PERSON, "citizenship", default=MISSING)
    languages: list[str] | MISSING = doc(PERSON, "languages", default=MISSING)
    phone: str | MISSING | None = doc(PERSON, "phone", default=MISSING)
    email: str | MISSING | None = doc(PERSON, "email", default=MISSING)
    address: str | MISSING | None = doc(PERSON, "address", default=MISSING)
    documents: list[DocumentKind] | MISSING = doc(PERSON, "documents", default=MISSING)


class ScreeningView(Answer):
    """The screening as the reader may see it: a field of a category the reader may not see is absent, and so
    is every sealed field once the case is erased. (In the order the answers have always had: what stays in clear,
    then what is sealed.)"""

    trafficking_status: TraffickingStatus | MISSING | None = doc(SCREENING, "trafficking_status", default=MISSING)
    fear_of_return: bool | MISSING = doc(SCREENING, "fear_of_return", default=MISSING)
    needs: list[ServiceCode] | MISSING = doc(SCREENING, "needs", default=MISSING)
    bia_completed_at: date | MISSING | None = doc(SCREENING, "bia_completed_at", default=MISSING)
    bid_completed_at: date | MISSING | None = doc(SCREENING, "bid_completed_at", default=MISSING)
    identified_by: IdentifiedBy | MISSING | None = doc(SCREENING, "identified_by", default=MISSING)
    country_of_exploitation: str | MISSING | None = doc(SCREENING, "country_of_exploitation", default=MISSING)
    exploitation_types: list[ExploitationType] | MISSING = doc(SCREENING, "exploitation_types", default=MISSING)
    means_of_control: list[MeansOfControl] | MISSING = doc(SCREENING, "means_of_control", default=MISSING)
    recruiter_relation: RecruiterRelation | MISSING | None = doc(SCREENING, "recruiter_relation", default=MISSING)
    migration_status: MigrationStatus | MISSING | None = doc(SCREENING, "migration_status", default=MISSING)
    risk_level: RiskLevel | MISSING | None = doc(SCREENING, "risk_level", default=MISSING)
    notes: str | MISSING | None = doc(SCREENING, "notes", default=MISSING)


class CaseView(Answer):
    """A case: its owner sees all of it; a recipient only the data categories its referral shares (the rest is
    absent); an erased case keeps only what is not personal."""

    id: str = doc(CASE, "id")
    status: CaseStatus = doc(CASE, "status")
    owner_agency: str = doc(CASE, "owner_agency")
    created_at: Timestamp = doc(CASE, "created_at")
    is_minor: bool | MISSING | None = doc(CASE, "is_minor", default=MISSING)
    age_band: str | MISSING | None = doc(CASE, "age_band", default=MISSING)
    person: PersonView | MISSING = Field(
        default=MISSING, description="The person: absent when the reader may see none of the person's fields; "
                                     "empty once the case is erased.",
        examples=[{"given_name": "Example", "family_name": "Person", "gender": "unknown"}])
    screening: ScreeningView | MISSING = Field(
        default=MISSING, description="The screening record: absent when the reader may see none of it.",
        examples=[{"trafficking_status": "possible", "fear_of_return": False, "needs": ["shelter"]}])


class CaseSummary(Answer):
    """A case in the owner's list: nothing that identifies the person."""

    id: str = doc(CASE, "id")
    status: CaseStatus = doc(CASE, "status")
    owner_agency: str = doc(CASE, "owner_agency")
    created_at: Timestamp = doc(CASE, "created_at")
    is_minor: bool | None = doc(CASE, "is_minor")
    trafficking_status: TraffickingStatus | None = doc(SCREENING, "trafficking_status")
    needs: list[ServiceCode] = doc(SCREENING, "needs")


class CaseList(Answer):
    """A page of the caller's own cases, oldest first."""

    items: list[CaseSummary] = Field(description="The cases of this page.",
                                     examples=[[{"id": CASE_ID, "status": "active", "owner_agency": AGENCY_ID,
                                                 "created_at": WHEN, "is_minor": False,
                                                 "trafficking_status": "possible", "needs": ["shelter"]}]])
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: this is the last page.",
                                    examples=[None])


class Erased(Answer):
    """The answer to an erasure (also when the case was already erased)."""

    id: str = doc(CASE, "id")
    status: Literal["erased"] = Field(description="Always `erased`: the case's personal data is crypto-shredded.",
                                      examples=["erased"])


class ConsentView(Answer):
    """A consent version: a grant, or a withdrawal ending the grant before it (append-only). The free text (capacity
    note and witness of a grant, reason of a withdrawal) is absent once the case is erased."""

    id: str = Field(description="The consent version's id.", examples=[CONSENT_ID])
    case_id: str = Field(description="The case the consent is about.", examples=[CASE_ID])
    version: int = Field(description="The version number, from 1, one higher for each grant or withdrawal.",
                         examples=[1])
    kind: Literal["grant", "withdrawal"] = Field(description="A grant of consent, or a withdrawal of the grant "
                                                             "named by `withdraws`.", examples=["grant"])
    status: Literal["active", "pending", "expired", "superseded", "withdrawn", "withdrawal"] = Field(
        description="Where the version stands now: active (in force), pending (starts later), expired, superseded "
                    "(a later grant replaced it), withdrawn, or `withdrawal` for a withdrawal itself.",
        examples=["active"])
    withdraws: str | None = Field(description="For a withdrawal: the id of the grant it ends; null for a grant.",
                                  examples=[None])
    grantor: Grantor | None = doc(CONSENT, "grantor", more="Null for a withdrawal.")
    child_assent: bool | None = doc(CONSENT, "child_assent")
    method: ConsentMethod | None = doc(CONSENT, "method", more="Null for a withdrawal.")
    language: str | None = doc(CONSENT, "language", more="Null for a withdrawal.")
    interpreter_used: bool | None = doc(CONSENT, "interpreter_used",
                                        more="Null for a withdrawal.")
    provisions: list[Provision] = doc(CONSENT, "provisions",
                                      more="Empty for a withdrawal.")
    checklist: Checklist | None = doc(CONSENT, "checklist",
                                      more="Null for a withdrawal.")
    valid_from: Timestamp = Field(description="When the version takes effect (ISO 8601 with offset).",
                                  examples=[WHEN])
    valid_until: Timestamp | None = Field(description="When a grant ends (ISO 8601 with offset); null for a "
                                                      "withdrawal.", examples=[UNTIL])
    recorded_by_agency: str = Field(description="The agency that recorded the version.", examples=[AGENCY_ID])
    recorded_by_user: str | None = Field(description="The person who recorded it, if named: their own token's "
                                                     "subject, or the X-Acting-User their agency's system asserted.",
                                         examples=[USER_ID])
    recorded_by_attested_by: Literal["token", "system"] | None = Field(
        description="On whose authentication `recorded_by_user` is named: `token` (the person's own access token), "
                    "`system` (asserted by the agency's system client); null when nobody is named, or for versions "
                    "recorded before this was kept.", examples=["system"])
    created_at: Timestamp = Field(description="When the version was recorded (ISO 8601 with offset).",
                                  examples=[WHEN])
    capacity_note: str | MISSING | None = doc(CONSENT, "capacity_note", default=MISSING)
    witness: str | MISSING | None = doc(CONSENT, "witness", default=MISSING)
    reason: str | MISSING | None = Field(
        default=MISSING, description="A withdrawal's reason (personal data, sealed); absent for a grant.",
        examples=["Example reason: wants to decide later."])


class ConsentList(Answer):
    """A case's consent history, every version, oldest first."""

    items: list[ConsentView] = Field(description="Every consent version of the case.",
                                     examples=[[{"id": CONSENT_ID, "case_id": CASE_ID, "version": 1, "kind": "grant",
                                                 "status": "active", "withdraws": None, "grantor": "self",
                                                 "child_assent": None, "method": "written", "language": "en",
                                                 "interpreter_used": False,
                                                 "provisions": CONSENT["provisions"][1],
                                                 "checklist": CONSENT["checklist"][1], "valid_from": WHEN,
                                                 "valid_until": UNTIL, "recorded_by_agency": AGENCY_ID,
                                                 "recorded_by_user": USER_ID,
                                                 "recorded_by_attested_by": "system", "created_at": WHEN,
                                                 "capacity_note": None, "witness": None}]])
    next_cursor: None = Field(description="Always null: the history comes whole.", examples=[None])


class OverrideView(Answer):
    """A risk-to-life override (docs/domain.md rule 6): requested by one person, in force only once a different
    supervisor of the same agency approved it, until `valid_until` or a revocation. People are named by the ids
    their own access tokens carry; the justification is never shown."""

    id: str = Field(description="The override's id.", examples=[OVERRIDE_ID])
    case_id: str = Field(description="The case it discloses.", examples=[CASE_ID])
    recipient_agency: str = Field(description="The agency the case may be disclosed to.", examples=[OTHER_AGENCY_ID])
    state: Literal["pending", "active", "expired", "revoked"] = Field(
        description="`pending`: requested, no effect until approved; `active`: approved and in force until "
                    "`valid_until`; `expired`: its time ran out (or nobody approved the request in time); "
                    "`revoked`: ended by its requester or a supervisor.", examples=["active"])
    requested_by: str = Field(description="The person who requested it (their token's subject).",
                              examples=[REQUESTER_ID])
    requested_at: Timestamp = Field(description="When it was requested (ISO 8601 with offset).", examples=[WHEN])
    approved_by: str | None = Field(description="The supervisor who approved it (their token's subject, never the "
                                                "requester); null while pending.", examples=[APPROVER_ID])
    approved_at: Timestamp | None = Field(description="When it was approved (ISO 8601 with offset); null while "
                                                      "pending.", examples=[WHEN])
    valid_until: Timestamp | None = Field(description="When it stops permitting disclosure: approval plus the "
                                                      "configured validity (ISO 8601 with offset); null while "
                                                      "pending.", examples=["2026-01-18T09:30:00.123456+00:00"])
    revoked_by: str | None = Field(description="Who revoked it (their token's subject); null unless revoked.",
                                   examples=[None])
    revoked_at: Timestamp | None = Field(description="When it was revoked (ISO 8601 with offset); null unless "
                                                     "revoked.", examples=[None])


class OverrideList(Answer):
    """A case's risk-to-life overrides, oldest request first, for the agency that owns the case."""

    items: list[OverrideView] = Field(description="Every override of the case.", examples=[[{
        "id": OVERRIDE_ID, "case_id": CASE_ID, "recipient_agency": OTHER_AGENCY_ID, "state": "active",
        "requested_by": REQUESTER_ID, "requested_at": WHEN, "approved_by": APPROVER_ID, "approved_at": WHEN,
        "valid_until": "2026-01-18T09:30:00.123456+00:00", "revoked_by": None, "revoked_at": None}]])


class ClearanceFacts(Answer):
    """The case's facts the referral service's own rules need (no personal data)."""

    is_minor: bool = Field(description="The person is a child, or of unknown age (presumed a child).",
                           examples=[False])
    age_known: bool = Field(description="Whether an age was recorded at intake.", examples=[True])
    bia_completed: bool = Field(description="A Best Interests Assessment is recorded.", examples=[False])
    bid_completed: bool = Field(description="A Best Interests Determination is recorded.", examples=[False])
    fear_of_return: bool = doc(SCREENING, "fear_of_return")
    status: CaseStatus = doc(CASE, "status")


class Clearance(Answer):
    """May the case be referred to that agency for those categories? The disclosure rule's answer."""

    permitted: bool = Field(description="Whether the referral may share those categories with that agency.",
                            examples=[True])
    reason: DisclosureReason | Literal["override"] | None = Field(
        description="Why not (when not permitted), or `override` when a risk-to-life override permits it; null "
                    "when consent (or ownership) permits it.", examples=[None])
    consent_id: str | None = Field(description="The consent version that permits it, if one does.",
                                   examples=[CONSENT_ID])
    consent_version: int | None = Field(description="That consent version's number.", examples=[1])
    override_id: str | None = Field(description="The override that permits it, if one does.", examples=[None])
    facts: ClearanceFacts = Field(description="Facts of the case the referral service checks itself.",
                                  examples=[{"is_minor": False, "age_known": True, "bia_completed": False,
                                             "bid_completed": False, "fear_of_return": False, "status": "active"}])
