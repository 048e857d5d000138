"""Cached user renderings: a user read after any change anywhere shows that change.

A user's default rendering is kept encoded (scim.RenderedUsers) with the inputs it was made
from: the user's version, the base URL, their groups and their manager's name. These tests
read a user (filling the cache), change one input by another request, and read again.
"""

from __future__ import annotations

import json

import pytest

import auth
from app import create_app
from schemas import CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_USER_URN, PATCH_OP_URN
from scim import RenderedUsers


def make_client(tmp_path, public_url: str | None):
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "PUBLIC_URL": public_url})
    store = app.extensions["roster.store"]
    directory = store.list_directories()[0]
    _key, token = auth.create_directory_key(store, directory["id"], "Entra key", "test")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client, store


@pytest.fixture
def scim(tmp_path):
    client, store = make_client(tmp_path, "https://roster.example")
    yield client
    store.close()


def send(client, method: str, path: str, body: dict | None = None):
    response = client.open(
        path,
        method=method,
        data=json.dumps(body) if body is not None else None,
        content_type="application/scim+json",
    )
    assert response.status_code < 300, response.get_data(as_text=True)
    return response.get_json(silent=True)


def create_user(scim, name: str, manager_id: str | None = None) -> dict:
    body = {"schemas": [CORE_USER_URN], "userName": f"{name}@c.example", "displayName": name}
    if manager_id:
        body["schemas"].append(ENTERPRISE_USER_URN)
        body[ENTERPRISE_USER_URN] = {"manager": {"value": manager_id}}
    return send(scim, "POST", "/v2/Users", body)


def patch_user(scim, user_id: str, path: str, value) -> dict:
    operation = {"op": "replace", "path": path, "value": value}
    return send(
        scim,
        "PATCH",
        f"/v2/Users/{user_id}",
        {"schemas": [PATCH_OP_URN], "Operations": [operation]},
    )


def read_both_ways(scim, user_id: str) -> tuple[dict, dict]:
    """The user by id and as found by a filter (two cached paths)."""
    by_id = send(scim, "GET", f"/v2/Users/{user_id}")
    listed = send(scim, "GET", f'/v2/Users?filter=id eq "{user_id}"')["Resources"]
    assert len(listed) == 1
    return by_id, listed[0]


def manager_name_seen(scim, user_id: str) -> list:
    return [
        user.get(ENTERPRISE_USER_URN, {}).get("manager", {}).get("displayName")
        for user in read_both_ways(scim, user_id)
    ]


def test_a_managers_new_name_shows_in_a_cached_report(scim):
    manager = create_user(scim, "Ana")
    report = create_user(scim, "Ben", manager["id"])
    assert manager_name_seen(scim, report["id"]) == ["Ana", "Ana"]
    patch_user(scim, manager["id"], "displayName", "Ana Berg")
    assert manager_name_seen(scim, report["id"]) == ["Ana Berg", "Ana Berg"]


def test_a_deleted_manager_leaves_a_cached_report(scim):
    manager = create_user(scim, "Ana")
    report = create_user(scim, "Ben", manager["id"])
    read_both_ways(scim, report["id"])
    send(scim, "DELETE", f"/v2/Users/{manager['id']}")
    for user in read_both_ways(scim, report["id"]):
        assert "manager" not in user.get(ENTERPRISE_USER_URN, {})


def test_a_change_to_the_user_shows_at_once(scim):
    user = create_user(scim, "Ana")
    read_both_ways(scim, user["id"])
    patched = patch_user(scim, user["id"], "title", "Engineer")
    by_id, listed = read_both_ways(scim, user["id"])
    assert by_id["title"] == listed["title"] == "Engineer"
    assert by_id["meta"]["version"] == listed["meta"]["version"] == patched["meta"]["version"]


def groups_seen(scim, user_id: str) -> list[list[str]]:
    return [
        [g["display"] for g in user.get("groups", [])] for user in read_both_ways(scim, user_id)
    ]


def test_joining_renaming_and_deleting_a_group_show_in_a_cached_user(scim):
    user = create_user(scim, "Ana")
    assert groups_seen(scim, user["id"]) == [[], []]
    group = send(scim, "POST", "/v2/Groups", {"schemas": [CORE_GROUP_URN], "displayName": "Sales"})
    add = {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
    send(
        scim, "PATCH", f"/v2/Groups/{group['id']}", {"schemas": [PATCH_OP_URN], "Operations": [add]}
    )
    assert groups_seen(scim, user["id"]) == [["Sales"], ["Sales"]]
    rename = {"op": "replace", "path": "displayName", "value": "Field Sales"}
    send(
        scim,
        "PATCH",
        f"/v2/Groups/{group['id']}",
        {"schemas": [PATCH_OP_URN], "Operations": [rename]},
    )
    assert groups_seen(scim, user["id"]) == [["Field Sales"], ["Field Sales"]]
    send(scim, "DELETE", f"/v2/Groups/{group['id']}")
    assert groups_seen(scim, user["id"]) == [[], []]


def test_the_cached_rendering_equals_the_projected_one(scim):
    manager = create_user(scim, "Ana")
    user = create_user(scim, "Ben", manager["id"])
    cached = send(scim, "GET", f"/v2/Users/{user['id']}")
    # An excluded name the schema does not know changes nothing but takes the uncached path.
    projected = send(scim, "GET", f"/v2/Users/{user['id']}?excludedAttributes=nickName")
    assert cached == projected
    assert cached[ENTERPRISE_USER_URN]["manager"]["displayName"] == "Ana"


def test_locations_follow_the_host_a_request_names(tmp_path):
    client, store = make_client(tmp_path, None)
    try:
        user = create_user(client, "Ana")
        locations = []
        for host in ("a.example", "b.example", "a.example"):
            response = client.get(f"/v2/Users/{user['id']}", headers={"Host": host})
            locations.append(response.get_json()["meta"]["location"])
        assert locations == [
            f"http://a.example/v2/Users/{user['id']}",
            f"http://b.example/v2/Users/{user['id']}",
            f"http://a.example/v2/Users/{user['id']}",
        ]
    finally:
        store.close()


def test_a_start_index_beyond_64_bits_is_echoed(scim):
    create_user(scim, "Ana")
    huge = 10**30
    body = send(scim, "GET", f"/v2/Users?startIndex={huge}")
    assert (body["startIndex"], body["totalResults"], body.get("Resources", [])) == (huge, 1, [])


def test_the_cache_serves_only_the_key_it_was_given_and_stays_bounded():
    cache = RenderedUsers(limit=10)
    cache.put("u1", ("v1",), b"{}")
    assert cache.get("u1", ("v1",)) == b"{}"
    assert cache.get("u1", ("v2",)) is None
    for number in range(2, 30):
        cache.put(f"u{number}", ("v1",), b"[]")
    assert cache.get("u29", ("v1",)) == b"[]"
    assert cache.get("u1", ("v1",)) is None  # the oldest went first
    assert sum(cache.get(f"u{n}", ("v1",)) is not None for n in range(1, 30)) <= 10
