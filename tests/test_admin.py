"""The administrator pages through Flask's test client over a temp data folder: permissions,
directories (create, edit, delete), directory keys (the token shown once, working against the
SCIM API until deleted) and the audit log."""

from __future__ import annotations

import html
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import auth
from app import create_app
from store import DEFAULT_DIRECTORY
from tests.test_pages import ADMIN_PASSWORD, add_user, csrf_token, log_in, run_setup, setup_path

ADMIN = "admin@contoso.example"


@pytest.fixture
def site(tmp_path, capsys):
    """After first-run setup: an administrator's client, a plain user's client, the store."""
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True})
    admin = app.test_client()
    assert run_setup(admin, setup_path(capsys.readouterr().err)).status_code == 302
    store = app.extensions["roster.store"]
    default = store.find_directory_by_name(DEFAULT_DIRECTORY)
    add_user(store, default, "ana@contoso.example")
    user = app.test_client()
    assert log_in(user, default, "ana@contoso.example").status_code == 302
    yield SimpleNamespace(app=app, store=store, default=default, admin=admin, user=user)
    store.close()


def post(client, path: str, **form):
    """Send a form the way a browser does: with the hidden fields of the page it came from
    (the CSRF token, what the page showed), or the CSRF token of another page."""
    page = client.get(path).get_data(as_text=True)
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)
    shown = {name: html.unescape(value) for name, value in hidden}
    token = csrf_token(client, path, "/account")
    return client.post(path, data={"csrf_token": token, **shown, **form})


def field_error(page: str) -> list[str]:
    return re.findall(r'class="field-error" role="alert">([^<]*)<', page)


def fabrikam(site, users: int = 0) -> dict:
    directory = site.store.create_directory("Fabrikam", "Fabrikam staff", "local")
    for number in range(users):
        add_user(site.store, directory, f"user{number}@fabrikam.example", password=None)
    return directory


def create_key(site, directory: dict, name: str = "Microsoft integration key") -> tuple[str, str]:
    """Create a key on the keys page; returns the response page and the token it shows."""
    response = post(site.admin, f"/admin/directories/{directory['id']}/keys", name=name)
    assert response.status_code == 200
    token = re.search(r'id="access-token" value="([^"]+)"', response.text).group(1)
    return response, token


def test_reloading_the_page_that_shows_a_new_token_creates_no_second_key(site):
    path = f"/admin/directories/{site.default['id']}/keys"
    page = site.admin.get(path).text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    form = {**hidden, "name": "Entra key"}
    assert site.admin.post(path, data=form).status_code == 200  # the token, once
    reloaded = site.admin.post(path, data=form)  # the browser sends the same form again
    assert reloaded.status_code == 400 and "This form was sent before" in reloaded.text
    assert 'id="access-token"' not in reloaded.text
    assert [k["name"] for k in site.store.list_keys(site.default["id"])] == ["Entra key"]


# -- permissions --------------------------------------------------------------------------------

PAGES = [
    "/admin",
    "/admin/directories/new",
    "/admin/directories/{directory}",
    "/admin/directories/{directory}/delete",
    "/admin/directories/{directory}/keys",
    "/admin/directories/{directory}/keys/{key}/delete",
    "/admin/directories/{directory}/groups",
    "/admin/directories/{directory}/groups/{group}",
    "/admin/directories/{directory}/audit",
    "/admin/audit",
    "/admin/audit?page=2",
]


@pytest.fixture
def paths(site):
    """The pages, with a real directory and key to point at."""
    directory = fabrikam(site)
    key, _token = auth.create_directory_key(site.store, directory["id"], "Key", "t")
    group, _skipped = site.store.create_group(directory["id"], {"displayName": "Sales"}, [], "t")
    return lambda path: path.format(directory=directory["id"], key=key["id"], group=group["id"])


@pytest.mark.parametrize("path", PAGES)
def test_every_admin_page_is_for_administrators_only(site, paths, path):
    path = paths(path)
    anonymous = site.app.test_client().get(path)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].startswith("/login?next=/admin")
    assert site.user.get(path).status_code == 403
    assert site.admin.get(path).status_code == 200


FORMS = [
    "/admin/directories/new",
    "/admin/directories/{directory}",
    "/admin/directories/{directory}/delete",
    "/admin/directories/{directory}/keys",
    "/admin/directories/{directory}/keys/{key}/delete",
]


