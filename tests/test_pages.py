"""The HTML pages through Flask's test client over a temp data folder: first-run setup, local
sign-in and its refusals, sessions, CSRF, people search, contact pages, My account, roles."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest

import auth
from app import create_app, loggable_name, request_log, served_base_url
from schemas import CORE_USER_URN, ENTERPRISE_USER_URN, PATCH_OP_URN
from store import DEFAULT_DIRECTORY

ADMIN_PASSWORD = "Admin-pass-1"
PASSWORD = "User-pass-1"
SETUP_LINK = re.compile(r"(http://\S+)/setup/(\S+)")


def setup_path(err: str) -> str:
    """The path of the one setup link printed on stderr."""
    links = SETUP_LINK.findall(err)
    assert len(links) == 1, err
    return f"/setup/{links[0][1]}"


def csrf_token(client, *paths: str) -> str:
    """The CSRF token (bound to the client's session) of the first of these pages with a form."""
    for path in paths or ("/login",):
        page = client.get(path, follow_redirects=True).get_data(as_text=True)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        if found:
            return found.group(1)
    raise AssertionError(f"no form on {paths}")


def results(page: str) -> str:
    """The list of search results on a people page (not the navigation)."""
    return page[page.index('<ul class="results">') :]


@pytest.fixture
def fresh(tmp_path, capsys):
    """A first start: the app, its client and the setup link's path."""
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True})
    path = setup_path(capsys.readouterr().err)
    yield app, app.test_client(), path
    app.extensions["roster.store"].close()


def run_setup(client, path: str, **overrides) -> object:
    form = {
        "userName": "admin@contoso.example",
        "displayName": "Ada Admin",
        "password": ADMIN_PASSWORD,
        "password_again": ADMIN_PASSWORD,
        **overrides,
    }
    return client.post(path, data={"csrf_token": csrf_token(client, path, "/"), **form})


@pytest.fixture
def site(fresh):
    """After first-run setup: the app, the store, the Default directory, a fresh client."""
    app, client, path = fresh
    assert run_setup(client, path).status_code == 302
    store = app.extensions["roster.store"]
    return app, store, store.find_directory_by_name(DEFAULT_DIRECTORY)


def add_user(store, directory, user_name: str, password: str | None = PASSWORD, **attributes):
    created = store.create_user(
        directory["id"],
        {"schemas": [CORE_USER_URN], "userName": user_name, "displayName": user_name, **attributes},
        "test",
    )
    if password:
        store.set_password(directory["id"], created["id"], auth.hash_password(password), "test")
    return created


def log_in(client, directory, user_name: str, password: str = PASSWORD, token=None, **extra):
    token = token or csrf_token(client)
    form = {"csrf_token": token, "directory_id": directory["id"], "userName": user_name}
    return client.post("/login", data={**form, "password": password, **extra})


def log_out(client):
    return client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})


# -- first run ----------------------------------------------------------------------------------


