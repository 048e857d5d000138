"""The id_token checks of auth.py, run through Authlib's own claims classes (no provider).

Each case builds the options anew, as the callback does, and validates a claim set the way
``authorize_access_token`` would (``CodeIDToken`` with the nonce and client id as params).
"""

from __future__ import annotations

import time

import pytest
from authlib.oidc.core import CodeIDToken
from cryptography.fernet import InvalidToken
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError

import auth

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
NONCE = "n-0S6_WzA2Mj"


def issuer_of(tenant: str) -> str:
    return f"https://login.microsoftonline.com/{tenant}/v2.0"


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": issuer_of(TENANT),
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "aud": CLIENT_ID,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "nonce": NONCE,
        "tid": TENANT,
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "preferred_username": "ana@contoso.example",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def validate(token: dict, tenant: str = TENANT, issuer: str | None = None, method="microsoft"):
    settings = {"tenant": tenant, "client_id": CLIENT_ID, "client_secret": "x"}
    if method == "oidc":
        settings = {"configuration_url": "https://idp.example/.well-known/openid-configuration"}
        settings |= {"client_id": CLIENT_ID, "client_secret": "x"}
    options = auth.id_token_claims_options(method, settings, issuer or issuer_of(TENANT))
    id_token = CodeIDToken(
        token, {"alg": "RS256"}, options, {"nonce": NONCE, "client_id": CLIENT_ID}
    )
    id_token.validate(leeway=auth.LEEWAY_SECONDS)


def test_a_token_of_the_configured_tenant_passes():
    validate(claims())


def test_the_multi_tenant_issuer_template_is_filled_in_from_the_tokens_tid():
    for tenant in ("organizations", "common"):
        validate(claims(), tenant=tenant, issuer=TEMPLATE)
        other = claims(iss=issuer_of(OTHER_TENANT), tid=OTHER_TENANT)
        validate(other, tenant=tenant, issuer=TEMPLATE)  # any organisation's account


def test_the_template_refuses_an_issuer_that_is_not_the_tokens_own_tenant():
    with pytest.raises(InvalidClaimError) as refused:
        validate(claims(iss=issuer_of(OTHER_TENANT)), tenant="organizations", issuer=TEMPLATE)
    assert refused.value.claim == "iss"
    with pytest.raises(JoseError):  # no tid to fill the template with
        validate(claims(tid=None), tenant="organizations", issuer=TEMPLATE)


def test_a_configured_tenant_id_pins_tid():
    other = claims(iss=issuer_of(OTHER_TENANT), tid=OTHER_TENANT)
    with pytest.raises(InvalidClaimError) as refused:
        validate(other, tenant=TENANT)
    assert refused.value.claim in ("iss", "tid")
    # even when the provider's document has the template (a configured id is never "any")
    with pytest.raises(InvalidClaimError) as refused:
        validate(other, tenant=TENANT, issuer=TEMPLATE)
    assert refused.value.claim == "tid"
    validate(claims(tid=TENANT.upper()), tenant=TENANT)  # GUIDs ignore case


def test_a_configured_domain_pins_the_tenant_its_discovery_document_names():
    assert auth.pinned_tenant_id("contoso.onmicrosoft.com", issuer_of(TENANT)) == TENANT
    assert auth.pinned_tenant_id("organizations", TEMPLATE) is None
    other = claims(iss=issuer_of(TENANT), tid=OTHER_TENANT)
    with pytest.raises(InvalidClaimError) as refused:
        validate(other, tenant="contoso.onmicrosoft.com")
    assert refused.value.claim == "tid"


def test_the_audience_must_be_our_client_id():
    for audience in ("someone-else", ["someone-else"], [CLIENT_ID, "someone-else"]):
        with pytest.raises(JoseError):
            validate(claims(aud=audience))
    validate(claims(aud=[CLIENT_ID]))


def test_expiry_allows_two_minutes_of_clock_skew():
    validate(claims(exp=int(time.time()) - 60))
    with pytest.raises(ExpiredTokenError):
        validate(claims(exp=int(time.time()) - 300))


def test_the_nonce_must_be_there_and_match():
    with pytest.raises(MissingClaimError):
        validate(claims(nonce=None))
    with pytest.raises(InvalidClaimError):
        validate(claims(nonce="another"))


def test_microsoft_tokens_must_carry_tid_and_oid():
    with pytest.raises(MissingClaimError):
        validate(claims(oid=None))
    with pytest.raises(MissingClaimError):
        validate(claims(tid=None))


def test_a_generic_provider_is_held_to_its_discovery_documents_issuer():
    issuer = "https://idp.example"
    validate(claims(iss=issuer, tid=None, oid=None), issuer=issuer, method="oidc")
    with pytest.raises(InvalidClaimError):
        validate(claims(iss="https://evil.example", tid=None), issuer=issuer, method="oidc")


def test_options_are_fresh_for_every_sign_in():
    """Authlib pops ``validate`` from the options it gets, so reused options would stop
    checking the issuer after the first sign-in; each call must hand out new ones."""
    settings = {"tenant": "organizations", "client_id": CLIENT_ID, "client_secret": "x"}
    first = auth.id_token_claims_options("microsoft", settings, TEMPLATE)
    second = auth.id_token_claims_options("microsoft", settings, TEMPLATE)
    assert first["iss"] is not second["iss"]
    validate(claims(), tenant="organizations", issuer=TEMPLATE)
    with pytest.raises(InvalidClaimError):  # a second sign-in is checked as the first was
        validate(claims(iss=issuer_of(OTHER_TENANT)), tenant="organizations", issuer=TEMPLATE)


def test_the_user_name_comes_from_preferred_username_then_upn_then_email():
    assert auth.claimed_user_name({"preferred_username": "a@x", "upn": "b@x"}) == "a@x"
    assert auth.claimed_user_name({"upn": "b@x", "email": "c@x"}) == "b@x"
    assert auth.claimed_user_name({"email": " c@x ", "email_verified": True}) == "c@x"
    assert auth.claimed_user_name({"email": "c@x", "email_verified": "true"}) == "c@x"
    assert auth.claimed_user_name({"email": "c@x"}) is None  # anyone may type an email
    assert auth.claimed_user_name({"email": "c@x", "email_verified": False}) is None
    assert auth.claimed_user_name({"name": "Ana"}) is None


def test_the_client_secret_is_encrypted_with_a_key_from_secret_key():
    encrypted = auth.encrypt_client_secret("key one", "s3cret")
    assert "s3cret" not in encrypted
    assert auth.decrypt_client_secret("key one", encrypted) == "s3cret"
    with pytest.raises(InvalidToken):
        auth.decrypt_client_secret("key two", encrypted)