@pytest.mark.parametrize("path", FORMS)
def test_every_admin_form_needs_an_administrator_and_a_csrf_token(site, paths, path):
    path = paths(path)
    form = {"name": "Changed", "auth_method": "local"}
    anonymous = site.app.test_client()
    token = csrf_token(anonymous, f"/login?directory={site.default['id']}")
    refused = anonymous.post(path, data={**form, "csrf_token": token})
    assert refused.headers["Location"].startswith("/login?next=/admin")
    assert post(site.user, path, **form).status_code == 403
    assert site.admin.post(path, data=form).status_code == 400  # no token
    assert site.admin.post(path, data={**form, "csrf_token": "forged"}).status_code == 400
    assert len(site.store.list_directories()) == 2
    assert site.store.find_directory_by_name("Fabrikam") is not None
    assert len(site.store.list_keys()) == 1


def test_only_administrators_see_the_admin_link(site):
    assert 'href="/admin"' in site.admin.get("/").text
    assert 'href="/admin"' not in site.user.get("/").text


# -- directories --------------------------------------------------------------------------------


def test_the_directory_list_shows_settings_and_user_counts(site):
    directory = fabrikam(site, users=3)
    site.store.update_directory(directory["id"], {"my_account": True}, "t")
    site.store.create_directory("<b>Hidden</b>")
    page = site.admin.get("/admin").text
    row = re.search(r"<tr>\s*<th scope=\"row\"><a [^>]*>Fabrikam</a>.*?</tr>", page, re.S).group(0)
    assert "Fabrikam staff" in row and "Local accounts" in row
    assert '<td class="number">3</td>' in row and "<td>On</td>" in row
    default_row = re.search(r"<th scope=\"row\"><a [^>]*>Default</a>.*?</tr>", page, re.S).group(0)
    assert '<td class="number">2</td>' in default_row and "<td>Off</td>" in default_row
    assert "&lt;b&gt;Hidden&lt;/b&gt;" in page and "<b>Hidden" not in page


def test_creating_a_directory(site):
    form = {
        "name": " Fabrikam ",
        "description": "Staff",
        "auth_method": "local",
        "my_account": "on",
    }
    response = post(site.admin, "/admin/directories/new", **form)
    assert response.status_code == 302 and response.headers["Location"] == "/admin"
    assert "Directory Fabrikam created." in site.admin.get("/admin").text
    created = site.store.find_directory_by_name("fabrikam")
    assert (created["name"], created["description"]) == ("Fabrikam", "Staff")
    assert created["auth_method"] == "local" and created["my_account"] is True
    entry = site.store.list_audit(created["id"])[0]
    assert (entry["actor"], entry["action"], entry["target"]) == (
        ADMIN,
        "directory.create",
        created["id"],
    )


@pytest.mark.parametrize(
    ("form", "messages"),
    [
        ({"name": ""}, ["Name: 1 to 100 characters"]),
        ({"name": "   "}, ["Name: 1 to 100 characters"]),
        ({"name": "x" * 101}, ["Name: 1 to 100 characters"]),
        ({"name": "DEFAULT"}, ['Name: a directory named "DEFAULT" already exists']),
        ({"description": "x" * 251}, ["Description: at most 250 characters"]),
        *(
            ({"name": name}, ["Name: no line breaks, tabs or other non-printing characters"])
            for name in ("\x00", "a\x07b", "Tab\tName", "\u200b")
        ),
        ({"description": "d\x00"}, ["Description: no control characters"]),
        (
            {"name": "", "description": "x" * 251, "auth_method": "password"},
            [
                "Name: 1 to 100 characters",
                "Description: at most 250 characters",
                "Authentication method: one of none, local, microsoft",
            ],
        ),
    ],
)
def test_a_new_directory_is_refused_with_each_rule_next_to_its_field(site, form, messages):
    form = {"name": "Fabrikam", "description": "", "auth_method": "none", **form}
    response = post(site.admin, "/admin/directories/new", **form)
    assert response.status_code == 400
    errors = field_error(response.text)
    assert len(errors) == len(messages)
    for error, message in zip(errors, messages, strict=True):
        assert error.replace("&#34;", '"').startswith(message)
    assert [d["name"] for d in site.store.list_directories()] == ["Default"]
    assert f'value="{form["name"].strip()}"' in response.text  # what was typed stays


