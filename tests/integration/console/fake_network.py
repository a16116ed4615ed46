"""A stand-in for the registry's OpenID Connect provider and the four APIs, over real HTTP, for the console's
tests: discovery, authorize (signs the person in at once), token (code + PKCE S256 checked, refresh tokens
rotated and spent once), JWKS, revocation, end-session; and the few API routes the pages call, answering as the
real ones do for the person the bearer token names (a non-party gets 404)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from fastapi import FastAPI, Form, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from deploy.launcher.infra import free_port


@dataclass
class FakePerson:
    sub: str
    agency: str
    roles: list[str]


@dataclass
class FakeNetwork:
    port: int = field(default_factory=free_port)
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", {"kid": "k1", "alg": "ES256", "use": "sig"}))
    person: FakePerson = field(default_factory=lambda: FakePerson("person-1", "agy_iom", ["caseworker"]))
    access_lifetime: int = 600
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, FakePerson] = field(default_factory=dict)
    spent_refresh: set[str] = field(default_factory=set)
    revoked: list[str] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    api_calls: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)  # method, path, sub, purpose
    referrals: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> view (case_id inside)
    cases: list[str] = field(default_factory=list)  # the person's agency's cases
    staff: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> view (agency_id inside)
    deliveries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # subscription id -> log, oldest first
    services: list[dict[str, Any]] = field(default_factory=list)  # the directory, every agency's
    _server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mint(self, person: FakePerson, lifetime: int | None = None) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "sub": person.sub, "aud": "refnet", "client_id": "refnet-console",
                  "agency": person.agency, "roles": person.roles, "iat": now,
                  "exp": now + (lifetime or self.access_lifetime), "jti": secrets.token_hex(8)}
        return jwt.encode({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}, claims, self.key)

    def person_of(self, authorization: str | None) -> FakePerson | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        try:
            token = jwt.decode(authorization[7:], self.key)
        except Exception:
            return None
        claims = token.claims
        if claims["exp"] < time.time():
            return None
        return FakePerson(claims["sub"], claims["agency"], claims["roles"])

    def app(self) -> FastAPI:
        app = FastAPI()
        net = self

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            return {"issuer": net.url, "authorization_endpoint": f"{net.url}/authorize",
                    "token_endpoint": f"{net.url}/token", "jwks_uri": f"{net.url}/jwks",
                    "revocation_endpoint": f"{net.url}/revoke", "end_session_endpoint": f"{net.url}/logout",
                    "id_token_signing_alg_values_supported": ["ES256"], "code_challenge_methods_supported": ["S256"],
                    "response_types_supported": ["code"], "subject_types_supported": ["public"]}

        @app.get("/jwks")
        async def jwks() -> dict[str, Any]:
            return dict(KeySet([net.key]).as_dict(private=False))

        @app.get("/authorize")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            code = secrets.token_urlsafe(16)
            net.codes[code] = {"challenge": q["code_challenge"], "nonce": q.get("nonce"),
                               "redirect_uri": q["redirect_uri"], "client_id": q["client_id"]}
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}",
                                    status_code=302)

        @app.post("/token")
        async def token(grant_type: str = Form(), code: str | None = Form(None),
                        code_verifier: str | None = Form(None), redirect_uri: str | None = Form(None),
                        refresh_token: str | None = Form(None), client_id: str | None = Form(None)) -> Response:
            net.token_requests.append({"grant_type": grant_type})
            if grant_type == "authorization_code":
                pending = net.codes.pop(code or "", None)
                if pending is None or code_verifier is None:
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
                digest = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
                if digest != pending["challenge"] or redirect_uri != pending["redirect_uri"]:
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
                person = net.person
                nonce = pending["nonce"]
            elif grant_type == "refresh_token":
                if refresh_token in net.spent_refresh or refresh_token not in net.refresh_tokens:
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
                net.spent_refresh.add(refresh_token)
                person = net.refresh_tokens.pop(refresh_token)
                nonce = None
            else:
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            new_refresh = secrets.token_urlsafe(24)
            net.refresh_tokens[new_refresh] = person
            access = net.mint(person)
            now = int(time.time())
            id_claims: dict[str, Any] = {"iss": net.url, "sub": person.sub, "aud": "refnet-console", "iat": now,
                                         "exp": now + 600,
                                         "at_hash": base64.urlsafe_b64encode(
                                             hashlib.sha256(access.encode()).digest()[:16]).rstrip(b"=").decode()}
            if nonce:
                id_claims["nonce"] = nonce
            id_token = jwt.encode({"alg": "ES256", "kid": "k1"}, id_claims, net.key)
            return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": net.access_lifetime,
                                 "refresh_token": new_refresh, "id_token": id_token})

        @app.post("/revoke")
        async def revoke(token: str = Form()) -> Response:
            net.revoked.append(token)
            net.refresh_tokens.pop(token, None)
            return Response(status_code=200)

        @app.get("/logout")
        async def logout(request: Request) -> Response:
            target = request.query_params.get("post_logout_redirect_uri") or "/"
            return RedirectResponse(target, status_code=302)

        # --- the APIs, as far as the pages call them ---------------------------------------------------

        @app.get("/referrals")
        async def referrals(request: Request, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({"type": "about:blank"}, status_code=401)
            net.api_calls.append(("GET", "/referrals", who.sub, None))
            role = request.query_params.get("role")
            mine = [r for r in net.referrals.values()
                    if (r["to_agency"] if role == "received" else r["from_agency"]) == who.agency
                    and request.query_params.get("status") in (None, r["status"])]
            # Two a page (the console asks for more): enough to see its paging.
            start = int(request.query_params.get("cursor") or 0)
            size = 2 if int(request.query_params.get("limit") or 50) < 100 else 200
            more = len(mine) > start + size
            return JSONResponse({"items": [{k: v for k, v in r.items() if k != "history"}
                                           for r in mine[start:start + size]],
                                 "next_cursor": str(start + size) if more else None})

        @app.get("/indicators")
        async def indicators(authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            month = {"month": "2026-12", "complete": False,
                     "sent": {"referrals": 2, "accepted": 1, "rejected": 1, "cancelled": 0, "completed": 0,
                              "acceptance_rate": 0.5, "rejection_reasons": {"no-capacity": 1}},
                     "received": {"referrals": 1, "acknowledged": 1, "accepted": 0, "rejected": 1, "cancelled": 0,
                                  "completed": 0, "acceptance_rate": 0.0, "median_hours_to_acknowledge": 3.0,
                                  "median_hours_to_accept": None, "rejection_reasons": {"outside-mandate": 1}}}
            return JSONResponse({"agency_id": who.agency, "from": "2026-12", "to": "2026-12", "months": [month]})

        @app.get("/referrals/suggestions")
        async def suggestions(request: Request, authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            net.api_calls.append(("GET", "/referrals/suggestions", request.query_params.get("case_id"),
                                  request.query_params.get("service_type")))
            if "." not in (request.query_params.get("service_type") or ""):
                return JSONResponse({"type": "urn:refnet:problem:validation-error"}, status_code=422)
            return JSONResponse({"items": [{"service_id": "svc-rsd", "agency_id": "agy_unhcr",
                                            "taxonomy": "protection.rsd", "score": 0.9, "reasons": ["taxonomy"],
                                            "capacity": {"available": 3}}], "next_cursor": None})

        @app.get("/referrals/{referral_id}")
        async def referral(referral_id: str, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            net.api_calls.append(("GET", f"/referrals/{referral_id}", who.sub, None))
            found = net.referrals.get(referral_id)
            if found is None or who.agency not in (found["from_agency"], found["to_agency"]):
                return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)
            # The first move has no "from" (a referral starts as requested), as the referral API says it.
            return JSONResponse({**found, "history": found.get("history") or [
                {"from": None, "to": "requested", "by": "sender", "agency": found["from_agency"], "acting_user": None,
                 "reason_code": None, "note": None, "at": "2026-12-03T10:00:00+00:00"}]})

        @app.get("/cases/{case_id}")
        async def case(case_id: str, authorization: str | None = Header(None),
                       x_purpose: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            net.api_calls.append(("GET", f"/cases/{case_id}", who.sub, x_purpose))
            shared = [r for r in net.referrals.values() if r["case_id"] == case_id]
            if not any(who.agency in (r["from_agency"], r["to_agency"]) for r in shared):
                return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)
            return JSONResponse({"id": case_id, "person": {"given_name": "Amina"}})

        @app.post("/cases")
        async def register(request: Request, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            body = await request.json()
            net.api_calls.append(("POST", "/cases", who.sub, request.headers.get("x-purpose")))
            errors = []
            if not body["person"].get("given_name"):
                errors.append({"loc": ["body", "person", "given_name"], "msg": "at least 1 character"})
            if body["screening"].get("trafficking_status") not in ("possible", "actual", "not_victim"):
                errors.append({"loc": ["body", "screening", "trafficking_status"], "msg": "not a status"})
            if errors:
                return JSONResponse({"type": "urn:refnet:problem:validation-error", "errors": errors},
                                    status_code=422, media_type="application/problem+json")
            return JSONResponse({"id": "case-" + secrets.token_hex(6)}, status_code=201)

        @app.get("/cases")
        async def cases(authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            return JSONResponse({"items": [{"id": c, "status": "active"} for c in net.cases], "next_cursor": None})

        @app.get("/cases/{case_id}/overrides")
        async def overrides(case_id: str, authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            return JSONResponse({"items": [o for o in net.overrides.values() if o["case_id"] == case_id]})

        @app.post("/cases/{case_id}/overrides/{override_id}/{step}")
        async def decide(case_id: str, override_id: str, step: str, authorization: str | None = Header(None)
                         ) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            found = net.overrides.get(override_id)
            if found is None or found["case_id"] != case_id:
                return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)
            net.api_calls.append(("POST", f"/cases/{case_id}/overrides/{override_id}/{step}", who.sub, None))
            if step == "approval":
                if found["requested_by"] == who.sub:
                    return JSONResponse({"type": "urn:refnet:problem:self-approval"}, status_code=403)
                found.update(state="active", approved_by=who.sub)
            else:
                found.update(state="revoked", revoked_by=who.sub)
            return JSONResponse(found)

        @app.get("/services")
        async def services(request: Request, authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            if net.services:  # the directory a test set up, two at a time (the console follows the cursor)
                start = int(request.query_params.get("cursor") or 0)
                page = net.services[start:start + 2]
                after = str(start + 2) if start + 2 < len(net.services) else None
                return JSONResponse({"items": page, "next_cursor": after})
            return JSONResponse({"items": [{"id": "svc-rsd", "agency_id": "agy_unhcr", "name": "Refugee status",
                                            "taxonomy": "protection.rsd", "capacity": {"available": 3}}],
                                 "next_cursor": None})

        @app.put("/services/{service_id}/capacity")
        async def capacity(service_id: str, request: Request, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            if "agency_admin" not in who.roles:  # registry:write: an agency admin's among the people's roles
                return JSONResponse({"type": "urn:refnet:problem:insufficient-scope"}, status_code=403)
            found = next((s for s in net.services if s["id"] == service_id and s["agency_id"] == who.agency), None)
            if found is None:
                return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)
            body = await request.json()
            errors = [{"loc": ["body", name], "msg": "Input should be a valid integer"}
                      for name in ("total", "available") if not isinstance(body.get(name), int)]
            if not errors and body["available"] > body["total"]:
                errors = [{"loc": ["body", "available"], "msg": "Value error, available cannot exceed total"}]
            if errors:
                return JSONResponse({"type": "urn:refnet:problem:validation-error", "errors": errors},
                                    status_code=422)
            found["capacity"] = {"total": body["total"], "available": body["available"], "status": body["status"]}
            net.api_calls.append(("PUT", f"/services/{service_id}/capacity", who.sub, None))
            return JSONResponse(found)

        def webhook_admin(authorization: str | None) -> FakePerson | None:
            """webhooks:admin is an agency admin's (the people's other roles get 403 at referral)."""
            who = net.person_of(authorization)
            return who if who is not None and "agency_admin" in who.roles else None

        def own_subscription(who: FakePerson, subscription_id: str) -> dict[str, Any] | None:
            found = net.subscriptions.get(subscription_id)
            return found if found and found["agency_id"] == who.agency and found["status"] != "deleted" else None

        def shown(subscription: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in subscription.items() if k != "agency_id"}

        def forbidden() -> Response:
            return JSONResponse({"type": "urn:refnet:problem:insufficient-scope"}, status_code=403)

        def missing() -> Response:
            return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)

        @app.get("/subscriptions")
        async def subscriptions(authorization: str | None = Header(None)) -> Response:
            who = webhook_admin(authorization)
            if who is None:
                return forbidden()
            return JSONResponse({"items": [shown(s) for s in net.subscriptions.values()
                                           if s["agency_id"] == who.agency and s["status"] != "deleted"],
                                 "next_cursor": None})

        @app.post("/subscriptions")
        async def subscribe(request: Request, authorization: str | None = Header(None)) -> Response:
            who = webhook_admin(authorization)
            if who is None:
                return forbidden()
            body = await request.json()
            if not str(body.get("url", "")).startswith("https://"):
                return JSONResponse({"type": "urn:refnet:problem:validation-error",
                                     "errors": [{"loc": ["body", "url"], "msg": "URL scheme should be 'https'"}]},
                                    status_code=422)
            subscription_id = "sub_" + secrets.token_hex(8)
            net.subscriptions[subscription_id] = {
                "id": subscription_id, "agency_id": who.agency, "url": body["url"],
                "event_types": body.get("event_types"), "status": "active", "consecutive_failures": 0,
                "next_attempt_at": "2026-12-03T10:00:00Z", "created_at": "2026-12-03T10:00:00Z", "disabled_at": None}
            net.api_calls.append(("POST", "/subscriptions", who.sub, None))
            return JSONResponse({**shown(net.subscriptions[subscription_id]), "secret": "whsec_SECRET-ONE"},
                                status_code=201)

        @app.get("/subscriptions/{subscription_id}")
        async def subscription(subscription_id: str, authorization: str | None = Header(None)) -> Response:
            who = webhook_admin(authorization)
            if who is None:
                return forbidden()
            found = own_subscription(who, subscription_id)
            return JSONResponse(shown(found)) if found else missing()

        @app.get("/subscriptions/{subscription_id}/deliveries")
        async def delivery_log(subscription_id: str, request: Request,
                               authorization: str | None = Header(None)) -> Response:
            who = webhook_admin(authorization)
            if who is None:
                return forbidden()
            if own_subscription(who, subscription_id) is None:
                return missing()
            log = net.deliveries.get(subscription_id, [])
            start = int(request.query_params.get("cursor") or 0)
            limit = int(request.query_params.get("limit") or 50)
            after = str(start + limit) if start + limit < len(log) else None
            return JSONResponse({"items": log[start:start + limit], "next_cursor": after})

        @app.post("/subscriptions/{subscription_id}/{step}")
        async def subscription_step(subscription_id: str, step: str,
                                    authorization: str | None = Header(None)) -> Response:
            who = webhook_admin(authorization)
            if who is None:
                return forbidden()
            found = own_subscription(who, subscription_id)
            if found is None or step not in ("rotate-secret", "reactivate"):
                return missing()
            net.api_calls.append(("POST", f"/subscriptions/{subscription_id}/{step}", who.sub, None))
            if step == "reactivate":
                found.update(status="active", consecutive_failures=0, disabled_at=None)
                return JSONResponse(shown(found))
            return JSONResponse({**shown(found), "secret": "whsec_SECRET-TWO",
                                 "previous_secret_valid_until": "2026-12-04T10:00:00Z"})

        @app.delete("/subscriptions/{subscription_id}")
        async def unsubscribe(subscription_id: str, authorization: str | None = Header(None)) -> Response:
            who = webhook_admin(authorization)
            if who is None:
                return forbidden()
            found = own_subscription(who, subscription_id)
            if found is None:
                return missing()
            found["status"] = "deleted"
            return Response(status_code=204)

        @app.post("/referrals")
        async def refer(request: Request, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None:
                return JSONResponse({}, status_code=401)
            body = await request.json()
            net.api_calls.append(("POST", "/referrals", who.sub, request.headers.get("idempotency-key")))
            if "health" in body["shared_categories"]:  # the consent covers no health data
                return JSONResponse({"type": "urn:refnet:problem:consent-missing", "status": 409,
                                     "detail": "No consent in force covers the categories."}, status_code=409)
            created = {"id": "ref-new", "status": "requested", "from_agency": who.agency,
                       "to_agency": body.get("to_agency"), **body}
            net.referrals["ref-new"] = created
            return JSONResponse(created, status_code=201)

        @app.get("/agencies/{agency_id}/staff")
        async def staff(agency_id: str, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None or who.agency != agency_id or "agency_admin" not in who.roles:
                return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)
            return JSONResponse({"items": net.staff})

        @app.post("/agencies/{agency_id}/staff")
        async def invite(agency_id: str, request: Request, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None or who.agency != agency_id or "agency_admin" not in who.roles:
                return JSONResponse({"type": "urn:refnet:problem:not-found"}, status_code=404)
            body = await request.json()
            if not body.get("roles"):
                return JSONResponse({"type": "urn:refnet:problem:validation-error",
                                     "errors": [{"loc": ["body", "roles"], "msg": "at least one role"}]},
                                    status_code=422)
            member = {"id": "person-" + secrets.token_hex(4), "agency_id": agency_id, "login": body["login"],
                      "roles": body["roles"], "status": "invited", "second_factor": False, "locked": False}
            net.staff.append(member)
            return JSONResponse({"person": member, "link": "http://registry.test/staff/enrol?invite=SECRET-LINK",
                                 "expires_at": "2026-12-06T10:00:00+00:00"}, status_code=201)

        @app.get("/audit/cases/{case_id}/access")
        async def access(case_id: str, authorization: str | None = Header(None)) -> Response:
            who = net.person_of(authorization)
            if who is None or "auditor" not in who.roles:
                return JSONResponse({}, status_code=401 if who is None else 403)
            return JSONResponse({"case_id": case_id, "next_cursor": None, "items": [
                {"index": 3, "occurred_at": "2026-12-03T10:00:00+00:00", "action": "case.read", "outcome": "success",
                 "agency": "agy_iom", "acting_user": "person-7", "purpose": "case_management"},
                {"index": 5, "occurred_at": "2026-12-03T11:00:00+00:00", "action": "case.read", "outcome": "success",
                 "agency": "agy_unhcr", "acting_user": "person-8", "purpose": "referral"}]})

        @app.get("/audit/cases/{case_id}/consents")
        async def consents(case_id: str, authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            return JSONResponse({"case_id": case_id, "next_cursor": None, "items": [
                {"index": 2, "occurred_at": "2026-12-03T09:00:00+00:00", "action": "consent.granted",
                 "agency": "agy_iom"}]})

        @app.get("/audit/checkpoint")
        async def checkpoint(authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            return JSONResponse({"origin": "refnet.test/audit", "tree_size": 8, "root_hash": "ab" * 32,
                                 "note": "refnet.test/audit\n8\nq80=\n\n\u2014 refnet.test/audit AAAA\n"})

        @app.get("/audit/public-key")
        async def public_key() -> Response:
            return JSONResponse({"vkey": "refnet.test/audit+00000000+AQ=="})

        @app.get("/audit/proofs/inclusion")
        async def inclusion(index: int, tree_size: int, authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            net.api_calls.append(("GET", f"/audit/proofs/inclusion?index={index}&tree_size={tree_size}", None, None))
            return JSONResponse({"index": index, "tree_size": tree_size, "leaf_hash": "cd" * 32, "path": ["ef" * 32]})

        @app.get("/audit/entries")
        async def entries(limit: int = 50, cursor: str | None = None,
                          authorization: str | None = Header(None)) -> Response:
            if net.person_of(authorization) is None:
                return JSONResponse({}, status_code=401)
            net.api_calls.append(("GET", f"/audit/entries?limit={limit}&cursor={cursor}", None, None))
            index = int(cursor) + 1 if cursor is not None else 0
            return JSONResponse({"items": [{"index": index, "action": "case.read", "agency": "agy_unhcr"}],
                                 "next_cursor": str(index)})

        return app

    def start(self) -> None:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the fake network did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
