"""The User rules every write passes through: canonical names, Entra's loose types, limits."""

from __future__ import annotations

import pytest

from schemas import CORE_USER_URN, ENTERPRISE_USER_URN, MAPPING_TABLE, USER_RESOURCE, load_user
from scimlang import ScimError, compile_filter


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


def test_read_only_attributes_sent_back_are_ignored():
    user = load_user(body(id="client-chosen", groups=[{"value": "g"}], meta={"version": "x"}))
    assert "id" not in user and "groups" not in user and "meta" not in user


@pytest.mark.parametrize(
    ("data", "field"),
    [
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
    ],
)
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
