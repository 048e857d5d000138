"""The SCIM filter and PATCH language: RFC 7644 examples and every Entra ID body we know of."""

import copy
import json
from pathlib import Path

import pytest

from scimlang import (
    Filter,
    ResourceSchema,
    ScimError,
    _FilterParser,
    _string_equality,
    apply_patch,
    compile_filter,
    equality_terms,
    parse_filter,
    project,
    sort_key,
    split_member_operations,
    text_terms,
)

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

_DEFINITIONS = {
    schema["id"]: schema
    for schema in json.loads(
        (Path(__file__).parent.parent / "scim_schemas.json").read_text(encoding="utf-8")
    )
}
USER = ResourceSchema(_DEFINITIONS[CORE_USER], [_DEFINITIONS[ENTERPRISE]])
GROUP = ResourceSchema(_DEFINITIONS[CORE_GROUP])

BJENSEN = {
    "id": "2819c223-7f76-453a-919d-413861904646",
    "externalId": "bjensen-ext",
    "schemas": [CORE_USER, ENTERPRISE],
    "userName": "bjensen",
    "name": {"familyName": "Jensen", "givenName": "Barbara"},
    "title": "Tour Guide",
    "userType": "Employee",
    "active": True,
    "emails": [
        {"type": "work", "value": "bjensen@example.com", "primary": True},
        {"type": "home", "value": "babs@jensen.org"},
    ],
    "ims": [{"type": "xmpp", "value": "babs@foo.com"}],
    "meta": {"resourceType": "User", "lastModified": "2011-05-13T04:42:34Z"},
    ENTERPRISE: {"department": "R&D", "manager": {"value": "26118915"}},
}
OMALLEY = {
    "id": "omalley",
    "schemas": [CORE_USER],
    "userName": "JOMalley",
    "name": {"familyName": "O'Malley"},
    "userType": "Intern",
    "active": False,
    "emails": [{"type": "work", "value": "jo@example.org"}],
    "meta": {"resourceType": "User", "lastModified": "2012-01-01T00:00:00Z"},
}
PLAIN = {
    "id": "plain",
    "schemas": [CORE_USER],
    "userName": "ana",
    "meta": {"resourceType": "User", "lastModified": "2010-01-01T00:00:00Z"},
}
USERS = [BJENSEN, OMALLEY, PLAIN]


def matching(text: str, resources=USERS, schema=USER) -> set[str]:
    matches = compile_filter(text, schema)
    return {resource["id"] for resource in resources if matches(resource)}


def patch(resource: dict, *operations: dict, schema=USER) -> dict:
    return apply_patch(resource, list(operations), schema)


