"""The User rules every write passes through: canonical names, Entra's loose types, limits."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

import schemas
from bench import entra
from schemas import (
    CORE_USER_URN,
    ENTERPRISE_USER_URN,
    MAPPING_TABLE,
    USER_RESOURCE,
    load_patched_user,
    load_user,
    prune_empty,
)
from scimlang import ScimError, apply_patch, compile_filter


def validation_outcome(validate: Callable[[Any], dict], data: Any) -> tuple:
    """What a User validation path makes of ``data``, comparable with ``==``: the stored form
    with its JSON text (which also tells True from 1 and keeps key order), or the SCIM error."""
    try:
        result = validate(copy.deepcopy(data))
    except ScimError as error:
        return ("refused", error.status, error.scim_type, error.detail)
    return ("stored", result, json.dumps(result, ensure_ascii=False))


def body(**extra) -> dict:
    return {
        "schemas": [CORE_USER_URN],
        "userName": "ana@contoso.example",
        "displayName": "Ana",
        **extra,
    }


def rejected(data) -> ScimError:
    with pytest.raises(ScimError) as caught:
        load_user(data)
    assert caught.value.status == 400
    assert caught.value.scim_type == "invalidValue"
    return caught.value


def test_attribute_names_and_urns_are_matched_in_any_case():
    user = load_user(
        {
            "SCHEMAS": [CORE_USER_URN.upper()],
            "UserName": "ana@contoso.example",
            "DISPLAYNAME": "Ana",
            "Name": {"GivenName": "Ana"},
            ENTERPRISE_USER_URN.upper(): {"Department": "R&D"},
        }
    )
    assert user["userName"] == "ana@contoso.example"
    assert user["name"] == {"givenName": "Ana"}
    assert user[ENTERPRISE_USER_URN] == {"department": "R&D"}
    assert user["schemas"] == [CORE_USER_URN, ENTERPRISE_USER_URN]


def test_entra_boolean_strings_become_booleans():
    assert load_user(body(active="False"))["active"] is False
    assert load_user(body(active="True"))["active"] is True
    emails = load_user(body(emails=[{"type": "work", "value": "a@b.example", "primary": "True"}]))
    assert emails["emails"][0]["primary"] is True


def test_null_and_empty_values_are_absent_and_unknown_attributes_ignored():
    user = load_user(
        body(title=None, nickName="", roles=[], addresses=None, favouriteColour="red", meta={})
    )
    assert set(user) == {"schemas", "userName", "displayName"}


def test_pruning_drops_only_nulls_and_empty_strings_lists_and_objects():
    inner = {"kept": "x"}
    value = {
        "null": None,
        "text": "",
        "list": [None, "", [], {}],
        "object": {"deeper": {"deepest": [{}]}},
        "false": False,
        "zero": 0,
        "float": 0.0,
        "blank": " ",
        "lists": [[], ["k"], inner],
    }
    pruned = prune_empty(value)
    assert pruned == {
        "false": False,
        "zero": 0,
        "float": 0.0,
        "blank": " ",
        "lists": [["k"], inner],
    }
    assert pruned["lists"][1] is not inner  # new containers: callers may change what they get


def test_read_only_attributes_sent_back_are_ignored():
    user = load_user(body(id="client-chosen", groups=[{"value": "g"}], meta={"version": "x"}))
    assert "id" not in user and "groups" not in user and "meta" not in user


BAD_VALUES = [
    ({"schemas": [CORE_USER_URN], "displayName": "Ana"}, "userName"),
    ({"schemas": [CORE_USER_URN], "userName": "ana@contoso.example"}, "displayName"),
    (body(userName="a" * 151), "userName"),
    (body(displayName="d" * 201), "displayName"),
    (body(emails=[{"type": "work", "value": "not-an-address"}]), "emails"),
    (
        body(
            emails=[
                {"type": "work", "value": "a@b.example"},
                {"type": "Work", "value": "c@d.example"},
            ]
        ),
        "emails",
    ),
    (body(active="maybe"), "active"),
    (body(name={"givenName": "g" * 201}), "name.givenName"),
    ({"userName": "ana@contoso.example", "displayName": "Ana"}, "schemas"),
    (body(phoneNumbers="555"), "phoneNumbers"),
]


@pytest.mark.parametrize(("data", "field"), BAD_VALUES)
def test_bad_values_are_refused_naming_the_field(data, field):
    assert field in rejected(data).detail


def test_a_body_that_is_not_an_object_is_refused():
    rejected(["not", "a", "user"])


MAPPED_VALUES = {
    "userPrincipalName": "ana@contoso.example",
    "displayName": "Ana Berg",
    "givenName": "Ana",
    "surname": "Berg",
    "mail": "ana@contoso.example",
    "telephoneNumber": "+31 20 1",
    "mobile": "+31 6 2",
    "streetAddress": "Main 1",
    "city": "Utrecht",
    "state": "UT",
    "postalCode": "3511",
    "country": "NL",
    "preferredLanguage": "nl-NL",
    "employeeNumber": "42",
    "costCenter": "CC1",
    "jobTitle": "Engineer",
    "department": "R&D",
    "manager": "some-id",
    "objectId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
}


def test_every_row_of_the_mapping_table_is_stored_and_searchable():
    """The 19 rows of the hosted product's Entra mapping table survive validation, and each
    row's SCIM path finds the user by its value."""
    user = load_user(
        {
            "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
            "userName": "ana@contoso.example",
            "displayName": "Ana Berg",
            "name": {"givenName": "Ana", "familyName": "Berg"},
            "emails": [{"type": "work", "value": "ana@contoso.example"}],
            "phoneNumbers": [
                {"type": "work", "value": "+31 20 1"},
                {"type": "mobile", "value": "+31 6 2"},
            ],
            "addresses": [
                {
                    "type": "work",
                    "streetAddress": "Main 1",
                    "locality": "Utrecht",
                    "region": "UT",
                    "postalCode": "3511",
                    "country": "NL",
                }
            ],
            "preferredLanguage": "nl-NL",
            "title": "Engineer",
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            ENTERPRISE_USER_URN: {
                "employeeNumber": "42",
                "costCenter": "CC1",
                "department": "R&D",
                "manager": {"value": "some-id"},
            },
        }
    )
    assert len(MAPPING_TABLE) == 19
    for _label, entra_name, path, _mandatory in MAPPING_TABLE:
        if entra_name == "manager":
            path += ".value"
        expected = MAPPED_VALUES[entra_name]
        assert compile_filter(f'{path} eq "{expected}"', USER_RESOURCE)(user), entra_name