def test_each_start_without_an_administrator_prints_a_new_setup_link(tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    paths = []
    for _start in range(2):
        app = create_app({"DATA_DIR": data_dir})
        paths.append(setup_path(capsys.readouterr().err))
        app.extensions["roster.store"].close()
    assert paths[0] != paths[1]
    app = create_app({"DATA_DIR": data_dir})
    client = app.test_client()
    assert client.get(paths[0]).status_code == 404  # each link dies with its process
    assert client.get(paths[1]).status_code == 404
    assert setup_path(capsys.readouterr().err) not in paths
    app.extensions["roster.store"].close()


def test_the_setup_link_creates_the_administrator_once(fresh, tmp_path, capsys):
    app, client, path = fresh
    page = client.get(path)
    assert page.status_code == 200 and "Create the first administrator" in page.text

    response = run_setup(client, path)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/admin").status_code == 200  # signed in, as administrator
    store = app.extensions["roster.store"]
    default = store.find_directory_by_name(DEFAULT_DIRECTORY)
    assert default["auth_method"] == "local"
    admin = store.find_user_by_user_name(default["id"], "admin@contoso.example")
    assert store.account(default["id"], admin["id"])["role"] == "administrator"

    assert client.get(path).status_code == 404
    assert run_setup(client, path, userName="second@contoso.example").status_code == 404
    assert store.count_users(default["id"]) == 1
    stored = "".join(p.read_text() for p in (tmp_path / "data").iterdir() if p.is_file())
    assert ADMIN_PASSWORD not in stored and path.rsplit("/", 1)[1] not in stored

    app.extensions["roster.store"].close()
    restarted = create_app({"DATA_DIR": str(tmp_path / "data")})
    assert SETUP_LINK.search(capsys.readouterr().err) is None  # an administrator exists
    restarted.extensions["roster.store"].close()


def test_a_wrong_setup_token_is_404(fresh):
    _app, client, _path = fresh
    assert client.get("/setup/not-the-token").status_code == 404


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password": "Ab1!", "password_again": "Ab1!"}, "Password: 8 to 64 characters"),
        ({"password": "Aa1!" * 17, "password_again": "Aa1!" * 17}, "Password: 8 to 64 characters"),
        (
            {"password": "lowercase-only", "password_again": "lowercase-only"},
            "Password: use at least three of lowercase letters, uppercase letters, digits and "
            "symbols (this one has 2)",
        ),
        ({"password_again": "Admin-pass-2"}, "Password again: the two passwords differ."),
        ({"userName": "   "}, "userName"),
        ({"displayName": ""}, "displayName"),
    ],
)
def test_setup_names_the_rule_a_form_breaks_and_the_link_still_works(fresh, overrides, message):
    app, client, path = fresh
    response = run_setup(client, path, **overrides)
    assert response.status_code == 400
    assert message in response.text
    assert app.extensions["roster.store"].count_administrators() == 0
    assert run_setup(client, path).status_code == 302


@pytest.mark.parametrize(
    ("password", "accepted"),
    [
        ("Abcdefg1", True),  # lower, upper, digit
        ("abcdefg1!", True),  # lower, digit, symbol
        ("ABCDEFG 1", True),  # upper, digit, symbol (a space counts)
        ("Abcdefgh", False),  # two kinds
        ("Abc1!", False),  # too short
        ("Ab1!" * 16, True),  # 64 characters
        ("Ab1!" * 16 + "x", False),
    ],
)
def test_password_policy(password, accepted):
    assert (auth.password_problem(password) is None) is accepted


# -- signing in ---------------------------------------------------------------------------------


def test_log_in_lands_on_the_people_page_and_log_out_ends_the_session(site):
    app, store, default = site
    add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    response = log_in(client, default, "ANA@contoso.example")  # userName ignores case
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "People" in client.get("/").text

    assert log_out(client).headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_log_out_ends_every_session_of_the_account_and_copies_of_its_cookie(site):
    """A signed cookie cannot be deleted on the server: logging out must still stop a copy."""
    app, store, default = site
    ana = add_user(store, default, "ana@contoso.example")
    laptop, phone, thief = app.test_client(), app.test_client(), app.test_client()
    for client in (laptop, phone):
        assert log_in(client, default, "ana@contoso.example").status_code == 302
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    thief.set_cookie(cookie_name, laptop.get_cookie(cookie_name).value)
    assert thief.get("/account").status_code == 200  # the copy works while the session lasts

    log_out(laptop)
    for client in (laptop, phone, thief):
        assert client.get("/account").headers["Location"] == "/login?next=/account"
    actions = [(e["action"], e["target"]) for e in store.list_audit(default["id"])]
    assert ("user.sign_out", ana["id"]) in actions

    assert log_in(phone, default, "ana@contoso.example").status_code == 302  # signs in again
    assert phone.get("/account").status_code == 200
    assert thief.get("/account").status_code == 302  # the old copy stays dead


def test_log_in_returns_to_the_page_asked_for_but_never_to_another_site(site):
    app, store, default = site
    ana = add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    target = f"/people/{default['id']}/{ana['id']}"
    assert client.get(target).headers["Location"] == f"/login?next={target}"
    assert log_in(client, default, ana["userName"], next=target).headers["Location"] == target
    log_out(client)
    for evil_target in (
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example",
    ):
        log_out(client)
        evil = log_in(client, default, ana["userName"], next=evil_target)
        assert evil.status_code == 302 and evil.headers["Location"] == "/", evil_target