def scim_error(call, *args) -> ScimError:
    with pytest.raises(ScimError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


# --- filters: every example of RFC 7644 §3.4.2.2 -------------------------------------------

RFC_FILTER_EXAMPLES = [
    ('userName eq "bjensen"', {BJENSEN["id"]}),
    ('name.familyName co "O\'Malley"', {"omalley"}),
    ('userName sw "J"', {"omalley"}),
    (f'{CORE_USER}:userName sw "J"', {"omalley"}),
    ("title pr", {BJENSEN["id"]}),
    ('meta.lastModified gt "2011-05-13T04:42:34Z"', {"omalley"}),
    ('meta.lastModified ge "2011-05-13T04:42:34Z"', {BJENSEN["id"], "omalley"}),
    ('meta.lastModified lt "2011-05-13T04:42:34Z"', {"plain"}),
    ('meta.lastModified le "2011-05-13T04:42:34Z"', {BJENSEN["id"], "plain"}),
    ('title pr and userType eq "Employee"', {BJENSEN["id"]}),
    ('title pr or userType eq "Intern"', {BJENSEN["id"], "omalley"}),
    (f'schemas eq "{ENTERPRISE}"', {BJENSEN["id"]}),
    (
        'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")',
        {BJENSEN["id"]},
    ),
    (
        'userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")',
        {"plain"},
    ),
    ('userType eq "Employee" and (emails.type eq "work")', {BJENSEN["id"]}),
    (
        'userType eq "Employee" and emails[type eq "work" and\n  value co "@example.com"]',
        {BJENSEN["id"]},
    ),
    (
        'emails[type eq "work" and value co "@example.com"] or\n'
        '  ims[type eq "xmpp" and value co "@foo.com"]',
        {BJENSEN["id"]},
    ),
]


@pytest.mark.parametrize(("text", "expected"), RFC_FILTER_EXAMPLES)
def test_rfc_filter_examples_parse(text, expected):
    assert isinstance(parse_filter(text), Filter)


@pytest.mark.parametrize(("text", "expected"), RFC_FILTER_EXAMPLES)
def test_rfc_filter_examples_select_the_right_users(text, expected):
    assert matching(text) == expected


def test_and_binds_tighter_than_or():
    assert matching('title pr or userType eq "Intern" and userName eq "nobody"') == {BJENSEN["id"]}
    assert matching('(title pr or userType eq "Intern") and userName eq "nobody"') == set()


def test_keywords_operators_and_attribute_names_are_case_insensitive():
    assert matching('USERNAME EQ "BJENSEN" AND Title PR') == {BJENSEN["id"]}
    assert matching('NOT (userName Eq "bjensen")') == {"omalley", "plain"}


def test_case_exact_attributes_compare_exactly():
    assert matching('id eq "2819C223-7F76-453A-919D-413861904646"') == set()
    assert matching('externalId eq "bjensen-ext"') == {BJENSEN["id"]}
    assert matching('externalId eq "BJENSEN-EXT"') == set()


def test_entra_probe_and_matching_queries():
    # Test Connection's random GUID matches nobody; the matching-attribute queries find users.
    assert matching('userName eq "7d420df3-0b5c-4a1e-9c9a-6a0e3a1c2f11"') == set()
    assert matching('userName eq "BJensen"') == {BJENSEN["id"]}
    assert matching('externalId eq "bjensen-ext"') == {BJENSEN["id"]}


def test_entra_filters_on_the_work_email_path():
    # entra-scim.md §3.11: the mail mapping, emails[type eq "work"].value, must be filterable.
    assert matching('emails[type eq "work"].value eq "BJENSEN@example.com"') == {BJENSEN["id"]}
    assert matching('emails[type eq "home"].value eq "bjensen@example.com"') == set()
    assert matching('emails.value eq "babs@jensen.org"') == {BJENSEN["id"]}


def test_group_display_name_filter():
    groups = [{"id": "g1", "displayName": "Sales"}, {"id": "g2", "displayName": "R&D"}]
    assert matching('displayName eq "sales"', groups, GROUP) == {"g1"}


def test_extension_attributes_qualified_or_not():
    assert matching(f'{ENTERPRISE}:manager.value eq "26118915"') == {BJENSEN["id"]}
    assert matching('department eq "r&d"') == {BJENSEN["id"]}
    assert matching("manager.value pr") == {BJENSEN["id"]}


def test_literals_booleans_null_and_escapes():
    assert matching("active eq false") == {"omalley"}
    assert matching("title eq null") == {"omalley", "plain"}
    assert matching("title ne null") == {BJENSEN["id"]}
    assert matching('name.familyName eq "O\\u0027Malley"') == {"omalley"}
    assert isinstance(parse_filter("x eq -1.5e3"), Filter)


def test_datetimes_compare_as_moments_not_text():
    assert matching('meta.lastModified eq "2011-05-13T06:42:34+02:00"') == {BJENSEN["id"]}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('userName eq "bjensen', "unterminated string at position 12"),
        ('(userName eq "x"', "missing ')'"),
        ('emails[type eq "work"', "missing ']'"),
        ("userName eq", "expected a value"),
        ('userName "x"', "expected an operator"),
        ('userName eq "x" userName', "unexpected 'userName' at position 16"),
        ('userName xx "x"', "expected an operator after 'userName' but found 'xx'"),
        ('userName eq "x")', "unexpected ')'"),
        ('not userName eq "x"', "expected '(' after 'not'"),
        ('userName eq "x" and', "expected an attribute path"),
        ("userName eq bjensen", "expected a value"),
        ('userName eq "x" # 1', "unexpected character '#'"),
        ("", "empty"),
    ],
)
def test_malformed_filters_say_what_and_where(text, where):
    error = scim_error(parse_filter, text)
    assert error.scim_type == "invalidFilter"
    assert where in error.detail


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('nickname2 eq "x"', "unknown attribute"),
        ('name.nothing eq "x"', "no sub-attribute"),
        ('name eq "x"', "complex"),
        ("active gt true", "cannot compare"),
        ("active co true", "needs a string"),
        ("userName eq 5", "not a valid string"),
        ('emails[kind eq "work"]', "no sub-attribute"),
        ('urn:example:unknown:1.0:User:x eq "y"', "unknown schema"),
    ],
)
def test_filters_the_schema_cannot_evaluate_are_invalid(text, reason):
    error = scim_error(compile_filter, text, USER)
    assert error.scim_type == "invalidFilter"
    assert reason in error.detail


# --- equality_terms -------------------------------------------------------------------------