# -- the quick path agrees with marshmallow ------------------------------------------------------
# schemas._validated_user takes a quick path through UserSchema's rules and leaves whatever it is
# unsure of to marshmallow; schemas._marshmallow_validated_user is marshmallow alone, as before.
# Captured at import, before conftest's cross-check wraps the quick path for each test.
QUICK = schemas._validated_user
REFERENCE = schemas._marshmallow_validated_user
MANAGER_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def same_as_marshmallow(data) -> tuple:
    """Both paths' outcome on ``data``, asserted equal: the stored form (==, key order, JSON
    types) or the SCIM error's status, type and detail."""
    expected = validation_outcome(REFERENCE, data)
    assert validation_outcome(QUICK, data) == expected, data
    return expected


def entra_body(index: int, manager_id: str | None = MANAGER_ID) -> dict:
    return json.loads(entra.user_body(index, manager_id))


@pytest.mark.parametrize("manager_id", [MANAGER_ID, None])
def test_entra_create_bodies_take_the_quick_path_to_marshmallows_result(manager_id):
    for index in range(0, 400, 7):
        data = entra_body(index, manager_id)
        assert same_as_marshmallow(data)[0] == "stored"
        schemas._QUICK_USER_LOAD(data)  # accepted without falling back: raises Unsure otherwise


def test_load_user_returns_what_marshmallow_alone_returned():
    for index in range(0, 60, 3):
        data = entra_body(index)
        expected = schemas._with_schemas(REFERENCE(copy.deepcopy(data)))
        user = load_user(data)
        assert (user, list(user)) == (expected, list(expected))