def test_a_directory_name_may_hold_a_no_break_space_and_its_description_an_emoji(site):
    name, description = "Fabrikam\u00a0AG", "Team \U0001f469\u200d\U0001f4bb\nZürich"
    form = {"name": name, "description": description, "auth_method": "none"}
    assert post(site.admin, "/admin/directories/new", **form).status_code == 302
    assert site.store.find_directory_by_name(name)["description"] == description


def test_editing_a_directory(site):
    directory = fabrikam(site)
    path = f"/admin/directories/{directory['id']}"
    page = site.admin.get(path).text
    assert 'value="Fabrikam"' in page and "/login/oidc/callback" in page

    taken = post(site.admin, path, name="default", description="", auth_method="local")
    assert taken.status_code == 400
    assert "already exists" in field_error(taken.text)[0]
    too_long = post(site.admin, path, name="Fabrikam", description="x" * 251, auth_method="local")
    assert field_error(too_long.text) == ["Description: at most 250 characters"]
    assert site.store.get_directory(directory["id"]) == directory

    form = {"name": "Fabrikam Ltd", "description": "All of it", "auth_method": "microsoft"}
    unconfigured = post(site.admin, path, **form)
    assert field_error(unconfigured.text) == [
        "Entra tenant: required",
        "Application (client) ID: required",
        "Client secret: required",
    ]
    form |= {
        "microsoft_tenant": "contoso.onmicrosoft.com",
        "microsoft_client_id": "11111111-2222-3333-4444-555555555555",
        "microsoft_client_secret": "s3cret~value",
    }
    response = post(site.admin, path, **form, my_account="on")
    assert response.status_code == 302
    saved = site.store.get_directory(directory["id"])
    encrypted = saved["microsoft"]["client_secret"]
    assert "s3cret" not in encrypted and saved["microsoft"]["tenant"] == "contoso.onmicrosoft.com"
    page = site.admin.get(path).text
    assert "s3cret" not in page and encrypted not in page and "A secret is saved" in page
    form["microsoft_client_secret"] = ""  # left empty: the saved secret stays
    assert (saved["name"], saved["description"], saved["auth_method"], saved["my_account"]) == (
        "Fabrikam Ltd",
        "All of it",
        "microsoft",
        True,
    )
    post(site.admin, path, **form)  # an unticked checkbox is not sent: My Account off
    assert site.store.get_directory(directory["id"])["my_account"] is False
    assert site.store.list_audit(directory["id"])[0]["action"] == "directory.update"


def test_a_directory_form_opened_before_another_save_is_refused_and_keeps_that_save(site):
    directory = fabrikam(site)
    path = f"/admin/directories/{directory['id']}"
    first, second = site.admin, site.app.test_client()
    token = csrf_token(second, f"/login?directory={site.default['id']}")
    assert log_in(second, site.default, ADMIN, ADMIN_PASSWORD, token).status_code == 302
    opened = first.get(path).text
    version = html.unescape(re.search(r'name="version" value="([^"]+)"', opened).group(1))
    form = {"name": "Fabrikam", "auth_method": "local"}
    assert post(second, path, **form, description="Set by the second").status_code == 302

    token = csrf_token(first, path)
    stale = first.post(
        path, data={**form, "csrf_token": token, "version": version, "description": "Old"}
    )
    assert stale.status_code == 400 and "since this page was opened" in stale.text
    assert site.store.get_directory(directory["id"])["description"] == "Set by the second"
    again = re.search(r'name="version" value="([^"]+)"', stale.text).group(1)
    form |= {"csrf_token": token, "version": html.unescape(again), "description": "Old"}
    assert first.post(path, data=form).status_code == 302  # seen the news, saved again
    assert site.store.get_directory(directory["id"])["description"] == "Old"


def test_an_administrator_cannot_switch_sign_in_off_for_their_own_directory(site):
    path = f"/admin/directories/{site.default['id']}"
    response = post(site.admin, path, name="Default", auth_method="none")
    assert response.status_code == 400
    assert "your own account is in this directory" in field_error(response.text)[0]
    assert site.store.get_directory(site.default["id"])["auth_method"] == "local"