def test_equality_terms_returns_top_level_eq_terms_for_an_index():
    assert equality_terms('userName eq "7d420df3"', USER) == {"username": "7d420df3"}
    assert equality_terms('EXTERNALID eq "abc" and title pr', USER) == {"externalid": "abc"}
    assert equality_terms('id eq "1" and (userName eq "a" or userName eq "b")', USER) == {"id": "1"}
    assert equality_terms('displayName eq "Sales"', GROUP) == {"displayname": "Sales"}
    assert equality_terms(f'{ENTERPRISE}:department eq "R&D"', USER) == {
        f"{ENTERPRISE}:department".lower(): "R&D"
    }


def test_equality_terms_ignores_what_is_not_a_required_equality():
    assert equality_terms('userName eq "a" or externalId eq "b"', USER) == {}
    assert equality_terms('not (userName eq "a")', USER) == {}
    assert equality_terms('userName ne "a" and active eq true', USER) == {}


def test_equality_terms_accepts_a_parsed_filter():
    assert equality_terms(parse_filter('userName eq "a"'), USER) == {"username": "a"}


# --- sorting and projection -----------------------------------------------------------------


def test_sort_key_orders_case_insensitively_with_missing_values_last():
    users = [{"id": "1", "userName": "bob"}, {"id": "2"}, {"id": "3", "userName": "Alice"}]
    ascending = sorted(users, key=sort_key("userName", USER))
    descending = sorted(users, key=sort_key("username", USER), reverse=True)
    assert [u["id"] for u in ascending] == ["3", "1", "2"]
    assert [u["id"] for u in descending] == ["2", "1", "3"]


def test_sort_key_uses_the_primary_value_of_multi_valued_attributes():
    users = [
        {"id": "1", "emails": [{"value": "a@x"}, {"value": "z@x", "primary": True}]},
        {"id": "2", "emails": [{"value": "m@x"}, {"value": "b@x"}]},
    ]
    assert [u["id"] for u in sorted(users, key=sort_key("emails", USER))] == ["2", "1"]
    assert [u["id"] for u in sorted(users, key=sort_key("emails.value", USER))] == ["2", "1"]


def test_sort_key_by_date_and_unknown_attribute():
    ordered = sorted(USERS, key=sort_key("meta.lastModified", USER))
    assert [u["id"] for u in ordered] == ["plain", BJENSEN["id"], "omalley"]
    assert scim_error(sort_key, "shoeSize", USER).scim_type == "invalidValue"


def test_project_attributes_keeps_only_those_plus_always_returned():
    assert project(BJENSEN, USER, ["userName"], None) == {
        "id": BJENSEN["id"],
        "schemas": [CORE_USER, ENTERPRISE],
        "userName": "bjensen",
    }


def test_project_sub_attribute_and_urn_paths():
    shaped = project(
        BJENSEN, USER, ["name.givenName", "emails.value", f"{ENTERPRISE}:department"], None
    )
    assert shaped["name"] == {"givenName": "Barbara"}
    assert shaped["emails"] == [{"value": "bjensen@example.com"}, {"value": "babs@jensen.org"}]
    assert shaped[ENTERPRISE] == {"department": "R&D"}
    assert "meta" not in shaped and "title" not in shaped


def test_project_excluded_attributes_never_drop_always_ones():
    shaped = project(BJENSEN, USER, None, ["emails", "id", "name.givenName", ENTERPRISE])
    assert "emails" not in shaped and ENTERPRISE not in shaped
    assert shaped["id"] == BJENSEN["id"]
    assert shaped["name"] == {"familyName": "Jensen"}
    assert shaped["title"] == "Tour Guide"


def test_project_never_returns_password_and_ignores_unknown_names():
    user = {**PLAIN, "password": "hunter2"}
    assert "password" not in project(user, USER, None, None)
    assert "password" not in project(user, USER, ["password", "bogus"], None)
    assert project(user, USER, None, ["bogus"]) == PLAIN


def test_project_groups_without_members_as_entra_reads_them():
    group = {"id": "g1", "schemas": [CORE_GROUP], "displayName": "Sales"}
    shaped = project({**group, "members": [{"value": "u1"}]}, GROUP, None, ["members"])
    assert shaped == group


def test_project_leaves_its_input_alone():
    before = copy.deepcopy(BJENSEN)
    project(BJENSEN, USER, ["name.givenName"], None)
    assert before == BJENSEN


# --- PATCH: the examples of RFC 7644 §3.5.2.1-3 ---------------------------------------------

BABS = "2819c223-7f76-453a-919d-413861904646"
JAMES = "08e1d05d-121c-4561-8b96-473d93df9210"
GROUP_A = {"id": "acbf3ae7", "schemas": [CORE_GROUP], "displayName": "Tour Guides"}


