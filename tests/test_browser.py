"""Real-browser tests: Playwright for Python driving Debian's Chromium (``/usr/bin/chromium``,
never a downloaded browser) against Roster under waitress on loopback, through issue 5's flow:

1. first-run setup through the link the server printed: the administrator exists and is
   signed in;
2. the administrator creates a directory, then a key whose token is shown once (a second look
   shows it no more);
3. a CSV of 50 users is imported; the people search finds one by part of their department;
4. that user is deactivated through SCIM with the key: their own open browser session is
   refused on the next click, while the administrator still finds the contact, marked inactive;
5. the CSV export holds what was imported.

The tests of one module share one server and one administrator's browser session, in file
order, as one person would go through the pages; a step whose predecessor failed fails too,
naming it. The Default directory's test covers steps 1, 3 (search) and 4 with users written
to the store before the server starts, so the session re-check is exercised on its own.

Screenshots of the key pages (and of every page open when a step fails) go to a
``screenshots`` folder under pytest's temp folder; its path is printed at the start.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

import auth
from schemas import CORE_USER_URN, ENTERPRISE_USER_URN, PATCH_OP_URN
from store import DEFAULT_DIRECTORY, Store

from .conftest import CHROMIUM, CHROMIUM_FLAGS, TIMEOUT_MS, LiveServer

ADMIN_USER_NAME = "ada.admin@contoso.example"
ADMIN_DISPLAY_NAME = "Ada Admin"
ADMIN_PASSWORD = "Admin-pass-1"
USER_PASSWORD = "User-pass-1"
SETUP_LINE = re.compile(r"Open this one-time link to create one: (\S+)")

DIRECTORY_NAME = "Fabrikam"
KEY_NAME = "Microsoft integration key"
USER_COUNT = 50
DEPARTMENTS = ["Finance", "Human Resources", "Customer Support", "Logistics", "Legal"]
# The one user each directory's search looks for: a department no other user's contains.
TARGET_INDEX = 37
TARGET_DEPARTMENTS = {"contoso": "Submarine Acoustics", "fabrikam": "Quantum Cartography"}
DEPARTMENT_PARTS = {"contoso": "marine acou", "fabrikam": "cartog"}
# The CSV header: the mapping table's Entra attribute names (schemas.MAPPING_TABLE).
CSV_COLUMNS = [
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "telephoneNumber",
    "jobTitle",
    "department",
    "employeeNumber",
    "city",
]
STEP_DIRECTORY = "create a directory and a key"
STEP_IMPORT = "import 50 users from CSV"
STEP_DEACTIVATE = "deactivate the imported user through SCIM"
STEP_EXPORT = "export CSV and compare"
# A key's access token: secrets.token_urlsafe(32), 43 characters.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


# -- the people the tests create ----------------------------------------------------------------


def people(domain: str) -> list[dict[str, str]]:
    """50 rows under CSV_COLUMNS; row TARGET_INDEX alone works in TARGET_DEPARTMENTS[domain]."""
    rows = []
    for n in range(USER_COUNT):
        given, family = f"Given{n:02d}", f"{domain.capitalize()}son{n:02d}"
        department = (
            TARGET_DEPARTMENTS[domain] if n == TARGET_INDEX else DEPARTMENTS[n % len(DEPARTMENTS)]
        )
        rows.append(
            {
                "userPrincipalName": f"person{n:02d}@{domain}.example",
                "displayName": f"{given} {family}",
                "givenName": given,
                "surname": family,
                "mail": f"{given.lower()}.{family.lower()}@{domain}.example",
                "telephoneNumber": f"+1 555 01{n:02d}",
                "jobTitle": "Analyst" if n % 2 else "Engineer",
                "department": department,
                "employeeNumber": f"E{1000 + n}",
                "city": "Seattle" if n % 3 else "Redmond",
            }
        )
    return rows


def scim_resource(row: dict[str, str]) -> dict:
    """The SCIM user a CSV row stands for (the mapping table's paths)."""
    return {
        "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
        "userName": row["userPrincipalName"],
        "displayName": row["displayName"],
        "name": {"givenName": row["givenName"], "familyName": row["surname"]},
        "emails": [{"type": "work", "value": row["mail"], "primary": True}],
        "phoneNumbers": [{"type": "work", "value": row["telephoneNumber"]}],
        "addresses": [{"type": "work", "locality": row["city"]}],
        "title": row["jobTitle"],
        "active": True,
        ENTERPRISE_USER_URN: {
            "department": row["department"],
            "employeeNumber": row["employeeNumber"],
        },
    }


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def seed_default_directory(data_dir: Path) -> str:
    """Before the server starts (it owns the folder while it runs): the Default directory's 50
    people, the target with a local password, and a Default key. Returns the key's token."""
    store = Store(str(data_dir))
    try:
        directory = store.find_directory_by_name(DEFAULT_DIRECTORY) or store.create_directory(
            DEFAULT_DIRECTORY, "Created on first start"
        )
        for n, row in enumerate(people("contoso")):
            created = store.create_user(directory["id"], scim_resource(row), "browser test")
            if n == TARGET_INDEX:
                password_hash = auth.hash_password(USER_PASSWORD)
                store.set_password(directory["id"], created["id"], password_hash, "browser test")
        _key, token = auth.create_directory_key(store, directory["id"], "Seed key", "test")
    finally:
        store.close()
    return token


# -- the server, the browser and what the steps hand on -----------------------------------------


class PublicUrlServer(LiveServer):
    """A LiveServer with ROSTER_PUBLIC_URL set to its own address, so the printed setup link
    is exactly the one a browser opens."""

    def start(self) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ROSTER_PUBLIC_URL", self.url)
            super().start()

    def setup_link(self) -> str:
        links = SETUP_LINE.findall(self.log())
        assert len(links) == 1, self.log()
        return links[0]


@dataclass
class Flow:
    server: PublicUrlServer
    browser: Browser
    admin: Page
    shots: Path
    default_token: str
    shot_count: int = 0
    signed_in: bool = False
    # Handed from step to step:
    directory_id: str | None = None
    token: str | None = None
    imported: list[dict[str, str]] = field(default_factory=list)
    target: dict[str, str] | None = None
    deactivated: bool = False

    def url(self, path: str, **query: str) -> str:
        return f"{self.server.url}{path}" + (f"?{urlencode(query)}" if query else "")

    def shot(self, page: Page, name: str) -> None:
        self.shot_count += 1
        page.screenshot(path=self.shots / f"{self.shot_count:02d}-{name}.png", full_page=True)

    def new_page(self) -> Page:
        return new_page(self.browser.new_context())

    def require_administrator(self) -> None:
        assert self.signed_in, "the first-run setup step did not sign the administrator in"

    def require_page(self, path: str) -> None:
        self.require_administrator()
        status = self.admin.request.get(self.url(path)).status
        assert status == 200, f"GET {path} answered {status} to the administrator"

    @staticmethod
    def require_step(step: str, needs: str, done: bool) -> None:
        assert done, f"'{needs}' did not complete, so '{step}' cannot run"


def new_page(context: BrowserContext) -> Page:
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    return context.new_page()


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Iterator[Flow]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    root = tmp_path_factory.mktemp("browser")
    shots = root / "screenshots"
    shots.mkdir()
    print(f"\n[browser] screenshots: {shots}")
    data_dir = root / "data"
    data_dir.mkdir()
    default_token = seed_default_directory(data_dir)
    server = PublicUrlServer(data_dir)
    server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                expect.set_options(timeout=TIMEOUT_MS)
                admin = new_page(browser.new_context())
                yield Flow(server, browser, admin, shots, default_token)
            finally:
                browser.close()
    finally:
        server.stop()


@contextlib.contextmanager
def screenshots_on_failure(flow: Flow, step: str, *pages: Page) -> Iterator[None]:
    try:
        yield
    except Exception:
        for n, page in enumerate((flow.admin, *pages)):
            with contextlib.suppress(Exception):
                flow.shot(page, f"FAILED-{step}-{n}")
        raise


# -- page helpers -------------------------------------------------------------------------------


def sign_in(flow: Flow, page: Page, directory_name: str, user_name: str, password: str) -> None:
    """Log in through /login, choosing the directory in the picker when it lists several."""
    page.goto(flow.url("/login"))
    picker = page.get_by_role("navigation", name="Directories")
    if picker.count():
        picker.get_by_role("link", name=directory_name, exact=True).click()
        expect(page.get_by_role("heading", name=directory_name, exact=True)).to_be_visible()
    page.get_by_label("User name").fill(user_name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(flow.url("/"))
    expect(page.get_by_role("button", name=re.compile(r"^Log out"))).to_be_visible()


def search_people(page: Page, text: str) -> None:
    page.get_by_label("Search by name, email, phone, title or department").fill(text)
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r"[?&]q="))


