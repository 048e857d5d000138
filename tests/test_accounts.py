"""The store's account verbs (roles, password hashes, directory settings) and the people search,
against real files in a temp folder."""

from __future__ import annotations

import pytest
from tinydb import TinyDB, where

from schemas import CORE_USER_URN, ENTERPRISE_USER_URN
from store import (
    DATABASE_FILE,
    InvalidValueError,
    NotFoundError,
    Store,
    UniquenessError,
)


def user(user_name: str, **extra) -> dict:
    return {"schemas": [CORE_USER_URN], "userName": user_name, "displayName": user_name, **extra}


def employee(user_name: str, display_name: str, **enterprise) -> dict:
    return {
        "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
        "userName": user_name,
        "displayName": display_name,
        ENTERPRISE_USER_URN: enterprise,
    }


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path))
    yield store
    store.close()


@pytest.fixture
def directory(store):
    return store.create_directory("Contoso")


def test_role_and_password_hash_live_beside_the_resource_and_survive_scim_writes(
    store, directory, tmp_path
):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store.set_password(directory["id"], ana["id"], "hash-1", "t")
    store.set_role(directory["id"], ana["id"], "administrator", "t")
    store.replace_user(directory["id"], ana["id"], user("ana@contoso.example", title="CEO"), "t")
    store.update_user(directory["id"], ana["id"], lambda r: {**r, "active": False}, "t")

    resource = store.get_user(directory["id"], ana["id"])
    assert "password_hash" not in resource and "role" not in resource
    account = store.account(directory["id"], ana["id"])
    assert account["role"] == "administrator"
    assert account["has_password"] is True
    assert "password_hash" not in account
    assert account["resource"]["title"] == "CEO"
    assert store.password_hash_of(directory["id"], ana["id"]) == "hash-1"

    store.close()
    stored = TinyDB(str(tmp_path / DATABASE_FILE)).table("users").get(where("id") == ana["id"])
    assert stored["password_hash"] == "hash-1" and stored["role"] == "administrator"
    assert "password_hash" not in stored["resource"]


def test_a_user_without_a_role_is_a_user_without_a_password(store, directory):
    bo = store.create_user(directory["id"], user("bo@contoso.example"), "t")
    account = store.account(directory["id"], bo["id"])
    assert (account["role"], account["has_password"]) == ("user", False)
    assert store.password_hash_of(directory["id"], bo["id"]) is None
    assert store.account(store.create_directory("Fabrikam")["id"], bo["id"]) is None


def test_a_password_can_be_removed_and_each_change_is_audited(store, directory):
    bo = store.create_user(directory["id"], user("bo@contoso.example"), "t")
    store.set_password(directory["id"], bo["id"], "hash", "admin@contoso.example")
    epoch = store.set_password(directory["id"], bo["id"], None, "admin@contoso.example")
    assert store.account(directory["id"], bo["id"])["has_password"] is False
    actions = [e["action"] for e in store.list_audit(directory["id"])]
    assert actions.count("user.password") == 2
    # each change ended the sessions opened before it, as signing out does
    assert store.account(directory["id"], bo["id"])["session_epoch"] == epoch == 2
    store.end_sessions(directory["id"], bo["id"], "bo@contoso.example")
    assert store.account(directory["id"], bo["id"])["session_epoch"] == 3
    store.end_sessions(directory["id"], "no-such-user", "t")  # nothing to end: no error
    with pytest.raises(NotFoundError):
        store.set_password(directory["id"], "no-such-user", "hash", "t")


def test_roles_are_checked_and_the_last_administrator_stays_one(store, directory):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    bo = store.create_user(directory["id"], user("bo@contoso.example"), "t")
    with pytest.raises(InvalidValueError, match="role: one of administrator, user"):
        store.set_role(directory["id"], ana["id"], "owner", "t")
    store.set_role(directory["id"], ana["id"], "administrator", "t")
    with pytest.raises(InvalidValueError, match="last administrator"):
        store.set_role(directory["id"], ana["id"], "user", "t")
    store.set_role(directory["id"], bo["id"], "administrator", "t")
    store.set_role(directory["id"], ana["id"], "user", "t")
    assert store.count_administrators() == 1


def test_administrators_are_counted_across_restarts_and_deletes(store, directory, tmp_path):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    assert store.count_administrators() == 0
    store.set_role(directory["id"], ana["id"], "administrator", "t")
    store.close()
    reopened = Store(str(tmp_path))
    try:
        assert reopened.count_administrators() == 1
        reopened.delete_user(directory["id"], ana["id"], "t")
        assert reopened.count_administrators() == 0
    finally:
        reopened.close()


def test_the_first_administrator_is_created_once_with_local_accounts(store, directory):
    created = store.create_first_administrator(
        directory["id"], user("ana@contoso.example"), "hash", "first-run setup"
    )
    account = store.account(directory["id"], created["id"])
    assert (account["role"], account["has_password"]) == ("administrator", True)
    assert store.get_directory(directory["id"])["auth_method"] == "local"
    with pytest.raises(UniquenessError):
        store.create_first_administrator(
            directory["id"], user("bo@contoso.example"), "hash", "first-run setup"
        )
    assert store.count_users(directory["id"]) == 1
    actions = {e["action"] for e in store.list_audit(directory["id"])}
    assert {"user.create", "user.role", "user.password", "directory.update"} <= actions


