"""console's use cases: sessions (sign-in, sign-out, the signed-in session) and the work pages' calls."""

from services.console.service.admin import Services, Webhooks
from services.console.service.apis import Api, Apis, Refused
from services.console.service.oidc import Person, Provider, SignInFailed, Tokens
from services.console.service.sessions import Sessions, SignedIn, Started
from services.console.service.work import Audit, Cases, Directory, ReferralPage, Referrals, Staff

__all__ = [
           "Api",
           "Apis",
           "Audit",
           "Cases",
           "Directory",
           "Person",
           "Provider",
           "ReferralPage",
           "Referrals",
           "Refused",
           "Services",
           "Sessions",
           "SignInFailed",
           "SignedIn",
           "Staff",
           "Started",
           "Tokens",
           "Webhooks",
]