def result_for(page: Page, display_name: str):
    return page.locator("ul.results > li").filter(
        has=page.get_by_role("link", name=display_name, exact=True)
    )


def deactivate_through_scim(flow: Flow, token: str, user_name: str) -> None:
    """What Entra sends when a user is disabled: PATCH active "False" (a string)."""
    user_id = scim_user_id(flow, token, user_name)
    with requests.Session() as scim:
        scim.headers["Authorization"] = f"Bearer {token}"
        scim.headers["Content-Type"] = "application/scim+json; charset=utf-8"
        body = {
            "schemas": [PATCH_OP_URN],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        }
        response = scim.patch(flow.url(f"/v2/Users/{user_id}"), json=body, timeout=30)
        assert response.status_code in (200, 204), response.text
        assert scim.get(flow.url(f"/v2/Users/{user_id}"), timeout=30).json()["active"] is False


def check_session_refused_and_contact_inactive(
    flow: Flow, user_page: Page, row: dict[str, str], step: str
) -> None:
    """The user's next click lands on the sign-in page; the administrator still finds them."""
    user_page.get_by_role("link", name="My account").click()
    user_page.wait_for_url(re.compile(r"/login\?next=(%2F|/)account$"))
    expect(user_page.get_by_role("heading", name="Log in", exact=True)).to_be_visible()
    expect(user_page.get_by_role("link", name="My account")).to_have_count(0)
    flow.shot(user_page, f"{step}-user-session-refused")

    flow.admin.goto(flow.url("/"))
    search_people(flow.admin, row["userPrincipalName"])
    result = result_for(flow.admin, row["displayName"])
    expect(result).to_have_count(1)
    expect(result).to_have_class(re.compile(r"\binactive\b"))
    expect(result.locator(".badge")).to_have_text("inactive")
    result.get_by_role("link", name=row["displayName"], exact=True).click()
    expect(flow.admin.get_by_role("heading", level=1)).to_contain_text("inactive")
    flow.shot(flow.admin, f"{step}-admin-finds-inactive-contact")


