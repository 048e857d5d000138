"""Microsoft Entra ID's provisioning lifecycle, end to end, against a real waitress server.

Each test is one step Entra takes (shared/reference/entra-scim.md): Test Connection, create with
the 19-row mapping table, match by filter, PATCH in both job shapes, disable, manager linking,
errors, delete, paging, restart and discovery. Requests go over HTTP on 127.0.0.1, shaped exactly
as Entra sends them; nothing is mocked.

Most tests share one server (module scope) and make their own uniquely named users; the tests
that restart the server or read its log get a fresh one from the ``live_server`` fixture.
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

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_JSON = "application/scim+json"


# -- helpers ------------------------------------------------------------------------------------


def entra_user(user_name: str | None = None, **overrides) -> dict:
    """A POST /Users body in the shape of Entra's tutorial; ``enterprise=`` fills the URN."""
    user_name = user_name or unique_name()
    body = {
        "schemas": [CORE, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "displayName": "Ana Berg",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ana Berg", "familyName": "Berg", "givenName": "Ana"},
        "roles": [],
    }
    if "enterprise" in overrides:
        body[ENTERPRISE] = overrides.pop("enterprise")
    body.update(overrides)
    return body


def post_user(session: requests.Session, body: dict) -> dict:
    response = session.post(f"{session.base}/Users", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_user(session: requests.Session, user_name: str | None = None, **overrides) -> dict:
    return post_user(session, entra_user(user_name, **overrides))


def patch_user(session: requests.Session, user_id: str, *operations: dict) -> requests.Response:
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    return session.patch(f"{session.base}/Users/{user_id}", json=body)


def find_users(session: requests.Session, filter_text: str, path: str = "/Users") -> dict:
    """GET with the filter form-encoded as Entra does: ``userName+eq+%22...%22``."""
    response = session.get(f"{session.base}{path}?filter={quote_plus(filter_text)}")
    assert response.status_code == 200, response.text
    return response.json()


def ids_of(listing: dict) -> list[str]:
    return [resource["id"] for resource in listing.get("Resources", [])]


def work_entry(resource: dict, attribute: str, kind: str = "work") -> dict:
    entries = [e for e in resource.get(attribute, []) if e.get("type") == kind]
    assert len(entries) == 1, resource.get(attribute)
    return entries[0]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory) -> Iterator[LiveServer]:
    """One server for the module, with keys for three directories made before it starts."""
    data_dir = tmp_path_factory.mktemp("entra") / "data"
    data_dir.mkdir()
    for directory in ("Other", "Paging"):
        result = run_cli(data_dir, "directory", "create", directory)
        assert result.returncode == 0, result.stderr
    server = LiveServer(data_dir)
    server.tokens = {
        directory: create_key_with_cli(data_dir, directory)
        for directory in ("Default", "Other", "Paging")
    }
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
    """A second Entra tenant, holding a key of another directory on the same server."""
    session = open_session(shared_server, shared_server.tokens["Other"])
    yield session
    session.close()


PAGE_USER_NAMES = [f"page-{letter}@contoso.example" for letter in "cabed"]


@pytest.fixture(scope="module")
def paging(shared_server) -> Iterator[requests.Session]:
    """A directory holding exactly five users, for paging and sorting."""
    session = open_session(shared_server, shared_server.tokens["Paging"])
    for user_name in PAGE_USER_NAMES:
        create_user(session, user_name, displayName=user_name.split("@")[0])
    yield session
    session.close()


@pytest.fixture(scope="module")
def manager(entra) -> dict:
    return create_user(entra, displayName="Maja Lind", name={"givenName": "Maja"})


# -- 1. Test Connection -------------------------------------------------------------------------


def test_test_connection_finds_no_user_for_a_random_guid(entra):
    url = f"{entra.base}/Users?filter=userName+eq+%22{uuid.uuid4()}%22"
    response = entra.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    body = response.json()
    assert body["schemas"] == [LIST_RESPONSE]
    assert body["totalResults"] == 0
    assert body["Resources"] == []
    assert body["startIndex"] == 1
    assert body["itemsPerPage"] == 0


def test_test_connection_with_a_wrong_token_is_401(shared_server):
    response = requests.get(
        f"{shared_server.url}/v2/Users?filter=userName+eq+%22{uuid.uuid4()}%22",
        headers={"Authorization": "Bearer not-the-secret-token"},
    )
    assert_scim_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_test_connection_without_authorization_header_is_401(shared_server):
    response = requests.get(f"{shared_server.url}/v2/Users")
    assert_scim_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- 2. Create with the whole mapping table ---------------------------------------------------


def full_mapping_body(manager_id: str) -> dict:
    """All 19 rows of the "Integrate with Microsoft" attribute table."""
    user_name = unique_name("ana")
    return entra_user(
        user_name,
        displayName="Ana Berg",
        name={"givenName": "Ana", "familyName": "Berg"},
        emails=[{"primary": True, "type": "work", "value": user_name}],
        phoneNumbers=[
            {"type": "work", "value": "+46 (8) 123 45 67"},
            {"type": "mobile", "value": "+46 70-765 43 21"},
        ],
        addresses=[
            {
                "type": "work",
                "streetAddress": "Drottninggatan 1",
                "locality": "Stockholm",
                "region": "Stockholms län",
                "postalCode": "111 51",
                "country": "SE",
            }
        ],
        preferredLanguage="sv-SE",
        title="Staff Engineer",
        externalId=str(uuid.uuid4()),
        enterprise={
            "employeeNumber": "E-1001",
            "costCenter": "CC-42",
            "department": "Platform",
            "manager": {"value": manager_id},
        },
    )


def test_create_user_with_all_mapped_attributes_answers_201_with_location(entra, manager):
    response = entra.post(f"{entra.base}/Users", json=full_mapping_body(manager["id"]))
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    created = response.json()
    assert created["id"]
    meta = created["meta"]
    assert meta["resourceType"] == "User"
    assert meta["created"] and meta["lastModified"] and meta["version"]
    assert meta["location"].endswith(f"/v2/Users/{created['id']}")
    assert response.headers["Location"] == meta["location"]


def test_created_user_reads_back_all_19_mapped_attributes(entra, manager):
    body = full_mapping_body(manager["id"])
    user = get_user(entra, post_user(entra, body)["id"])

    assert user["userName"] == body["userName"]
    assert user["displayName"] == "Ana Berg"
    assert user["name"]["givenName"] == "Ana"
    assert user["name"]["familyName"] == "Berg"
    assert work_entry(user, "emails")["value"] == body["userName"]
    assert work_entry(user, "phoneNumbers")["value"] == "+46 (8) 123 45 67"
    assert work_entry(user, "phoneNumbers", "mobile")["value"] == "+46 70-765 43 21"
    address = work_entry(user, "addresses")
    assert address["streetAddress"] == "Drottninggatan 1"
    assert address["locality"] == "Stockholm"
    assert address["region"] == "Stockholms län"
    assert address["postalCode"] == "111 51"
    assert address["country"] == "SE"
    assert user["preferredLanguage"] == "sv-SE"
    enterprise = user[ENTERPRISE]
    assert enterprise["employeeNumber"] == "E-1001"
    assert enterprise["costCenter"] == "CC-42"
    assert user["title"] == "Staff Engineer"
    assert enterprise["department"] == "Platform"
    assert enterprise["manager"] == {
        "value": manager["id"],
        "$ref": manager["meta"]["location"],
        "displayName": "Maja Lind",
    }
    assert user["externalId"] == body["externalId"]
    assert ENTERPRISE in user["schemas"]


# -- 3. Matching by filter ----------------------------------------------------------------------


def test_filter_by_user_name_ignores_case(entra):
    user = create_user(entra, unique_name("ana"))
    listing = find_users(entra, f'userName eq "{user["userName"].upper()}"')
    assert listing["totalResults"] == 1
    assert ids_of(listing) == [user["id"]]


def test_filter_by_external_id_finds_the_user(entra):
    user = create_user(entra)
    listing = find_users(entra, f'externalId eq "{user["externalId"]}"')
    assert ids_of(listing) == [user["id"]]


def test_filter_by_work_email_finds_the_user(entra):
    user = create_user(entra)
    email = work_entry(user, "emails")["value"]
    listing = find_users(entra, f'emails[type eq "work"].value eq "{email}"')
    assert ids_of(listing) == [user["id"]]


# -- 4. PATCH as Entra sends it -----------------------------------------------------------------


def test_default_job_patch_with_one_replace_per_attribute(entra):
    user = create_user(entra)
    new_mail = unique_name("ana.berg")

    def replace(path: str, value: str) -> dict:
        return {"op": "Replace", "path": path, "value": value}

    response = patch_user(
        entra,
        user["id"],
        replace("displayName", "Ana Lind"),
        replace("name.familyName", "Lind"),
        replace('emails[type eq "work"].value', new_mail),
        {"op": "Add", "path": 'phoneNumbers[type eq "work"].value', "value": "+46 8 555 00 00"},
        replace('phoneNumbers[type eq "mobile"].value', "+46 70 111 22 33"),
        replace('addresses[type eq "work"].streetAddress', "Kungsgatan 2"),
        replace('addresses[type eq "work"].locality', "Göteborg"),
        replace('addresses[type eq "work"].region', "Västra Götaland"),
        replace('addresses[type eq "work"].postalCode', "411 19"),
        replace('addresses[type eq "work"].country', "SE"),
        replace("title", "Architect"),
        replace(f"{ENTERPRISE}:department", "Research"),
    )
    assert response.status_code == 200, response.text

    stored = get_user(entra, user["id"])
    assert stored["displayName"] == "Ana Lind"
    assert stored["name"]["familyName"] == "Lind"
    assert stored["name"]["givenName"] == "Ana"
    assert [e["value"] for e in stored["emails"]] == [new_mail]
    assert work_entry(stored, "phoneNumbers")["value"] == "+46 8 555 00 00"
    assert work_entry(stored, "phoneNumbers", "mobile")["value"] == "+46 70 111 22 33"
    assert stored["addresses"] == [
        {
            "type": "work",
            "streetAddress": "Kungsgatan 2",
            "locality": "Göteborg",
            "region": "Västra Götaland",
            "postalCode": "411 19",
            "country": "SE",
        }
    ]
    assert stored["title"] == "Architect"
    assert stored[ENTERPRISE]["department"] == "Research"


def test_flagged_job_patch_with_pathless_replace_of_dotted_and_urn_keys(entra):
    user = create_user(entra, enterprise={"employeeNumber": "E-1"})
    response = patch_user(
        entra,
        user["id"],
        {
            "op": "replace",
            "value": {
                "displayName": "Bo Ek",
                "name.givenName": "Bo",
                "name.familyName": "Ek",
                f"{ENTERPRISE}:employeeNumber": "E-2002",
            },
        },
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "bo.ek@contoso.example"},
    )
    assert response.status_code == 200, response.text

    stored = get_user(entra, user["id"])
    assert stored["displayName"] == "Bo Ek"
    assert stored["name"]["givenName"] == "Bo"
    assert stored["name"]["familyName"] == "Ek"
    assert stored[ENTERPRISE]["employeeNumber"] == "E-2002"
    assert work_entry(stored, "emails")["value"] == "bo.ek@contoso.example"
    assert "name.givenName" not in stored
    assert f"{ENTERPRISE}:employeeNumber" not in stored


