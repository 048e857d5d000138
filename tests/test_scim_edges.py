"""Hostile and odd requests: each gets a clear SCIM error (or works) and changes nothing else."""

from __future__ import annotations

import json

import pytest

import auth
import scim as scim_module
from app import create_app, loggable
from schemas import CORE_USER_URN, ENTERPRISE_USER_URN, PATCH_OP_URN

SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@pytest.fixture
def scim(tmp_path):
    """An in-process client holding a key, for requests a browser-less client would send."""
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "PUBLIC_URL": "https://roster.example"})
    store = app.extensions["roster.store"]
    directory = store.list_directories()[0]
    _key, token = auth.create_directory_key(store, directory["id"], "Entra key", "test")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    client.store = store
    client.directory_id = directory["id"]
    yield client
    store.close()


def send(client, method: str, path: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.open(
        path, method=method, data=data, content_type="application/scim+json; charset=utf-8"
    )
    assert response.mimetype == "application/scim+json"
    return response.status_code, response.get_json(silent=True) or {}


def user(user_name="ana@contoso.example", **extra) -> dict:
    return {"schemas": [CORE_USER_URN], "userName": user_name, "displayName": "Ana", **extra}


TRICKY_JSON = [
    b'{"userName": "ana", "n": 42, "f": 1.25, "e": 1e-7, "z": -0, "u": "\\u00e9\\u20ac"}',
    b'{"min": -9223372036854775808, "max": 18446744073709551615}',  # 64 bits: exact
    b'{"externalId": "123456789012345678901234567890"}',
    b'{"x": NaN, "y": Infinity, "z": -Infinity, "w": 1.5e400}',  # not JSON; json reads them
    b'\xef\xbb\xbf{"bom": true}',
    '{"utf16": "\u00e9"}'.encode("utf-16"),
    b'{"a": 1, "a": 2}',
    b' [1, "two", null, true, {"three": [3.0]}] ',
]
BAD_JSON = [
    b"",
    b"{",
    b'{"a": "x\ny"}',  # a raw newline inside a string
    b'{"a": }',
    b"[1, 2",
    b"{'a': 1}",
    b'{"a": 1} x',
    b"\xff\xfe\xfd",
    b"nul",
]


@pytest.mark.parametrize("raw", TRICKY_JSON)
def test_the_body_parser_reads_what_the_standard_library_reads(raw):
    """orjson first, for speed, must change nothing: the same values, exact big integers."""
    parsed, expected = scim_module.parse_json(raw), json.loads(raw)
    assert repr(parsed) == repr(expected)  # repr: NaN equals nothing, and 1 == 1.0 == True


def test_an_integer_beyond_64_bits_is_read_as_a_float_and_a_search_past_the_end_is_empty(scim):
    assert scim_module.parse_json(b'{"n": 18446744073709551616}') == {"n": 2.0**64}
    body = f'{{"schemas": ["{SEARCH_URN}"], "startIndex": {10**30}}}'
    status, answer = send(scim, "POST", "/v2/Users/.search", body)
    assert status == 200 and answer["Resources"] == [] and answer["startIndex"] > 2**64


@pytest.mark.parametrize("raw", BAD_JSON)
def test_the_body_parser_refuses_what_the_standard_library_refuses(raw):
    with pytest.raises((ValueError, UnicodeDecodeError)) as ours:
        scim_module.parse_json(raw)
    with pytest.raises((ValueError, UnicodeDecodeError)) as theirs:
        json.loads(raw)
    assert str(ours.value) == str(theirs.value)  # the message the client gets is json's


@pytest.mark.parametrize(
    "escaped", ["\\ud800", "\\udfff", "a\\udc00b", "\\ude00\\ud83d", "\\ud83d\\ud83d\\ude00"]
)
def test_a_lone_surrogate_is_invalid_syntax_and_nothing_is_stored(scim, escaped):
    """json reads it, but it is not a character: no UTF-8 writer (the journal's, the answer's)
    could write the user out again."""
    raw = json.dumps(user(title="x")).replace('"x"', f'"{escaped}"')
    status, answer = send(scim, "POST", "/v2/Users", raw)
    assert (status, answer["scimType"]) == (400, "invalidSyntax")
    assert "lone surrogate" in answer["detail"]
    as_key = json.dumps(user(urn_x="y")).replace("urn_x", escaped)
    assert send(scim, "POST", "/v2/Users", as_key)[0] == 400
    assert send(scim, "GET", "/v2/Users", None)[1]["totalResults"] == 0


def test_a_surrogate_pair_is_one_character(scim):
    raw = json.dumps(user(title="x")).replace('"x"', '"\\ud83d\\ude00"')
    status, answer = send(scim, "POST", "/v2/Users", raw)
    assert (status, answer["title"]) == (201, "😀")


def test_deeply_nested_json_is_invalid_syntax(scim):
    status, body = send(scim, "POST", "/v2/Users", "[" * 100000 + "]" * 100000)
    assert (status, body["scimType"]) == (400, "invalidSyntax")


@pytest.mark.parametrize("body", [[1, 2], "a string", None])
def test_a_body_that_is_not_an_object_is_invalid_syntax(scim, body):
    status, answer = send(scim, "POST", "/v2/Users", body)
    assert (status, answer["scimType"]) == (400, "invalidSyntax")


@pytest.mark.parametrize(
    "filter_text",
    ["not(" * 2000 + "userName pr" + ")" * 2000, 'userName eq "x" and ' * 3000 + "userName pr"],
)
def test_deeply_nested_filters_are_invalid_filter(scim, filter_text):
    response = scim.get("/v2/Users", query_string={"filter": filter_text})
    assert (response.status_code, response.get_json()["scimType"]) == (400, "invalidFilter")


def test_search_request_with_wrongly_typed_fields_is_refused(scim):
    status, body = send(scim, "POST", "/v2/.search", {"schemas": [SEARCH_URN], "sortBy": ["x"]})
    assert (status, body["scimType"]) == (400, "invalidValue")
    status, body = send(scim, "POST", "/v2/.search", {"schemas": [SEARCH_URN], "filter": 123})
    assert (status, body["scimType"]) == (400, "invalidFilter")
    assert "string" in body["detail"]


def test_search_by_post_finds_users(scim):
    send(scim, "POST", "/v2/Users", user())
    status, body = send(
        scim,
        "POST",
        "/v2/Users/.search",
        {"schemas": [SEARCH_URN], "filter": 'userName eq "ANA@contoso.example"'},
    )
    assert (status, body["totalResults"]) == (200, 1)


def test_patch_operation_keys_are_case_insensitive(scim):
    _, created = send(scim, "POST", "/v2/Users", user())
    operation = {"OP": "Add", "PATH": "title", "VALUE": "Engineer"}
    status, body = send(
        scim,
        "PATCH",
        f"/v2/Users/{created['id']}",
        {"schemas": [PATCH_OP_URN], "Operations": [operation]},
    )
    assert (status, body["title"]) == (200, "Engineer")


def test_options_answers_in_scim_media_type(scim):
    assert scim.options("/v2/Users").mimetype == "application/scim+json"


def test_entries_without_a_type_are_not_duplicates(scim):
    emails = [{"value": "a@b.example"}, {"value": "c@d.example"}]
    status, body = send(scim, "POST", "/v2/Users", user(emails=emails))
    assert (status, len(body["emails"])) == (201, 2)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"phoneNumbers": [{"type": "work", "value": "call me"}]}, "phoneNumbers"),
        ({"userName": "   "}, "userName"),
        ({"displayName": " \t\n"}, "displayName"),
        ({"userName": "ctl\u0000@contoso.example"}, "userName"),
        ({"preferredLanguage": "x" * 46}, "preferredLanguage"),
    ],
)
def test_values_beyond_the_hosted_products_rules_are_refused(scim, extra, field):
    status, body = send(scim, "POST", "/v2/Users", user(**extra))
    assert (status, body["scimType"]) == (400, "invalidValue")
    assert field in body["detail"]
    assert scim.store.count_users(scim.directory_id) == 0