def test_the_login_page_lists_only_directories_that_allow_sign_in(site):
    app, store, default = site
    store.create_directory("Hidden")
    microsoft = store.create_directory("Fabrikam")
    store.update_directory(microsoft["id"], {"auth_method": "microsoft"}, "test")
    client = app.test_client()
    page = client.get("/login").text
    assert "Default" in page and "Fabrikam" in page and "Hidden" not in page
    chosen = client.get(f"/login?directory={microsoft['id']}").text
    assert "Log in with your Microsoft account" in chosen and "disabled" in chosen
    assert 'name="password"' not in chosen
    assert 'name="password"' in client.get(f"/login?directory={default['id']}").text


@pytest.mark.parametrize(
    "failure", ["unknown user", "wrong password", "deactivated", "method none", "method microsoft"]
)
def test_every_refusal_says_the_same_neutral_thing(site, failure):
    app, store, default = site
    client = app.test_client()
    token = csrf_token(client)  # before the directory's sign-in form may go away
    user_name, password = "ana@contoso.example", PASSWORD
    add_user(store, default, user_name, active=failure != "deactivated")
    if failure == "unknown user":
        user_name = "nobody@contoso.example"
    elif failure == "wrong password":
        password = "Wrong-pass-1"
    elif failure.startswith("method"):
        store.update_directory(default["id"], {"auth_method": failure.split()[1]}, "test")
    response = log_in(client, default, user_name, password, token)
    assert response.status_code == 400
    assert auth.SIGN_IN_REFUSED in response.text
    assert client.get("/").status_code == 302


def test_a_user_without_a_password_cannot_log_in(site):
    app, store, default = site
    add_user(store, default, "ana@contoso.example", password=None)
    response = log_in(app.test_client(), default, "ana@contoso.example", "")
    assert auth.SIGN_IN_REFUSED in response.text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_failures_slow_an_account_down_but_never_lock_it_for_good(site):
    app, store, default = site
    clock = Clock()
    app.extensions["roster.sign_in_throttle"] = auth.FailureThrottle(clock=clock)
    add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    for _attempt in range(5):
        assert log_in(client, default, "ana@contoso.example", "Wrong-pass-1").status_code == 400
    slowed = log_in(client, default, "ana@contoso.example")  # even the right password waits
    assert slowed.status_code == 429
    assert slowed.headers["Retry-After"] == "32"  # 2**5 seconds after the fifth failure
    assert "Try again in 32 seconds" in slowed.text

    clock.now += 32
    assert log_in(client, default, "ana@contoso.example").status_code == 302
    log_out(client)
    assert log_in(client, default, "ana@contoso.example", "Wrong-pass-1").status_code == 400


def test_the_wait_doubles_up_to_fifteen_minutes():
    clock = Clock()
    throttle = auth.FailureThrottle(clock=clock)
    keys = (("account", "d", "ana"),)
    waits = []
    for _failure in range(12):
        throttle.failed(keys)
        waits.append(throttle.seconds_to_wait(keys))
    assert waits == [0, 0, 0, 0, 32, 64, 128, 256, 512, 900, 900, 900]
    clock.now += 900
    assert throttle.seconds_to_wait(keys) == 0


