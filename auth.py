"""Who is calling: directory keys (bearer tokens) for the SCIM API, and people signed in to the
pages (local accounts, the first-run setup link, sessions, roles).

A key's access token is shown once and only its SHA-256 is stored. The token carries 256 bits of
randomness, so a fast hash is enough (nothing to brute-force), and the lookup by hash means the
token itself is never compared or kept anywhere. Passwords are people's choices, so they get
werkzeug's slow, salted hash instead, and failed sign-ins slow down.

Signing in with Microsoft or any OpenID Connect provider:

Signing in with Microsoft (Entra ID) or any OpenID Connect provider, per directory.

Authlib's Flask client does the protocol: one client per directory, registered with the
provider's discovery document (``server_metadata_url``), the authorization code flow with PKCE
(S256), ``state`` and ``nonce``, and the id_token's signature checked against the provider's
keys. What Authlib leaves to us is here, in :func:`id_token_claims_options`:

- ``iss``: Authlib compares it with the discovery document's issuer only when no
  ``claims_options`` are passed, and passing them replaces that check; Microsoft's multi-tenant
  documents (``organizations``, ``common``) carry the template
  ``https://login.microsoftonline.com/{tenantid}/v2.0``, which no token's ``iss`` equals.
- ``aud``: not compared with the client id by default.
- ``tid``: pinned to the configured tenant whenever there is one, because
  ``preferred_username`` and ``email`` are not unique across tenants (the "nOAuth" takeover);
  and the user's ``oid`` is recorded at the first sign-in and must match at every later one.
- Since Authlib 1.7 a ``validate`` function in ``claims_options`` is popped on first use, so the
  options are built anew for every sign-in.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Request
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError
from werkzeug.security import check_password_hash, generate_password_hash

from store import (
    SIGN_IN_FIELDS,
    AdministratorRenamed,
    InvalidValueError,
    NotFoundError,
    Store,
)

TOKEN_BYTES = 32  # 256 bits


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1), any case."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.casefold() != "bearer" or not token:
        return None
    return token


def verify_directory_key(store: Store, authorization_header: str | None) -> dict | None:
    """The directory key the request's bearer token belongs to, or None.

    The final comparison is constant-time so response timing says nothing about stored hashes.
    """
    token = bearer_token(authorization_header)
    if token is None:
        return None
    token_hash = hash_token(token)
    key = store.find_key_by_token_hash(token_hash)
    if key is None or not hmac.compare_digest(key["token_hash"], token_hash):
        return None
    return key


def create_directory_key(
    store: Store, directory_id: str, name: str, actor: str
) -> tuple[dict, str]:
    """Create a key and return it with its token, which exists nowhere else from then on."""
    token = generate_token()
    key = store.create_key(directory_id, name, hash_token(token), actor)
    return key, token


# -- the first-run setup link -------------------------------------------------------------------

SETUP_TOKEN = "roster.setup_token_hash"


def issue_setup_token(app: Flask) -> str:
    """A one-time token for the setup link; the app keeps only its hash, in memory, so it dies
    with the process and a new start issues a new one."""
    token = generate_token()
    app.extensions[SETUP_TOKEN] = hash_token(token)
    return token


def setup_token_is_valid(token: str) -> bool:
    expected = current_app.extensions.get(SETUP_TOKEN)
    return expected is not None and hmac.compare_digest(expected, hash_token(token))


def spend_setup_token() -> None:
    current_app.extensions[SETUP_TOKEN] = None


# -- local accounts -----------------------------------------------------------------------------

PASSWORD_MIN = 8
PASSWORD_MAX = 64
PASSWORD_RULE = (
    f"{PASSWORD_MIN} to {PASSWORD_MAX} characters, with at least three of: lowercase letters, "
    "uppercase letters, digits, symbols"
)
SIGN_IN_REFUSED = (
    "Sign-in failed: the user name or password is wrong, or this account cannot sign in."
)


def password_problem(password: str) -> str | None:
    """What is wrong with a new password under the policy, or None when it is acceptable."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return (
            f"Password: {PASSWORD_MIN} to {PASSWORD_MAX} characters (this one has {len(password)})."
        )
    kinds = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    if sum(kinds) < 3:
        return (
            "Password: use at least three of lowercase letters, uppercase letters, digits and "
            f"symbols (this one has {sum(kinds)})."
        )
    return None


