"""Who is calling: directory keys (bearer tokens) for the SCIM API, and people signed in to the
pages (local accounts, the first-run setup link, sessions, roles).

A key's access token is shown once and only its SHA-256 is stored. The token carries 256 bits of
randomness, so a fast hash is enough (nothing to brute-force), and the lookup by hash means the
token itself is never compared or kept anywhere. Passwords are people's choices, so they get
werkzeug's slow, salted hash instead, and failed sign-ins slow down.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from store import Store

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
    store.set_password(
        account["directory_id"], account["id"], hash_password(new), actor_of(account)
    )


# -- sessions -----------------------------------------------------------------------------------


def start_session(account: dict) -> None:
    """Sign in: a fresh session (none of an earlier one's contents) naming the account."""
    session.clear()
    session["directory_id"] = account["directory_id"]
    session["user_id"] = account["id"]
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME


def end_session() -> None:
    session.clear()


def current_account() -> dict | None:
    """The signed-in account, checked anew on every request: a user deleted or deactivated
    (through SCIM or a page) or a directory that no longer allows sign-in ends the session at
    the next click, although the signed cookie itself would still be valid."""
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