def member(user_id: str, name: str) -> dict:
    return {"display": name, "$ref": f"https://example.com/v2/Users/{user_id}", "value": user_id}


def test_rfc_add_members():
    patched = patch(
        GROUP_A, {"op": "add", "path": "members", "value": [member(BABS, "Babs")]}, schema=GROUP
    )
    # "display" is readOnly in the Group schema, so a client's copy is not stored.
    assert patched["members"] == [{"$ref": f"https://example.com/v2/Users/{BABS}", "value": BABS}]


def test_rfc_add_without_path():
    patched = patch(
        BJENSEN,
        {
            "op": "add",
            "value": {"emails": [{"value": "babs@jensen.net", "type": "home"}], "nickname": "Babs"},
        },
    )
    assert patched["emails"][-1] == {"value": "babs@jensen.net", "type": "home"}
    assert len(patched["emails"]) == 3
    assert patched["nickName"] == "Babs"


def test_rfc_remove_one_member_all_members_and_replace_all_members():
    group = {**GROUP_A, "members": [{"value": BABS}, {"value": JAMES}]}
    one = patch(group, {"op": "remove", "path": f'members[value eq "{BABS}"]'}, schema=GROUP)
    assert one["members"] == [{"value": JAMES}]
    assert "members" not in patch(group, {"op": "remove", "path": "members"}, schema=GROUP)
    swapped = patch(
        group,
        {"op": "remove", "path": "members"},
        {"op": "add", "path": "members", "value": [member(BABS, "Babs")]},
        schema=GROUP,
    )
    assert [m["value"] for m in swapped["members"]] == [BABS]


def test_rfc_remove_filtered_multi_valued_entries():
    patched = patch(
        BJENSEN, {"op": "remove", "path": 'emails[type eq "work" and value ew "example.com"]'}
    )
    assert patched["emails"] == [{"type": "home", "value": "babs@jensen.org"}]


def test_rfc_replace_all_members():
    group = {**GROUP_A, "members": [{"value": "old"}]}
    patched = patch(
        group,
        {"op": "replace", "path": "members", "value": [member(BABS, "Babs"), member(JAMES, "J")]},
        schema=GROUP,
    )
    assert [m["value"] for m in patched["members"]] == [BABS, JAMES]


def test_rfc_replace_a_filtered_entry_and_one_of_its_sub_attributes():
    user = {**BJENSEN, "addresses": [{"type": "work", "streetAddress": "old", "locality": "x"}]}
    work = {
        "type": "work",
        "streetAddress": "911 Universal City Plaza",
        "locality": "Hollywood",
        "region": "CA",
        "postalCode": "91608",
        "country": "US",
        "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US",
        "primary": True,
    }
    replaced = patch(user, {"op": "replace", "path": 'addresses[type eq "work"]', "value": work})
    assert replaced["addresses"] == [work]
    moved = patch(
        replaced,
        {
            "op": "replace",
            "path": 'addresses[type eq "work"].streetAddress',
            "value": "1010 Broadway Ave",
        },
    )
    assert moved["addresses"] == [{**work, "streetAddress": "1010 Broadway Ave"}]


def test_rfc_replace_without_path():
    emails = [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ]
    patched = patch(OMALLEY, {"op": "replace", "value": {"emails": emails, "nickname": "Babs"}})
    assert patched["emails"] == emails
    assert patched["nickName"] == "Babs"


# --- PATCH: Entra ID's bodies (entra-scim.md §2, §3) ----------------------------------------


@pytest.mark.parametrize("verb", ["Replace", "replace", "REPLACE"])
def test_op_is_case_insensitive(verb):
    assert patch(BJENSEN, {"op": verb, "path": "title", "value": "Boss"})["title"] == "Boss"


@pytest.mark.parametrize(("sent", "stored"), [("False", False), ("True", True), (False, False)])
def test_active_accepts_entra_boolean_strings(sent, stored):
    patched = patch(BJENSEN, {"op": "Replace", "path": "active", "value": sent})
    assert patched["active"] is stored


def test_boolean_strings_inside_complex_values_demote_the_old_primary():
    patched = patch(
        BJENSEN,
        {
            "op": "Add",
            "path": "emails",
            "value": [{"value": "new@x", "type": "other", "primary": "True"}],
        },
    )
    assert [e.get("primary") for e in patched["emails"]] == [False, None, True]