def test_patch_with_empty_string_clears_each_attribute(entra):
    user = create_user(
        entra,
        title="Engineer",
        phoneNumbers=[{"type": "mobile", "value": "+46 70 000 00 00"}],
        enterprise={"department": "Platform", "costCenter": "CC-1"},
    )
    response = patch_user(
        entra,
        user["id"],
        {"op": "Replace", "path": "title", "value": ""},
        {"op": "Replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": ""},
        {"op": "Replace", "path": f"{ENTERPRISE}:department", "value": ""},
    )
    assert response.status_code == 200, response.text

    stored = get_user(entra, user["id"])
    assert "title" not in stored
    assert "phoneNumbers" not in stored
    assert "department" not in stored[ENTERPRISE]
    assert stored[ENTERPRISE]["costCenter"] == "CC-1"


def test_pathless_replace_with_empty_strings_clears_attributes(entra):
    user = create_user(entra, preferredLanguage="sv-SE", enterprise={"employeeNumber": "E-9"})
    response = patch_user(
        entra,
        user["id"],
        {
            "op": "replace",
            "value": {
                "preferredLanguage": "",
                "name.givenName": "",
                f"{ENTERPRISE}:employeeNumber": "",
            },
        },
    )
    assert response.status_code == 200, response.text

    stored = get_user(entra, user["id"])
    assert "preferredLanguage" not in stored
    assert "givenName" not in stored["name"]
    assert stored["name"]["familyName"] == "Berg"
    assert ENTERPRISE not in stored
    assert stored["schemas"] == [CORE]


