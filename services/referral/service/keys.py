"""What referral keeps wrapped under its master key, for its rotation (``refnet keys rotate-referral``, the loop
is ``shared/key_rotation.py``): the cases' data keys (free text) and the webhook subscriptions' signing secrets,
the current one and the previous one still in its grace (or past it: it is re-wrapped all the same)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import store
from services.referral.service.texts import ENVELOPE
from services.referral.store import CaseKeyRow, SubscriptionRow
from services.referral.webhooks import SECRET_ENVELOPE, secret_binding
from shared.crypto import Keyring, MasterKey
from shared.key_rotation import Slot, Wrapped, count_not_under, rewrap


def _data_key_slots(row: CaseKeyRow) -> list[Slot]:
    def put(wrapped: bytes, key_id: str) -> None:
        row.wrapped_key, row.master_key_id = wrapped, key_id

    return [Slot(row.wrapped_key, row.master_key_id, row.case_id, put)]


def _secret_slots(row: SubscriptionRow) -> list[Slot]:
    def put_current(wrapped: bytes, key_id: str) -> None:
        row.secret_wrapped, row.secret_key_id = wrapped, key_id

    def put_previous(wrapped: bytes, key_id: str) -> None:
        row.previous_secret_wrapped, row.previous_secret_key_id = wrapped, key_id

    binding = secret_binding(row.id)
    slots = []
    if row.secret_wrapped is not None and row.secret_key_id is not None:
        slots.append(Slot(row.secret_wrapped, row.secret_key_id, binding, put_current))
    if row.previous_secret_wrapped is not None and row.previous_secret_key_id is not None:
        slots.append(Slot(row.previous_secret_wrapped, row.previous_secret_key_id, binding, put_previous))
    return slots


#: The cases' data keys, bound to their case (an erased case has none and keeps none).
DATA_KEYS = Wrapped(envelope=ENVELOPE, pending=store.case_keys_not_under, slots=_data_key_slots,
                    count=store.count_case_keys_not_under)
#: The subscriptions' signing secrets, bound to their subscription.
WEBHOOK_SECRETS = Wrapped(envelope=SECRET_ENVELOPE, pending=store.subscriptions_with_secret_not_under,
                          slots=_secret_slots, count=store.count_subscriptions_with_secret_not_under)
WRAPPED = (DATA_KEYS, WEBHOOK_SECRETS)


async def rewrap_master_keys(sessions: async_sessionmaker[AsyncSession], old: Keyring, new_key: MasterKey,
                             batch: int = 200) -> int:
    """Re-wrap under ``new_key`` every data key and webhook secret not yet under it. Resumable."""
    return await rewrap(sessions, WRAPPED, old, new_key, batch=batch)


async def count_not_under_key(sessions: async_sessionmaker[AsyncSession], key: MasterKey) -> int:
    """Case keys and subscriptions still holding something wrapped by another key than ``key``."""
    return await count_not_under(sessions, WRAPPED, key)
