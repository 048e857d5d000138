"""A real OpenID Connect provider for the tests, shaped like the Microsoft identity platform.

It runs a small Flask app under werkzeug's threaded server on **127.0.0.2** (another site than
Roster on 127.0.0.1, as login.microsoftonline.com is), on a free port, and speaks real HTTP:

- ``/{tenant}/v2.0/.well-known/openid-configuration``: the discovery document. For a tenant id
  or the tenant's domain the issuer is ``{base}/{tid}/v2.0``; for ``organizations`` and
  ``common`` it is Microsoft's template ``{base}/{tenantid}/v2.0``.
- ``/{tenant}/discovery/v2.0/keys``: the JWKS (RS256 signing key).
- ``/{tenant}/oauth2/v2.0/authorize``: a tiny sign-in page (a user name field, "Sign in" and
  "Decline"), which redirects back with ``code`` and ``state``, or ``error=access_denied``.
- ``/{tenant}/oauth2/v2.0/token``: the authorization code grant, checking the client's id and
  secret (basic or post), the code (single use, bound to its redirect URI) and the PKCE
  verifier (S256); answers with an RS256 id_token carrying Microsoft's v2.0 claims.
- ``/{tenant}/oauth2/v2.0/logout``: the end-session endpoint.

Every account name typed at the sign-in page exists in the home tenant, with claims derived
from the name (a stable ``oid`` per name); ``users`` overrides any claim per name. The
``Misbehaviour`` knobs make the next tokens wrong in one way each, for refusal tests.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode

from flask import Flask, abort, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import WSGIRequestHandler, make_server

HOST = "127.0.0.2"
MULTI_TENANT = ("organizations", "common")
DROP = object()  # a claim override that removes the claim


class QuietHandler(WSGIRequestHandler):
    """No access log lines on the test output."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class Misbehaviour:
    """How the next id_tokens are wrong; all off by default."""

    tid: str | None = None  # the token's tid claim (and, unless issuer is set, its iss)
    issuer: str | None = None  # the token's iss, whatever the tid
    audience: str | None = None  # the token's aud instead of the client id
    expired: bool = False  # exp an hour ago (well past any clock-skew leeway)
    bad_signature: bool = False  # signed with another key under the real key's kid
    nonce: Any = None  # None: echo the request's nonce; DROP: leave it out; a str: that value
    claims: dict[str, Any] = field(default_factory=dict)  # any other claim (DROP removes)


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    scope: str
    user_name: str
    home_tid: str


