"""The limit: a bare Flask app that answers Roster's SCIM routes with canned responses.

It checks nothing (no key, no body, no filter) and stores nothing, so its throughput on waitress
is the most any Flask app on this machine can do for the same requests and response sizes. Roster
is measured as a fraction of it. Served exactly like Roster:

    python -m waitress --listen=127.0.0.1:PORT --threads=4 --call bench.limit_app:create_limit_app
"""

from __future__ import annotations

import json
from functools import lru_cache

from flask import Flask, Response, request

from bench import entra

USER_ID = "2819c223-7f76-453a-919d-413861904646"
GROUP_ID = "e9e30dba-f08f-4109-8486-d5c6a331660a"
MANAGER_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
BASE = "http://127.0.0.1/v2"
DEFAULT_PAGE_SIZE = 100


def canned_user(index: int) -> dict:
    """A user as Roster renders it: the Entra body plus id, meta and the manager's $ref."""
    user = json.loads(entra.user_body(index, MANAGER_ID))
    user.pop("roles")
    user["id"] = USER_ID
    user["meta"] = {
        "resourceType": "User",
        "created": "2025-11-26T23:58:00.000Z",
        "lastModified": "2025-11-26T23:58:00.000Z",
        "version": 'W/"3694e05e9dff591e4fa2"',
        "location": f"{BASE}/Users/{USER_ID}",
    }
    manager = user[entra.ENTERPRISE_USER]["manager"]
    manager.update({"$ref": f"{BASE}/Users/{MANAGER_ID}", "displayName": "Ana Berg"})
    return user


def scim_bytes(body: dict) -> bytes:
    return json.dumps(body).encode()


USER = scim_bytes(canned_user(1))
GROUP = scim_bytes(
    {
        "schemas": [entra.CORE_GROUP],
        "id": GROUP_ID,
        "displayName": entra.group_name(1),
        "meta": {"resourceType": "Group", "location": f"{BASE}/Groups/{GROUP_ID}"},
    }
)
EMPTY_LIST = scim_bytes(
    {"schemas": [entra.LIST_RESPONSE], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0}
)


@lru_cache(maxsize=16)
def user_list(count: int) -> bytes:
    """A ListResponse with ``count`` users, rendered once per size."""
    resources = [canned_user(i) for i in range(count)]
    return scim_bytes(
        {
            "schemas": [entra.LIST_RESPONSE],
            "totalResults": 100_000,
            "startIndex": 1,
            "itemsPerPage": count,
            "Resources": resources,
        }
    )


def scim(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=entra.SCIM_JSON)


def list_users() -> Response:
    """A filter finds one user; a page holds ``count`` users (Roster's default is 100)."""
    count = request.args.get("count")
    if count is not None:
        return scim(user_list(min(int(count), 1000)))
    return scim(user_list(1 if "filter" in request.args else DEFAULT_PAGE_SIZE))


def create_limit_app() -> Flask:
    """The factory waitress calls; routes mirror Roster's /v2 Users and Groups endpoints."""
    app = Flask(__name__)
    app.add_url_rule("/v2/Users", "list_users", list_users, methods=["GET"])
    app.add_url_rule("/v2/Users", "create_user", lambda: scim(USER, 201), methods=["POST"])
    app.add_url_rule("/v2/Users/<user_id>", "get_user", lambda user_id: scim(USER))
    app.add_url_rule(
        "/v2/Users/<user_id>", "change_user", lambda user_id: scim(USER), methods=["PATCH", "PUT"]
    )
    app.add_url_rule(
        "/v2/Users/<user_id>",
        "delete_user",
        lambda user_id: Response(status=204),
        methods=["DELETE"],
    )
    app.add_url_rule("/v2/Groups", "list_groups", lambda: scim(EMPTY_LIST), methods=["GET"])
    app.add_url_rule("/v2/Groups", "create_group", lambda: scim(GROUP, 201), methods=["POST"])
    # Roster's big-group GET is sent with excludedAttributes=members: the canned group has none.
    app.add_url_rule("/v2/Groups/<group_id>", "get_group", lambda group_id: scim(GROUP))
    app.add_url_rule(
        "/v2/Groups/<group_id>",
        "patch_group",
        lambda group_id: Response(status=204),
        methods=["PATCH"],
    )
    app.add_url_rule(
        "/v2/ServiceProviderConfig", "service_provider_config", lambda: scim(b'{"schemas": []}')
    )
    return app
