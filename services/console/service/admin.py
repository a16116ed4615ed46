"""The agency admin's other pages (issue #21): the agency's webhook subscriptions and their deliveries (referral's
``/subscriptions``, which an agency admin's ``webhooks:admin`` reaches), and the agency's services in the directory
with their capacity (the registry's ``/services``, written with ``registry:write``). Each API keeps the person to
their own agency: another agency's subscription or service is not found."""

from __future__ import annotations

from typing import Any

from services.console import domain
from services.console.service.apis import Apis
from services.console.service.sessions import SignedIn

#: How many pages of the directory (500 services each) are read to find the agency's own.
DIRECTORY_PAGES = 10
#: How many pages of a delivery log (500 attempts each) are read to reach its most recent attempts.
DELIVERY_PAGES = 10


def _items(found: object) -> list[dict[str, Any]]:
    items = found.get("items", []) if isinstance(found, dict) else []
    return [item for item in items if isinstance(item, dict)]


class Webhooks:
    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    async def subscriptions(self, who: SignedIn) -> list[dict[str, Any]]:
        return _items(await self.apis.referral.call(who.tokens.access_token, "GET", "/subscriptions"))

    async def subscription(self, who: SignedIn, subscription_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.apis.referral.call(who.tokens.access_token, "GET",
                                                              f"/subscriptions/{subscription_id}")
        return found

    async def subscribe(self, who: SignedIn, body: dict[str, object]) -> dict[str, Any]:
        """The new subscription with its signing secret (in this answer only)."""
        created: dict[str, Any] = await self.apis.referral.call(who.tokens.access_token, "POST", "/subscriptions",
                                                                json=body)
        return created

    async def rotate(self, who: SignedIn, subscription_id: str) -> dict[str, Any]:
        rotated: dict[str, Any] = await self.apis.referral.call(who.tokens.access_token, "POST",
                                                                f"/subscriptions/{subscription_id}/rotate-secret")
        return rotated

    async def reactivate(self, who: SignedIn, subscription_id: str) -> None:
        await self.apis.referral.call(who.tokens.access_token, "POST", f"/subscriptions/{subscription_id}/reactivate")

    async def delete(self, who: SignedIn, subscription_id: str) -> None:
        await self.apis.referral.call(who.tokens.access_token, "DELETE", f"/subscriptions/{subscription_id}")

    async def deliveries(self, who: SignedIn, subscription_id: str) -> list[dict[str, Any]]:
        """The most recent attempts, newest first (the log is paged oldest first)."""
        log: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(DELIVERY_PAGES):
            found = await self.apis.referral.call(who.tokens.access_token, "GET",
                                                  f"/subscriptions/{subscription_id}/deliveries",
                                                  params={"limit": 500, "cursor": cursor})
            log = (log + _items(found))[-domain.RECENT_DELIVERIES:]
            cursor = found.get("next_cursor") if isinstance(found, dict) else None
            if not isinstance(cursor, str):
                break
        return domain.recent_deliveries(log)


class Services:
    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    async def of_agency(self, who: SignedIn) -> list[dict[str, Any]]:
        """The agency's services: the directory has no filter by agency, so its pages are read and kept."""
        own: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(DIRECTORY_PAGES):
            found = await self.apis.registry.call(who.tokens.access_token, "GET", "/services",
                                                  params={"limit": 500, "cursor": cursor})
            own += domain.own_services(_items(found), who.person.agency)
            cursor = found.get("next_cursor") if isinstance(found, dict) else None
            if not isinstance(cursor, str):
                break
        return own

    async def set_capacity(self, who: SignedIn, service_id: str, body: dict[str, object]) -> None:
        await self.apis.registry.call(who.tokens.access_token, "PUT", f"/services/{service_id}/capacity", json=body)