def test_path_less_batched_replace_applies_dotted_and_urn_keys_as_paths():
    patched = patch(
        BJENSEN,
        {
            "op": "replace",
            "value": {
                "displayName": "Babs J",
                "name.givenName": "Babs",
                "name.familyName": "Jensen-Smith",
                f"{ENTERPRISE}:employeeNumber": "701984",
            },
        },
    )
    assert patched["displayName"] == "Babs J"
    assert patched["name"] == {"givenName": "Babs", "familyName": "Jensen-Smith"}
    assert patched[ENTERPRISE]["employeeNumber"] == "701984"
    assert set(patched) == {*BJENSEN, "displayName"}


def test_default_and_flagged_jobs_produce_the_same_user():
    # entra-scim.md §3.14: with or without aadOptscim062020 the server must handle both shapes.
    default_job = patch(
        BJENSEN,
        {"op": "Replace", "path": "displayName", "value": "Babs"},
        {"op": "Replace", "path": "name.givenName", "value": "Babs"},
        {"op": "Replace", "path": "active", "value": "False"},
    )
    flagged_job = patch(
        BJENSEN,
        {"op": "replace", "value": {"displayName": "Babs", "name.givenName": "Babs"}},
        {"op": "replace", "path": "active", "value": False},
    )
    assert default_job == flagged_job


def test_whole_extension_key_in_a_path_less_value():
    patched = patch(PLAIN, {"op": "add", "value": {ENTERPRISE: {"Department": "Sales"}}})
    assert patched[ENTERPRISE] == {"department": "Sales"}
    assert patched["schemas"] == [CORE_USER, ENTERPRISE]


def test_work_email_is_created_when_absent_then_updated():
    added = patch(PLAIN, {"op": "Add", "path": 'emails[type eq "work"].value', "value": "ana@x"})
    assert added["emails"] == [{"type": "work", "value": "ana@x"}]
    changed = patch(
        added, {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "a@y"}
    )
    assert changed["emails"] == [{"type": "work", "value": "a@y"}]


def test_phone_numbers_by_type_each_get_one_entry():
    patched = patch(
        PLAIN,
        {"op": "Add", "path": 'phoneNumbers[type eq "work"].value', "value": "+1 555 0100"},
        {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555 0101"},
        {"op": "Replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555 0102"},
    )
    assert patched["phoneNumbers"] == [
        {"type": "work", "value": "+1 555 0100"},
        {"type": "mobile", "value": "+1 555 0102"},
    ]


def test_five_address_ops_make_one_work_address():
    parts = {
        "streetAddress": "1 Main St",
        "locality": "Springfield",
        "region": "IL",
        "postalCode": "62701",
        "country": "US",
    }
    operations = [
        {"op": "Add", "path": f'addresses[type eq "work"].{name}', "value": value}
        for name, value in parts.items()
    ]
    patched = apply_patch(PLAIN, operations, USER)
    assert patched["addresses"] == [{"type": "work", **parts}]


MANAGER_PATH = f"{ENTERPRISE}:manager"


def test_manager_set_by_bare_id_changed_and_cleared_with_empty_string():
    user = copy.deepcopy(PLAIN)
    managed = patch(user, {"op": "Add", "path": MANAGER_PATH, "value": "boss-1"})
    assert managed[ENTERPRISE] == {"manager": {"value": "boss-1"}}
    assert managed["schemas"] == [CORE_USER, ENTERPRISE]
    changed = patch(managed, {"op": "replace", "path": MANAGER_PATH, "value": "boss-2"})
    assert changed[ENTERPRISE] == {"manager": {"value": "boss-2"}}
    cleared = patch(changed, {"op": "replace", "path": MANAGER_PATH, "value": ""})
    assert ENTERPRISE not in cleared
    assert cleared["schemas"] == [CORE_USER]


def test_manager_new_id_drops_the_old_managers_details():
    user = {**PLAIN, ENTERPRISE: {"manager": {"value": "boss-1", "$ref": "../Users/boss-1"}}}
    changed = patch(user, {"op": "replace", "path": MANAGER_PATH, "value": {"value": "boss-2"}})
    assert changed[ENTERPRISE]["manager"] == {"value": "boss-2"}


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "Remove", "path": MANAGER_PATH},
        {"op": "Replace", "path": MANAGER_PATH, "value": {"value": ""}},
        {"op": "Replace", "path": f"{MANAGER_PATH}.value", "value": ""},
        {"op": "replace", "value": {MANAGER_PATH: ""}},
    ],
)
def test_manager_cleared_every_way_entra_might(operation):
    cleared = patch(BJENSEN, operation)
    assert cleared[ENTERPRISE] == {"department": "R&D"}