def test_failures_from_one_address_slow_down_every_account_it_tries(site):
    app, store, default = site
    app.extensions["roster.sign_in_throttle"] = auth.FailureThrottle(clock=Clock())
    add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    for number in range(5):
        log_in(client, default, f"guess{number}@contoso.example", "Wrong-pass-1")
    assert log_in(client, default, "ana@contoso.example").status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROSTER_TRUST_PROXY", "1")
    app = create_app({"DATA_DIR": str(tmp_path / "data")})
    client = app.test_client()
    assert run_setup(client, setup_path(capsys.readouterr().err)).status_code == 302
    log_out(client)
    store = app.extensions["roster.store"]
    default = store.find_directory_by_name(DEFAULT_DIRECTORY)
    app.extensions["roster.sign_in_throttle"] = auth.FailureThrottle(clock=Clock())
    add_user(store, default, "ana@contoso.example")

    def attempt(user_name: str, address: str, password: str = PASSWORD):
        headers = {"X-Forwarded-For": address}
        token = csrf_token(client)
        form = {"csrf_token": token, "directory_id": default["id"], "userName": user_name}
        return client.post("/login", data={**form, "password": password}, headers=headers)

    for number in range(5):
        attempt(f"guess{number}@contoso.example", "203.0.113.7", "Wrong-pass-1")
    assert attempt("ana@contoso.example", "203.0.113.7").status_code == 429
    assert attempt("ana@contoso.example", "198.51.100.2").status_code == 302
    store.close()


# -- sessions and CSRF --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/account", "/admin", "/people/some-dir/some-user"])
def test_anonymous_visitors_are_sent_to_the_login_page(site, path):
    app, _store, _default = site
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_posts_without_a_csrf_token_are_refused(site):
    app, store, default = site
    add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    form = {"directory_id": default["id"], "userName": "ana@contoso.example", "password": PASSWORD}
    assert client.post("/login", data=form).status_code == 400
    assert client.post("/login", data={**form, "csrf_token": "forged"}).status_code == 400
    log_in(client, default, "ana@contoso.example")
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still signed in
    password_form = {"current_password": PASSWORD, "new_password": "New-pass-1"}
    assert client.post("/account/password", data=password_form).status_code == 400