def test_a_patch_to_a_blank_display_name_is_refused_and_changes_nothing(scim):
    _status, created = send(scim, "POST", "/v2/Users", user())
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "displayName", "value": "   "}],
    }
    status, body = send(scim, "PATCH", f"/v2/Users/{created['id']}", patch)
    assert (status, body["scimType"]) == (400, "invalidValue")
    assert send(scim, "GET", f"/v2/Users/{created['id']}", None)[1]["displayName"] == "Ana"


def test_a_manager_who_is_not_a_user_of_the_directory_is_refused(scim):
    status, body = send(
        scim, "POST", "/v2/Users", user(**{ENTERPRISE_USER_URN: {"manager": {"value": "nobody"}}})
    )
    assert (status, body["scimType"]) == (400, "invalidValue")
    assert "manager" in body["detail"]


def test_locations_use_the_configured_public_url(scim):
    status, body = send(scim, "POST", "/v2/Users", user())
    assert status == 201
    assert body["meta"]["location"] == f"https://roster.example/v2/Users/{body['id']}"


def test_the_audit_log_names_the_key_and_the_reports_who_lost_their_manager(scim):
    _, boss = send(scim, "POST", "/v2/Users", user("boss@contoso.example"))
    _, ana = send(
        scim, "POST", "/v2/Users", user(**{ENTERPRISE_USER_URN: {"manager": {"value": boss["id"]}}})
    )
    scim.delete(f"/v2/Users/{boss['id']}")
    entries = scim.store.list_audit(scim.directory_id)
    assert {e["actor"] for e in entries if e["action"].startswith("user.")} == {"Entra key"}
    assert ("user.manager_removed", ana["id"]) in {(e["action"], e["target"]) for e in entries}


