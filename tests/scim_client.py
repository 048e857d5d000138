"""Helpers the end-to-end tests share: a session that talks like Entra, and SCIM checks."""

from __future__ import annotations

import uuid

import requests

from .conftest import LiveServer

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_JSON = "application/scim+json"


def open_session(server: LiveServer, token: str) -> requests.Session:
    """An HTTP session sending what Entra sends: a bearer token and SCIM JSON bodies."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.headers["Content-Type"] = f"{SCIM_JSON}; charset=utf-8"
    session.base = f"{server.url}/v2"
    return session


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@contoso.example"


def get_user(session: requests.Session, user_id: str) -> dict:
    response = session.get(f"{session.base}/Users/{user_id}")
    assert response.status_code == 200, response.text
    return response.json()


def assert_scim_error(response: requests.Response, status: int, scim_type: str | None = None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    body = response.json()
    assert ERROR in body["schemas"]
    assert body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
