"""Consent withdrawn at intake cancels the referral, and the recipient's case system hears it on every channel.

Against the whole stack as `make run` starts it (launcher, embedded PostgreSQL and broker, the four services,
the demo seed), through public APIs and topics only.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from standardwebhooks import Webhook

from tests.e2e.network import CHECKLIST, Network, WebhookReceiver, ce_type, eventually


async def test_withdrawn_consent_cancels_the_referral_on_every_channel(network: Network) -> None:
    iom, unhcr = network.headers("iom"), network.headers("unhcr", purpose="referral")
    unhcr_id = network.agency("unhcr")
    receiver = WebhookReceiver()
    async with httpx.AsyncClient(timeout=15) as http:
        sub = await http.post(f"{network.url('referral')}/subscriptions", headers=unhcr, json={"url": receiver.url})
        assert sub.status_code == 201, sub.text
        secret = sub.json()["secret"]

        case = await http.post(f"{network.url('intake')}/cases", headers=iom, json={
            "person": {"given_name": "Test", "family_name": "Person", "birth_date": "1990-01-01",
                       "gender": "masculine", "citizenship": "NG", "languages": ["en"], "phone": None,
                       "email": None, "documents": ["none"]},
            "screening": {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "IT",
                          "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage"],
                          "recruiter_relation": "other", "migration_status": "asylum_seeker",
                          "fear_of_return": True, "needs": ["protection.rsd"], "risk_level": "medium"},
            "initial_consent": {
                "grantor": "self", "method": "written", "language": "en", "interpreter_used": False,
                "provisions": [{"purpose": "referral", "recipient_agency": unhcr_id,
                                "data_categories": ["demographics", "protection_needs"], "decision": "permit"}],
                "valid_until": "2030-01-01T00:00:00Z", "checklist": dict.fromkeys(CHECKLIST, True)}})
        assert case.status_code == 201, case.text
        case_id = case.json()["id"]
        consents = await http.get(f"{network.url('intake')}/cases/{case_id}/consents", headers=iom)
        consent_id = consents.json()["items"][0]["id"]

        # Right after start-up the broker's read model of the registry may still be filling (eventually
        # consistent, seconds): the recipient is "not known" until then. The same Idempotency-Key makes the
        # retry safe.
        referral = await eventually(lambda: http.post(
            f"{network.url('referral')}/referrals", headers=iom | {"Idempotency-Key": f"e2e-{case_id}"},
            json={"case_id": case_id, "to_agency": unhcr_id, "pathway": "protection",
                  "service_type": "protection.rsd", "priority": "urgent", "reason": "Fears return",
                  "shared_categories": ["demographics", "protection_needs"]}),
            lambda r: r.status_code not in (422, 503))
        assert referral.status_code == 201, referral.text
        referral_id = referral.json()["id"]

        # The recipient can read the minimised case once intake has heard of the referral ...
        read = await eventually(lambda: http.get(f"{network.url('intake')}/cases/{case_id}", headers=unhcr),
                                lambda r: r.status_code == 200)
        assert read.status_code == 200, read.text

        withdrawn = await http.post(f"{network.url('intake')}/cases/{case_id}/consents/{consent_id}/withdraw",
                                    headers=iom, json={})
        assert withdrawn.status_code == 201, withdrawn.text
        # ... and not one read later.
        after = await http.get(f"{network.url('intake')}/cases/{case_id}", headers=unhcr)
        assert after.status_code == 404

        async def referral_state() -> dict[str, Any]:
            got = await http.get(f"{network.url('referral')}/referrals/{referral_id}", headers=iom)
            return dict(got.json())

        state = await eventually(referral_state, lambda s: s["status"] == "cancelled", seconds=30)
        assert (state["status"], state["history"][-1]["reason_code"]) == ("cancelled", "consent-withdrawn")

    # The delivery topic carries the cancellation, keyed by referral id.
    def mine(records: list[Any]) -> list[str]:
        return [ce_type(r) for r in records if r.key == referral_id.encode()]

    records = await network.topic(f"refnet.delivery.{unhcr_id}",
                                  until=lambda rs: "org.refnet.referral.cancelled.v1" in mine(rs))
    types = mine(records)
    assert types[0] == "org.refnet.referral.requested.v1" and types[-1] == "org.refnet.referral.cancelled.v1"

    # The webhook too, signed with the subscription's secret.
    async def webhook_types() -> list[str]:
        return receiver.types()

    await eventually(webhook_types, lambda ts: "org.refnet.referral.cancelled.v1" in ts)
    receiver.close()
    cancelled = [(h, body) for h, body in receiver.received
                 if json.loads(body).get("type") == "org.refnet.referral.cancelled.v1"]
    assert cancelled, receiver.types()
    headers, body = cancelled[0]
    Webhook(secret).verify(body, {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
    assert json.loads(body)["data"]["reason_code"] == "consent-withdrawn"