def test_log_lines_cannot_be_forged_through_the_path():
    assert "\n" not in loggable("/v2/Users/x\n2026-11-27 DELETE /v2/Users/y 204")
    assert "\x00" not in loggable("/v2/Users/\x00")


@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ({"op": "remove", "path": "displayName"}, "displayName"),
        ({"op": "replace", "path": "userName", "value": "x" * 151}, "userName"),
        ({"op": "add", "path": 'emails[type eq "work"].value', "value": "not-mail"}, "emails"),
    ],
)
def test_a_patch_is_validated_where_it_changes_the_user(scim, operation, field):
    _, created = send(scim, "POST", "/v2/Users", user(title="Engineer"))
    stored_before = scim.store.get_user(scim.directory_id, created["id"])
    status, body = send(
        scim,
        "PATCH",
        f"/v2/Users/{created['id']}",
        {"schemas": [PATCH_OP_URN], "Operations": [operation]},
    )
    assert (status, body["scimType"]) == (400, "invalidValue")
    assert field in body["detail"]
    assert scim.store.get_user(scim.directory_id, created["id"]) == stored_before


CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
BULK_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def group_with(scim, *user_names: str) -> tuple[dict, list[str]]:
    ids = [send(scim, "POST", "/v2/Users", user(name))[1]["id"] for name in user_names]
    members = [{"value": i} for i in ids]
    _, group = send(
        scim,
        "POST",
        "/v2/Groups",
        {"schemas": [CORE_GROUP], "displayName": "T", "members": members},
    )
    return group, ids


def patch_group(scim, group_id: str, *operations: dict) -> tuple[int, dict]:
    """A group PATCH that asks for the members back (without ``attributes`` it answers 204)."""
    body = {"schemas": [PATCH_OP_URN], "Operations": list(operations)}
    return send(scim, "PATCH", f"/v2/Groups/{group_id}?attributes=members", body)


def test_removing_members_with_an_empty_list_removes_nobody(scim):
    group, ids = group_with(scim, "a@c.example", "b@c.example")
    status, body = patch_group(scim, group["id"], {"op": "Remove", "path": "members", "value": []})
    assert (status, [m["value"] for m in body["members"]]) == (200, ids)


