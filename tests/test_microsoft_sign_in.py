"""Sign in with Microsoft (issue 6), checked against a real OpenID Connect provider on
127.0.0.2 (tests/oidc_provider.py), another site than Roster on 127.0.0.1:

- the flask test client flow: Roster in-process redirects to the provider, the test signs in
  there over HTTP with ``requests``, and hands the provider's redirect to the test client;
- every refusal the issue lists, each its own case: a clear page (400 or 403), no session,
  and an audit entry; also the Authlib pitfalls (issuer template, the consumed ``validate``,
  ``aud``, joserfc errors) and oid pinning against the nOAuth takeover;
- a real headless Chromium (Debian's) against Roster under waitress.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

import auth
from app import create_app
from schemas import CORE_USER_URN, PATCH_OP_URN
from store import DEFAULT_DIRECTORY, Store

from .conftest import CHROMIUM, CHROMIUM_FLAGS, TIMEOUT_MS, LiveServer
from .oidc_provider import DROP, OidcProvider

DIRECTORY_NAME = "Contoso"
ACTOR = "microsoft sign-in test"
PUBLIC_URL = "http://localhost"
CALLBACK_PATH = "/login/oidc/callback"
USER = "adele.vance@contoso.example"
USER_DISPLAY_NAME = "Adele Vance"
DEACTIVATED_USER = "lee.gu@contoso.example"
UNKNOWN_USER = "nobody.here@contoso.example"
REFUSED = (400, 403)


# -- the provider and Roster --------------------------------------------------------------------


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with OidcProvider() as running:
        running.add_client()
        yield running


def client_of(provider: OidcProvider) -> tuple[str, str]:
    return next(iter(provider.clients.items()))


def user_resource(user_name: str, display_name: str, active: bool = True) -> dict:
    given, _, family = display_name.partition(" ")
    return {
        "schemas": [CORE_USER_URN],
        "userName": user_name,
        "displayName": display_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"type": "work", "value": user_name, "primary": True}],
        "active": active,
    }


def encrypted(app: Flask, secret: str) -> str:
    """The client secret as the app stores it (auth.py holds the key)."""
    import auth

    with app.app_context():
        return auth.encrypt_secret(secret)


def configure_microsoft(app: Flask, directory_id: str, tenant: str, provider: OidcProvider):
    client_id, secret = client_of(provider)
    settings = {"tenant": tenant, "client_id": client_id, "client_secret": encrypted(app, secret)}
    app.extensions["roster.store"].set_sign_in(directory_id, "microsoft", settings, ACTOR)


def seed(app: Flask, provider: OidcProvider, tenant: str | None = None) -> str:
    """The Contoso directory, signing in with Microsoft at the provider, with an active user
    and a deactivated one. Returns the directory's id."""
    store: Store = app.extensions["roster.store"]
    directory = store.create_directory(DIRECTORY_NAME, "Signs in with Microsoft", actor=ACTOR)
    store.create_user(directory["id"], user_resource(USER, USER_DISPLAY_NAME), ACTOR)
    store.create_user(
        directory["id"], user_resource(DEACTIVATED_USER, "Lee Gu", active=False), ACTOR
    )
    configure_microsoft(app, directory["id"], tenant or provider.tenant_id, provider)
    return directory["id"]


@dataclass
class Roster:
    app: Flask
    store: Store
    provider: OidcProvider
    directory_id: str

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def audit_actions(self) -> list[str]:
        return [entry["action"] for entry in self.store.list_audit()]


def make_app(data_dir: Path, provider: OidcProvider) -> Flask:
    return create_app(
        {
            "DATA_DIR": str(data_dir),
            "TESTING": True,
            "MICROSOFT_AUTHORITY": provider.base,
            "PUBLIC_URL": PUBLIC_URL,
        }
    )


@pytest.fixture
def roster(tmp_path, provider) -> Iterator[Roster]:
    app = make_app(tmp_path / "data", provider)
    try:
        yield Roster(app, app.extensions["roster.store"], provider, seed(app, provider))
    finally:
        app.extensions["roster.store"].close()