def test_manager_older_list_form_on_the_unqualified_path():
    patched = patch(
        PLAIN, {"op": "Add", "path": "manager", "value": [{"$ref": None, "value": "boss-1"}]}
    )
    assert patched[ENTERPRISE] == {"manager": {"value": "boss-1"}}


def test_members_added_many_at_once_and_re_adding_is_a_no_op():
    add = {
        "op": "Add",
        "path": "members",
        "value": [{"$ref": None, "value": "u1"}, {"$ref": None, "value": "u2"}],
    }
    once = patch(GROUP_A, add, schema=GROUP)
    assert once["members"] == [{"value": "u1"}, {"value": "u2"}]
    assert patch(once, add, add, schema=GROUP) == once


def test_members_removed_by_value_list_keeps_the_others():
    group = {**GROUP_A, "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u3"}]}
    patched = patch(
        group,
        {
            "op": "Remove",
            "path": "members",
            "value": [{"value": "u1", "$ref": None}, {"value": "u3"}],
        },
        schema=GROUP,
    )
    assert patched["members"] == [{"value": "u2"}]


def test_members_removed_by_filter_and_all_members_removed():
    group = {**GROUP_A, "members": [{"value": "u1"}, {"value": "u2"}]}
    patched = patch(group, {"op": "remove", "path": 'members[value eq "u1"]'}, schema=GROUP)
    assert patched["members"] == [{"value": "u2"}]
    emptied = patch(patched, {"op": "remove", "path": 'members[value eq "u2"]'}, schema=GROUP)
    assert "members" not in emptied
    assert "members" not in patch(group, {"op": "Remove", "path": "members"}, schema=GROUP)


def test_removing_what_is_not_there_is_not_an_error():
    group = {**GROUP_A, "members": [{"value": "u1"}]}
    for operation in (
        {"op": "remove", "path": 'members[value eq "gone"]'},
        {"op": "Remove", "path": "members", "value": [{"value": "gone"}]},
    ):
        assert patch(group, operation, schema=GROUP) == group


def test_empty_string_clears_attributes_per_op_and_batched():
    per_op = patch(
        BJENSEN,
        {"op": "replace", "path": "title", "value": ""},
        {"op": "replace", "path": "name.givenName", "value": ""},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": ""},
    )
    batched = patch(
        BJENSEN,
        {
            "op": "replace",
            "value": {"title": "", "name.givenName": "", 'emails[type eq "work"].value': ""},
        },
    )
    for patched in (per_op, batched):
        assert "title" not in patched
        assert patched["name"] == {"familyName": "Jensen"}
        assert patched["emails"] == [{"type": "home", "value": "babs@jensen.org"}]


def test_empty_complex_values_and_lists_are_deleted():
    patched = patch(
        BJENSEN,
        {"op": "remove", "path": "name.givenName"},
        {"op": "remove", "path": "name.familyName"},
        {"op": "remove", "path": 'ims[type eq "xmpp"]'},
    )
    assert "name" not in patched and "ims" not in patched


def test_null_is_nothing_to_add_and_replace_with_null_removes():
    assert patch(BJENSEN, {"op": "add", "path": "title", "value": None}) == BJENSEN
    assert patch(BJENSEN, {"op": "add", "value": {"title": None}}) == BJENSEN
    assert "title" not in patch(BJENSEN, {"op": "replace", "path": "title", "value": None})


def test_keys_inside_values_take_the_schema_spelling():
    patched = patch(PLAIN, {"op": "add", "path": "NAME", "value": {"GivenName": "Ana", "bogus": 1}})
    assert patched["name"] == {"givenName": "Ana"}


def test_complex_add_merges_sub_attributes():
    patched = patch(BJENSEN, {"op": "add", "path": "name", "value": {"middleName": "Q"}})
    assert patched["name"] == {"familyName": "Jensen", "givenName": "Barbara", "middleName": "Q"}


def test_unknown_attribute_in_a_path_is_invalid_path():
    error = scim_error(patch, BJENSEN, {"op": "add", "path": "shoeSize", "value": "42"})
    assert error.scim_type == "invalidPath"
    assert "shoeSize" in error.detail


def test_unknown_key_in_a_path_less_value_is_ignored():
    patched = patch(BJENSEN, {"op": "replace", "value": {"shoeSize": "42", "title": "Chief"}})
    assert patched == {**BJENSEN, "title": "Chief"}