def test_urn_qualified_member_paths_work(scim):
    group, ids = group_with(scim, "a@c.example", "b@c.example")
    status, body = patch_group(
        scim, group["id"], {"op": "remove", "path": f'{CORE_GROUP}:members[value eq "{ids[0]}"]'}
    )
    assert (status, [m["value"] for m in body["members"]]) == (200, ids[1:])
    status, body = patch_group(
        scim, group["id"], {"op": "add", "value": {f"{CORE_GROUP}:members": [{"value": ids[0]}]}}
    )
    assert (status, sorted(m["value"] for m in body["members"])) == (200, sorted(ids))


def test_a_group_member_without_a_value_is_refused(scim):
    body = {"schemas": [CORE_GROUP], "displayName": "T", "members": [{"display": "nobody"}]}
    status, answer = send(scim, "POST", "/v2/Groups", body)
    assert (status, answer["scimType"]) == (400, "invalidValue")


def test_if_match_compares_weakly_and_accepts_a_list(scim):
    _, created = send(scim, "POST", "/v2/Users", user())
    headers = [
        lambda version: version.removeprefix("W/"),  # the quoted tag without W/
        lambda version: f'W/"stale", {version}',  # a list with the current tag in it
    ]
    for header_for in headers:
        response = scim.patch(
            f"/v2/Users/{created['id']}",
            json={
                "schemas": [PATCH_OP_URN],
                "Operations": [{"op": "add", "path": "title", "value": "x"}],
            },
            headers={"If-Match": header_for(created["meta"]["version"])},
            content_type="application/scim+json",
        )
        assert response.status_code == 200
        created = response.get_json()


def bulk_body(*operations: dict) -> dict:
    return {"schemas": [BULK_URN], "Operations": list(operations)}


def bulk_user(bulk_id: str, name: str, key: str = "bulkId") -> dict:
    return {"method": "POST", "path": "/Users", key: bulk_id, "data": user(name)}


def test_a_bulk_id_used_twice_is_refused_before_anything_runs(scim):
    body = bulk_body(bulk_user("x", "a@c.example"), bulk_user("x", "b@c.example"))
    status, answer = send(scim, "POST", "/v2/Bulk", body)
    assert (status, answer["scimType"]) == (400, "invalidValue")
    assert scim.store.count_users(scim.directory_id) == 0


def test_bulk_id_keys_in_any_case_are_echoed_and_resolved(scim):
    patch = {
        "method": "PATCH",
        "path": "/Users/bulkId:lc",
        "data": {
            "schemas": [PATCH_OP_URN],
            "Operations": [{"op": "add", "path": "title", "value": "T"}],
        },
    }
    status, answer = send(
        scim, "POST", "/v2/Bulk", bulk_body(patch, bulk_user("lc", "a@c.example", "bulkid"))
    )
    assert status == 200
    assert [(r["status"], r.get("bulkId")) for r in answer["Operations"]] == [
        ("200", None),
        ("201", "lc"),
    ]


def test_a_reversed_chain_of_bulk_references_resolves(scim):
    operations = [bulk_user("u0", "u0@c.example")]
    for n in range(1, 40):
        manager = {ENTERPRISE_USER_URN: {"manager": {"value": f"bulkId:u{n - 1}"}}}
        operations.append(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": f"u{n}",
                "data": user(f"u{n}@c.example", **manager),
            }
        )
    status, answer = send(scim, "POST", "/v2/Bulk", bulk_body(*reversed(operations)))
    assert status == 200
    assert {r["status"] for r in answer["Operations"]} == {"201"}


def test_a_bulk_version_that_is_not_a_string_is_invalid(scim):
    _, created = send(scim, "POST", "/v2/Users", user())
    operation = {"method": "DELETE", "path": f"/Users/{created['id']}", "version": 5}
    _, answer = send(scim, "POST", "/v2/Bulk", bulk_body(operation))
    assert answer["Operations"][0]["status"] == "400"
    assert scim.store.count_users(scim.directory_id) == 1


def test_the_api_sets_no_session_cookie_even_when_sent_one(scim):
    scim.set_cookie("session", "forged.value.here", domain="localhost")
    for response in (scim.get("/v2/Users"), scim.get("/v2/Nothing")):
        assert "Set-Cookie" not in response.headers
        assert response.mimetype == "application/scim+json"
