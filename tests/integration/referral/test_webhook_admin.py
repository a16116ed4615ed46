"""Issue #21: an agency admin signed in (a person's token with ``webhooks:admin``) manages the agency's webhook
subscriptions as the agency's system does with ``events:read``; another agency's admin gets 404 (the subscription
is not theirs to know of), a caseworker's token 403 (no scope that allows it). The OpenAPI document names both
requirements, either one enough."""

from __future__ import annotations

from tests.integration.referral.conftest import Service

ADMIN = ("agency_admin",)


async def test_an_agency_admin_manages_the_agencys_subscriptions(svc: Service) -> None:
    agency = await svc.agency()
    admin = svc.issuer.person_headers(agency=agency, roles=ADMIN)
    created = await svc.client.post("/subscriptions", json={"url": "https://cms.example.org/hooks"}, headers=admin)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["secret"].startswith("whsec_")
    listed = await svc.client.get("/subscriptions", headers=admin)
    assert listed.status_code == 200 and [s["id"] for s in listed.json()["items"]] == [sub["id"]]
    assert (await svc.client.get(f"/subscriptions/{sub['id']}", headers=admin)).status_code == 200
    log = await svc.client.get(f"/subscriptions/{sub['id']}/deliveries", headers=admin)
    assert log.status_code == 200 and log.json()["items"] == []
    rotated = await svc.client.post(f"/subscriptions/{sub['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["secret"] != sub["secret"]
    reactivated = await svc.client.post(f"/subscriptions/{sub['id']}/reactivate", headers=admin)
    assert reactivated.status_code == 200 and reactivated.json()["status"] == "active"
    # The agency's system sees the same subscription: one agency, one set.
    system = await svc.client.get("/subscriptions", headers=svc.headers(agency))
    assert [s["id"] for s in system.json()["items"]] == [sub["id"]]
    assert (await svc.client.delete(f"/subscriptions/{sub['id']}", headers=admin)).status_code == 204
    assert (await svc.client.get("/subscriptions", headers=admin)).json()["items"] == []


async def test_another_agencys_admin_gets_not_found(svc: Service) -> None:
    owner, other = await svc.agency(), await svc.agency()
    created = await svc.client.post("/subscriptions", json={"url": "https://cms.example.org/hooks"},
                                    headers=svc.issuer.person_headers(agency=owner, roles=ADMIN))
    sub_id = created.json()["id"]
    stranger = svc.issuer.person_headers(agency=other, roles=ADMIN)
    assert (await svc.client.get("/subscriptions", headers=stranger)).json()["items"] == []
    for method, path in (("GET", ""), ("GET", "/deliveries"), ("POST", "/rotate-secret"), ("POST", "/reactivate"),
                         ("DELETE", "")):
        answer = await svc.client.request(method, f"/subscriptions/{sub_id}{path}", headers=stranger)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["type"] == "urn:refnet:problem:not-found"
    mine = svc.issuer.person_headers(agency=owner, roles=ADMIN)
    assert (await svc.client.get(f"/subscriptions/{sub_id}", headers=mine)).json()["status"] == "active"


async def test_a_caseworkers_token_is_refused_for_its_scope(svc: Service) -> None:
    agency = await svc.agency()
    created = await svc.client.post("/subscriptions", json={"url": "https://cms.example.org/hooks"},
                                    headers=svc.issuer.person_headers(agency=agency, roles=ADMIN))
    sub_id = created.json()["id"]
    caseworker = svc.issuer.person_headers(agency=agency, roles=("caseworker", "supervisor"))
    for method, path in (("GET", "/subscriptions"), ("POST", "/subscriptions"), ("GET", f"/subscriptions/{sub_id}"),
                         ("GET", f"/subscriptions/{sub_id}/deliveries"),
                         ("POST", f"/subscriptions/{sub_id}/rotate-secret"),
                         ("POST", f"/subscriptions/{sub_id}/reactivate"), ("DELETE", f"/subscriptions/{sub_id}")):
        answer = await svc.client.request(method, path, headers=caseworker,
                                          json={"url": "https://x.example.org/h"} if method == "POST" else None)
        assert answer.status_code == 403, (method, path, answer.text)
        assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert len((await svc.client.get("/subscriptions", headers=svc.headers(agency))).json()["items"]) == 1


async def test_the_document_names_either_scope(svc: Service) -> None:
    document = (await svc.client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        if not path.startswith("/subscriptions"):
            continue
        for method, operation in item.items():
            assert operation["security"] == [{"HTTPBearer": ["events:read"]}, {"HTTPBearer": ["webhooks:admin"]}], \
                (method, path)