@pytest.mark.parametrize(
    ("operation", "schema"),
    [
        ({"op": "replace", "path": "id", "value": "new"}, USER),
        ({"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}, USER),
        ({"op": "add", "path": "groups", "value": [{"value": "g1"}]}, USER),
        ({"op": "remove", "path": "meta"}, USER),
        ({"op": "replace", "value": {"id": "new"}}, USER),
        ({"op": "replace", "path": f"{MANAGER_PATH}.displayName", "value": "Boss"}, USER),
        ({"op": "replace", "path": 'members[value eq "u1"].value', "value": "u9"}, GROUP),
    ],
)
def test_read_only_and_immutable_targets_are_mutability_errors(operation, schema):
    resource = {**GROUP_A, "members": [{"value": "u1"}]} if schema is GROUP else BJENSEN
    assert scim_error(apply_patch, resource, [operation], schema).scim_type == "mutability"


def test_a_bad_operation_applies_nothing():
    before = copy.deepcopy(BJENSEN)
    operations = [
        {"op": "replace", "path": "title", "value": "Changed"},
        {"op": "replace", "path": "shoeSize", "value": "42"},
    ]
    error = scim_error(apply_patch, BJENSEN, operations, USER)
    assert error.detail.startswith("Operations[1]:")
    assert before == BJENSEN


def test_patch_returns_a_new_resource():
    before = copy.deepcopy(BJENSEN)
    patched = patch(BJENSEN, {"op": "add", "path": "emails", "value": [{"value": "n@x"}]})
    assert before == BJENSEN
    assert patched is not BJENSEN and len(patched["emails"]) == 3


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "active", "value": "False"},
        {"op": "replace", "path": "name.givenName", "value": "Babs"},
        {"op": "add", "path": "emails", "value": [{"type": "other", "value": "b@x"}]},
        {"op": "replace", "path": "emails", "value": [{"type": "work", "value": "w@x"}]},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "w@x"},
        {"op": "replace", "path": 'emails[type eq "work"].primary', "value": False},
        {"op": "add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555"},
        {"op": "remove", "path": 'emails[type eq "home"]'},
        {"op": "remove", "path": 'emails[type eq "work"].primary'},
        {"op": "remove", "path": "emails", "value": [{"value": "babs@jensen.org"}]},
        {"op": "remove", "path": "name.familyName"},
        {"op": "remove", "path": "ims"},
        {"op": "replace", "value": {"name": {"givenName": "B"}, "emails": [{"value": "p@x"}]}},
        {"op": "replace", "value": {"name.familyName": "J", "title": "Guide"}},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": "m2"},
        {"op": "replace", "path": f"{ENTERPRISE}:manager.value", "value": "m3"},
        {"op": "remove", "path": f"{ENTERPRISE}:manager"},
        {"op": "remove", "path": f"{ENTERPRISE}:department"},
        {"op": "add", "path": ENTERPRISE, "value": {"department": "Sales"}},
        {"op": "replace", "value": {ENTERPRISE: {"department": "Ops"}}},
        {"op": "remove", "path": ENTERPRISE},
    ],
)
def test_patch_never_changes_the_resource_it_is_given(operation):
    """The result shares the values no operation touched, so every write under a value must
    go to the result's own copy: the stored resource is what PATCH is given."""
    resource = copy.deepcopy(BJENSEN)
    patched = patch(resource, operation)
    assert resource == BJENSEN
    assert patched != BJENSEN
    patched_again = patch(resource, operation, operation)
    assert resource == BJENSEN
    assert patched_again["schemas"] == patched["schemas"]


@pytest.mark.parametrize(
    ("operations", "scim_type"),
    [
        ([], "invalidSyntax"),
        ({"op": "add"}, "invalidSyntax"),
        (["add"], "invalidSyntax"),
        ([{"op": "copy", "path": "title", "value": "x"}], "invalidSyntax"),
        ([{"op": "replace", "path": "title"}], "invalidSyntax"),
        ([{"op": "remove"}], "noTarget"),
        ([{"op": "replace", "path": "userName", "value": ["a", "b"]}], "invalidValue"),
        ([{"op": "replace", "value": "not an object"}], "invalidValue"),
        ([{"op": "replace", "path": "active", "value": "maybe"}], "invalidValue"),
        ([{"op": "replace", "path": 'emails[value co "zzz"].type', "value": "x"}], "noTarget"),
        ([{"op": "add", "path": 'emails[type eq "work"', "value": "x"}], "invalidPath"),
        ([{"op": "add", "path": 'emails[type xx "work"].value', "value": "x"}], "invalidFilter"),
        ([{"op": "add", "path": 'title[value eq "x"]', "value": "x"}], "invalidPath"),
    ],
)
def test_malformed_operations_are_rejected(operations, scim_type):
    assert scim_error(apply_patch, BJENSEN, operations, USER).scim_type == scim_type