def test_patch_answers_200_with_the_full_resource(entra):
    user = create_user(entra)
    response = patch_user(entra, user["id"], {"op": "Replace", "path": "title", "value": "Lead"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    assert response.json() == get_user(entra, user["id"])
    assert response.json()["meta"]["version"] != user["meta"]["version"]


# -- 5. Disable and re-enable -------------------------------------------------------------------


def test_disable_with_string_false_reads_back_boolean_false(entra):
    user = create_user(entra)
    response = patch_user(entra, user["id"], {"op": "Replace", "path": "active", "value": "False"})
    assert response.status_code == 200, response.text
    assert get_user(entra, user["id"])["active"] is False


def test_disabled_user_is_still_found_by_filter(entra):
    user = create_user(entra)
    patch_user(entra, user["id"], {"op": "Replace", "path": "active", "value": "False"})
    listing = find_users(entra, f'userName eq "{user["userName"]}"')
    assert ids_of(listing) == [user["id"]]
    assert listing["Resources"][0]["active"] is False


def test_reenable_with_string_true_reads_back_boolean_true(entra):
    user = create_user(entra, active=False)
    response = patch_user(entra, user["id"], {"op": "Replace", "path": "active", "value": "True"})
    assert response.status_code == 200, response.text
    assert get_user(entra, user["id"])["active"] is True


# -- 6. Manager linking -------------------------------------------------------------------------

MANAGER_PATH = f"{ENTERPRISE}:manager"


def manager_of(session: requests.Session, user_id: str) -> dict | None:
    return get_user(session, user_id).get(ENTERPRISE, {}).get("manager")


def test_manager_set_with_bare_id_on_urn_path(entra, manager):
    user = create_user(entra)
    response = patch_user(
        entra, user["id"], {"op": "Add", "path": MANAGER_PATH, "value": manager["id"]}
    )
    assert response.status_code == 200, response.text
    assert manager_of(entra, user["id"]) == {
        "value": manager["id"],
        "$ref": manager["meta"]["location"],
        "displayName": "Maja Lind",
    }


def test_manager_changed_with_replace(entra, manager):
    new_manager = create_user(entra, displayName="Nils Holm")
    user = create_user(entra, enterprise={"manager": {"value": manager["id"]}})
    response = patch_user(
        entra, user["id"], {"op": "replace", "path": MANAGER_PATH, "value": new_manager["id"]}
    )
    assert response.status_code == 200, response.text
    assert manager_of(entra, user["id"]) == {
        "value": new_manager["id"],
        "$ref": new_manager["meta"]["location"],
        "displayName": "Nils Holm",
    }


def test_manager_cleared_with_empty_string(entra, manager):
    user = create_user(entra, enterprise={"manager": {"value": manager["id"]}})
    response = patch_user(entra, user["id"], {"op": "replace", "path": MANAGER_PATH, "value": ""})
    assert response.status_code == 200, response.text
    assert manager_of(entra, user["id"]) is None


def test_manager_set_with_older_add_manager_list_form(entra, manager):
    user = create_user(entra)
    response = patch_user(
        entra,
        user["id"],
        {"op": "Add", "path": "manager", "value": [{"$ref": None, "value": manager["id"]}]},
    )
    assert response.status_code == 200, response.text
    assert manager_of(entra, user["id"])["value"] == manager["id"]


def test_manager_cleared_with_remove(entra, manager):
    user = create_user(
        entra, enterprise={"manager": {"value": manager["id"]}, "department": "Platform"}
    )
    response = patch_user(entra, user["id"], {"op": "Remove", "path": MANAGER_PATH})
    assert response.status_code == 200, response.text
    stored = get_user(entra, user["id"])
    assert "manager" not in stored[ENTERPRISE]
    assert stored[ENTERPRISE]["department"] == "Platform"


# -- 7. Errors leave data untouched -------------------------------------------------------------


def test_duplicate_user_name_in_other_case_is_409_uniqueness(entra):
    user = create_user(entra, unique_name("dup"))
    response = entra.post(
        f"{entra.base}/Users", json=entra_user(user["userName"].upper(), displayName="Impostor")
    )
    assert_scim_error(response, 409, "uniqueness")
    assert get_user(entra, user["id"]) == user
    assert find_users(entra, f'userName eq "{user["userName"]}"')["totalResults"] == 1


def test_malformed_json_is_400_invalid_syntax(entra):
    user_name = unique_name("broken")
    response = entra.post(f"{entra.base}/Users", data=f'{{"userName": "{user_name}", ')
    assert_scim_error(response, 400, "invalidSyntax")
    assert find_users(entra, f'userName eq "{user_name}"')["totalResults"] == 0


def test_patch_with_one_bad_operation_applies_none(entra):
    user = create_user(entra)
    response = patch_user(
        entra,
        user["id"],
        {"op": "Replace", "path": "displayName", "value": "Changed"},
        {"op": "Replace", "path": "noSuchAttribute", "value": "x"},
    )
    assert_scim_error(response, 400, "invalidPath")
    after = get_user(entra, user["id"])
    assert after["displayName"] == "Ana Berg"
    assert after["meta"]["version"] == user["meta"]["version"]
    assert after == user


def test_body_over_one_mebibyte_is_413(entra):
    user_name = unique_name("huge")
    body = json.dumps(entra_user(user_name, title="x" * (1024 * 1024 + 1)))
    response = entra.post(f"{entra.base}/Users", data=body)
    assert_scim_error(response, 413)
    assert find_users(entra, f'userName eq "{user_name}"')["totalResults"] == 0


def test_a_chunked_body_is_read_whole_and_held_to_the_same_limit(entra):
    """No Content-Length from the client: waitress de-chunks the body and names its length."""
    user_name = unique_name("chunked")
    body = json.dumps(entra_user(user_name)).encode()
    pieces = (body[i : i + 100] for i in range(0, len(body), 100))
    response = entra.post(f"{entra.base}/Users", data=pieces)
    assert response.status_code == 201, response.text
    assert response.json()["userName"] == user_name
    huge = json.dumps(entra_user(unique_name("huge"), title="x" * (1024 * 1024 + 1))).encode()
    pieces = (huge[i : i + 65536] for i in range(0, len(huge), 65536))
    assert_scim_error(entra.post(f"{entra.base}/Users", data=pieces), 413)


def test_unknown_user_id_is_404(entra):
    response = entra.get(f"{entra.base}/Users/{uuid.uuid4()}")
    assert_scim_error(response, 404)


def test_user_name_over_150_characters_is_400_invalid_value(entra):
    user_name = "a" * 140 + "@contoso.example"
    response = entra.post(f"{entra.base}/Users", json=entra_user(user_name))
    assert_scim_error(response, 400, "invalidValue")
    assert find_users(entra, f'userName eq "{user_name}"')["totalResults"] == 0


def test_missing_display_name_is_400_invalid_value(entra):
    body = entra_user(unique_name("nameless"))
    del body["displayName"]
    response = entra.post(f"{entra.base}/Users", json=body)
    assert_scim_error(response, 400, "invalidValue")
    assert find_users(entra, f'userName eq "{body["userName"]}"')["totalResults"] == 0


def test_post_to_schemas_is_405(entra):
    response = entra.post(f"{entra.base}/Schemas", json={"schemas": [CORE]})
    assert_scim_error(response, 405)


def test_bad_filter_is_400_invalid_filter(entra):
    bad_filter = quote_plus('userName eq "unterminated')
    response = entra.get(f"{entra.base}/Users?filter={bad_filter}")
    assert_scim_error(response, 400, "invalidFilter")


# -- 8. Endpoint spelling and Entra's flags -----------------------------------------------------


def test_lower_case_users_endpoint_works_like_users(entra):
    user = create_user(entra)
    listing = find_users(entra, f'userName eq "{user["userName"]}"', path="/users")
    assert ids_of(listing) == [user["id"]]
    assert entra.get(f"{entra.base}/users/{user['id']}").json() == get_user(entra, user["id"])


def test_trailing_slash_users_endpoint_works_like_users(entra):
    user = create_user(entra)
    listing = find_users(entra, f'userName eq "{user["userName"]}"', path="/Users/")
    assert ids_of(listing) == [user["id"]]
    response = entra.post(f"{entra.base}/Users/", json=entra_user())
    assert response.status_code == 201, response.text


def test_unknown_query_parameter_is_ignored(entra):
    user_name = unique_name("flag")
    response = entra.post(f"{entra.base}/Users?aadOptscim062020", json=entra_user(user_name))
    assert response.status_code == 201, response.text
    by_name = quote_plus(f'userName eq "{user_name}"')
    listing = entra.get(f"{entra.base}/Users?aadOptscim062020&filter={by_name}")
    assert listing.status_code == 200
    assert ids_of(listing.json()) == [response.json()["id"]]


# -- 9. Directories are separate worlds ---------------------------------------------------------


def test_other_directory_key_gets_404_for_this_directorys_user(entra, other_directory):
    user = create_user(entra)
    response = other_directory.get(f"{other_directory.base}/Users/{user['id']}")
    assert_scim_error(response, 404)


def test_other_directory_key_lists_no_users(entra, other_directory):
    create_user(entra)
    listing = other_directory.get(f"{other_directory.base}/Users").json()
    assert listing["totalResults"] == 0
    assert listing["Resources"] == []


def test_other_directory_key_cannot_change_or_delete_this_directorys_user(entra, other_directory):
    user = create_user(entra)
    assert_scim_error(
        patch_user(other_directory, user["id"], {"op": "Replace", "path": "title", "value": "X"}),
        404,
    )
    assert_scim_error(other_directory.delete(f"{other_directory.base}/Users/{user['id']}"), 404)
    assert get_user(entra, user["id"]) == user


# -- 10. Hard delete ----------------------------------------------------------------------------


def test_delete_answers_204_and_the_user_is_gone(entra):
    user = create_user(entra)
    response = entra.delete(f"{entra.base}/Users/{user['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_scim_error(entra.get(f"{entra.base}/Users/{user['id']}"), 404)


def test_deleted_user_is_not_found_by_filter(entra):
    user = create_user(entra)
    entra.delete(f"{entra.base}/Users/{user['id']}")
    assert find_users(entra, f'userName eq "{user["userName"]}"')["totalResults"] == 0
    assert find_users(entra, f'externalId eq "{user["externalId"]}"')["totalResults"] == 0


# -- 11. Paging, sorting and projection ---------------------------------------------------------


def list_page(session: requests.Session, query: str) -> dict:
    response = session.get(f"{session.base}/Users?{query}")
    assert response.status_code == 200, response.text
    return response.json()


def test_start_index_and_count_page_through_users(paging):
    page = list_page(paging, "sortBy=userName&startIndex=2&count=2")
    assert page["totalResults"] == 5
    assert page["startIndex"] == 2
    assert page["itemsPerPage"] == 2
    names = [user["userName"] for user in page["Resources"]]
    assert names == sorted(PAGE_USER_NAMES)[1:3]


def test_count_zero_gives_only_the_total(paging):
    page = list_page(paging, "count=0")
    assert page["totalResults"] == 5
    assert page.get("Resources", []) == []


def test_sort_by_user_name_descending(paging):
    page = list_page(paging, "sortBy=userName&sortOrder=descending")
    names = [user["userName"] for user in page["Resources"]]
    assert names == sorted(PAGE_USER_NAMES, reverse=True)


def test_attributes_returns_only_id_and_user_name(paging):
    page = list_page(paging, "attributes=userName")
    assert len(page["Resources"]) == 5
    for user in page["Resources"]:
        assert {"id", "userName"} <= set(user) <= {"id", "userName", "schemas"}


def test_excluded_attributes_leaves_emails_out(paging):
    page = list_page(paging, "excludedAttributes=emails")
    assert len(page["Resources"]) == 5
    for user in page["Resources"]:
        assert "emails" not in user
        assert user["userName"] and user["displayName"] and user["meta"]


# -- 12. Restart --------------------------------------------------------------------------------


def test_users_survive_a_restart_unchanged(live_server, scim_session):
    boss = create_user(scim_session, displayName="Maja Lind")
    created = [
        boss,
        create_user(scim_session, enterprise={"manager": {"value": boss["id"]}}),
        create_user(scim_session, active=False, title="Retired"),
    ]
    patch_user(scim_session, created[2]["id"], {"op": "Replace", "path": "title", "value": "Ex"})
    before = [get_user(scim_session, user["id"]) for user in created]

    live_server.stop()
    live_server.start()

    after = [get_user(scim_session, user["id"]) for user in created]
    assert [u["meta"]["version"] for u in after] == [u["meta"]["version"] for u in before]
    assert after == before
    assert list_page(scim_session, "count=10")["totalResults"] == 3


# -- 13. Discovery ------------------------------------------------------------------------------


def discover(session: requests.Session, path: str) -> dict:
    response = session.get(f"{session.base}{path}")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(SCIM_JSON)
    return response.json()


def test_service_provider_config_supports_patch_and_filter(entra):
    config = discover(entra, "/ServiceProviderConfig")
    assert config["patch"]["supported"] is True
    assert config["filter"]["supported"] is True


def test_schemas_lists_user_and_enterprise_user(entra):
    listing = discover(entra, "/Schemas")
    assert listing["schemas"] == [LIST_RESPONSE]
    assert {CORE, ENTERPRISE} <= {schema["id"] for schema in listing["Resources"]}
    assert listing["totalResults"] == len(listing["Resources"])


def test_user_schema_by_urn(entra):
    schema = discover(entra, f"/Schemas/{CORE}")
    assert schema["id"] == CORE
    assert "userName" in {attribute["name"] for attribute in schema["attributes"]}


def test_resource_types_list_user(entra):
    listing = discover(entra, "/ResourceTypes")
    assert listing["schemas"] == [LIST_RESPONSE]
    assert "User" in {resource_type["id"] for resource_type in listing["Resources"]}


def test_user_resource_type_has_users_endpoint(entra):
    resource_type = discover(entra, "/ResourceTypes/User")
    assert resource_type["endpoint"] == "/Users"
    assert resource_type["schema"] == CORE
    assert ENTERPRISE in {ext["schema"] for ext in resource_type["schemaExtensions"]}


def test_unknown_schema_is_404(entra):
    assert_scim_error(entra.get(f"{entra.base}/Schemas/urn:example:no:such:schema"), 404)


def test_unknown_resource_type_is_404(entra):
    assert_scim_error(entra.get(f"{entra.base}/ResourceTypes/Printer"), 404)


# -- 14. Request log ----------------------------------------------------------------------------


def test_request_log_names_each_request_and_never_the_token_or_body(live_server, scim_session):
    token = scim_session.headers["Authorization"].removeprefix("Bearer ")
    password = f"Pw-{uuid.uuid4().hex}!"
    secret_title = f"Title-{uuid.uuid4().hex}"
    user = create_user(scim_session, password=password, title=secret_title)
    get_user(scim_session, user["id"])
    patch_user(scim_session, user["id"], {"op": "Replace", "path": "title", "value": password})
    scim_session.delete(f"{scim_session.base}/Users/{user['id']}")
    requests.get(f"{scim_session.base}/Users", headers={"Authorization": "Bearer wrong"})
    live_server.stop()  # SIGTERM: a clean shutdown writes out every queued log line

    lines = live_server.log().splitlines()
    expected = [
        ("POST", "/v2/Users", "201", "key=Test key"),
        ("GET", f"/v2/Users/{user['id']}", "200", "key=Test key"),
        ("PATCH", f"/v2/Users/{user['id']}", "200", "key=Test key"),
        ("DELETE", f"/v2/Users/{user['id']}", "204", "key=Test key"),
        ("GET", "/v2/Users", "401", "key=-"),
    ]
    for method, path, status, key in expected:
        matching = [
            line
            for line in lines
            if f" {method} {path} {status} " in line and line.endswith(f" {key}")
        ]
        assert len(matching) == 1, (method, path, status, lines)
    log = live_server.log()
    assert token not in log
    assert password not in log
    assert secret_title not in log


# -- restart (kept last: it restarts the module's server) ---------------------------------------


def all_users(session: requests.Session) -> list[dict]:
    body = session.get(f"{session.base}/Users", params={"count": 1000}).json()
    assert body["totalResults"] == len(body["Resources"])
    return body["Resources"]


def test_the_lifecycles_users_survive_a_restart_of_its_server(shared_server, entra, paging):
    """Everything this module provisioned (19 attributes, disabled users, manager links) reads
    back identical after the server restarts on the same data folder."""
    before = {"Default": all_users(entra), "Paging": all_users(paging)}
    assert len(before["Default"]) > 10
    shared_server.stop()
    shared_server.start()
    after = {"Default": all_users(entra), "Paging": all_users(paging)}
    assert after == before