def test_find_user_by_user_name_ignores_case_within_one_directory(store, directory):
    ana = store.create_user(directory["id"], user("Ana@Contoso.example"), "t")
    assert store.find_user_by_user_name(directory["id"], "ana@contoso.EXAMPLE")["id"] == ana["id"]
    other = store.create_directory("Fabrikam")
    assert store.find_user_by_user_name(other["id"], "ana@contoso.example") is None


def test_update_directory_changes_settings_and_audits(store, directory):
    updated = store.update_directory(
        directory["id"],
        {"name": "Contoso Ltd", "description": "Staff", "auth_method": "local", "my_account": True},
        "admin@contoso.example",
    )
    assert updated["name"] == "Contoso Ltd" and updated["my_account"] is True
    assert store.get_directory(directory["id"])["auth_method"] == "local"
    assert store.list_audit(directory["id"])[0]["action"] == "directory.update"


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"name": "x" * 101}, "name: 1 to 100 characters"),
        ({"name": "  "}, "name: 1 to 100 characters"),
        ({"description": "x" * 251}, "description: at most 250 characters"),
        ({"auth_method": "password"}, "auth_method: one of none, local, microsoft"),
        ({"my_account": "yes"}, "my_account: true or false"),
        ({"colour": "blue"}, "colour: not a directory setting"),
    ],
)
def test_update_directory_refuses_values_against_the_rules(store, directory, updates, message):
    with pytest.raises(InvalidValueError, match=message):
        store.update_directory(directory["id"], updates, "t")
    assert store.get_directory(directory["id"]) == directory


def test_update_directory_keeps_names_unique_and_needs_the_directory(store, directory):
    store.create_directory("Fabrikam")
    with pytest.raises(UniquenessError):
        store.update_directory(directory["id"], {"name": "FABRIKAM"}, "t")
    store.update_directory(directory["id"], {"name": "CONTOSO"}, "t")  # its own name, new case
    with pytest.raises(NotFoundError):
        store.update_directory("no-such-directory", {"name": "X"}, "t")


@pytest.fixture
def people(store, directory):
    """A small company in two directories."""
    d = directory["id"]
    boss = store.create_user(
        d, employee("zoe@contoso.example", "Zoe Boss", department="Board"), "t"
    )
    manager = {"value": boss["id"]}
    ana = store.create_user(
        d,
        {
            **employee(
                "ana@contoso.example", "Ana Lima", department="Engineering", manager=manager
            ),
            "title": "Senior Engineer",
            "emails": [{"type": "work", "value": "ana.lima@contoso.example"}],
            "phoneNumbers": [{"type": "work", "value": "+1 (555) 010-0200"}],
        },
        "t",
    )
    bo = store.create_user(
        d,
        {
            **employee("bo@contoso.example", "Bo Berg", department="Sales", manager=manager),
            "title": "Account Executive",
            "active": False,
        },
        "t",
    )
    fabrikam = store.create_directory("Fabrikam")
    cy = store.create_user(
        fabrikam["id"],
        {**employee("cy@fabrikam.example", "Cy Engel", department="Engineering"), "title": "CTO"},
        "t",
    )
    return {"boss": boss, "ana": ana, "bo": bo, "cy": cy, "fabrikam": fabrikam}


def names(page: list[dict]) -> list[str]:
    return [entry["resource"]["displayName"] for entry in page]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("engin", ["Ana Lima", "Cy Engel"]),  # department and title, in every directory
        ("ANA.LIMA@", ["Ana Lima"]),  # part of an email, any case
        ("5550100", ["Ana Lima"]),  # phone digits whatever the punctuation
        ("010-0200", ["Ana Lima"]),
        ("bo@contoso", ["Bo Berg"]),  # userName; deactivated users are found
        ("engineer senior", ["Ana Lima"]),  # every word must match
        ("", ["Ana Lima", "Bo Berg", "Cy Engel", "Zoe Boss"]),
        ("nobody", []),
    ],
)
def test_search_people_matches_parts_of_the_searched_attributes(store, people, text, expected):
    total, page = store.search_people(text)
    assert (total, names(page)) == (len(expected), expected)


def test_search_people_filters_by_directory_department_title_and_manager(store, directory, people):
    assert names(store.search_people("", directory_id=people["fabrikam"]["id"])[1]) == ["Cy Engel"]
    assert names(store.search_people("", department="engineering")[1]) == ["Ana Lima", "Cy Engel"]
    assert names(store.search_people("", title="cto")[1]) == ["Cy Engel"]
    assert names(store.search_people("", manager_id=people["boss"]["id"])[1]) == [
        "Ana Lima",
        "Bo Berg",
    ]
    total, page = store.search_people("engin", directory_id=directory["id"])
    assert (total, names(page)) == (1, ["Ana Lima"])
    assert page[0]["directory_id"] == directory["id"]


def test_search_people_pages_and_hands_out_copies(store, directory):
    for number in range(25):
        store.create_user(directory["id"], user(f"person{number:02}@contoso.example"), "t")
    total, second = store.search_people("person", start_index=21, count=20)
    assert total == 25
    assert names(second) == [f"person{n}@contoso.example" for n in range(20, 25)]
    second[0]["resource"]["displayName"] = "changed behind the store's back"
    assert store.search_people("person20")[1][0]["resource"]["displayName"].startswith("person20")