def hash_password(password: str) -> str:
    return generate_password_hash(password)


@functools.cache
def _unknown_user_hash() -> str:
    """Checked against when there is no stored hash, so an unknown user costs as much time as
    a wrong password and response timing does not tell which names exist."""
    return generate_password_hash(generate_token())


def password_matches(password_hash: str | None, password: str) -> bool:
    matched = check_password_hash(password_hash or _unknown_user_hash(), password)
    return matched and password_hash is not None


class CredentialsRefused(Exception):
    """A sign-in or a password change was refused; ``message`` is safe to show, and
    ``retry_after`` is set (in seconds) when failures are being slowed down."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class FailureThrottle:
    """Slows down repeated failures, in memory, per key (an account, an address).

    After ``free_failures`` failures in a row a key is refused for ``base_seconds * 2**n``
    seconds after its n-th failure, capped at ``max_seconds`` (15 minutes): guessing gets slow,
    and a legitimate user is never locked out for longer than the cap. A success resets the
    key; a key quiet for ``max_seconds`` after its delay is forgotten, so memory stays bounded
    by recent failures. ``clock`` is injectable so tests need not sleep.
    """

    def __init__(
        self,
        free_failures: int = 5,
        base_seconds: float = 1.0,
        max_seconds: float = 15 * 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[Hashable, tuple[int, float]] = {}  # key -> (count, last failure)
        self._pruned_at = clock()

    def _delay(self, count: int) -> float:
        if count < self.free_failures:
            return 0.0
        return min(self.base_seconds * 2.0**count, self.max_seconds)

    def seconds_to_wait(self, keys: tuple[Hashable, ...]) -> int:
        """How long the most-failed of ``keys`` must still wait (0: go ahead)."""
        now = self.clock()
        with self._lock:
            waits = [
                last + self._delay(count) - now
                for count, last in (self._failures.get(key, (0, now)) for key in keys)
            ]
        return max(0, math.ceil(max(waits, default=0)))

    def failed(self, keys: tuple[Hashable, ...]) -> None:
        now = self.clock()
        with self._lock:
            self._forget_quiet_keys(now)
            for key in keys:
                count, _last = self._failures.get(key, (0, now))
                self._failures[key] = (count + 1, now)

    def succeeded(self, keys: tuple[Hashable, ...]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _forget_quiet_keys(self, now: float) -> None:
        """At most once a minute, so a burst of failures does not walk the table each time."""
        if now - self._pruned_at < 60:
            return
        self._pruned_at = now
        quiet = [
            key
            for key, (count, last) in self._failures.items()
            if now - last > self._delay(count) + self.max_seconds
        ]
        for key in quiet:
            del self._failures[key]


def sign_in_locally(
    store: Store,
    directory: dict | None,
    user_name: str,
    password: str,
    address: str | None,
    throttle: FailureThrottle,
) -> dict:
    """The account of a local sign-in, or :class:`CredentialsRefused`.

    An unknown user, a wrong password, a deactivated user (``active`` false, as Entra sends it)
    and a directory that does not use local accounts all get the same message and take the same
    time, so a refusal tells nothing about which names exist. Failures are throttled per
    account (directory and userName as typed, whether or not it exists) and per address.
    """
    directory_id = directory["id"] if directory else ""
    keys = (("account", directory_id, user_name.casefold()), ("address", address or ""))
    wait = throttle.seconds_to_wait(keys)
    if wait:
        raise CredentialsRefused(
            f"Too many failed sign-ins for this account or from this address. Try again in "
            f"{wait} seconds.",
            retry_after=wait,
        )
    local = directory is not None and directory.get("auth_method") == "local"
    user = store.find_user_by_user_name(directory_id, user_name) if local and user_name else None
    password_hash = store.password_hash_of(directory_id, user["id"]) if user else None
    matched = password_matches(password_hash, password) and user.get("active") is not False
    account = store.account(directory_id, user["id"]) if matched else None
    if account is None:  # also a user deleted since the password was checked
        throttle.failed(keys)
        raise CredentialsRefused(SIGN_IN_REFUSED)
    throttle.succeeded(keys)
    return account


def change_own_password(
    store: Store, account: dict, current: str, new: str, again: str, throttle: FailureThrottle
) -> None:
    """My account: a new password for the signed-in user, who must know the current one.

    Wrong current passwords count as failures of the account, so a session left open cannot
    be used to guess the password faster than the sign-in form allows.
    """
    keys = (("account", account["directory_id"], account["resource"]["userName"].casefold()),)
    wait = throttle.seconds_to_wait(keys)
    if wait:
        raise CredentialsRefused(f"Too many wrong passwords. Try again in {wait} seconds.", wait)
    stored = store.password_hash_of(account["directory_id"], account["id"])
    if not password_matches(stored, current):
        throttle.failed(keys)
        raise CredentialsRefused("Current password: it is not your password.")
    problem = password_problem(new) or (
        None if new == again else "New password again: the two new passwords differ."
    )
    if problem:
        raise CredentialsRefused(problem)
    throttle.succeeded(keys)
    epoch = store.set_password(
        account["directory_id"], account["id"], hash_password(new), actor_of(account)
    )
    keep_own_session(account["directory_id"], account["id"], epoch)


# -- sessions -----------------------------------------------------------------------------------


def start_session(account: dict) -> None:
    """Sign in: a fresh session (none of an earlier one's contents) naming the account and
    its session epoch (see :meth:`Store.end_sessions`)."""
    session.clear()
    session["directory_id"] = account["directory_id"]
    session["user_id"] = account["id"]
    session["epoch"] = account["session_epoch"]
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME


def end_session() -> None:
    session.clear()


def sign_out(store: Store) -> None:
    """Sign out, on every device: a copy of this session's cookie must not keep working, and
    the server cannot delete a cookie, so all the account's sessions end."""
    account = current_account()
    end_session()
    if account is not None:
        store.end_sessions(account["directory_id"], account["id"], actor_of(account))


def keep_own_session(directory_id: str, user_id: str, epoch: int) -> None:
    """After a new password ended every session of the account (``epoch`` is the new one):
    the session that set it goes on, when it is the account's own (My account, or an
    administrator's own user page)."""
    own = current_account()
    if own is not None and (own["directory_id"], own["id"]) == (directory_id, user_id):
        session["epoch"] = epoch


def current_account() -> dict | None:
    """The signed-in account, checked anew on every request: a user deleted or deactivated
    (through SCIM or a page), signed out elsewhere or given a new password, or a directory
    that no longer allows sign-in ends the session at the next click, although the signed
    cookie itself would still be valid."""
    if "account" in g:
        return g.account
    account = None
    directory_id, user_id = session.get("directory_id"), session.get("user_id")
    if directory_id and user_id:
        store: Store = current_app.extensions["roster.store"]
        directory = store.get_directory(directory_id)
        account = store.account(directory_id, user_id)
        if (
            directory is None
            or directory.get("auth_method", "none") == "none"
            or account is None
            or account["resource"].get("active") is False
            or session.get("epoch", 0) != account["session_epoch"]
        ):
            session.clear()
            account = None
    g.account = account
    return account


def actor_of(account: dict) -> str:
    """How the audit log names a signed-in person."""
    return account["resource"]["userName"]


def login_required(view: Callable) -> Callable:
    """Anonymous visitors go to the sign-in page, which brings them back afterwards."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_account() is None:
            return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def administrator_required(view: Callable) -> Callable:
    """Admin pages: anonymous visitors sign in first; signed-in plain users get 403."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        account = current_account()
        if account is None:
            return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
        if account["role"] != "administrator":
            abort(403)
        return view(*args, **kwargs)

    return wrapped


# -- signing in with Microsoft (Entra ID) or OpenID Connect ------------------------------------

bp = Blueprint("signin", __name__)

DEFAULT_MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
SCOPE = "openid profile email"
LEEWAY_SECONDS = 120  # clock skew between us and the provider
HTTP_TIMEOUT_SECONDS = 10
TENANT_ID_TEMPLATE = "{tenantid}"
MULTI_TENANT = ("organizations", "common", "consumers")  # Microsoft's tenant aliases
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
OAUTH = "authlib.integrations.flask_client"  # where OAuth.init_app puts itself
PENDING = "roster.oidc_pending"  # session: the sign-in under way (directory, client, nonce)
PROVIDER_LOGOUT = "roster.provider_logout"  # session: where to sign out of the provider too
CALLBACK_PATH = "/login/oidc/callback"
PROVIDER_NAMES = {"microsoft": "Microsoft", "oidc": "your identity provider"}


def store() -> Store:
    return current_app.extensions["roster.store"]


# -- the client secret, encrypted at rest -------------------------------------------------------


def _fernet(secret_key: str) -> Fernet:
    """A Fernet key derived from the app's SECRET_KEY (HKDF-SHA256, a purpose of its own), so
    the data folder alone does not give the client secrets away when the key lives elsewhere
    (``ROSTER_SECRET_KEY``)."""
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"roster client secret").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_client_secret(secret_key: str, client_secret: str) -> str:
    return _fernet(secret_key).encrypt(client_secret.encode()).decode()