def test_extension_urn_leaves_schemas_when_its_object_goes():
    patched = patch(
        BJENSEN,
        {"op": "remove", "path": f"{ENTERPRISE}:department"},
        {"op": "remove", "path": "manager"},
    )
    assert ENTERPRISE not in patched
    assert patched["schemas"] == [CORE_USER]


def test_an_extension_only_listed_in_schemas_stays_listed():
    # Entra creates users with the enterprise URN in schemas and no enterprise values (§2).
    user = {**PLAIN, "schemas": [CORE_USER, ENTERPRISE]}
    assert patch(user, {"op": "replace", "path": "title", "value": "x"})["schemas"] == [
        CORE_USER,
        ENTERPRISE,
    ]


def test_entra_create_body_is_filterable_and_projectable():
    created = {
        "id": "u-1",
        "schemas": [CORE_USER, ENTERPRISE],
        "externalId": "0a1b2c3d",
        "userName": "ana@contoso.example",
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": "ana@contoso.example"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ana Berg", "familyName": "Berg", "givenName": "Ana"},
        "roles": [],
    }
    assert compile_filter('userName eq "ANA@contoso.example"', USER)(created)
    assert "roles" not in project(created, USER, None, None)


def test_text_terms_name_the_case_insensitive_string_comparisons_a_store_can_narrow_by():
    terms = text_terms(
        'displayName co "Berg" and userName sw "A" and title ew "X" and externalId eq "Id"'
        ' and emails.value co "y" and (nickName co "z" or title co "w")',
        USER,
    )
    # externalId is caseExact (RFC 7643 §3.1); emails is multi-valued; an "or" is not a term.
    assert terms == [("displayName", "co", "berg"), ("userName", "sw", "a"), ("title", "ew", "x")]
    assert text_terms('not (displayName co "a")', USER) == []
    assert text_terms('displayName gt "a"', USER) == []


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ([{"$ref": None, "value": "a"}, {"value": "b"}], ["a", "b"]),  # Entra's batch
        ([{"Value": "a"}, {"value": "b"}], ["a", "b"]),  # "value" in any case
        ({"value": "a"}, ["a"]),  # one member, not in a list
        (["a", "b"], ["a", "b"]),  # bare ids
        ([], []),
    ],
)
def test_member_values_become_ids(value, ids):
    operations = [{"op": "add", "path": "members", "value": value}]
    assert split_member_operations(operations) == ([], [("add", ids)])


@pytest.mark.parametrize(
    "value",
    [
        [{"value": "a"}, {"value": ""}],
        [{"value": "a"}, {"value": 7}],
        [{"value": "a"}, {"display": "no value"}],
        [{"value": "a"}, ["a"]],
        [{"value": "a"}, None],
    ],
)
def test_a_member_without_a_user_id_is_invalid_value(value):
    operations = [{"op": "add", "path": "members", "value": value}]
    with pytest.raises(ScimError) as raised:
        split_member_operations(operations)
    assert (raised.value.status, raised.value.scim_type) == (400, "invalidValue")


def _outcome(parse, text: str):
    try:
        return parse(text)
    except ScimError as error:
        return (error.status, error.scim_type, error.detail)


QUICKLY_READ = [
    'userName eq "ana@contoso.example"',
    '  userName   EQ   "x"  ',
    'userName Eq ""',
    'emails.value eq "ana@contoso.example"',
    f'{ENTERPRISE}:employeeNumber eq "E1"',
    'externalId eq "a \\"quoted\\" id"',
    'displayName eq "\\u00e9l\\u00e8ve"',
    'displayName eq "Zoë Ødegård"',
]
LEFT_TO_THE_PARSER = [
    'not eq "x"',
    'AND eq "x"',
    'Or eq "x"',
    'userName eq "bad \\x escape"',
    'userName eq "a raw\ttab"',
    '1userName eq "x"',
    'user-name.first.second eq "x"',
    'userName eq"x"',
    "userName eq 5",
    'userName eq "x" and title eq "y"',
    'userName eq "x" )',
    'emails[type eq "work"].value eq "x"',
    'userName eq "x',
]


@pytest.mark.parametrize("text", QUICKLY_READ + LEFT_TO_THE_PARSER)
def test_the_quick_reading_of_attr_eq_string_gives_what_the_parser_gives(text):
    """parse_filter reads Entra's ``attr eq "value"`` without the parser; anything it reads
    must come out as the parser reads it, and anything else, refusals too, is the parser's."""
    assert (_string_equality(text) is not None) == (text in QUICKLY_READ)
    assert _outcome(parse_filter, text) == _outcome(lambda t: _FilterParser(t).parse(), text)