def visible_values(page: Page) -> str:
    """Everything a person can read or copy on the page: its text and its fields' values."""
    values = page.locator(
        "input:not([type=hidden]):not([type=submit]):not([type=button]), textarea"
    ).evaluate_all("elements => elements.map(e => e.value)")
    return "\n".join([page.locator("body").inner_text(), *values])


def token_works(flow: Flow, token: str) -> bool:
    answer = requests.get(
        flow.url("/v2/Users", count="0"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return answer.status_code == 200


def scim_user_id(flow: Flow, token: str, user_name: str) -> str:
    found = requests.get(
        flow.url("/v2/Users", filter=f'userName eq "{user_name}"'),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    assert found["totalResults"] == 1, found
    return found["Resources"][0]["id"]


def people_found(page: Page):
    """The people page's count line ("1 person found"), not a flashed notice."""
    return page.get_by_role("status").filter(has_text=re.compile(r"(person|people) found$"))


# -- 1. first run -------------------------------------------------------------------------------


def test_first_run_setup_link_creates_the_signed_in_administrator(flow: Flow) -> None:
    link = flow.server.setup_link()
    assert link.startswith(f"{flow.server.url}/setup/"), link
    page = flow.admin
    with screenshots_on_failure(flow, "setup"):
        page.goto(link)
        expect(page.get_by_role("heading", name="Create the first administrator")).to_be_visible()
        page.get_by_label("User name").fill(ADMIN_USER_NAME)
        page.get_by_label("Display name").fill(ADMIN_DISPLAY_NAME)
        page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
        page.get_by_label("Password again").fill(ADMIN_PASSWORD)
        flow.shot(page, "setup-form")
        page.get_by_role("button", name="Create administrator").click()
        page.wait_for_url(flow.url("/"))
        expect(page.get_by_role("heading", name="People", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name=f"Log out {ADMIN_DISPLAY_NAME}")).to_be_visible()
        expect(page.get_by_role("link", name="Admin", exact=True)).to_be_visible()
        flow.shot(page, "administrator-signed-in")
        flow.signed_in = True
        assert page.request.get(link).status == 404  # the link works once


# -- steps 3 (search) and 4 in the Default directory, its people written before the start -------


def test_default_directory_user_found_by_department_then_deactivated_through_scim(
    flow: Flow,
) -> None:
    flow.require_administrator()
    row = people("contoso")[TARGET_INDEX]
    user_page = flow.new_page()
    with screenshots_on_failure(flow, "default-deactivation", user_page):
        sign_in(flow, user_page, DEFAULT_DIRECTORY, row["userPrincipalName"], USER_PASSWORD)
        flow.shot(user_page, "default-user-signed-in")

        flow.admin.goto(flow.url("/"))
        search_people(flow.admin, DEPARTMENT_PARTS["contoso"])
        expect(people_found(flow.admin)).to_have_text("1 person found")
        result = result_for(flow.admin, row["displayName"])
        expect(result).to_have_count(1)
        expect(result).to_contain_text(row["department"])
        expect(result.locator(".badge")).to_have_count(0)
        flow.shot(flow.admin, "default-search-by-department")

        deactivate_through_scim(flow, flow.default_token, row["userPrincipalName"])
        check_session_refused_and_contact_inactive(flow, user_page, row, "default")
    user_page.context.close()


# -- 2. a directory and its key -----------------------------------------------------------------


def test_admin_creates_a_directory_and_a_key_whose_token_is_shown_once(flow: Flow) -> None:
    flow.require_page("/admin/directories/new")
    page = flow.admin
    with screenshots_on_failure(flow, "directory-and-key"):
        page.goto(flow.url("/"))
        page.get_by_role("link", name="Admin", exact=True).click()
        expect(page.get_by_role("heading", name="Directories", exact=True)).to_be_visible()
        page.get_by_role("link", name="New directory", exact=True).click()
        page.get_by_label("Name", exact=True).fill(DIRECTORY_NAME)
        page.get_by_label("Description", exact=True).fill("Fabrikam staff")
        page.get_by_role("radio", name="Local accounts").check()
        flow.shot(page, "directory-create-form")
        page.get_by_role("button", name="Create directory").click()
        expect(page.get_by_text(f"Directory {DIRECTORY_NAME} created.")).to_be_visible()
        row = page.get_by_role("row").filter(
            has=page.get_by_role("link", name=DIRECTORY_NAME, exact=True)
        )
        expect(row).to_contain_text("Local accounts")
        href = row.get_by_role("link", name=DIRECTORY_NAME, exact=True).get_attribute("href")
        flow.directory_id = re.fullmatch(r"/admin/directories/([^/?#]+)", href or "").group(1)
        flow.shot(page, "directories")

        row.get_by_role("link", name=f"Keys of {DIRECTORY_NAME}").click()
        page.get_by_label("Name", exact=True).fill(KEY_NAME)
        page.get_by_role("button", name="Create key").click()
        token_field = page.get_by_label("Access token (Entra: Secret Token)")
        expect(token_field).to_be_visible()
        flow.token = token_field.input_value()
        assert TOKEN_PATTERN.fullmatch(flow.token), flow.token
        assert token_works(flow, flow.token)
        expect(page.get_by_label(re.compile(r"^Tenant URL"))).to_have_value(f"{flow.server.url}/v2")
        expect(page.get_by_role("button", name="Copy").first).to_be_visible()
        flow.shot(page, "key-token-shown-once")

        page.reload()
        expect(page.get_by_role("heading", name=f"{DIRECTORY_NAME}: keys")).to_be_visible()
        expect(page.get_by_role("row").filter(has_text=KEY_NAME)).to_have_count(1)
        expect(page.get_by_label("Access token (Entra: Secret Token)")).to_have_count(0)
        assert flow.token not in visible_values(page)
        assert flow.token not in page.content()
        flow.shot(page, "keys-after-reload")


# -- 3. import 50 users, search by part of a department -----------------------------------------


def test_admin_imports_50_users_from_csv_and_search_finds_one_by_department(flow: Flow) -> None:
    flow.require_step(STEP_IMPORT, STEP_DIRECTORY, flow.directory_id is not None)
    users_path = f"/admin/directories/{flow.directory_id}/users"
    flow.require_page(users_path)
    page = flow.admin
    rows = people("fabrikam")
    with screenshots_on_failure(flow, "import"):
        page.goto(flow.url(users_path))
        expect(page.get_by_role("heading", name=f"{DIRECTORY_NAME}: users")).to_be_visible()
        page.get_by_role("link", name="Import CSV").click()
        page.get_by_label("CSV file").set_input_files(
            {"name": "fabrikam.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}
        )
        page.get_by_role("button", name="Preview the import").click()
        expect(page.get_by_role("heading", name="Import preview")).to_be_visible()
        expect(page.get_by_role("status")).to_contain_text(
            f"Nothing has been written yet. {USER_COUNT} to create, 0 to update, 0 unchanged, "
            "0 rejected."
        )
        target_cell = page.get_by_role("cell", name=rows[TARGET_INDEX]["userPrincipalName"])
        expect(target_cell).to_be_visible()
        flow.shot(page, "import-preview")
        page.get_by_role("button", name=f"Import {USER_COUNT} users").click()
        page.wait_for_url(flow.url(users_path))
        expect(page.get_by_text(f"Import done: {USER_COUNT} created, 0 updated")).to_be_visible()
        expect(page.get_by_text(f"{USER_COUNT} users", exact=True)).to_be_visible()
        flow.shot(page, "imported-users")

        listed = requests.get(
            flow.url("/v2/Users", count="0"),
            headers={"Authorization": f"Bearer {flow.token}"},
            timeout=30,
        ).json()
        assert listed["totalResults"] == USER_COUNT, listed

        page.goto(flow.url("/"))
        search_people(page, DEPARTMENT_PARTS["fabrikam"])
        expect(people_found(page)).to_have_text("1 person found")
        result = result_for(page, rows[TARGET_INDEX]["displayName"])
        expect(result).to_contain_text(rows[TARGET_INDEX]["department"])
        expect(result).to_contain_text(DIRECTORY_NAME)
        flow.shot(page, "search-imported-by-department")
    flow.imported = rows
    flow.target = rows[TARGET_INDEX]


# -- 4. deactivate the imported user through SCIM -----------------------------------------------


def test_imported_user_deactivated_through_scim_loses_their_session(flow: Flow) -> None:
    flow.require_step(STEP_DEACTIVATE, STEP_IMPORT, flow.target is not None)
    row, page = flow.target, flow.admin
    user_id = scim_user_id(flow, flow.token, row["userPrincipalName"])
    user_page = flow.new_page()
    with screenshots_on_failure(flow, "deactivation", user_page):
        page.goto(flow.url(f"/admin/directories/{flow.directory_id}/users"))
        page.get_by_role("search").get_by_label(
            "Search by name, email, phone, title or department"
        ).fill(row["userPrincipalName"])
        page.get_by_role("search").get_by_role("button", name="Search").click()
        page.get_by_role("link", name=row["userPrincipalName"], exact=True).click()
        page.wait_for_url(flow.url(f"/admin/directories/{flow.directory_id}/users/{user_id}"))
        page.get_by_label("New password", exact=True).fill(USER_PASSWORD)
        page.get_by_label("New password again").fill(USER_PASSWORD)
        page.get_by_role("button", name="Set password").click()
        expect(
            page.get_by_text(f"The password of {row['userPrincipalName']} was set.")
        ).to_be_visible()
        flow.shot(page, "admin-set-user-password")

        sign_in(flow, user_page, DIRECTORY_NAME, row["userPrincipalName"], USER_PASSWORD)
        flow.shot(user_page, "imported-user-signed-in")
        deactivate_through_scim(flow, flow.token, row["userPrincipalName"])
        check_session_refused_and_contact_inactive(flow, user_page, row, "imported")
    flow.deactivated = True
    user_page.context.close()


# -- 5. export and compare ----------------------------------------------------------------------


def test_csv_export_holds_what_was_imported(flow: Flow) -> None:
    flow.require_step(STEP_EXPORT, STEP_IMPORT, bool(flow.imported))
    page = flow.admin
    with screenshots_on_failure(flow, "export"):
        page.goto(flow.url(f"/admin/directories/{flow.directory_id}/users"))
        if flow.deactivated:
            inactive = page.get_by_role("row").filter(has_text=flow.target["userPrincipalName"])
            expect(inactive.locator(".badge")).to_have_text("inactive")
        flow.shot(page, "users-list")
        with page.expect_download() as download:
            page.get_by_role("link", name="Export CSV").click()
        exported = Path(download.value.path()).read_text(encoding="utf-8-sig")
    (flow.shots / "export.csv").write_text(exported, encoding="utf-8")
    reader = csv.DictReader(io.StringIO(exported))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    assert not missing, f"export lacks columns {missing}: {reader.fieldnames}"
    by_user_name = {r["userPrincipalName"]: r for r in reader}
    assert sorted(by_user_name) == sorted(r["userPrincipalName"] for r in flow.imported)
    for row in flow.imported:
        exported_row = by_user_name[row["userPrincipalName"]]
        # "+1 555 0100" would be a formula to a spreadsheet: the export quotes it (README)
        quoted = {**row, "telephoneNumber": "'" + row["telephoneNumber"]}
        assert {c: exported_row[c] for c in CSV_COLUMNS} == quoted
        if "active" in exported_row:  # the one deactivated through SCIM in step 4, if it ran
            deactivated = flow.deactivated and row is flow.target
            assert exported_row["active"] == ("false" if deactivated else "true"), exported_row