def encrypt_secret(client_secret: str) -> str:
    """:func:`encrypt_client_secret` with the current app's SECRET_KEY."""
    return encrypt_client_secret(current_app.config["SECRET_KEY"], client_secret)


def decrypt_client_secret(secret_key: str, encrypted: str) -> str:
    """Raises :class:`cryptography.fernet.InvalidToken` when SECRET_KEY changed since."""
    return _fernet(secret_key).decrypt(encrypted.encode()).decode()


# -- addresses ----------------------------------------------------------------------------------


def public_base_url() -> str:
    """ROSTER_PUBLIC_URL behind a proxy, else the root of the host the request came to."""
    return (current_app.config.get("PUBLIC_URL") or request.host_url).rstrip("/")


def callback_url() -> str:
    """The redirect URI to register at the provider (Entra: Web platform)."""
    return public_base_url() + CALLBACK_PATH


def provider_settings(directory: dict) -> dict[str, str] | None:
    """The provider settings of the directory's method, or None when it has none."""
    method = directory.get("auth_method")
    return (directory.get(method) or None) if method in SIGN_IN_FIELDS else None


def discovery_url(directory: dict) -> str:
    settings = provider_settings(directory) or {}
    if directory["auth_method"] == "microsoft":
        authority = current_app.config["MICROSOFT_AUTHORITY"].rstrip("/")
        return f"{authority}/{settings['tenant']}/v2.0/.well-known/openid-configuration"
    return settings["configuration_url"]