def test_the_scim_api_needs_no_csrf_token(site):
    app, store, default = site
    _key, token = auth.create_directory_key(store, default["id"], "Test key", "test")
    response = app.test_client().post(
        "/v2/Users",
        json={"schemas": [CORE_USER_URN], "userName": "new@contoso.example", "displayName": "N"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201


def test_a_user_deactivated_through_scim_loses_access_on_the_next_click(site):
    app, store, default = site
    ana = add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    log_in(client, default, "ana@contoso.example")
    assert client.get("/").status_code == 200

    _key, token = auth.create_directory_key(store, default["id"], "Test key", "test")
    patch = {
        "schemas": [PATCH_OP_URN],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
    }
    entra = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert entra.patch(f"/v2/Users/{ana['id']}", json=patch, headers=headers).status_code == 200

    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert client.get("/account").status_code == 302


def test_reactivation_lets_the_user_sign_in_again_but_revives_no_old_session(site):
    """A cookie copied before Entra disabled the user stays dead when Entra enables them."""
    app, store, default = site
    ana = add_user(store, default, "ana@contoso.example")
    thief = app.test_client()
    log_in(thief, default, "ana@contoso.example")
    _key, token = auth.create_directory_key(store, default["id"], "Test key", "test")
    entra, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
    for active in ("False", "True"):
        patch = {
            "schemas": [PATCH_OP_URN],
            "Operations": [{"op": "Replace", "path": "active", "value": active}],
        }
        assert entra.patch(f"/v2/Users/{ana['id']}", json=patch, headers=headers).status_code == 200
    assert thief.get("/account").status_code == 302
    phone = app.test_client()
    assert log_in(phone, default, "ana@contoso.example").status_code == 302
    assert phone.get("/account").status_code == 200


def test_a_deleted_user_loses_access_on_the_next_click(site):
    app, store, default = site
    ana = add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    log_in(client, default, "ana@contoso.example")
    store.delete_user(default["id"], ana["id"], "test")
    assert client.get("/").status_code == 302


def test_session_cookie_settings(site, tmp_path, monkeypatch, capsys):
    app, store, default = site
    add_user(store, default, "ana@contoso.example")
    client = app.test_client()
    cookie = log_in(client, default, "ana@contoso.example").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Expires=" in cookie
    assert app.permanent_session_lifetime == timedelta(minutes=480)

    monkeypatch.setenv("ROSTER_PUBLIC_URL", "https://roster.example.com")
    monkeypatch.setenv("ROSTER_SESSION_MINUTES", "30")
    https_app = create_app({"DATA_DIR": str(tmp_path / "other")})
    assert https_app.config["SESSION_COOKIE_SECURE"] is True
    hsts = https_app.test_client().get("/login").headers.get("Strict-Transport-Security")
    assert hsts == "max-age=31536000"
    assert "Strict-Transport-Security" not in client.get("/login").headers  # plain http
    assert https_app.permanent_session_lifetime == timedelta(minutes=30)
    assert "https://roster.example.com/setup/" in capsys.readouterr().err
    https_app.extensions["roster.store"].close()


def test_the_request_log_never_shows_the_setup_token(fresh, capsys):
    _app, client, path = fresh
    client.get(path)
    request_log().flush()
    lines = capsys.readouterr().err.splitlines()
    token = path.rsplit("/", 1)[1]
    assert lines and all(token not in line for line in lines)
    assert "GET /setup/[token] 200" in lines[-1]


def test_the_request_log_leaves_out_a_mistyped_setup_token_and_the_sign_in_callbacks_code(
    fresh, capsys
):
    _app, client, _path = fresh
    client.get("/setup/Mistyped-Secret-Link")
    client.get("/login/oidc/callback?code=Secret-Code-123&state=Secret-State-456")
    client.get("/v2/Users?filter=userName%20eq%20%22ada%22")
    request_log().flush()
    log = capsys.readouterr().err
    for secret in ("Mistyped-Secret-Link", "Secret-Code-123", "Secret-State-456"):
        assert secret not in log
    assert "GET /setup/[token] 404 " in log
    assert "GET /login/oidc/callback " in log
    assert "GET /v2/Users?filter=userName%20eq%20%22ada%22 401 " in log  # the query stays


def test_a_key_name_reaches_the_request_log_as_it_reads_unless_it_could_break_the_line():
    assert loggable_name("Microsoft integration key") == "Microsoft integration key"
    assert loggable_name("Clé Entra") == "Clé Entra"
    forged = "key\n2026-01-01 GET /v2/Users 200 0.1ms key=other"
    assert "\n" not in loggable_name(forged) and loggable_name(forged).startswith("key%0A")
    assert loggable_name("tab\there") == "tab%09here"
    assert loggable_name("lone \ud800 surrogate") == "lone%20%5Cud800%20surrogate"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["waitress-serve", "--listen=127.0.0.1:8080", "--call", "app:create_app"],
            "127.0.0.1:8080",
        ),
        (["waitress-serve", "--listen", "0.0.0.0:9000", "app:app"], "localhost:9000"),
        (["waitress-serve", "--host=roster.lan", "--port=8181"], "roster.lan:8181"),
        (["pytest"], "localhost:8080"),
    ],
)
def test_the_setup_link_uses_the_address_waitress_listens_on(app, argv, expected):
    assert served_base_url(app, argv) == f"http://{expected}"


# -- people, contacts, my account, roles --------------------------------------------------------


@pytest.fixture
def signed_in(site):
    """A plain user signed in, in a company of a few people."""
    app, store, default = site
    boss = add_user(store, default, "zoe@contoso.example", displayName="Zoe Boss")
    ana = add_user(
        store,
        default,
        "ana@contoso.example",
        displayName="Ana Lima",
        title="Senior Engineer",
        emails=[{"type": "work", "value": "ana.lima@contoso.example"}],
        phoneNumbers=[{"type": "work", "value": "+1 (555) 010-0200"}],
        addresses=[{"type": "work", "locality": "Lisbon", "country": "PT"}],
        **{
            "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
            ENTERPRISE_USER_URN: {
                "department": "Platform Engineering",
                "costCenter": "CC-42",
                "manager": {"value": boss["id"]},
            },
        },
    )
    report = add_user(
        store,
        default,
        "rui@contoso.example",
        displayName="Rui Report",
        active=False,
        **{
            "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
            ENTERPRISE_USER_URN: {
                "department": "Platform Engineering",
                "manager": {"value": ana["id"]},
            },
        },
    )
    store.create_group(
        default["id"], {"schemas": [], "displayName": "Lisbon office"}, [ana["id"]], "t"
    )
    client = app.test_client()
    log_in(client, default, "zoe@contoso.example")
    return client, store, default, {"boss": boss, "ana": ana, "report": report}