def patched_both_ways(monkeypatch, current: dict, operations: list[dict]) -> tuple:
    """load_patched_user's outcome on a PATCH, first quick, then with marshmallow alone."""

    def outcome() -> tuple:
        def patched(_data):
            after = apply_patch(copy.deepcopy(current), operations, USER_RESOURCE)
            return load_patched_user(copy.deepcopy(current), after)

        return validation_outcome(patched, None)

    monkeypatch.setattr(schemas, "_validated_user", QUICK)
    quick = outcome()
    monkeypatch.setattr(schemas, "_validated_user", REFERENCE)
    return quick, outcome()


TITLE = {"op": "Replace", "path": "title", "value": "Chief"}


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "Replace", "path": "active", "value": "False"}],
        [{"op": "Replace", "path": "title", "value": "t" * 201}],
        [{"op": "Replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "call me"}],
        [{"op": "Add", "path": "emails", "value": [{"type": "Work", "value": "b@c.example"}]}],
        [{"op": "Remove", "path": "displayName"}],
        [{"op": "Replace", "path": "userName", "value": "x" * 151}],
        [{"op": "Replace", "path": f"{ENTERPRISE_USER_URN}:manager", "value": MANAGER_ID}],
        [{"op": "Replace", "path": "name.givenName", "value": ""}, TITLE],
        [{"op": "Replace", "value": {"nickName": "A", "active": "true", "userType": 5}}],
    ],
)
def test_patched_users_match_marshmallow(monkeypatch, operations):
    current = load_user(entra_body(11))
    quick, reference = patched_both_ways(monkeypatch, current, operations)
    assert quick == reference


def test_entras_update_patches_match_marshmallow(monkeypatch):
    for index in range(0, 200, 9):
        current = load_user(entra_body(index, MANAGER_ID if index % 2 else None))
        operations = json.loads(entra.update_body(index))["Operations"]
        quick, reference = patched_both_ways(monkeypatch, current, operations)
        assert quick == reference
        assert quick[0] == "stored"


