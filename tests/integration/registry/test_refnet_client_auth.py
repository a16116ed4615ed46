"""refnet_client's token requests against the real registry: authlib's ``PrivateKeyJWT`` as the client configures
it is accepted; authlib's default (an assertion living an hour) is refused, naming why (issue #19)."""

from __future__ import annotations

import warnings

import httpx
import pytest
from joserfc.jwk import ECKey

from refnet_client import AsyncRefNet, Credentials, Endpoints
from tests.integration.registry.conftest import ISSUER, TOKEN_URL, Registry

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # authlib's note that it prefers the httpx2 fork
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT


async def test_the_clients_assertion_is_accepted_and_authlibs_default_is_refused(registry: Registry) -> None:
    agency = await registry.agency(["registry:read"])
    assert isinstance(agency.key, ECKey)
    transport = registry.http._transport  # the registry app, in process
    credentials = Credentials(client_id=agency.client_id, token_url=TOKEN_URL, agency_id=agency.agency_id,
                              private_key_pem=agency.key.as_pem(private=True).decode())
    async with AsyncRefNet(credentials, Endpoints(registry=ISSUER), transport=transport) as refnet:
        first = await refnet.token()
        page = await refnet.services(limit=1)
        assert await refnet.token() == first  # reused, not asked for again
    assert page.next_cursor is None or isinstance(page.next_cursor, str)
    assert (await registry.validator.validate(first)).agency_id == agency.agency_id

    async with AsyncOAuth2Client(client_id=agency.client_id, client_secret=agency.key,
                                 token_endpoint_auth_method=PrivateKeyJWT(TOKEN_URL, alg="ES256"),
                                 transport=transport) as plain:
        with pytest.raises(OAuthError) as refused:
            await plain.fetch_token(TOKEN_URL, grant_type="client_credentials")
    assert refused.value.error == "invalid_client"
    assert "'exp' is more than 300 s ahead" in str(refused.value.description)
    assert isinstance(transport, httpx.ASGITransport)