def test_search_finds_people_by_part_of_department_phone_or_email(signed_in):
    client, _store, _default, _people = signed_in
    by_department = results(client.get("/?q=platform eng").text)
    assert "Ana Lima" in by_department and "Rui Report" in by_department
    assert "Zoe Boss" not in by_department
    assert "Ana Lima" in results(client.get("/?q=5550100").text)
    assert "Ana Lima" in results(client.get("/?q=lima@contoso").text)
    assert "0 people found" in client.get("/?q=nobody-like-this").text


def test_search_marks_deactivated_people_inactive(signed_in):
    client, _store, _default, _people = signed_in
    page = client.get("/?q=rui").text
    assert "Rui Report" in page
    assert re.search(
        r'class="inactive".*?Rui Report.*?<span class="badge">inactive</span>', page, re.S
    )
    assert "inactive" not in client.get("/?q=ana").text


def test_search_filters_by_directory_department_and_title(signed_in):
    client, store, default, _people = signed_in
    other = store.create_directory("Fabrikam")
    add_user(store, other, "cy@fabrikam.example", displayName="Cy Engel", title="Senior Engineer")
    assert "Cy Engel" in client.get("/?title=senior").text
    only_default = client.get(f"/?title=senior&directory={default['id']}").text
    assert "Ana Lima" in only_default and "Cy Engel" not in only_default
    by_department = client.get("/?department=platform").text
    assert "Cy Engel" not in by_department and "Ana Lima" in by_department


def test_search_pages_twenty_at_a_time(signed_in):
    client, store, default, _people = signed_in
    for number in range(25):
        add_user(store, default, f"temp{number:02}@contoso.example", password=None)
    first = client.get("/?q=temp").text
    assert "25 people found" in first and "Page 1 of 2" in first
    assert "temp19@" in first and "temp20@" not in first
    assert 'href="/?q=temp&amp;page=2" rel="next"' in first
    second = client.get("/?q=temp&page=2").text
    assert "temp20@" in second and "temp24@" in second and "temp19@" not in second


def test_a_contact_page_shows_mapped_attributes_manager_reports_and_groups(signed_in):
    client, _store, default, people = signed_in
    page = client.get(f"/people/{default['id']}/{people['ana']['id']}").text
    for label, value in [
        ("User Name", "ana@contoso.example"),
        ("Mail", "ana.lima@contoso.example"),
        ("Office phone", "+1 (555) 010-0200"),
        ("City", "Lisbon"),
        ("Country or region", "PT"),
        ("Cost center", "CC-42"),
        ("Job title", "Senior Engineer"),
        ("Department", "Platform Engineering"),
    ]:
        assert re.search(rf"<dt>{re.escape(label)}</dt>\s*<dd>(<a [^>]*>)?{re.escape(value)}", page)
    assert "Mobile Phone" not in page  # rows without a value are left out
    boss_url = f"/people/{default['id']}/{people['boss']['id']}"
    report_url = f"/people/{default['id']}/{people['report']['id']}"
    assert f'<a href="{boss_url}">Zoe Boss</a>' in page
    assert f'<a href="{report_url}">Rui Report</a>' in page
    assert "Lisbon office" in page


def test_an_unknown_contact_is_404(signed_in):
    client, _store, default, _people = signed_in
    assert client.get(f"/people/{default['id']}/no-such-user").status_code == 404