def provider_client(directory: dict) -> Any:
    """The directory's Authlib client, registered on first use. Its name carries a hash of the
    settings, so a change of settings gets a fresh client (new discovery document and keys,
    new secret) and invalidates sign-ins started with the old one."""
    settings = provider_settings(directory)
    url = discovery_url(directory)
    fingerprint = hashlib.sha256(
        json.dumps([directory["auth_method"], settings, url], sort_keys=True).encode()
    ).hexdigest()[:16]
    name = f"dir_{directory['id']}_{fingerprint}"
    oauth: OAuth = current_app.extensions[OAUTH]
    client = oauth.create_client(name)
    if client is None:
        client = oauth.register(
            name,
            client_id=settings["client_id"],
            client_secret=decrypt_client_secret(
                current_app.config["SECRET_KEY"], settings["client_secret"]
            ),
            server_metadata_url=url,
            client_kwargs={
                "scope": SCOPE,
                "code_challenge_method": "S256",
                "default_timeout": HTTP_TIMEOUT_SECONDS,
            },
        )
    return client


# -- the id_token's claims ----------------------------------------------------------------------


def expected_issuer(metadata_issuer: str, tid: Any) -> str | None:
    """The issuer a token must name: the discovery document's, with Microsoft's ``{tenantid}``
    template filled in from the token's own ``tid`` (None when it has none to fill in)."""
    if TENANT_ID_TEMPLATE not in metadata_issuer:
        return metadata_issuer
    if not isinstance(tid, str) or not GUID.fullmatch(tid):
        return None
    return metadata_issuer.replace(TENANT_ID_TEMPLATE, tid)


def pinned_tenant_id(configured_tenant: str, metadata_issuer: str) -> str | None:
    """The tenant id every token's ``tid`` must equal, or None for the multi-tenant aliases.

    A configured GUID is the tenant id. A domain (contoso.onmicrosoft.com) is resolved by
    Microsoft's discovery document, whose issuer names the tenant id; the issuer check then
    pins ``tid`` as well.
    """
    if configured_tenant.casefold() in MULTI_TENANT:
        return None
    if GUID.fullmatch(configured_tenant):
        return configured_tenant.casefold()
    found = GUID.search(metadata_issuer)
    if found is None:
        raise ValueError(f"the discovery document names no tenant id for {configured_tenant}")
    return found.group(0).casefold()