def test_an_unknown_directory_is_404(site):
    for suffix in ("", "/delete", "/keys", "/audit", "/keys/no-such-key/delete"):
        assert site.admin.get(f"/admin/directories/no-such-directory{suffix}").status_code == 404


def test_deleting_a_directory_names_its_user_count_and_takes_its_users(site):
    directory = fabrikam(site, users=3)
    _response, token = create_key(site, directory)
    path = f"/admin/directories/{directory['id']}/delete"
    confirmation = site.admin.get(path).text
    assert "<strong>3 users</strong>" in confirmation
    assert "Delete Fabrikam and 3 users" in confirmation
    assert site.store.count_users(directory["id"]) == 3  # asking deletes nothing

    response = post(site.admin, path)
    assert response.status_code == 302 and response.headers["Location"] == "/admin"
    assert "Directory Fabrikam deleted, with 3 users." in site.admin.get("/admin").text
    assert site.store.get_directory(directory["id"]) is None
    assert site.store.count_users(directory["id"]) == 0
    assert site.store.search_people(text="fabrikam.example")[0] == 0
    headers = {"Authorization": f"Bearer {token}"}
    assert site.app.test_client().get("/v2/Users", headers=headers).status_code == 401
    entry = site.store.list_audit()[0]
    assert (entry["actor"], entry["action"]) == (ADMIN, "directory.delete")


def test_a_delete_confirmed_before_users_were_added_deletes_nothing(site):
    directory = fabrikam(site, users=1)
    path = f"/admin/directories/{directory['id']}/delete"
    token = csrf_token(site.admin, path)
    assert 'name="user_count" value="1"' in site.admin.get(path).text
    add_user(site.store, directory, "late@fabrikam.example", password=None)

    stale = site.admin.post(path, data={"csrf_token": token, "user_count": "1"})
    assert stale.status_code == 400 and "changed since this page was opened" in stale.text
    assert site.store.count_users(directory["id"]) == 2
    assert "Delete Fabrikam and 2 users" in stale.text
    assert post(site.admin, path).status_code == 302  # confirmed again, with 2
    assert site.store.get_directory(directory["id"]) is None


def test_the_directory_holding_every_administrator_cannot_be_deleted(site):
    path = f"/admin/directories/{site.default['id']}/delete"
    assert "Your own account is in this directory" in site.admin.get(path).text
    response = post(site.admin, path)
    assert response.status_code == 400
    assert "it holds every administrator" in response.text
    assert site.store.count_users(site.default["id"]) == 2


# -- keys ---------------------------------------------------------------------------------------


def test_a_new_key_shows_its_token_once_and_the_token_works(site):
    directory = fabrikam(site)
    response, token = create_key(site, directory)
    assert response.headers["Cache-Control"] == "no-store"
    assert "shown this once only" in response.text
    assert 'id="tenant-url" value="http://localhost/v2"' in response.text
    assert 'data-copy="access-token"' in response.text and "admin.js" in response.text

    keys_page = site.admin.get(f"/admin/directories/{directory['id']}/keys")
    assert "Microsoft integration key" in keys_page.text and "<td>never</td>" in keys_page.text
    assert token not in keys_page.text and "access-token" not in keys_page.text
    assert "no-store" not in keys_page.headers.get("Cache-Control", "")
    with site.admin.session_transaction() as session:
        assert token not in str(dict(session))
    stored = "".join(p.read_text() for p in Path(site.store.data_dir).iterdir() if p.is_file())
    assert token not in stored

    headers = {"Authorization": f"Bearer {token}"}
    scim = site.app.test_client()
    assert scim.get("/v2/Users", headers=headers).status_code == 200
    assert "<td>never</td>" not in site.admin.get(f"/admin/directories/{directory['id']}/keys").text


def test_the_tenant_url_uses_the_public_url_when_set(site):
    site.app.config["PUBLIC_URL"] = "https://roster.example.com/"
    response, _token = create_key(site, site.default)
    assert 'id="tenant-url" value="https://roster.example.com/v2"' in response.text


@pytest.mark.parametrize("name", ["", "   ", "k" * 101])
def test_a_key_needs_a_name_of_1_to_100_characters(site, name):
    response = post(site.admin, f"/admin/directories/{site.default['id']}/keys", name=name)
    assert response.status_code == 400
    assert field_error(response.text) == ["Name: 1 to 100 characters"]
    assert "access-token" not in response.text and site.store.list_keys() == []