class OidcProvider:
    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.tenant_id = str(uuid.uuid4())
        self.tenant_domain = "contoso.onmicrosoft.com"
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8)})
        # Another key under the same kid: its signatures look plausible and are wrong.
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": self.key.kid})
        self.clients: dict[str, str] = {}  # client_id -> client_secret
        self.users: dict[str, dict[str, Any]] = {}  # lower-cased user name -> claim overrides
        self.misbehave = Misbehaviour()
        self.authorize_requests: list[dict[str, str]] = []  # what the app sent, for asserts
        self.token_requests: list[dict[str, str]] = []
        self.id_tokens: list[dict[str, Any]] = []  # the claims of every token issued
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self.app = self._build_app()
        self._server = make_server(host, 0, self.app, threaded=True, request_handler=QuietHandler)
        self.port = self._server.server_port
        self.base = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> OidcProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration --------------------------------------------------------------------------

    def add_client(self, client_id: str | None = None, secret: str | None = None) -> tuple:
        client_id = client_id or str(uuid.uuid4())
        secret = secret or secrets.token_urlsafe(30)
        self.clients[client_id] = secret
        return client_id, secret

    def set_user(self, user_name: str, **claims: Any) -> None:
        """Override claims of an account (e.g. ``oid``, ``name``, ``email``, ``tid``)."""
        self.users.setdefault(user_name.casefold(), {}).update(claims)

    def issuer_for(self, tid: str) -> str:
        return f"{self.base}/{tid}/v2.0"

    def discovery_url(self, tenant: str) -> str:
        return f"{self.base}/{tenant}/v2.0/.well-known/openid-configuration"

    def oid_of(self, user_name: str) -> str:
        return self.claims_of(user_name)["oid"]

    def claims_of(self, user_name: str, home_tid: str | None = None) -> dict[str, Any]:
        """The account's claims: derived from its name, then the overrides in ``users``."""
        folded = user_name.casefold()
        local = user_name.split("@")[0]
        name = " ".join(part.capitalize() for part in local.replace("_", ".").split("."))
        claims = {
            "tid": home_tid or self.tenant_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant_id}/{folded}")),
            "preferred_username": user_name,
            "name": name or user_name,
            "email": user_name,
        }
        claims.update(self.users.get(folded, {}))
        return claims

    # -- tokens ---------------------------------------------------------------------------------

    def _tenant_id_for(self, tenant: str) -> str | None:
        """The tenant id a path's tenant names (None for the multi-tenant authorities)."""
        if tenant in MULTI_TENANT:
            return None
        if tenant.casefold() in (self.tenant_id, self.tenant_domain.casefold()):
            return self.tenant_id
        abort(400, f"AADSTS90002: Tenant '{tenant}' not found.")

    def _id_token(self, grant: Grant, client_id: str) -> str:
        now = int(time.time())
        account = self.claims_of(grant.user_name, grant.home_tid)
        bad = self.misbehave
        tid = bad.tid or account["tid"]
        claims: dict[str, Any] = {
            "ver": "2.0",
            "iss": bad.issuer or self.issuer_for(tid),
            "sub": base64.urlsafe_b64encode(
                hashlib.sha256(f"{account['oid']}/{client_id}".encode()).digest()
            ).decode()[:43],
            "aud": bad.audience or client_id,
            "exp": now - 3600 if bad.expired else now + 3600,
            "iat": now - 7200 if bad.expired else now,
            "nbf": now - 7200 if bad.expired else now,
            "tid": tid,
            "oid": account["oid"],
            "preferred_username": account["preferred_username"],
            "name": account["name"],
            "email": account["email"],
            "aio": secrets.token_urlsafe(24),
            "uti": secrets.token_urlsafe(16),
        }
        if bad.nonce is None:
            if grant.nonce is not None:
                claims["nonce"] = grant.nonce
        elif bad.nonce is not DROP:
            claims["nonce"] = bad.nonce
        claims.update({k: v for k, v in account.items() if k not in claims and k != "tid"})
        claims.update(bad.claims)
        claims = {name: value for name, value in claims.items() if value is not DROP}
        self.id_tokens.append(dict(claims))
        key = self.other_key if bad.bad_signature else self.key
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key.kid}
        return jwt.encode(header, claims, key)

    # -- the HTTP side --------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("oidc_provider")
        provider = self

        @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
        def discovery(tenant: str) -> Any:
            tid = provider._tenant_id_for(tenant)
            base = provider.base
            return jsonify(
                {
                    "issuer": provider.issuer_for(tid or "{tenantid}"),
                    "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                    "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                    "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
                    "userinfo_endpoint": f"{base}/oidc/userinfo",
                    "response_types_supported": ["code", "id_token", "code id_token"],
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "code_challenge_methods_supported": ["S256"],
                    "claims_supported": [
                        "sub",
                        "iss",
                        "aud",
                        "exp",
                        "iat",
                        "nbf",
                        "nonce",
                        "tid",
                        "oid",
                        "preferred_username",
                        "name",
                        "email",
                        "ver",
                    ],
                    "tenant_region_scope": "EU",
                    "request_uri_parameter_supported": False,
                }
            )

        @app.get("/<tenant>/discovery/v2.0/keys")
        def keys(tenant: str) -> Any:
            provider._tenant_id_for(tenant)
            public = provider.key.as_dict(private=False)
            return jsonify({"keys": [{**public, "use": "sig", "kid": provider.key.kid}]})

        @app.route("/<tenant>/oauth2/v2.0/authorize", methods=["GET", "POST"])
        def authorize(tenant: str) -> Any:
            home_tid = provider._tenant_id_for(tenant) or provider.tenant_id
            params = request.values.to_dict()
            if request.method == "GET":
                provider.authorize_requests.append(params)
            client_id = params.get("client_id", "")
            redirect_uri = params.get("redirect_uri", "")
            if client_id not in provider.clients:
                return page("Sign in", "<p>AADSTS700016: Application not found.</p>"), 400
            if not redirect_uri.startswith(("http://", "https://")):
                return page("Sign in", "<p>AADSTS50011: Redirect URI is invalid.</p>"), 400
            state = params.get("state")
            if request.method == "GET":
                return sign_in_page(params)
            if request.form.get("action") == "decline":
                answer = {
                    "error": "access_denied",
                    "error_description": "AADSTS65004: User declined to consent.",
                }
                return redirect_back(redirect_uri, answer, state)
            user_name = request.form.get("username", "").strip()
            if not user_name:
                return sign_in_page(params, "Enter your account name."), 400
            if params.get("response_type") != "code":
                answer = {"error": "unsupported_response_type"}
                return redirect_back(redirect_uri, answer, state)
            code = secrets.token_urlsafe(32)
            with provider._lock:
                provider._grants[code] = Grant(
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    code_challenge=params.get("code_challenge", ""),
                    code_challenge_method=params.get("code_challenge_method", ""),
                    nonce=params.get("nonce"),
                    scope=params.get("scope", ""),
                    user_name=user_name,
                    home_tid=home_tid,
                )
            return redirect_back(redirect_uri, {"code": code}, state)

        @app.post("/<tenant>/oauth2/v2.0/token")
        def token(tenant: str) -> Any:
            provider._tenant_id_for(tenant)
            form = request.form.to_dict()
            provider.token_requests.append(form)
            client_id, secret = form.get("client_id"), form.get("client_secret")
            if request.authorization and request.authorization.type == "basic":
                client_id = request.authorization.username
                secret = request.authorization.password
            expected = provider.clients.get(client_id or "")
            if expected is None or not secrets.compare_digest(expected, secret or ""):
                return token_error("invalid_client", "AADSTS7000215: Invalid client secret.", 401)
            if form.get("grant_type") != "authorization_code":
                return token_error("unsupported_grant_type", "Only authorization_code.")
            with provider._lock:
                grant = provider._grants.pop(form.get("code", ""), None)  # single use
            if grant is None or grant.client_id != client_id:
                return token_error("invalid_grant", "AADSTS70008: The code is invalid.")
            if grant.redirect_uri != form.get("redirect_uri"):
                return token_error("invalid_grant", "AADSTS50148: redirect_uri mismatch.")
            verifier = form.get("code_verifier", "")
            if grant.code_challenge:
                computed = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .rstrip(b"=")
                    .decode()
                )
                if grant.code_challenge_method != "S256" or computed != grant.code_challenge:
                    return token_error("invalid_grant", "AADSTS501481: PKCE verifier mismatch.")
            return jsonify(
                {
                    "token_type": "Bearer",
                    "scope": grant.scope,
                    "expires_in": 3600,
                    "ext_expires_in": 3600,
                    "access_token": secrets.token_urlsafe(40),
                    "id_token": provider._id_token(grant, client_id),
                }
            )

        @app.route("/<tenant>/oauth2/v2.0/logout", methods=["GET", "POST"])
        def logout(tenant: str) -> Any:
            back = request.values.get("post_logout_redirect_uri")
            if back:
                return redirect(back)
            return page("Signed out", "<h1>You signed out of your account</h1>")

        @app.get("/oidc/userinfo")
        def userinfo() -> Any:
            return token_error("invalid_token", "Not used by these tests.", 401)

        def sign_in_page(params: dict[str, str], error: str = "") -> str:
            hidden = "".join(
                f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                for k, v in params.items()
                if k not in ("username", "action")
            )
            hint = escape(params.get("login_hint", ""))
            problem = f'<p role="alert">{escape(error)}</p>' if error else ""
            body = (
                "<h1>Sign in</h1>"
                f"{problem}"
                '<form method="post">'
                f"{hidden}"
                '<label for="username">Email, phone, or Skype</label> '
                f'<input id="username" name="username" value="{hint}" autocomplete="username">'
                '<button type="submit" name="action" value="sign_in">Sign in</button> '
                '<button type="submit" name="action" value="decline">Decline</button>'
                "</form>"
            )
            return page("Sign in to your account", body)

        return app


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title></head><body><main>{body}</main></body></html>"
    )


def redirect_back(redirect_uri: str, answer: dict[str, str], state: str | None) -> Any:
    if state is not None:
        answer = {**answer, "state": state}
    separator = "&" if "?" in redirect_uri else "?"
    return redirect(f"{redirect_uri}{separator}{urlencode(answer)}", code=302)


def token_error(error: str, description: str, status: int = 400) -> Any:
    return jsonify({"error": error, "error_description": description}), status