def id_token_claims_options(
    method: str, settings: dict[str, str], metadata_issuer: str
) -> dict[str, dict]:
    """Authlib ``claims_options`` for one sign-in. Call it anew each time: Authlib pops each
    ``validate`` out of the dict it is given."""
    client_id = settings["client_id"]

    def issuer_matches(claims: dict, iss: Any) -> bool:
        expected = expected_issuer(metadata_issuer, claims.get("tid"))
        return expected is not None and iss == expected

    def audience_is_us(_claims: dict, aud: Any) -> bool:
        return aud == client_id or aud == [client_id]

    options: dict[str, dict] = {
        "iss": {"essential": True, "validate": issuer_matches},
        "aud": {"essential": True, "value": client_id, "validate": audience_is_us},
        "exp": {"essential": True},
        "nonce": {"essential": True},
    }
    if method == "microsoft":
        tenant = pinned_tenant_id(settings["tenant"], metadata_issuer)

        def tenant_matches(_claims: dict, tid: Any) -> bool:
            return isinstance(tid, str) and (tenant is None or tid.casefold() == tenant)

        options["tid"] = {"essential": True, "validate": tenant_matches}
        options["oid"] = {"essential": True}
    return options


def claimed_user_name(userinfo: dict) -> str | None:
    """``preferred_username``, else ``upn``, else a verified ``email``: what the directory's
    userName is matched with (Entra's userPrincipalName).

    An email the provider has not verified (``email_verified`` true) may be one its user
    typed in, so it could claim another person's account at their first sign-in.
    """
    for claim in ("preferred_username", "upn", "email"):
        value = userinfo.get(claim)
        if claim == "email" and userinfo.get("email_verified") not in (True, "true"):
            continue
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


# -- refusals -----------------------------------------------------------------------------------


