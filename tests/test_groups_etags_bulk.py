"""Groups, ETags and Bulk, end to end, against a real waitress server.

Groups follow Microsoft Entra ID's group cycle (shared/reference/entra-scim.md §2, §3.6-3.7):
probe a random displayName, create with no members, read back with ``excludedAttributes=members``,
rename, add members in one ``Add`` op, remove them by value list and by value filter, delete.
ETags follow RFC 7644 §3.14 (``If-Match`` / ``If-None-Match``), Bulk RFC 7644 §3.7. Requests go
over HTTP on 127.0.0.1; nothing is mocked.

Most tests share one server (module scope) and make their own uniquely named users and groups;
the restart test gets a fresh one from the ``live_server`` fixture.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote_plus

import pytest
import requests

from .conftest import LiveServer, create_key_with_cli, run_cli
from .scim_client import assert_scim_error, get_user, open_session, unique_name

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
MICROSOFT_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_JSON = "application/scim+json"
NO_MEMBERS = "excludedAttributes=members"


# -- helpers ------------------------------------------------------------------------------------


def unique_group_name(prefix: str = "Team") -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


def entra_user(user_name: str | None = None, **overrides) -> dict:
    """A POST /Users body in the shape of Entra's tutorial."""
    user_name = user_name or unique_name()
    body = {
        "schemas": [CORE_USER, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "displayName": f"Person {user_name.split('@')[0]}",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "name": {"givenName": "Ana", "familyName": "Berg"},
    }
    body.update(overrides)
    return body


def create_user(session: requests.Session, user_name: str | None = None, **overrides) -> dict:
    response = session.post(f"{session.base}/Users", json=entra_user(user_name, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


def entra_group(display_name: str | None = None, members: list[str] = (), **overrides) -> dict:
    """A POST /Groups body as Entra sends it: both schema URNs, objectId as externalId."""
    body = {
        "schemas": [CORE_GROUP, MICROSOFT_GROUP],
        "externalId": str(uuid.uuid4()),
        "displayName": display_name or unique_group_name(),
        "members": [{"value": member} for member in members],
    }
    if not members:
        del body["members"]
    body.update(overrides)
    return body


def create_group(session: requests.Session, display_name: str | None = None, members=()) -> dict:
    response = session.post(f"{session.base}/Groups", json=entra_group(display_name, members))
    assert response.status_code == 201, response.text
    return response.json()


def get_group(session: requests.Session, group_id: str, query: str = "") -> dict:
    response = session.get(f"{session.base}/Groups/{group_id}{'?' + query if query else ''}")
    assert response.status_code == 200, response.text
    return response.json()


def patch(
    session: requests.Session, path: str, *operations: dict, query: str = "", headers=None
) -> requests.Response:
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    url = f"{session.base}{path}{'?' + query if query else ''}"
    return session.patch(url, json=body, headers=headers)


def patch_group(session, group_id: str, *operations: dict) -> dict:
    """Entra's group PATCH, answered 204 with the new ETag; the group as a GET then shows it."""
    response = patch(session, f"/Groups/{group_id}", *operations)
    assert response.status_code == 204, response.text
    assert response.content == b""
    group = get_group(session, group_id)
    assert response.headers["ETag"] == group["meta"]["version"]
    return group


def add_members(session, group_id: str, *user_ids: str) -> dict:
    """Entra's add: one ``Add`` op carrying every new member, ``$ref`` null."""
    value = [{"$ref": None, "value": user_id} for user_id in user_ids]
    return patch_group(session, group_id, {"op": "Add", "path": "members", "value": value})


def member_ids(group: dict) -> list[str]:
    return [member["value"] for member in group.get("members", [])]


def find(session: requests.Session, endpoint: str, filter_text: str, extra: str = "") -> dict:
    """GET with the filter form-encoded as Entra does: ``displayName+eq+%22...%22``."""
    url = (
        f"{session.base}/{endpoint}?filter={quote_plus(filter_text)}{'&' + extra if extra else ''}"
    )
    response = session.get(url)
    assert response.status_code == 200, response.text
    return response.json()


def user_name_count(session: requests.Session, user_name: str) -> int:
    return find(session, "Users", f'userName eq "{user_name}"')["totalResults"]


def bulk(session: requests.Session, operations: list[dict], **extra) -> requests.Response:
    body = {"schemas": [BULK_REQUEST], "Operations": operations, **extra}
    return session.post(f"{session.base}/Bulk", json=body)


def bulk_ok(session: requests.Session, operations: list[dict], **extra) -> list[dict]:
    """Send a BulkRequest that must be answered 200; returns its results."""
    response = bulk(session, operations, **extra)
    assert response.status_code == 200, f"Bulk not served as RFC 7644 §3.7: {response.text}"
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    body = response.json()
    assert body["schemas"] == [BULK_RESPONSE]
    return body["Operations"]


def bulk_post_user(bulk_id: str, user_name: str | None = None, **overrides) -> dict:
    data = entra_user(user_name, **overrides)
    return {"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": data}


def id_from(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory) -> Iterator[LiveServer]:
    """One server for the module, with keys for two directories made before it starts."""
    data_dir = tmp_path_factory.mktemp("groups") / "data"
    data_dir.mkdir()
    result = run_cli(data_dir, "directory", "create", "Other")
    assert result.returncode == 0, result.stderr
    server = LiveServer(data_dir)
    server.tokens = {d: create_key_with_cli(data_dir, d) for d in ("Default", "Other")}
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def entra(shared_server) -> Iterator[requests.Session]:
    """Entra's provisioning job, holding a key of the Default directory."""
    session = open_session(shared_server, shared_server.tokens["Default"])
    yield session
    session.close()


@pytest.fixture(scope="module")
def other_directory(shared_server) -> Iterator[requests.Session]:
    """A second tenant, holding a key of another directory on the same server."""
    session = open_session(shared_server, shared_server.tokens["Other"])
    yield session
    session.close()


@pytest.fixture(scope="module")
def service_provider_config(entra) -> dict:
    response = entra.get(f"{entra.base}/ServiceProviderConfig")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def three_users(entra) -> list[dict]:
    return [create_user(entra) for _ in range(3)]


# -- 1. Entra's group lifecycle -----------------------------------------------------------------


def test_test_connection_finds_no_group_for_a_random_guid(entra):
    url = (
        f"{entra.base}/Groups?excludedAttributes=members&filter=displayName+eq+%22{uuid.uuid4()}%22"
    )
    response = entra.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    body = response.json()
    assert body["schemas"] == [LIST_RESPONSE]
    assert body["totalResults"] == 0
    assert body.get("Resources", []) == []
    assert body["startIndex"] == 1


def test_create_group_with_no_members_answers_201_with_location_and_etag(entra):
    body = entra_group()
    response = entra.post(f"{entra.base}/Groups", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    group = response.json()
    assert group["id"]
    assert group["displayName"] == body["displayName"]
    assert group["externalId"] == body["externalId"]
    assert CORE_GROUP in group["schemas"]
    assert group.get("members", []) == []
    meta = group["meta"]
    assert meta["resourceType"] == "Group"
    assert meta["created"] and meta["lastModified"] and meta["version"]
    assert meta["location"].endswith(f"/v2/Groups/{group['id']}")
    assert response.headers["Location"] == meta["location"]
    assert response.headers["ETag"] == meta["version"]


def test_get_group_by_display_name_in_other_case_without_members(entra):
    user = create_user(entra)
    group = create_group(entra, unique_group_name("Sales"))
    add_members(entra, group["id"], user["id"])

    listing = find(entra, "Groups", f'displayName eq "{group["displayName"].upper()}"', NO_MEMBERS)
    assert listing["totalResults"] == 1
    [found] = listing["Resources"]
    assert found["id"] == group["id"]
    assert found["displayName"] == group["displayName"]
    assert "members" not in found
    assert "members" not in get_group(entra, group["id"], NO_MEMBERS)
    assert member_ids(get_group(entra, group["id"])) == [user["id"]]


def test_rename_with_replace_display_name(entra):
    group = create_group(entra)
    new_name = unique_group_name("Renamed")
    renamed = patch_group(
        entra, group["id"], {"op": "Replace", "path": "displayName", "value": new_name}
    )
    assert renamed["displayName"] == new_name
    assert get_group(entra, group["id"])["displayName"] == new_name
    assert find(entra, "Groups", f'displayName eq "{new_name}"')["totalResults"] == 1
    assert find(entra, "Groups", f'displayName eq "{group["displayName"]}"')["totalResults"] == 0


def test_add_several_members_in_one_op(entra, three_users):
    group = create_group(entra)
    add_members(entra, group["id"], *(user["id"] for user in three_users))
    members = get_group(entra, group["id"])["members"]
    assert [m["value"] for m in members] == [user["id"] for user in three_users]
    for member, user in zip(members, three_users, strict=True):
        assert member["$ref"] == user["meta"]["location"]
        assert member["display"] == user["displayName"]


def test_re_adding_an_existing_member_is_a_no_op(entra, three_users):
    first, second, _ = three_users
    group = create_group(entra)
    add_members(entra, group["id"], first["id"])
    add_members(entra, group["id"], first["id"], second["id"])
    assert member_ids(get_group(entra, group["id"])) == [first["id"], second["id"]]


def test_remove_by_value_list_removes_only_the_listed_member(entra, three_users):
    first, second, third = (user["id"] for user in three_users)
    group = create_group(entra, members=[first, second, third])
    patch_group(
        entra,
        group["id"],
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": second}]},
    )
    assert member_ids(get_group(entra, group["id"])) == [first, third]


def test_remove_by_value_filter(entra, three_users):
    first, second, third = (user["id"] for user in three_users)
    group = create_group(entra, members=[first, second, third])
    patch_group(entra, group["id"], {"op": "remove", "path": f'members[value eq "{first}"]'})
    assert member_ids(get_group(entra, group["id"])) == [second, third]


def test_remove_members_without_value_empties_the_group(entra, three_users):
    group = create_group(entra, members=[user["id"] for user in three_users])
    patch_group(entra, group["id"], {"op": "remove", "path": "members"})
    assert get_group(entra, group["id"]).get("members", []) == []
    for user in three_users:
        assert get_user(entra, user["id"])  # the users themselves stay


def test_patch_with_excluded_members_answers_200_without_members(entra, three_users):
    group = create_group(entra, members=[three_users[0]["id"]])
    response = patch(
        entra,
        f"/Groups/{group['id']}",
        {"op": "Add", "path": "members", "value": [{"value": three_users[1]["id"]}]},
        query=NO_MEMBERS,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "members" not in body
    assert body["id"] == group["id"]
    assert body["meta"]["version"] == response.headers["ETag"]
    assert len(member_ids(get_group(entra, group["id"]))) == 2


def test_patch_naming_attributes_answers_200_with_just_those(entra, three_users):
    group = create_group(entra, members=[three_users[0]["id"]])
    response = patch(
        entra,
        f"/Groups/{group['id']}",
        {"op": "Add", "path": "members", "value": [{"value": three_users[1]["id"]}]},
        query="attributes=displayName",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["displayName"] == group["displayName"]
    assert "members" not in body and body["id"] == group["id"]
    assert response.headers["ETag"] == get_group(entra, group["id"])["meta"]["version"]


def test_delete_group_answers_204_and_then_404(entra):
    group = create_group(entra)
    response = entra.delete(f"{entra.base}/Groups/{group['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_scim_error(entra.get(f"{entra.base}/Groups/{group['id']}"), 404)
    assert find(entra, "Groups", f'displayName eq "{group["displayName"]}"')["totalResults"] == 0


# -- 2. Group rules -----------------------------------------------------------------------------


def test_duplicate_display_name_in_other_case_is_409_uniqueness(entra):
    group = create_group(entra, unique_group_name("Finance"))
    response = entra.post(f"{entra.base}/Groups", json=entra_group(group["displayName"].lower()))
    assert_scim_error(response, 409, "uniqueness")
    listing = find(entra, "Groups", f'displayName eq "{group["displayName"]}"')
    assert [g["id"] for g in listing["Resources"]] == [group["id"]]


def test_rename_to_another_groups_name_in_other_case_is_409_and_changes_nothing(entra):
    taken = create_group(entra, unique_group_name("Legal"))
    group = create_group(entra)
    response = patch(
        entra,
        f"/Groups/{group['id']}",
        {"op": "Replace", "path": "displayName", "value": taken["displayName"].upper()},
    )
    assert_scim_error(response, 409, "uniqueness")
    after = get_group(entra, group["id"])
    assert after["displayName"] == group["displayName"]
    assert after["meta"]["version"] == group["meta"]["version"]


def test_unknown_member_id_is_skipped_and_the_others_kept(entra, three_users):
    stranger = str(uuid.uuid4())
    ids = [three_users[0]["id"], stranger, three_users[1]["id"]]
    response = entra.post(f"{entra.base}/Groups", json=entra_group(members=ids))
    assert response.status_code == 201, response.text
    group_id = response.json()["id"]
    assert member_ids(get_group(entra, group_id)) == [three_users[0]["id"], three_users[1]["id"]]

    add_members(entra, group_id, str(uuid.uuid4()), three_users[2]["id"])
    assert member_ids(get_group(entra, group_id)) == [user["id"] for user in three_users]


def test_other_directorys_user_is_not_stored_as_member(entra, other_directory):
    outsider = create_user(other_directory)
    insider = create_user(entra)
    group = create_group(entra, members=[outsider["id"], insider["id"]])
    assert member_ids(get_group(entra, group["id"])) == [insider["id"]]
    assert "groups" not in get_user(other_directory, outsider["id"])


def test_users_groups_attribute_lists_their_groups(entra):
    user = create_user(entra)
    red = create_group(entra, unique_group_name("Red"), members=[user["id"]])
    blue = create_group(entra, unique_group_name("Blue"), members=[user["id"]])
    groups = get_user(entra, user["id"])["groups"]
    assert sorted((g["value"], g["display"]) for g in groups) == sorted(
        [(red["id"], red["displayName"]), (blue["id"], blue["displayName"])]
    )
    assert all(g["$ref"].endswith(f"/v2/Groups/{g['value']}") for g in groups)


def test_deleting_a_user_removes_them_from_every_group(entra, three_users):
    leaver, stayer, _ = three_users
    groups = [create_group(entra, members=[leaver["id"], stayer["id"]]) for _ in range(2)]
    assert entra.delete(f"{entra.base}/Users/{leaver['id']}").status_code == 204
    for group in groups:
        assert member_ids(get_group(entra, group["id"])) == [stayer["id"]]
    listing = find(entra, "Groups", f'members[value eq "{leaver["id"]}"]')
    assert listing["totalResults"] == 0


def test_deleting_a_group_leaves_its_users(entra, three_users):
    group = create_group(entra, members=[user["id"] for user in three_users])
    assert entra.delete(f"{entra.base}/Groups/{group['id']}").status_code == 204
    for user in three_users:
        after = get_user(entra, user["id"])
        assert "groups" not in after
        assert after["userName"] == user["userName"]


def test_deactivated_user_stays_a_member(entra):
    user = create_user(entra)
    group = create_group(entra, members=[user["id"]])
    response = patch(
        entra, f"/Users/{user['id']}", {"op": "Replace", "path": "active", "value": "False"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    assert member_ids(get_group(entra, group["id"])) == [user["id"]]
    assert [g["value"] for g in get_user(entra, user["id"])["groups"]] == [group["id"]]


def test_other_directory_key_sees_404_for_the_group(entra, other_directory):
    user = create_user(entra)
    group = create_group(entra, members=[user["id"]])
    url = f"{other_directory.base}/Groups/{group['id']}"
    assert_scim_error(other_directory.get(url), 404)
    rename = {"op": "Replace", "path": "displayName", "value": unique_group_name()}
    assert_scim_error(patch(other_directory, f"/Groups/{group['id']}", rename), 404)
    assert_scim_error(other_directory.put(url, json=entra_group()), 404)
    assert_scim_error(other_directory.delete(url), 404)
    listing = find(other_directory, "Groups", f'displayName eq "{group["displayName"]}"')
    assert listing["totalResults"] == 0
    assert member_ids(get_group(entra, group["id"])) == [user["id"]]


def test_put_replaces_display_name_and_the_whole_member_set(entra, three_users):
    first, second, third = three_users
    group = create_group(entra, members=[first["id"], second["id"]])
    new_name = unique_group_name("Replaced")
    body = entra_group(new_name, members=[third["id"]], externalId=group["externalId"])
    response = entra.put(f"{entra.base}/Groups/{group['id']}", json=body)
    assert response.status_code == 200, response.text
    replaced = response.json()
    assert replaced["displayName"] == new_name
    assert member_ids(replaced) == [third["id"]]
    stored = get_group(entra, group["id"])
    assert stored["displayName"] == new_name
    assert member_ids(stored) == [third["id"]]
    assert "groups" not in get_user(entra, first["id"])


def test_put_accepts_members_as_a_get_returned_them(entra, three_users):
    """A client that reads the group and PUTs it back sends value, $ref, display and type."""
    group = create_group(entra, members=[three_users[0]["id"]])
    current = get_group(entra, group["id"])
    current["members"].append({"value": three_users[1]["id"]})
    current["displayName"] = unique_group_name("Round trip")
    response = entra.put(f"{entra.base}/Groups/{group['id']}", json=current)
    assert response.status_code == 200, response.text
    stored = get_group(entra, group["id"])
    assert stored["displayName"] == current["displayName"]
    assert member_ids(stored) == [three_users[0]["id"], three_users[1]["id"]]


# -- 3. ETags (RFC 7644 §3.14) ------------------------------------------------------------------


def test_etag_header_equals_meta_version_on_every_user_response(entra):
    response = entra.post(f"{entra.base}/Users", json=entra_user())
    assert response.status_code == 201
    created = response.json()
    assert response.headers["ETag"] == created["meta"]["version"]
    url = f"{entra.base}/Users/{created['id']}"

    got = entra.get(url)
    assert got.headers["ETag"] == got.json()["meta"]["version"] == created["meta"]["version"]
    put = entra.put(url, json=entra_user(created["userName"], title="Engineer"))
    assert put.status_code == 200, put.text
    assert put.headers["ETag"] == put.json()["meta"]["version"] != created["meta"]["version"]
    patched = patch(
        entra, f"/Users/{created['id']}", {"op": "Replace", "path": "title", "value": "Lead"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.headers["ETag"] == patched.json()["meta"]["version"] != put.headers["ETag"]


def test_etag_header_equals_meta_version_on_every_group_response(entra):
    user = create_user(entra)
    response = entra.post(f"{entra.base}/Groups", json=entra_group())
    created = response.json()
    assert response.headers["ETag"] == created["meta"]["version"]
    url = f"{entra.base}/Groups/{created['id']}"

    got = entra.get(url)
    assert got.headers["ETag"] == got.json()["meta"]["version"] == created["meta"]["version"]
    put = entra.put(url, json=entra_group(unique_group_name()))
    assert put.status_code == 200, put.text
    assert put.headers["ETag"] == put.json()["meta"]["version"] != created["meta"]["version"]
    patched = patch(
        entra,
        f"/Groups/{created['id']}",
        {"op": "Add", "path": "members", "value": [{"value": user["id"]}]},
    )
    assert patched.status_code == 204, patched.text
    # a membership change is a change of the group: its version moves
    assert patched.headers["ETag"] != put.headers["ETag"]
    assert entra.get(url).headers["ETag"] == patched.headers["ETag"]


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
def test_if_none_match_current_version_is_304(entra, endpoint):
    resource = create_user(entra) if endpoint == "Users" else create_group(entra)
    url = f"{entra.base}/{endpoint}/{resource['id']}"
    response = entra.get(url, headers={"If-None-Match": resource["meta"]["version"]})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == resource["meta"]["version"]


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
def test_if_none_match_other_version_is_200(entra, endpoint):
    resource = create_user(entra) if endpoint == "Users" else create_group(entra)
    url = f"{entra.base}/{endpoint}/{resource['id']}"
    response = entra.get(url, headers={"If-None-Match": 'W/"not-the-current-version"'})
    assert response.status_code == 200
    assert response.json() == resource


def current_version(entra: requests.Session, endpoint: str, resource_id: str) -> str:
    """The version a GET shows, checked against its ETag header."""
    response = entra.get(f"{entra.base}/{endpoint}/{resource_id}")
    assert response.headers["ETag"] == response.json()["meta"]["version"]
    return response.json()["meta"]["version"]


def is_cached(entra: requests.Session, endpoint: str, resource_id: str, version: str) -> bool:
    url = f"{entra.base}/{endpoint}/{resource_id}"
    return entra.get(url, headers={"If-None-Match": version}).status_code == 304


def rename_user(entra: requests.Session, user_id: str, display_name: str) -> None:
    rename = {"op": "Replace", "path": "displayName", "value": display_name}
    response = patch(entra, f"/Users/{user_id}", rename)
    assert response.status_code == 200, response.text


def test_a_users_version_follows_their_groups_and_the_groups_names(entra):
    """A user shows their groups, so joining, leaving or a group's rename is a new version:
    a client's cached copy (If-None-Match) must not keep the old groups."""
    user = create_user(entra)
    alone = current_version(entra, "Users", user["id"])
    group = create_group(entra, members=[user["id"]])
    member = current_version(entra, "Users", user["id"])
    assert member != alone
    assert not is_cached(entra, "Users", user["id"], alone)
    assert is_cached(entra, "Users", user["id"], member)

    patch_group(entra, group["id"], {"op": "Replace", "path": "displayName", "value": "Renamed"})
    renamed = current_version(entra, "Users", user["id"])
    assert renamed not in (alone, member)
    listed = find(entra, "Users", f'id eq "{user["id"]}"')["Resources"][0]
    assert listed["meta"]["version"] == renamed

    patch_group(entra, group["id"], {"op": "Remove", "path": "members"})
    assert current_version(entra, "Users", user["id"]) == alone  # the same representation


def test_a_users_version_follows_their_managers_name(entra):
    manager = create_user(entra)
    manager_ref = {"value": manager["id"]}
    user = create_user(entra, **{ENTERPRISE: {"manager": manager_ref}})
    before = current_version(entra, "Users", user["id"])
    rename_user(entra, manager["id"], "Bo")
    after = current_version(entra, "Users", user["id"])
    assert after != before
    assert (
        entra.get(f"{entra.base}/Users/{user['id']}").json()[ENTERPRISE]["manager"]["displayName"]
        == "Bo"
    )

    change = {"op": "Replace", "path": "title", "value": "Lead"}
    stale = patch(entra, f"/Users/{user['id']}", change, headers={"If-Match": before})
    assert_scim_error(stale, 412)
    current = patch(entra, f"/Users/{user['id']}", change, headers={"If-Match": after})
    assert current.status_code == 200, current.text
    assert current.headers["ETag"] == current.json()["meta"]["version"] != after


def test_a_groups_version_follows_its_members_names(entra):
    user = create_user(entra)
    group = create_group(entra, members=[user["id"]])
    before = current_version(entra, "Groups", group["id"])
    rename_user(entra, user["id"], "Cy")
    after = current_version(entra, "Groups", group["id"])
    assert after != before
    assert not is_cached(entra, "Groups", group["id"], before)
    assert get_group(entra, group["id"])["members"][0]["display"] == "Cy"
    title = {"op": "Replace", "path": "title", "value": "Only the title"}
    assert patch(entra, f"/Users/{user['id']}", title).status_code == 200
    assert current_version(entra, "Groups", group["id"]) == after  # names unchanged


def stale_resource(entra: requests.Session, endpoint: str) -> tuple[str, dict]:
    """A resource changed once since its first version: returns (stale version, current)."""
    if endpoint == "Users":
        resource = create_user(entra)
        change = {"op": "Replace", "path": "title", "value": "Changed"}
    else:
        resource = create_group(entra, members=[create_user(entra)["id"]])
        change = {"op": "Replace", "path": "displayName", "value": unique_group_name()}
    response = patch(entra, f"/{endpoint}/{resource['id']}", change)
    assert response.status_code == (200 if endpoint == "Users" else 204), response.text
    current = entra.get(f"{entra.base}/{endpoint}/{resource['id']}").json()
    assert current["meta"]["version"] != resource["meta"]["version"]
    return resource["meta"]["version"], current


def expected_status(endpoint: str, method: str) -> int:
    """DELETE and a group PATCH answer 204 No Content; the others 200 with the resource."""
    return 204 if method == "DELETE" or (endpoint, method) == ("Groups", "PATCH") else 200


def write_request(entra, endpoint: str, method: str, resource: dict, headers: dict):
    url = f"{entra.base}/{endpoint}/{resource['id']}"
    if method == "PUT":
        body = (
            entra_user(resource["userName"], title="Overwritten")
            if endpoint == "Users"
            else entra_group(unique_group_name("Overwritten"))
        )
        return entra.put(url, json=body, headers=headers)
    if method == "PATCH":
        attribute = "title" if endpoint == "Users" else "displayName"
        operation = {"op": "Replace", "path": attribute, "value": unique_group_name("Patched")}
        return patch(entra, f"/{endpoint}/{resource['id']}", operation, headers=headers)
    return entra.delete(url, headers=headers)


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_stale_if_match_is_412_and_changes_nothing(entra, endpoint, method):
    stale, current = stale_resource(entra, endpoint)
    response = write_request(entra, endpoint, method, current, {"If-Match": stale})
    assert_scim_error(response, 412)
    url = f"{entra.base}/{endpoint}/{current['id']}"
    after = entra.get(url)
    assert after.status_code == 200
    assert after.headers["ETag"] == current["meta"]["version"]
    assert after.json() == current


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_current_if_match_succeeds(entra, endpoint, method):
    _stale, current = stale_resource(entra, endpoint)
    response = write_request(
        entra, endpoint, method, current, {"If-Match": current["meta"]["version"]}
    )
    assert response.status_code == expected_status(endpoint, method), response.text
    after = entra.get(f"{entra.base}/{endpoint}/{current['id']}")
    if method == "DELETE":
        assert after.status_code == 404
    else:
        assert after.json()["meta"]["version"] != current["meta"]["version"]


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match_star_succeeds(entra, endpoint, method):
    _stale, current = stale_resource(entra, endpoint)
    response = write_request(entra, endpoint, method, current, {"If-Match": "*"})
    assert response.status_code == expected_status(endpoint, method), response.text


def test_versions_survive_a_restart(live_server, scim_session):
    user = create_user(scim_session)
    other = create_user(scim_session)
    group = create_group(scim_session, members=[user["id"], other["id"]])
    patch_group(
        scim_session,
        group["id"],
        {"op": "Remove", "path": "members", "value": [{"value": other["id"]}]},
    )
    before_user = get_user(scim_session, user["id"])
    before_group = get_group(scim_session, group["id"])

    live_server.stop()
    live_server.start()

    after_user = scim_session.get(f"{scim_session.base}/Users/{user['id']}")
    after_group = scim_session.get(f"{scim_session.base}/Groups/{group['id']}")
    assert after_user.json()["meta"]["version"] == before_user["meta"]["version"]
    assert after_group.json()["meta"]["version"] == before_group["meta"]["version"]
    assert after_user.headers["ETag"] == before_user["meta"]["version"]
    assert after_group.headers["ETag"] == before_group["meta"]["version"]
    assert after_user.json() == before_user
    assert after_group.json() == before_group
    cached = {"If-None-Match": before_group["meta"]["version"]}
    assert (
        scim_session.get(f"{scim_session.base}/Groups/{group['id']}", headers=cached).status_code
        == 304
    )


def test_service_provider_config_says_etag_supported(service_provider_config):
    assert service_provider_config["etag"]["supported"] is True


# -- 4. Bulk (RFC 7644 §3.7) --------------------------------------------------------------------


def test_service_provider_config_advertises_bulk(service_provider_config):
    config = service_provider_config["bulk"]
    assert config["supported"] is True
    assert isinstance(config["maxOperations"], int) and config["maxOperations"] > 0
    assert isinstance(config["maxPayloadSize"], int) and config["maxPayloadSize"] > 0


def test_bulk_creates_users_and_a_group_of_them_by_bulk_id(entra):
    names = [unique_name("bulk"), unique_name("bulk")]
    group_name = unique_group_name("Bulk")
    group_body = entra_group(group_name)
    group_body["members"] = [
        {"type": "User", "value": "bulkId:u1"},
        {"type": "User", "value": "bulkId:u2"},
    ]
    results = bulk_ok(
        entra,
        [
            bulk_post_user("u1", names[0]),
            bulk_post_user("u2", names[1]),
            {"method": "POST", "path": "/Groups", "bulkId": "g1", "data": group_body},
        ],
    )
    assert [(r["method"], r["bulkId"], r["status"]) for r in results] == [
        ("POST", "u1", "201"),
        ("POST", "u2", "201"),
        ("POST", "g1", "201"),
    ]
    users = [get_user(entra, id_from(r["location"])) for r in results[:2]]
    assert [u["userName"] for u in users] == names
    for result, user in zip(results[:2], users, strict=True):
        assert result["location"] == user["meta"]["location"]
        # Joining the group, later in the batch, changed how the user reads, and so the ETag.
        assert result["version"] != user["meta"]["version"]
    group = get_group(entra, id_from(results[2]["location"]))
    assert group["displayName"] == group_name
    assert results[2]["location"] == group["meta"]["location"]
    assert results[2]["version"] == group["meta"]["version"]
    assert member_ids(group) == [u["id"] for u in users]
    assert [g["value"] for g in users[0]["groups"]] == [group["id"]]


def test_bulk_id_in_a_later_operations_path_resolves(entra):
    user_name = unique_name("bulkpath")
    results = bulk_ok(
        entra,
        [
            bulk_post_user("u1", user_name),
            {
                "method": "PATCH",
                "path": "/Users/bulkId:u1",
                "data": {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Replace", "path": "title", "value": "Set by bulk"}],
                },
            },
        ],
    )
    assert [r["status"] for r in results] == ["201", "200"]
    user_id = id_from(results[0]["location"])
    assert results[1]["location"] == results[0]["location"]
    user = get_user(entra, user_id)
    assert user["title"] == "Set by bulk"
    assert results[1]["version"] == user["meta"]["version"]


def test_bulk_put_patch_and_delete_with_real_ids(entra):
    replaced, patched, deleted = (create_user(entra) for _ in range(3))
    group = create_group(entra)
    results = bulk_ok(
        entra,
        [
            {
                "method": "PUT",
                "path": f"/Users/{replaced['id']}",
                "data": entra_user(replaced["userName"], title="Put by bulk"),
            },
            {
                "method": "PATCH",
                "path": f"/Users/{patched['id']}",
                "data": {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
                },
            },
            {
                "method": "PATCH",
                "path": f"/Groups/{group['id']}",
                "data": {
                    "schemas": [PATCH_OP],
                    "Operations": [
                        {"op": "Add", "path": "members", "value": [{"value": patched["id"]}]}
                    ],
                },
            },
            {"method": "DELETE", "path": f"/Users/{deleted['id']}"},
        ],
    )
    assert [(r["method"], r["status"]) for r in results] == [
        ("PUT", "200"),
        ("PATCH", "200"),
        ("PATCH", "200"),
        ("DELETE", "204"),
    ]
    assert get_user(entra, replaced["id"])["title"] == "Put by bulk"
    assert get_user(entra, patched["id"])["active"] is False
    assert member_ids(get_group(entra, group["id"])) == [patched["id"]]
    assert_scim_error(entra.get(f"{entra.base}/Users/{deleted['id']}"), 404)
    assert results[0]["location"] == replaced["meta"]["location"]
    assert results[0]["version"] == get_user(entra, replaced["id"])["meta"]["version"]


def test_group_before_its_members_resolves_forward_bulk_id_references(entra):
    """RFC 7644 §3.7.2: a bulkId may be referenced before the operation that creates it."""
    group_body = entra_group(unique_group_name("Forward"))
    group_body["members"] = [{"value": "bulkId:later1"}, {"value": "bulkId:later2"}]
    results = bulk_ok(
        entra,
        [
            {"method": "POST", "path": "/Groups", "bulkId": "g", "data": group_body},
            bulk_post_user("later1"),
            bulk_post_user("later2"),
        ],
    )
    assert [(r["bulkId"], r["status"]) for r in results] == [
        ("g", "201"),
        ("later1", "201"),
        ("later2", "201"),
    ]
    group = get_group(entra, id_from(results[0]["location"]))
    assert member_ids(group) == [id_from(r["location"]) for r in results[1:]]


def test_bulk_operation_with_a_stale_version_is_412_and_changes_nothing(entra):
    stale, current = stale_resource(entra, "Users")
    results = bulk_ok(
        entra,
        [
            {
                "method": "PATCH",
                "path": f"/Users/{current['id']}",
                "version": stale,
                "data": {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Replace", "path": "title", "value": "Lost update"}],
                },
            }
        ],
    )
    assert [r["status"] for r in results] == ["412"]
    assert results[0]["response"]["status"] == "412"
    assert get_user(entra, current["id"]) == current


def third_operation_fails(entra) -> tuple[list[str], list[dict]]:
    """Four user creations whose third repeats the first userName (in another case)."""
    names = [unique_name("first"), unique_name("second"), unique_name("fourth")]
    operations = [
        bulk_post_user("a", names[0]),
        bulk_post_user("b", names[1]),
        bulk_post_user("dup", names[0].upper()),
        bulk_post_user("d", names[2]),
    ]
    return names, operations


def test_fail_on_errors_1_stops_after_the_third_operation_fails(entra):
    names, operations = third_operation_fails(entra)
    results = bulk_ok(entra, operations, failOnErrors=1)
    assert [(r["bulkId"], r["status"]) for r in results] == [
        ("a", "201"),
        ("b", "201"),
        ("dup", "409"),
    ]
    error = results[2]["response"]
    assert ERROR in error["schemas"]
    assert error["status"] == "409"
    assert error["scimType"] == "uniqueness"
    assert "location" not in results[2]
    assert user_name_count(entra, names[0]) == 1
    assert user_name_count(entra, names[1]) == 1
    assert user_name_count(entra, names[2]) == 0  # never run


def test_without_fail_on_errors_every_operation_is_answered(entra):
    names, operations = third_operation_fails(entra)
    results = bulk_ok(entra, operations)
    assert [(r["bulkId"], r["status"]) for r in results] == [
        ("a", "201"),
        ("b", "201"),
        ("dup", "409"),
        ("d", "201"),
    ]
    assert results[2]["response"]["scimType"] == "uniqueness"
    assert [user_name_count(entra, name) for name in names] == [1, 1, 1]


def test_failed_operation_leaves_nothing_half_written(entra):
    good, bad = unique_name("good"), unique_name("bad")
    results = bulk_ok(
        entra,
        [
            bulk_post_user("bad", bad, emails=[{"type": "work", "value": "not an email"}]),
            bulk_post_user("good", good),
        ],
    )
    assert [(r["bulkId"], r["status"]) for r in results] == [("bad", "400"), ("good", "201")]
    assert results[0]["response"]["status"] == "400"
    assert ERROR in results[0]["response"]["schemas"]
    assert user_name_count(entra, bad) == 0
    assert user_name_count(entra, good) == 1


def test_more_operations_than_max_operations_is_413_too_many(entra, service_provider_config):
    limit = service_provider_config["bulk"]["maxOperations"]
    user_name = unique_name("toomany")
    operations = [bulk_post_user("first", user_name)] + [
        {"method": "DELETE", "path": f"/Users/{uuid.uuid4()}"} for _ in range(limit)
    ]
    assert_scim_error(bulk(entra, operations), 413, "tooMany")
    assert user_name_count(entra, user_name) == 0


def test_body_larger_than_max_payload_size_is_413(entra, service_provider_config):
    limit = service_provider_config["bulk"]["maxPayloadSize"]
    user_name = unique_name("huge")
    operations = [bulk_post_user("huge", user_name, title="x" * limit)]
    assert len(json.dumps({"schemas": [BULK_REQUEST], "Operations": operations})) > limit
    assert_scim_error(bulk(entra, operations), 413)
    assert user_name_count(entra, user_name) == 0


# -- 5. Large groups (a guard, not a timing) ----------------------------------------------------


def bulk_create_users(session, count: int, config: dict) -> list[str]:
    """Create ``count`` users through Bulk, in batches within the advertised limits."""
    batch = max(1, min(config["maxOperations"], 250))
    ids: list[str] = []
    for start in range(0, count, batch):
        operations = [
            bulk_post_user(f"u{n}", unique_name(f"big{n}"))
            for n in range(start, min(start + batch, count))
        ]
        results = bulk_ok(session, operations, failOnErrors=1)
        assert [r["status"] for r in results] == ["201"] * len(operations)
        ids.extend(id_from(r["location"]) for r in results)
    return ids


def test_thousand_members_added_in_one_op(entra, service_provider_config):
    user_ids = bulk_create_users(entra, 1000, service_provider_config["bulk"])
    group = create_group(entra, unique_group_name("Everyone"))
    response = patch(
        entra,
        f"/Groups/{group['id']}",
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": u} for u in user_ids]},
        query=NO_MEMBERS,
    )
    assert response.status_code == 200, response.text
    assert "members" not in response.json()
    version = response.headers["ETag"]

    light = get_group(entra, group["id"], NO_MEMBERS)
    assert "members" not in light
    assert light["meta"]["version"] == version != group["meta"]["version"]
    assert light["meta"]["resourceType"] == "Group"
    assert light["meta"]["created"] == group["meta"]["created"]
    assert light["meta"]["lastModified"] >= group["meta"]["lastModified"]
    assert light["meta"]["location"] == group["meta"]["location"]

    full = get_group(entra, group["id"])
    assert len(full["members"]) == 1000
    assert member_ids(full) == user_ids
    assert full["meta"] == light["meta"]