@pytest.mark.parametrize("name", ["Entra\nkey=forged", "Entra\tkey", "Entra\u2028key"])
def test_a_key_name_holds_no_line_breaks_or_control_characters(site, name):
    response = post(site.admin, f"/admin/directories/{site.default['id']}/keys", name=name)
    assert response.status_code == 400
    assert field_error(response.text) == [
        "Name: no line breaks, tabs or other non-printing characters"
    ]
    assert "access-token" not in response.text and site.store.list_keys() == []


def test_deleting_a_key_stops_its_token(site):
    directory = fabrikam(site)
    _response, token = create_key(site, directory)
    key = site.store.list_keys(directory["id"])[0]
    path = f"/admin/directories/{directory['id']}/keys/{key['id']}/delete"
    assert "Delete key Microsoft integration key" in site.admin.get(path).text
    headers = {"Authorization": f"Bearer {token}"}
    assert site.app.test_client().get("/v2/Users", headers=headers).status_code == 200

    response = post(site.admin, path)
    assert response.headers["Location"] == f"/admin/directories/{directory['id']}/keys"
    assert site.app.test_client().get("/v2/Users", headers=headers).status_code == 401
    assert "no longer works" in site.admin.get(response.headers["Location"]).text
    assert site.store.list_keys() == []
    assert site.admin.get(path).status_code == 404


def test_a_key_of_another_directory_is_404(site):
    directory = fabrikam(site)
    create_key(site, directory)
    key = site.store.list_keys(directory["id"])[0]
    path = f"/admin/directories/{site.default['id']}/keys/{key['id']}/delete"
    assert site.admin.get(path).status_code == 404
    assert post(site.admin, path).status_code == 404
    assert len(site.store.list_keys()) == 1


# -- groups -------------------------------------------------------------------------------------