@pytest.fixture
def multi_tenant_roster(tmp_path, provider) -> Iterator[Roster]:
    app = make_app(tmp_path / "data", provider)
    try:
        directory_id = seed(app, provider, tenant="organizations")
        yield Roster(app, app.extensions["roster.store"], provider, directory_id)
    finally:
        app.extensions["roster.store"].close()


# -- the steps of one sign-in -------------------------------------------------------------------


def start(client: FlaskClient, roster: Roster, login_hint: str | None = USER) -> str:
    """Press "Log in with your Microsoft account": Roster redirects to the provider."""
    query = {"login_hint": login_hint} if login_hint else {}
    response = client.get(f"/login/{roster.directory_id}/oidc", query_string=query)
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(f"{roster.provider.base}/"), location
    return location


def at_provider(authorize_url: str, user_name: str = USER, action: str = "sign_in") -> str:
    """What a person does on the provider's page (over real HTTP); returns where the provider
    sends the browser back to."""
    page = requests.get(authorize_url, timeout=30)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    fields = {name: value.replace("&amp;", "&") for name, value in fields.items()}
    answer = requests.post(
        authorize_url.split("?")[0],
        data={**fields, "username": user_name, "action": action},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def finish(client: FlaskClient, callback_url: str):
    """The browser arriving back at Roster's callback."""
    parts = urlsplit(callback_url)
    assert parts.path == CALLBACK_PATH, callback_url
    return client.get(f"{parts.path}?{parts.query}")


def sign_in(client: FlaskClient, roster: Roster, user_name: str = USER):
    return finish(client, at_provider(start(client, roster, user_name), user_name))


def assert_signed_in(client: FlaskClient, display_name: str = USER_DISPLAY_NAME) -> None:
    account = client.get("/account")
    assert account.status_code == 200, account.headers.get("Location")
    assert display_name in account.get_data(as_text=True)


def assert_no_session(client: FlaskClient) -> None:
    account = client.get("/account")
    assert account.status_code == 302
    assert urlsplit(account.headers["Location"]).path == "/login"


def assert_refused(roster: Roster, client: FlaskClient, response, words: str) -> None:
    """A plain page in plain words, no session, and an audit entry of the refusal."""
    text = response.get_data(as_text=True)
    assert response.status_code in REFUSED, (response.status_code, text)
    assert re.search(words, text, re.IGNORECASE), text
    assert "Traceback" not in text
    assert_no_session(client)
    refusals = [a for a in roster.audit_actions() if re.search(r"refus|fail|denied", a)]
    assert refusals, roster.audit_actions()


# -- signing in ---------------------------------------------------------------------------------


def test_signs_in_through_the_provider(roster: Roster) -> None:
    client = roster.client()
    authorize_url = start(client, roster, USER)
    callback = at_provider(authorize_url)
    response = finish(client, callback)
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    assert urlsplit(response.headers["Location"]).path == "/"
    assert_signed_in(client)

    sent = roster.provider.authorize_requests[-1]
    assert sent["response_type"] == "code"
    assert set(sent["scope"].split()) == {"openid", "profile", "email"}
    assert sent["code_challenge_method"] == "S256" and sent["code_challenge"]
    assert sent["state"] and sent["nonce"]
    assert sent["login_hint"] == USER
    assert sent["client_id"] == client_of(roster.provider)[0]
    assert sent["redirect_uri"] == f"{PUBLIC_URL}{CALLBACK_PATH}"
    assert roster.provider.token_requests[-1].get("code_verifier")
    # The oid is recorded on first sign-in, and the sign-in is in the audit log.
    user = roster.store.find_user_by_user_name(roster.directory_id, USER)
    assert roster.store.oid_of(roster.directory_id, user["id"]) == roster.provider.oid_of(USER)
    assert "user.oid" in roster.audit_actions()


def test_user_name_matches_ignoring_case(roster: Roster) -> None:
    client = roster.client()
    response = sign_in(client, roster, USER.upper())
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    assert_signed_in(client)


def test_falls_back_to_upn_when_there_is_no_preferred_username(roster: Roster) -> None:
    roster.provider.set_user(USER, preferred_username=DROP, upn=USER, email="other@example.com")
    client = roster.client()
    response = sign_in(client, roster)
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    assert_signed_in(client)


def test_tenant_named_by_its_domain(tmp_path, provider: OidcProvider) -> None:
    """Entra's tenant field takes a domain too: the token's tid (a GUID) is the tenant's."""
    app = make_app(tmp_path / "data", provider)
    try:
        roster = Roster(app, app.extensions["roster.store"], provider, "")
        roster.directory_id = seed(app, provider, tenant=provider.tenant_domain)
        client = roster.client()
        response = sign_in(client, roster)
        assert response.status_code in (302, 303), response.get_data(as_text=True)
        assert_signed_in(client)
    finally:
        app.extensions["roster.store"].close()


def test_deactivating_the_user_ends_the_session(roster: Roster) -> None:
    client = roster.client()
    sign_in(client, roster)
    assert_signed_in(client)
    user = roster.store.find_user_by_user_name(roster.directory_id, USER)
    roster.store.update_user(
        roster.directory_id, user["id"], lambda current: {**current, "active": False}, ACTOR
    )
    assert_no_session(client)


# -- the multi-tenant issuer template -----------------------------------------------------------


def test_multi_tenant_issuer_template(multi_tenant_roster: Roster) -> None:
    roster = multi_tenant_roster
    discovery = requests.get(roster.provider.discovery_url("organizations"), timeout=30).json()
    assert discovery["issuer"] == f"{roster.provider.base}/{{tenantid}}/v2.0"
    client = roster.client()
    response = sign_in(client, roster)
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    assert_signed_in(client)
    assert roster.provider.id_tokens[-1]["iss"] == roster.provider.issuer_for(
        roster.provider.tenant_id
    )


def test_multi_tenant_issuer_must_name_the_tokens_tid(multi_tenant_roster: Roster) -> None:
    roster = multi_tenant_roster
    roster.provider.misbehave.issuer = roster.provider.issuer_for(str(uuid.uuid4()))
    client = roster.client()
    assert_refused(roster, client, sign_in(client, roster), r"sign[- ]in|token|tenant")


def test_issuer_still_checked_on_the_second_sign_in(multi_tenant_roster: Roster) -> None:
    """Authlib consumes a ``validate`` in ``claims_options`` on first use: a module-level
    dict would check ``iss`` once and never again."""
    roster = multi_tenant_roster
    first = roster.client()
    assert sign_in(first, roster).status_code in (302, 303)
    assert_signed_in(first)
    roster.provider.misbehave.issuer = f"{roster.provider.base}/not-the-tenant/v2.0"
    second = roster.client()
    assert_refused(roster, second, sign_in(second, roster), r"sign[- ]in|token|tenant")


def test_single_tenant_issuer_still_checked_on_the_second_sign_in(roster: Roster) -> None:
    first = roster.client()
    assert sign_in(first, roster).status_code in (302, 303)
    roster.provider.misbehave.issuer = roster.provider.issuer_for(str(uuid.uuid4()))
    second = roster.client()
    assert_refused(roster, second, sign_in(second, roster), r"sign[- ]in|token|tenant")


# -- refusals -----------------------------------------------------------------------------------


def test_unknown_user_name_is_refused(roster: Roster) -> None:
    client = roster.client()
    response = sign_in(client, roster, UNKNOWN_USER)
    assert_refused(roster, client, response, r"not a user|no (user|account)|unknown")


def test_deactivated_user_is_refused(roster: Roster) -> None:
    client = roster.client()
    response = sign_in(client, roster, DEACTIVATED_USER)
    assert_refused(roster, client, response, r"deactivated|not active|inactive|disabled")


def _wrong_tid(provider: OidcProvider) -> None:
    provider.misbehave.tid = str(uuid.uuid4())  # a consistent token from another tenant


def _wrong_tid_right_issuer(provider: OidcProvider) -> None:
    provider.misbehave.tid = str(uuid.uuid4())
    provider.misbehave.issuer = provider.issuer_for(provider.tenant_id)


def _wrong_audience(provider: OidcProvider) -> None:
    provider.misbehave.audience = str(uuid.uuid4())


def _expired(provider: OidcProvider) -> None:
    provider.misbehave.expired = True


def _bad_signature(provider: OidcProvider) -> None:
    provider.misbehave.bad_signature = True


def _missing_nonce(provider: OidcProvider) -> None:
    provider.misbehave.nonce = DROP


def _wrong_nonce(provider: OidcProvider) -> None:
    provider.misbehave.nonce = "a-nonce-roster-never-sent"


BAD_TOKENS = {
    "wrong tenant (tid)": _wrong_tid,
    "wrong tenant (tid), issuer of the right one": _wrong_tid_right_issuer,
    "wrong audience": _wrong_audience,
    "expired token": _expired,
    "bad signature": _bad_signature,
    "missing nonce": _missing_nonce,
    "wrong nonce": _wrong_nonce,
}


@pytest.mark.parametrize("misbehave", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_id_token_is_refused(roster: Roster, misbehave: Any) -> None:
    misbehave(roster.provider)
    client = roster.client()
    response = sign_in(client, roster)
    assert_refused(roster, client, response, r"sign[- ]in|token|tenant")
    assert roster.provider.id_tokens, "the provider issued no token: the test did not get far"


def test_state_mismatch_is_refused(roster: Roster) -> None:
    client = roster.client()
    callback = at_provider(start(client, roster))
    tampered = re.sub(r"state=[^&]+", "state=tampered-state", callback)
    assert tampered != callback
    assert_refused(roster, client, finish(client, tampered), r"sign[- ]in|expired|again|state")
    assert not roster.provider.token_requests, "a tampered callback must not redeem the code"


def test_callback_replayed_in_another_browser_is_refused(roster: Roster) -> None:
    client = roster.client()
    callback = at_provider(start(client, roster))
    stranger = roster.client()
    assert_refused(roster, stranger, finish(stranger, callback), r"sign[- ]in|expired|again")


def test_callback_replayed_after_sign_in_is_refused(roster: Roster) -> None:
    client = roster.client()
    callback = at_provider(start(client, roster))
    assert finish(client, callback).status_code in (302, 303)
    client.post("/logout")
    assert_refused(roster, client, finish(client, callback), r"sign[- ]in|expired|again")


def test_provider_error_access_denied_is_refused(roster: Roster) -> None:
    client = roster.client()
    callback = at_provider(start(client, roster), action="decline")
    assert parse_qs(urlsplit(callback).query)["error"] == ["access_denied"]
    assert_refused(roster, client, finish(client, callback), r"declin|denied|cancel")
    assert not roster.provider.token_requests


def test_directory_with_local_accounts_only_does_not_start(roster: Roster) -> None:
    roster.store.set_sign_in(roster.directory_id, "local", None, ACTOR)
    client = roster.client()
    response = client.get(f"/login/{roster.directory_id}/oidc", query_string={"login_hint": USER})
    assert_refused(roster, client, response, r"microsoft|local|password|not")
    assert not roster.provider.authorize_requests


def test_directory_switched_to_local_accounts_mid_sign_in_is_refused(roster: Roster) -> None:
    client = roster.client()
    callback = at_provider(start(client, roster))
    roster.store.set_sign_in(roster.directory_id, "local", None, ACTOR)
    assert_refused(roster, client, finish(client, callback), r"microsoft|local|password|not")


def test_another_oid_for_the_same_user_is_refused(roster: Roster) -> None:
    """nOAuth: a second account claiming the same userName (another oid) is not the user."""
    first = roster.client()
    assert sign_in(first, roster).status_code in (302, 303)
    assert_signed_in(first)
    roster.provider.set_user(USER, oid=str(uuid.uuid4()))
    second = roster.client()
    assert_refused(roster, second, sign_in(second, roster), r"account|sign[- ]in|not")
    # The first oid still signs in.
    roster.provider.users.clear()
    third = roster.client()
    assert sign_in(third, roster).status_code in (302, 303)
    assert_signed_in(third)


def rename_with_directory_key(roster: Roster, user_id: str, user_name: str) -> None:
    _key, token = auth.create_directory_key(roster.store, roster.directory_id, "Entra", ACTOR)
    patch = {
        "schemas": [PATCH_OP_URN],
        "Operations": [{"op": "Replace", "path": "userName", "value": user_name}],
    }
    response = roster.client().patch(
        f"/v2/Users/{user_id}", json=patch, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_directory_key_cannot_rename_an_administrator_into_its_own_sign_in(roster) -> None:
    """A key is for one directory. Renaming an administrator who never signed in to a name
    the key's holder signs in as must not make them an administrator of all of Roster."""
    user = roster.store.find_user_by_user_name(roster.directory_id, USER)
    roster.store.set_role(roster.directory_id, user["id"], "administrator", ACTOR)
    rename_with_directory_key(roster, user["id"], "mallory@contoso.example")

    intruder = roster.client()
    response = sign_in(intruder, roster, "mallory@contoso.example")
    assert_refused(roster, intruder, response, r"administrator whose user name changed")
    assert roster.store.oid_of(roster.directory_id, user["id"]) is None

    # Given the role again by an administrator, the new name is the one that signs in.
    roster.store.set_role(roster.directory_id, user["id"], "administrator", ACTOR)
    admin = roster.client()
    assert sign_in(admin, roster, "mallory@contoso.example").status_code in (302, 303)
    assert_signed_in(admin)
    assert admin.get("/admin").status_code == 200


def test_an_administrator_renamed_after_the_first_sign_in_goes_on_signing_in(roster) -> None:
    """Once the provider's object id is recorded it is what identifies them, not the name."""
    user = roster.store.find_user_by_user_name(roster.directory_id, USER)
    roster.store.set_role(roster.directory_id, user["id"], "administrator", ACTOR)
    first = roster.client()
    assert sign_in(first, roster).status_code in (302, 303)
    rename_with_directory_key(roster, user["id"], "adele@contoso.example")
    roster.provider.set_user("adele@contoso.example", oid=roster.provider.oid_of(USER))
    again = roster.client()
    assert sign_in(again, roster, "adele@contoso.example").status_code in (302, 303)
    assert again.get("/admin").status_code == 200


# -- a real browser -----------------------------------------------------------------------------


class MicrosoftServer(LiveServer):
    """Roster under waitress with the provider as its Microsoft authority and its own address
    as the public URL (the redirect URI registered at the provider)."""

    def __init__(self, data_dir: Path, provider: OidcProvider) -> None:
        super().__init__(data_dir)
        self.provider = provider

    def start(self) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ROSTER_PUBLIC_URL", self.url)
            patch.setenv("ROSTER_MICROSOFT_AUTHORITY", self.provider.base)
            super().start()


def test_real_browser_signs_in_with_microsoft(tmp_path, provider: OidcProvider) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium")
    data_dir = tmp_path / "data"
    # Written before the server starts (it owns the folder while it runs), through the app so
    # the secret is encrypted with the key the server will load from the same folder.
    app = create_app({"DATA_DIR": str(data_dir)})
    store: Store = app.extensions["roster.store"]
    try:
        default = store.find_directory_by_name(DEFAULT_DIRECTORY)
        store.set_sign_in(default["id"], "local", None, ACTOR)  # two directories to choose from
        seed(app, provider)
    finally:
        store.close()
    server = MicrosoftServer(data_dir, provider)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                context = browser.new_context()
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                console: list[str] = []  # e.g. a Content-Security-Policy refusal
                page.on("console", lambda message: console.append(message.text))
                try:
                    page.goto(f"{server.url}/login")
                    picker = page.get_by_role("navigation", name="Directories")
                    picker.get_by_role("link", name=DIRECTORY_NAME, exact=True).click()
                    expect(page.get_by_role("heading", name=DIRECTORY_NAME)).to_be_visible()
                    page.get_by_label("Your account").fill(USER)  # the login_hint
                    page.screenshot(path=shots / "1-roster-login.png", full_page=True)
                    page.get_by_role("button", name="Log in with your Microsoft account").click()

                    page.wait_for_url(f"{provider.base}/**")
                    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
                    page.get_by_label("Email, phone, or Skype").fill(USER)
                    page.screenshot(path=shots / "2-provider-sign-in.png", full_page=True)
                    page.get_by_role("button", name="Sign in").click()

                    page.wait_for_url(f"{server.url}/")
                    logout = page.get_by_role("button", name=f"Log out {USER_DISPLAY_NAME}")
                    expect(logout).to_be_visible()
                    page.screenshot(path=shots / "3-signed-in.png", full_page=True)
                except Exception as error:
                    page.screenshot(path=shots / "FAILED.png", full_page=True)
                    raise AssertionError(f"{error}\nbrowser console: {console}") from error
                cookies = {c["name"]: c for c in context.cookies(server.url)}
                assert cookies["session"]["sameSite"] == "Lax", cookies
                assert provider.authorize_requests[-1]["redirect_uri"] == (
                    f"{server.url}{CALLBACK_PATH}"
                )
            finally:
                browser.close()
    finally:
        server.stop()
    print(f"\n[microsoft sign-in] screenshots: {shots}")
    assert (shots / "3-signed-in.png").exists()


# -- the generic OpenID Connect method, and signing out -----------------------------------------


def configure_oidc(roster: Roster) -> None:
    """The directory switched to method "oidc", discovered at a fixed tenant's URL (so the
    issuer in the provider's metadata is concrete, not the ``{tenantid}`` template)."""
    client_id, secret = client_of(roster.provider)
    settings = {
        "configuration_url": roster.provider.discovery_url(roster.provider.tenant_id),
        "client_id": client_id,
        "client_secret": encrypted(roster.app, secret),
    }
    roster.store.set_sign_in(roster.directory_id, "oidc", settings, ACTOR)


def test_oidc_method_signs_in_and_checks_the_audience(roster: Roster) -> None:
    configure_oidc(roster)
    discovery = requests.get(
        roster.provider.discovery_url(roster.provider.tenant_id), timeout=30
    ).json()
    assert discovery["issuer"] == roster.provider.issuer_for(roster.provider.tenant_id)
    client = roster.client()
    response = sign_in(client, roster)
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    assert_signed_in(client)

    _wrong_audience(roster.provider)
    second = roster.client()
    assert_refused(roster, second, sign_in(second, roster), r"sign[- ]in|token|tenant")
    assert roster.provider.id_tokens[-1]["aud"] != client_of(roster.provider)[0]


def test_logout_offers_to_sign_out_of_the_provider_too(roster: Roster) -> None:
    client = roster.client()
    assert sign_in(client, roster).status_code in (302, 303)
    assert_signed_in(client)
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    response = client.post("/logout", data={"csrf_token": token.group(1)})
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    assert urlsplit(response.headers["Location"]).path == "/login"

    login = client.get(response.headers["Location"])
    assert login.status_code == 200
    discovery = requests.get(
        roster.provider.discovery_url(roster.provider.tenant_id), timeout=30
    ).json()
    end_session = discovery["end_session_endpoint"]
    hrefs = [
        href.replace("&amp;", "&")
        for href in re.findall(r'<a href="([^"]+)"', login.get_data(as_text=True))
    ]
    assert any(href.startswith(end_session) for href in hrefs), hrefs
    assert_no_session(client)
