"""A typed Python client for RefNet, for the case systems of the agencies that take part.

    from refnet_client import RefNet

    with RefNet.from_credentials(".refnet/credentials/unhcr.json", stack_state=".refnet/state.json",
                                 acting_user="case-system") as refnet:
        for referral in refnet.referrals(role="received", status="requested").items:
            case = refnet.read_case(referral.case_id, purpose="referral")
            refnet.transition(referral.id, "received")

``AsyncRefNet`` has the same methods for asyncio. Tokens: OAuth 2.0 client credentials with ``private_key_jwt``
(RFC 7523, authlib), reused until shortly before they expire. A refused call raises ``RefNetError`` carrying
the RFC 9457 problem. The client needs only httpx, authlib, joserfc and pydantic -- none of RefNet's services.
"""

from refnet_client.auth import ASSERTION_LIFETIME_SECONDS, Credentials, Endpoints, ShortPrivateKeyJWT
from refnet_client.client import AsyncRefNet, RefNet
from refnet_client.errors import RefNetError
from refnet_client.models import (
    Access,
    AgencyIndicators,
    AuditEntry,
    Case,
    CaseAccess,
    CaseEntries,
    CaseEntry,
    Checkpoint,
    Consent,
    ConsentBasis,
    ConsistencyProof,
    Delivery,
    FeedEvent,
    InclusionProof,
    LogKey,
    Page,
    Referral,
    Service,
    Subscription,
    Transition,
)

__all__ = [
    "ASSERTION_LIFETIME_SECONDS", "Access", "AgencyIndicators", "AsyncRefNet", "AuditEntry", "Case", "CaseAccess",
    "CaseEntries", "CaseEntry", "Checkpoint", "Consent", "ConsentBasis", "ConsistencyProof", "Credentials", "Delivery",
    "Endpoints", "FeedEvent", "InclusionProof", "LogKey", "Page", "RefNet", "RefNetError", "Referral", "Service",
    "ShortPrivateKeyJWT", "Subscription", "Transition",
]