class SignInRefused(Exception):
    """A sign-in that must not go ahead: ``message`` says why to the person, ``reason`` to
    the audit log."""

    def __init__(self, reason: str, message: str, status: int = 403, actor: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.status = status
        self.actor = actor or "anonymous"


START_AGAIN = "Start again from the login page."


def token_refusal(error: JoseError) -> SignInRefused:
    """A joserfc error from the id_token's checks, in plain words."""
    claim = getattr(error, "claim", "")
    if isinstance(error, ExpiredTokenError):
        reason, what = "expired token", "it has expired (is this computer's clock right?)"
    elif isinstance(error, BadSignatureError):
        reason, what = "bad signature", "its signature does not match the provider's keys"
    elif claim == "tid":
        reason, what = "wrong tenant", "it comes from another organisation (tenant)"
    elif claim == "iss":
        reason, what = "wrong issuer", "it was issued by someone other than the provider"
    elif claim == "aud":
        reason, what = "wrong audience", "it was issued to another application"
    elif claim == "nonce":
        reason, what = "wrong nonce", "it does not belong to this sign-in"
    elif isinstance(error, ClaimError):
        reason, what = f"bad claim {claim}", f"its {claim} claim is missing or wrong"
    else:
        reason, what = "bad token", "it could not be read"
    return SignInRefused(reason, f"The provider's sign-in token was refused: {what}. {START_AGAIN}")


# -- the views ----------------------------------------------------------------------------------


@bp.get("/login/<directory_id>/oidc")
def start(directory_id: str) -> Any:
    """Off to the provider: the directory (and the client made for its current settings) are
    remembered in the session for the callback, with the nonce we check ourselves too."""
    directory = store().get_directory(directory_id)
    if directory is None:
        abort(404)
    login_hint = request.args.get("login_hint", "").strip()[:256]
    try:
        if provider_settings(directory) is None:
            raise SignInRefused(
                "directory not set to OpenID Connect",
                "This directory does not sign in with Microsoft accounts or OpenID Connect.",
                400,
                actor=login_hint,
            )
        client = provider_client(directory)
        nonce = secrets.token_urlsafe(24)
        extra = {"nonce": nonce, **({"login_hint": login_hint} if login_hint else {})}
        try:
            response = client.authorize_redirect(callback_url(), **extra)
        except InvalidToken:
            raise secret_unreadable() from None
        except (requests.RequestException, ValueError, KeyError, RuntimeError):
            raise provider_unreachable() from None
    except SignInRefused as refusal:
        store().record_audit(directory_id, refusal.actor, "signin.refused", refusal.reason)
        return refusal_page(refusal)
    session[PENDING] = {"directory_id": directory_id, "client": client.name, "nonce": nonce}
    return response


@bp.get(CALLBACK_PATH)
def callback() -> Any:
    """Back from the provider: any refusal ends with no session and an audit entry."""
    pending = session.pop(PENDING, None) or {}
    directory = store().get_directory(pending.get("directory_id") or "") if pending else None
    try:
        account = complete_sign_in(pending, directory)
    except SignInRefused as refusal:
        end_session()
        directory_id = directory["id"] if directory else None
        store().record_audit(directory_id, refusal.actor, "signin.refused", refusal.reason)
        return refusal_page(refusal)
    store().record_audit(directory["id"], actor_of(account), "user.signin", account["id"])
    start_session(account)
    return redirect(url_for("pages.people"))


def complete_sign_in(pending: dict, directory: dict | None) -> dict:
    """The account the provider's answer signs in, or :class:`SignInRefused`."""
    error = request.args.get("error")
    if error == "access_denied":
        raise SignInRefused(
            "declined", "You declined to sign in at the provider, so you are not signed in.", 403
        )
    if error:
        raise SignInRefused(
            f"provider error {error[:60]}",
            f"The provider did not sign you in (it answered: {error[:60]}). {START_AGAIN}",
            400,
        )
    if directory is None:
        raise SignInRefused(
            "state mismatch", f"This sign-in was already used or has expired. {START_AGAIN}", 400
        )
    settings = provider_settings(directory)
    if settings is None:
        raise SignInRefused(
            "directory not set to OpenID Connect",
            "This directory does not sign in with Microsoft accounts or OpenID Connect.",
        )
    userinfo = validated_userinfo(pending, directory, settings)
    user_name = claimed_user_name(userinfo)
    if user_name is None:
        raise SignInRefused("no user name", "The provider did not say who you are.")
    user = store().find_user_by_user_name(directory["id"], user_name)
    if user is None:
        raise SignInRefused(
            "unknown user",
            f"There is no user named {user_name} in {directory['name']}. Ask your "
            "administrator to add you, with your account name as user name.",
            actor=user_name,
        )
    if user.get("active") is False:
        raise SignInRefused(
            "deactivated", f"{user_name} is deactivated in {directory['name']}.", actor=user_name
        )
    pin_object_id(directory, user, userinfo, user_name)
    account = store().account(directory["id"], user["id"])
    if account is None:  # deleted a moment ago
        raise SignInRefused("unknown user", f"{user_name} is no longer a user.", actor=user_name)
    return account


def validated_userinfo(pending: dict, directory: dict, settings: dict[str, str]) -> dict:
    """The id_token's claims once Authlib and the options above have checked them."""
    try:
        client = provider_client(directory)
        if client.name != pending.get("client"):
            raise SignInRefused(
                "settings changed",
                f"The directory's sign-in settings changed during your sign-in. {START_AGAIN}",
                400,
            )
        issuer = client.load_server_metadata()["issuer"]
        options = id_token_claims_options(directory["auth_method"], settings, issuer)
        token = client.authorize_access_token(claims_options=options, leeway=LEEWAY_SECONDS)
    except MismatchingStateError:
        raise SignInRefused(
            "state mismatch", f"This sign-in was already used or has expired. {START_AGAIN}", 400
        ) from None
    except JoseError as error:
        raise token_refusal(error) from None
    except OAuthError as error:
        raise SignInRefused(
            f"provider error {str(error.error)[:60]}",
            f"The provider did not complete the sign-in. {START_AGAIN}",
            400,
        ) from None
    except InvalidToken:
        raise secret_unreadable() from None
    except requests.RequestException:
        raise provider_unreachable() from None
    except (AuthlibBaseError, ValueError, KeyError, TypeError):
        raise SignInRefused(
            "bad token", f"The provider's answer could not be checked. {START_AGAIN}"
        ) from None
    userinfo = token.get("userinfo")
    if not userinfo:  # no id_token: Authlib then checks nothing at all
        raise SignInRefused("no id_token", f"The provider sent no ID token. {START_AGAIN}")
    nonce, expected = str(userinfo.get("nonce", "")), pending.get("nonce") or "-"
    if not hmac.compare_digest(nonce.encode(), expected.encode()):
        raise SignInRefused(
            "wrong nonce", f"The sign-in token is not for this sign-in. {START_AGAIN}"
        )
    return dict(userinfo)


def pin_object_id(directory: dict, user: dict, userinfo: dict, user_name: str) -> None:
    """First sign-in records the provider's object id (``oid``; ``sub`` for providers without
    one); later ones must bring the same, whatever name they claim."""
    object_id = userinfo.get("oid") or userinfo.get("sub")
    if not isinstance(object_id, str) or not object_id:
        raise SignInRefused(
            "no oid", "The provider did not identify your account.", actor=user_name
        )
    refused = SignInRefused(
        "different oid",
        f"{user_name} signed in with another account before; this account cannot sign in as "
        "that user. Ask your administrator.",
        actor=user_name,
    )
    recorded = store().oid_of(directory["id"], user["id"])
    if recorded is not None and recorded != object_id:
        raise refused
    try:
        store().record_oid(directory["id"], user["id"], object_id, user_name)
    except InvalidValueError:  # another first sign-in won the race
        raise refused from None
    except AdministratorRenamed:
        raise SignInRefused(
            "administrator renamed",
            f"{user_name} is an administrator whose user name changed since they were made "
            "one. Another administrator must give them the role again before they first sign "
            "in this way.",
            actor=user_name,
        ) from None
    except NotFoundError:
        raise SignInRefused("unknown user", f"{user_name} is no longer a user.") from None


def provider_unreachable() -> SignInRefused:
    return SignInRefused(
        "provider unreachable",
        "Roster could not reach the identity provider. Try again in a moment; if it keeps "
        "happening, ask your administrator to check the directory's sign-in settings.",
        502,
    )


def secret_unreadable() -> SignInRefused:
    return SignInRefused(
        "client secret unreadable",
        "The directory's client secret can no longer be read (the server's secret key "
        "changed). Ask your administrator to enter it again.",
        500,
    )


def refusal_page(refusal: SignInRefused) -> Any:
    return render_template("signin_refused.html", message=refusal.message), refusal.status


def form_action_origin(directory: dict) -> str | None:
    """The provider's origin, which the login page's Content-Security-Policy must allow in
    ``form-action``: browsers apply it to the redirect that follows the sign-in form too."""
    if provider_settings(directory) is None:
        return None
    url = current_app.config["MICROSOFT_AUTHORITY"]
    if directory["auth_method"] == "oidc":
        try:
            metadata = provider_client(directory).load_server_metadata()
            url = metadata["authorization_endpoint"]
        except (InvalidToken, requests.RequestException, ValueError, KeyError, RuntimeError):
            url = provider_settings(directory)["configuration_url"]
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# -- signing out of the provider ----------------------------------------------------------------


def provider_logout(directory: dict | None) -> dict | None:
    """Where to sign out of the directory's provider too (``end_session_endpoint``, or the
    OpenID Connect method's logout URL), or None."""
    settings = provider_settings(directory) if directory else None
    if settings is None:
        return None
    url = settings.get("logout_url")
    if not url:
        try:
            url = provider_client(directory).load_server_metadata().get("end_session_endpoint")
        except (InvalidToken, requests.RequestException, ValueError, KeyError, RuntimeError):
            url = None
        if url:
            separator = "&" if "?" in url else "?"
            url = f"{url}{separator}{urlencode({'client_id': settings['client_id']})}"
    if not url:
        return None
    return {"url": url, "provider": PROVIDER_NAMES[directory["auth_method"]]}


class BrowserSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, for the pages only.

    The SCIM API authenticates every request by its bearer key and never reads or sets a
    cookie; opening a session anyway built a signing serializer per request, about a tenth
    of the work of a GET. Under /v2 the session is Flask's null session (reads see nothing,
    a write would fail loudly) and no cookie is ever sent.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path == SCIM_PREFIX or request.path.startswith(SCIM_PREFIX + "/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


SCIM_PREFIX = "/v2"


def init_app(app: Flask) -> None:
    """Sessions for the pages; one OAuth registry per app, providers registered lazily, per
    directory."""
    app.session_interface = BrowserSessions()
    app.config.setdefault("MICROSOFT_AUTHORITY", DEFAULT_MICROSOFT_AUTHORITY)
    OAuth().init_app(app)
    app.register_blueprint(bp)