# The user bodies the other test modules send (some only to a live server, out of conftest's
# reach), in their shapes: Entra's tutorial body, the 19-row mapping body, the edge cases.
def tutorial_body(**overrides) -> dict:
    body = {
        "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "ana.berg@contoso.example",
        "active": True,
        "displayName": "Ana Berg",
        "emails": [{"primary": True, "type": "work", "value": "ana.berg@contoso.example"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ana Berg", "familyName": "Berg", "givenName": "Ana"},
        "roles": [],
    }
    return {**body, **overrides}


MAPPING_BODY = tutorial_body(
    name={"givenName": "Ana", "familyName": "Berg"},
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
    **{
        ENTERPRISE_USER_URN: {
            "employeeNumber": "E-1001",
            "costCenter": "CC-42",
            "department": "Platform",
            "manager": {"value": MANAGER_ID},
        }
    },
)
TEST_SUITE_BODIES = [
    tutorial_body(),
    MAPPING_BODY,
    tutorial_body(active="False"),
    tutorial_body(userName="ANA.BERG@CONTOSO.EXAMPLE", displayName="Impostor"),
    tutorial_body(**{ENTERPRISE_USER_URN: {"manager": {"value": "nobody"}}}),
    tutorial_body(**{ENTERPRISE_USER_URN: {"manager": {"value": ""}}}),
    {"userName": "ana@contoso.example"},
    body(emails=[{"value": "a@b.example"}, {"value": "c@d.example"}]),
    body(phoneNumbers=[{"type": "work", "value": "call me"}]),
    body(userName="   "),
    body(userName="ctl\u0000@contoso.example"),
    body(preferredLanguage="x" * 46),
    body(title="Engineer"),
    body(active=True),
    body(emails=[{"type": "work", "value": "a@b.example", "primary": "True"}]),
    body(title=None, nickName="", roles=[], addresses=None, favouriteColour="red", meta={}),
    body(id="client-chosen", groups=[{"value": "g"}], meta={"version": "x"}),
    {
        "SCHEMAS": [CORE_USER_URN.upper()],
        "UserName": "ana@contoso.example",
        "DISPLAYNAME": "Ana",
        "Name": {"GivenName": "Ana"},
        ENTERPRISE_USER_URN.upper(): {"Department": "R&D"},
    },
    ["not", "a", "user"],
    "a user",
    None,
    42,
]


def test_the_test_suites_bodies_match_marshmallow():
    outcomes = [same_as_marshmallow(data)[0] for data in TEST_SUITE_BODIES]
    assert {"stored", "refused"} == set(outcomes)


@pytest.mark.parametrize(("data", "field"), BAD_VALUES)
def test_refusals_match_marshmallow(data, field):
    assert same_as_marshmallow(data)[0] == "refused"


# -- systematic perturbations of a full body -----------------------------------------------------
E = ENTERPRISE_USER_URN
# Places in a full Entra body, as paths of keys and list indexes.
PLACES = [
    ("schemas",),
    ("schemas", 0),
    ("externalId",),
    ("userName",),
    ("displayName",),
    ("title",),
    ("preferredLanguage",),
    ("active",),
    ("name",),
    ("name", "givenName"),
    ("name", "formatted"),
    ("emails",),
    ("emails", 0),
    ("emails", 0, "value"),
    ("emails", 0, "type"),
    ("emails", 0, "primary"),
    ("phoneNumbers",),
    ("phoneNumbers", 1),
    ("phoneNumbers", 1, "value"),
    ("phoneNumbers", 0, "primary"),
    ("addresses",),
    ("addresses", 0),
    ("addresses", 0, "postalCode"),
    ("addresses", 0, "country"),
    ("addresses", 0, "primary"),
    ("roles",),
    (E,),
    (E, "department"),
    (E, "employeeNumber"),
    (E, "manager"),
    (E, "manager", "value"),
    # and places it leaves empty
    ("nickName",),
    ("profileUrl",),
    ("userType",),
    ("locale",),
    ("timezone",),
    ("name", "honorificPrefix"),
    ("name", "middleName"),
    ("emails", 0, "display"),
    ("addresses", 0, "formatted"),
    ("ims",),
    ("photos",),
    ("entitlements",),
    ("x509Certificates",),
    (E, "organization"),
    (E, "division"),
    (E, "manager", "$ref"),
    (E, "manager", "displayName"),
    ("password",),
    ("id",),
    ("groups",),
]
# Wrong types, strings at and just over each length limit, Entra's boolean spellings, ...
ODD_VALUES = [
    0,
    1,
    2,
    1.0,
    0.0,
    -3.5,
    True,
    False,
    None,
    "",
    " ",
    "x",
    *("x" * n for limit in (45, 50, 100, 150, 200, 300, 1024) for n in (limit, limit + 1)),
    "True",
    "False",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "OFF",
    "1",
    "0",
    "maybe",
    "a@b.example",
    "a\u0000b",
    "+1 (425) 555-0100",
    [],
    [None],
    ["x"],
    [{}],
    [{"value": "a@b.example"}],
    {},
    {"value": "x"},
    {"type": "work"},
]


IGNORED_PLACES = {(E,), ("password",), ("id",), ("groups",)}


def holds(data: dict, place: tuple) -> bool:
    container = data
    for step in place[:-1]:
        container = container[step]
    return place[-1] in container if isinstance(container, dict) else place[-1] < len(container)


def at(data: dict, place: tuple, value=None, *, remove: bool = False) -> dict:
    """A copy of ``data`` with the value at ``place`` replaced, or removed."""
    data = copy.deepcopy(data)
    container = data
    for step in place[:-1]:
        container = container[step]
    if remove:
        container.pop(place[-1])
    else:
        container[place[-1]] = value
    return data


@pytest.mark.parametrize("place", PLACES, ids=lambda place: ".".join(map(str, place))[-40:])
def test_each_odd_value_in_each_place_matches_marshmallow(place):
    full = entra_body(5)
    outcomes = [same_as_marshmallow(at(full, place, value))[0] for value in ODD_VALUES]
    if holds(full, place):
        outcomes.append(same_as_marshmallow(at(full, place, remove=True))[0])
    # Read-only and unknown attributes are dropped, never refused, and so is the extension's
    # value when it is not an object.
    assert ("refused" in outcomes) == (place not in IGNORED_PLACES)


@pytest.mark.parametrize(
    "value",
    [
        "True",
        "False",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "t",
        "F",
        "Y",
        "n",
        "1",
        "0",
        1,
        0,
        1.0,
        0.0,
        True,
        False,
        2,
        -1,
        "maybe",
        "",
        None,
        [True],
        {"v": 1},
    ],
)
def test_booleans_in_every_spelling_match_marshmallow(value):
    assert same_as_marshmallow(body(active=value))
    assert same_as_marshmallow(body(emails=[{"value": "a@b.example", "primary": value}]))


def case_variants(data):
    """``data`` with every key in upper case, in lower case and with its case swapped."""
    for change in (str.upper, str.lower, str.swapcase):

        def renamed(value, change=change):
            if isinstance(value, dict):
                return {change(k): renamed(v) for k, v in value.items()}
            if isinstance(value, list):
                return [renamed(v) for v in value]
            return value

        yield renamed(data)


def test_names_in_other_letter_cases_match_marshmallow():
    for variant in case_variants(entra_body(8)):
        assert same_as_marshmallow(variant)[0] == "stored"
    mixed = {"userName": "a@b.example", "USERNAME": "c@d.example", "displayName": "A"}
    assert same_as_marshmallow({**mixed, "schemas": [CORE_USER_URN]})[0] == "stored"


def test_unknown_keys_at_every_level_match_marshmallow():
    full = entra_body(9)
    for place in [(), ("name",), ("emails", 0), ("addresses", 0), (E,), (E, "manager")]:
        data = copy.deepcopy(full)
        container = data
        for step in place:
            container = container[step]
        container.update({"favouriteColour": "red", "$ref": "x", "password": "secret"})
        assert same_as_marshmallow(data)[0] == "stored"


@pytest.mark.parametrize(
    "extra",
    [
        {"emails": [{"type": "work", "value": "a@b.example"}, {"type": "WORK", "value": "c@d.ex"}]},
        {"phoneNumbers": [{"type": "work", "value": "1"}, {"type": "work", "value": "2"}]},
        {"addresses": [{"type": "home", "locality": "A"}, {"type": "Home", "locality": "B"}]},
        {"ims": [{"type": "x", "value": "1"}, {"type": "x", "value": "2"}]},
        {"photos": [{"type": "x", "value": "1"}, {"type": "y", "value": "2"}]},
        {"roles": [{"type": "x", "value": "1"}, {"type": "x", "value": "2"}]},
        {"emails": [{"value": "a@b.example", "primary": True}, {"value": "c@d.ex", "primary": 1}]},
        {"emails": [{"value": "a@b.example", "primary": True}, {"value": "c@d.ex", "primary": 0}]},
        {"phoneNumbers": [{"value": "1", "primary": "True"}, {"value": "2", "primary": "yes"}]},
        {"entitlements": [{"value": "1", "primary": True}, {"value": "2", "primary": True}]},
        {"emails": [{"type": "", "value": "a@b.example"}, {"type": "", "value": "c@d.ex"}]},
        {"x509Certificates": [{"value": "MIIB"}], "userType": "Employee", "locale": "sv-SE"},
        {"schemas": [ENTERPRISE_USER_URN]},
        {"schemas": "urn:ietf:params:scim:schemas:core:2.0:User"},
        {"schemas": [CORE_USER_URN.lower(), ENTERPRISE_USER_URN.lower(), "urn:other"]},
        {"schemas": [CORE_USER_URN, 5]},
        {"schemas": None},
        {"userName": None},
        {"displayName": ""},
        {E: {"manager": {"value": MANAGER_ID, "$ref": "../Users/x", "displayName": "Boss"}}},
        {E: {"manager": {"$REF": "../Users/x"}}},
        {E: {"manager": {"value": None, "$ref": None}}},
        {E: {"manager": "boss"}},
        {E: {"manager": ["boss"]}},
        {E: "R&D"},
        {E: ["R&D"]},
        {E: {}},
        {E.upper(): {"department": "R&D"}, E: {"costCenter": "CC"}},
        {"name": "Ana"},
        {"name": ["Ana"]},
        {"emails": {"value": "a@b.example"}},
        {"emails": ["a@b.example"]},
        {"emails": [None, {"value": "a@b.example"}]},
        {"emails": [[{"value": "a@b.example"}]]},
        {"emails": ({"value": "a@b.example"},)},
        {"title": ("a", "b")},
        {"title": b"bytes"},
        {"active": (1,)},
    ],
)
def test_special_bodies_match_marshmallow(extra):
    assert same_as_marshmallow({**entra_body(13), **extra})
    assert same_as_marshmallow(body(**extra))


@pytest.mark.parametrize("missing", ["schemas", "userName", "displayName"])
def test_missing_mandatory_attributes_match_marshmallow(missing):
    data = entra_body(3)
    del data[missing]
    assert same_as_marshmallow(data)[0] == "refused"


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (body(active="maybe"), "active: Not a valid boolean."),
        (body(userName="a" * 151), "userName: Length must be between 1 and 150."),
        (
            {"schemas": [CORE_USER_URN], "displayName": "Ana"},
            "userName: Missing data for required field.",
        ),
        (body(schemas=["urn:x"]), f"schemas: must list {CORE_USER_URN}"),
        (
            body(
                emails=[
                    {"type": "work", "value": "a@b.example"},
                    {"type": "WORK", "value": "c@d.ex"},
                ]
            ),
            'emails: more than one entry of type "work"',
        ),
        (
            body(phoneNumbers=[{"value": "1", "primary": True}, {"value": "2", "primary": "True"}]),
            "phoneNumbers: at most one entry may be primary",
        ),
        (body(name="Ana"), "name: Invalid input type."),
        (body(emails={"value": "a@b.example"}), "emails: Not a valid list."),
        (body(emails=["a@b.example"]), "emails[0]: Invalid input type."),
        (body(title=5), "title: Not a valid string."),
        (body(**{E: {"manager": "boss"}}), f"{E}.manager: Invalid input type."),
        (body(**{E: {"manager": {"value": 7}}}), f"{E}.manager.value: Not a valid string."),
        (["x"], "a User must be a JSON object"),
        (body(userName=" "), "userName: must not be blank or hold control characters"),
        (
            body(emails=[{"type": "work", "value": "nope", "primary": "perhaps"}], title=["x"]),
            "title: Not a valid string.; emails[0].primary: Not a valid boolean.; "
            "emails[0].value: not an email address",
        ),
    ],
)
def test_error_details_are_todays(data, detail):
    """The details as marshmallow worded them before the quick path existed."""
    assert rejected(data).detail == detail
    assert same_as_marshmallow(data) == ("refused", 400, "invalidValue", detail)


def mutated(data: dict, rng: random.Random) -> dict:
    """``data`` with one value somewhere in it replaced by an odd value, or removed."""
    data = copy.deepcopy(data)
    container = data
    while rng.random() < 0.6:
        steps = list(container) if isinstance(container, dict) else range(len(container))
        inner = [step for step in steps if isinstance(container[step], dict | list)]
        if not inner:
            break
        container = container[rng.choice(inner)]
    if isinstance(container, dict):
        key = rng.choice([*container, *(p[-1] for p in PLACES if isinstance(p[-1], str))])
        if key in container and rng.random() < 0.2:
            del container[key]
        else:
            container[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif container:
        container[rng.randrange(len(container))] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data


def test_random_mutations_of_a_full_body_match_marshmallow():
    rng = random.Random(20261127)
    outcomes = {"stored": 0, "refused": 0}
    for _ in range(1500):
        data = entra_body(rng.randrange(1000))
        for _ in range(rng.randint(1, 3)):
            data = mutated(data, rng)
        outcomes[same_as_marshmallow(data)[0]] += 1
    assert min(outcomes.values()) > 300, outcomes
