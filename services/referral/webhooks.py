"""Standard Webhooks signing secrets and signatures: new secrets, kept wrapped under referral's master key
(shared/crypto.py) and bound to their subscription, and the headers a delivery carries.

A rotation gives a new secret while the old one keeps signing for a grace period (every delivery then carries
both signatures, as Standard Webhooks allows), so a receiver can switch without losing an event. The
subscriptions are ``service/subscriptions.py``; delivery is ``jobs.WebhookDispatcher``.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks import Webhook

from services.referral.store import SubscriptionRow
from shared.crypto import Envelope, Keyring, KeyUnavailable


def new_secret() -> str:
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


_SECRET_PREFIX = "whsec_"  # noqa: S105 -- the Standard Webhooks prefix, not a secret
SECRET_ENVELOPE = Envelope("referral")


def secret_binding(subscription_id: str) -> str:
    # The wrapping is bound to the subscription (and, by this prefix, can never pass for a case's data key).
    return f"webhook-secret:{subscription_id}"


def seal_secret(secret: str, keyring: Keyring, subscription_id: str) -> tuple[bytes, str]:
    """-> (the secret wrapped under the current master key, that key's id)."""
    raw = base64.b64decode(secret.removeprefix(_SECRET_PREFIX))
    return SECRET_ENVELOPE.wrap(raw, keyring.current, secret_binding(subscription_id)), keyring.current.key_id


def open_secret(wrapped: bytes, key_id: str, keyring: Keyring, subscription_id: str) -> str:
    raw = SECRET_ENVELOPE.unwrap(wrapped, keyring.by_id(key_id), secret_binding(subscription_id))
    return _SECRET_PREFIX + base64.b64encode(raw).decode()


def signing_secrets(row: SubscriptionRow, keyring: Keyring | None, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one, and the previous one within its grace.
    ``KeyUnavailable`` / ``Undecryptable`` when the master key that wrapped them is not configured."""
    if row.secret is not None:  # made before referral_0007 and not sealed yet
        found = [row.secret]
    else:
        if keyring is None:
            raise KeyUnavailable("REFNET_REFERRAL_MASTER_KEY_FILE is not set")
        assert row.secret_wrapped is not None and row.secret_key_id is not None
        found = [open_secret(row.secret_wrapped, row.secret_key_id, keyring, row.id)]
    if (row.previous_secret_wrapped is not None and row.previous_secret_key_id is not None and keyring is not None
            and row.previous_secret_until is not None and row.previous_secret_until > now):
        found.append(open_secret(row.previous_secret_wrapped, row.previous_secret_key_id, keyring, row.id))
    return found


def signed_headers(secrets_: list[str] | str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``; several secrets give several signatures
    (space-separated), any of which a receiver may verify."""
    keys = [secrets_] if isinstance(secrets_, str) else secrets_
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(key).sign(message_id, at, body) for key in keys),
    }