def test_values_are_escaped(signed_in):
    client, store, default, _people = signed_in
    add_user(store, default, "x@contoso.example", displayName="<script>alert(1)</script>")
    page = client.get("/?q=alert").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_my_account_shows_the_profile_and_changes_the_password(signed_in):
    client, _store, default, _people = signed_in
    page = client.get("/account").text
    assert "My account" in page and "zoe@contoso.example" in page and "Change password" in page

    def change(current: str, new: str, again: str | None = None):
        form = {
            "csrf_token": csrf_token(client, "/account"),
            "current_password": current,
            "new_password": new,
            "new_password_again": new if again is None else again,
        }
        return client.post("/account/password", data=form)

    assert "Current password: it is not your password." in change("Wrong-pass-1", "New-pass-1").text
    assert "Password: 8 to 64 characters" in change(PASSWORD, "short").text
    assert "the two new passwords differ" in change(PASSWORD, "New-pass-1", "New-pass-2").text
    elsewhere = client.application.test_client()  # zoe's other device, signed in before
    assert log_in(elsewhere, default, "zoe@contoso.example").status_code == 302
    response = change(PASSWORD, "New-pass-1")
    assert response.status_code == 302
    assert "Your password was changed." in client.get("/account").text  # this session goes on
    assert elsewhere.get("/account").status_code == 302  # the other one ended with the old password

    log_out(client)
    assert log_in(client, default, "zoe@contoso.example").status_code == 400
    assert log_in(client, default, "zoe@contoso.example", "New-pass-1").status_code == 302


def page_version(page: str) -> str:
    """The version of the user a form was made from (its hidden field)."""
    return html.unescape(re.search(r'name="version" value="([^"]*)"', page).group(1))


def edit_own_profile(client, **fields):
    """Post the My account profile form as the page has it, with ``fields`` changed."""
    page = client.get("/account").text
    inputs = re.findall(r'<input id="\w+" name="(\w+)" type="\w+" value="([^"]*)"', page)
    form = {name: html.unescape(value) for name, value in inputs}
    token = csrf_token(client, "/account")
    data = {**form, **fields, "version": page_version(page), "csrf_token": token}
    return client.post("/account/profile", data=data)


@pytest.fixture
def ana_signed_in(signed_in):
    """Ana (who has a manager and an object ID) signed in, in a directory with My Account on."""
    _client, store, default, people = signed_in
    store.update_directory(default["id"], {"my_account": True}, "t")
    ana = people["ana"]
    store.update_user(default["id"], ana["id"], lambda r: {**r, "externalId": "entra-7"}, "t")
    client = signed_in[0].application.test_client()
    assert log_in(client, default, "ana@contoso.example").status_code == 302
    return client, store, default, people


def test_my_account_edits_own_profile_when_the_directory_allows(ana_signed_in):
    client, store, default, people = ana_signed_in
    page = client.get("/account").text
    assert "Edit your profile" in page and 'action="/account/profile"' in page
    assert 'name="mail"' in page and 'name="department"' in page
    for read_only in ("userPrincipalName", "manager", "objectId"):
        assert f'name="{read_only}"' not in page

    response = edit_own_profile(
        client, jobTitle="Staff Engineer", mail="ana@lima.example", mobile="+351 91 000 0000"
    )
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert "Your profile was saved." in client.get("/account").text
    saved = store.get_user(default["id"], people["ana"]["id"])
    assert saved["title"] == "Staff Engineer"
    assert saved["emails"] == [{"type": "work", "value": "ana@lima.example"}]
    assert {"type": "mobile", "value": "+351 91 000 0000"} in saved["phoneNumbers"]
    assert saved[ENTERPRISE_USER_URN]["department"] == "Platform Engineering"  # kept
    newest = store.audit_page(default["id"], 1, 1)[1][0]
    assert (newest["actor"], newest["action"], newest["target"]) == (
        "ana@contoso.example",
        "user.update",
        people["ana"]["id"],
    )


def test_my_account_shows_the_rule_next_to_the_field_and_stores_nothing(ana_signed_in):
    client, store, default, people = ana_signed_in
    before = store.get_user(default["id"], people["ana"]["id"])
    response = edit_own_profile(client, mail="not-an-email", jobTitle="Changed")
    assert response.status_code == 400
    error = re.search(r'<p id="mail-error" class="field-error">([^<]*)</p>', response.text)
    assert error and error.group(1).startswith("Mail:")
    assert 'id="mail" name="mail" type="email" value="not-an-email" aria-invalid="true"' in (
        response.text
    )
    assert store.get_user(default["id"], people["ana"]["id"]) == before