def scim_post_group(site, token: str, body: dict):
    """A group as Entra creates it: POST /v2/Groups with the directory key."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], **body}
    return site.app.test_client().post("/v2/Groups", json=body, headers=headers)


def test_the_groups_page_lists_scim_groups_and_links_members_to_their_contacts(site):
    default = site.default["id"]
    ana = site.store.find_user_by_user_name(default, "ana@contoso.example")
    bea = add_user(site.store, site.default, "bea@contoso.example", displayName="Bea <Ops>")
    _key, token = auth.create_directory_key(site.store, default, "Entra", "t")
    members = [{"value": ana["id"]}, {"value": bea["id"]}]
    created = scim_post_group(
        site, token, {"displayName": "Lisbon office", "externalId": "ext-42", "members": members}
    )
    assert created.status_code == 201
    group_id = created.json["id"]
    scim_post_group(site, token, {"displayName": "Empty team"})

    page = site.admin.get(f"/admin/directories/{default}/groups").text
    assert "2 groups" in page and "read-only here" in page
    assert 'aria-current="page">Groups</a>' in page
    rows = re.findall(r"<tr>\s*<td><a href=\"([^\"]+)\">([^<]+)</a></td>(.*?)</tr>", page, re.S)
    assert [name for _link, name, _rest in rows] == ["Empty team", "Lisbon office"]
    link, _name, rest = rows[1]
    assert link == f"/admin/directories/{default}/groups/{group_id}"
    assert "ext-42" in rest and "<td>2</td>" in rest
    assert "<td>0</td>" in rows[0][2]

    group = site.admin.get(link).text
    assert "<h1>Lisbon office</h1>" in group and "ext-42" in group and "2 members" in group
    assert f'<a href="/people/{default}/{ana["id"]}">ana@contoso.example</a>' in group
    assert f'<a href="/people/{default}/{bea["id"]}">Bea &lt;Ops&gt;</a>' in group
    assert site.admin.get(f"/people/{default}/{bea['id']}").status_code == 200
    assert "<form" not in group.split("</header>")[1]  # read-only: nothing to submit

    audit = site.admin.get(f"/admin/directories/{default}/audit").text
    assert f'<a href="{link}">Lisbon office</a>' in audit  # group targets link to the group


def test_the_groups_page_shows_fifty_groups_a_page(site):
    directory = fabrikam(site)
    for number in range(51):
        site.store.create_group(directory["id"], {"displayName": f"Team {number:02}"}, [], "t")
    base = f"/admin/directories/{directory['id']}/groups"
    first = site.admin.get(base).text
    assert "51 groups" in first and "Page 1 of 2" in first and "Team 49" in first
    assert "Team 50" not in first and f'href="{base}?page=2" rel="next"' in first
    second = site.admin.get(f"{base}?page=2").text
    assert "Team 50" in second and "Team 49" not in second and 'rel="prev"' in second


def test_a_group_of_another_directory_or_an_unknown_group_is_404(site):
    directory = fabrikam(site)
    group, _skipped = site.store.create_group(directory["id"], {"displayName": "Sales"}, [], "t")
    other = f"/admin/directories/{site.default['id']}/groups/{group['id']}"
    assert site.admin.get(other).status_code == 404
    unknown = f"/admin/directories/{directory['id']}/groups/no-such-group"
    assert site.admin.get(unknown).status_code == 404
    assert site.admin.get("/admin/directories/no-such-directory/groups").status_code == 404


def test_plain_users_are_refused_the_groups_pages(site):
    group, _skipped = site.store.create_group(site.default["id"], {"displayName": "All"}, [], "t")
    base = f"/admin/directories/{site.default['id']}/groups"
    assert site.user.get(base).status_code == 403
    assert site.user.get(f"{base}/{group['id']}").status_code == 403


def test_group_member_count(site):
    directory = fabrikam(site, users=3)
    ids = [u["id"] for u in site.store.search_users(directory["id"])[1]]
    group, _skipped = site.store.create_group(directory["id"], {"displayName": "G"}, ids, "t")
    assert site.store.group_member_count(directory["id"], group["id"]) == 3
    site.store.delete_user(directory["id"], ids[0], "t")
    assert site.store.group_member_count(directory["id"], group["id"]) == 2
    assert site.store.group_member_count(site.default["id"], group["id"]) == 0  # not its group


# -- audit log ----------------------------------------------------------------------------------


def audit_targets(page: str) -> list[str]:
    return re.findall(r'<span class="id">(target-\d+)</span>', page)


def test_the_audit_log_lists_newest_first_fifty_a_page(site):
    directory = fabrikam(site)
    for number in range(60):
        site.store.record_audit(directory["id"], "Entra key", "user.update", f"target-{number:02}")
    first = site.admin.get(f"/admin/directories/{directory['id']}/audit").text
    assert "61 entries, newest first" in first and "Page 1 of 2" in first
    assert audit_targets(first) == [f"target-{n:02}" for n in range(59, 9, -1)]
    assert f'href="/admin/directories/{directory["id"]}/audit?page=2" rel="next"' in first
    second = site.admin.get(f"/admin/directories/{directory['id']}/audit?page=2").text
    assert audit_targets(second) == [f"target-{n:02}" for n in range(9, -1, -1)]
    assert "directory.create" in second  # the oldest entry of the directory
    assert 'rel="prev"' in second and 'rel="next"' not in second


def test_the_general_audit_log_covers_every_directory_and_names_who_did_what(site):
    directory = fabrikam(site)
    post(
        site.admin,
        f"/admin/directories/{directory['id']}",
        name="Fabrikam Ltd",
        auth_method="local",
    )
    create_key(site, site.default, "Default key")
    page = site.admin.get("/admin/audit").text
    rows = re.findall(r"<tr>\s*<td><time.*?</tr>", page, re.S)
    assert "key.create" in rows[0] and "Default key" in rows[0] and ADMIN in rows[0]
    assert "directory.update" in rows[1] and "Fabrikam Ltd" in rows[1]
    assert any("user.create" in row and "first-run setup" in row for row in rows)
    only_fabrikam = site.admin.get(f"/admin/directories/{directory['id']}/audit").text
    assert "key.create" not in only_fabrikam and "directory.update" in only_fabrikam


def test_audit_page_counts_and_slices_newest_first(site):
    directory = fabrikam(site)
    for number in range(5):
        site.store.record_audit(directory["id"], "t", "user.update", str(number))
    total, entries = site.store.audit_page(directory["id"], 2, 3)
    assert total == 6  # with directory.create
    assert [e["target"] for e in entries] == ["3", "2", "1"]
    assert site.store.audit_page(directory["id"], 7, 50) == (6, [])