def test_my_account_cannot_change_user_name_manager_or_object_id(ana_signed_in):
    client, store, default, people = ana_signed_in
    response = edit_own_profile(
        client,
        userPrincipalName="boss@contoso.example",
        manager="",
        objectId="forged",
        displayName="Ana L.",
    )
    assert response.status_code == 302
    saved = store.get_user(default["id"], people["ana"]["id"])
    assert saved["displayName"] == "Ana L."
    assert saved["userName"] == "ana@contoso.example"
    assert saved[ENTERPRISE_USER_URN]["manager"]["value"] == people["boss"]["id"]
    assert saved["externalId"] == "entra-7"


def test_my_account_edits_are_refused_when_the_setting_is_off(signed_in):
    client, store, default, people = signed_in
    assert store.get_directory(default["id"]).get("my_account") is not True
    page = client.get("/account").text
    assert "Edit your profile" not in page and 'action="/account/profile"' not in page
    before = store.get_user(default["id"], people["boss"]["id"])
    form = {"csrf_token": csrf_token(client, "/account"), "displayName": "Changed"}
    assert client.post("/account/profile", data=form).status_code == 403
    assert store.get_user(default["id"], people["boss"]["id"]) == before


def test_my_account_edits_need_a_csrf_token(ana_signed_in):
    client, store, default, people = ana_signed_in
    before = store.get_user(default["id"], people["ana"]["id"])
    assert client.post("/account/profile", data={"displayName": "X"}).status_code == 400
    form = {"displayName": "X", "csrf_token": "forged"}
    assert client.post("/account/profile", data=form).status_code == 400
    assert store.get_user(default["id"], people["ana"]["id"]) == before


def test_a_stale_my_account_form_is_refused_and_shown_again(ana_signed_in):
    client, store, default, people = ana_signed_in
    version = page_version(client.get("/account").text)
    ana_id = people["ana"]["id"]
    store.update_user(default["id"], ana_id, lambda r: {**r, "title": "By Entra"}, "Entra")
    form = {"csrf_token": csrf_token(client, "/account"), "version": version, "jobTitle": "Me"}
    response = client.post("/account/profile", data={**form, "displayName": "Ana"})
    assert response.status_code == 400 and "was changed (perhaps by Entra ID)" in response.text
    assert store.get_user(default["id"], ana_id)["title"] == "By Entra"


def test_a_plain_user_is_refused_the_admin_pages_and_sees_no_admin_link(signed_in):
    client, _store, _default, _people = signed_in
    assert client.get("/admin").status_code == 403
    assert 'href="/admin"' not in client.get("/").text


def test_an_administrator_sees_the_admin_pages_and_link(site, fresh):
    _app, client, _path = fresh  # the client that ran the setup is signed in as administrator
    page = client.get("/admin").text
    assert "<h1>Directories</h1>" in page
    assert 'href="/admin"' in client.get("/").text


def test_only_the_login_page_of_a_provider_lets_its_form_lead_to_the_provider(site):
    app, store, default = site
    microsoft = store.create_directory("Fabrikam")
    settings = {"tenant": "fabrikam.example", "client_id": "c", "client_secret": "s"}
    store.update_directory(
        microsoft["id"], {"auth_method": "microsoft", "microsoft": settings}, "test"
    )
    client = app.test_client()
    chosen = client.get(f"/login?directory={microsoft['id']}")
    authority = app.config["MICROSOFT_AUTHORITY"].rstrip("/")
    assert f"form-action 'self' {authority};" in chosen.headers["Content-Security-Policy"]
    other = client.get(f"/login?directory={default['id']}")
    assert "form-action 'self';" in other.headers["Content-Security-Policy"]


def test_an_api_answer_carries_each_security_header_once(client):
    response = client.get("/v2/Users")  # no key: a SCIM 401
    assert response.status_code == 401
    for name in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
        assert len(response.headers.getlist(name)) == 1, name


def test_every_page_carries_the_security_headers(client):
    response = client.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
