"""The HTML pages: first-run setup, sign-in, people search, contact pages and My account.

Every page but setup and sign-in needs a signed-in account (:func:`auth.login_required`), checked
anew on each request. Forms are plain HTML posts carrying a CSRF token (Flask-WTF's
``CSRFProtect``, set up in the factory); Jinja escapes every value.
"""

from __future__ import annotations

import math
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

import admin_users
import auth
from schemas import CORE_USER_URN, load_user, mapped_attributes
from scimlang import ScimError
from store import (
    DEFAULT_DIRECTORY,
    InvalidValueError,
    NotFoundError,
    PreconditionFailed,
    Store,
    UniquenessError,
)

bp = Blueprint("pages", __name__)

PAGE_SIZE = 20
SETUP_ACTOR = "first-run setup"
SETUP_PATH = "/setup/"  # the one-time link: /setup/<token>, a secret the request log leaves out
THROTTLE = "roster.sign_in_throttle"
# The identity provider origins a page's forms post to; app.SecurityHeaders allows them.
FORM_ACTION_ORIGINS = "roster.form_action_origins"


def store() -> Store:
    return current_app.extensions["roster.store"]


def throttle() -> auth.FailureThrottle:
    return current_app.extensions[THROTTLE]


def local_target(target: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another site.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash, so
    ``/<tab>/evil.example`` would leave the site as ``//evil.example`` does; a control character
    would also break the Location header. Any of them sends the user to the start page.
    """
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(char) < 0x20 or ord(char) == 0x7F for char in target)
    ):
        return target
    return url_for("pages.people")


@bp.context_processor
def signed_in_account() -> dict:
    """The layout's navigation shows who is signed in and, to administrators, the admin link."""
    return {"signed_in": auth.current_account()}


# -- first run ----------------------------------------------------------------------------------


@bp.route(f"{SETUP_PATH}<token>", methods=["GET", "POST"])
def setup(token: str) -> Any:
    """The one-time link printed at start: creates the first administrator, in the Default
    directory, which then uses local accounts. Gone (404) once used or once an administrator
    exists."""
    if store().count_administrators() or not auth.setup_token_is_valid(token):
        abort(404)
    if request.method == "GET":
        return render_template(
            "setup.html", token=token, form={}, error=None, password_rule=auth.PASSWORD_RULE
        )
    form = request.form
    try:
        account = create_first_administrator(
            form.get("userName", "").strip(),
            form.get("displayName", "").strip(),
            form.get("password", ""),
            form.get("password_again", ""),
        )
    except InvalidValueError as error:
        if store().count_administrators():
            abort(404)  # another setup form won the race
        page = render_template(
            "setup.html", token=token, form=form, error=str(error), password_rule=auth.PASSWORD_RULE
        )
        return page, 400
    auth.spend_setup_token()
    auth.start_session(account)
    return redirect(url_for("pages.people"))


def create_first_administrator(
    user_name: str, display_name: str, password: str, password_again: str
) -> dict:
    """The account of the new administrator, or :class:`InvalidValueError` naming the field."""
    problem = auth.password_problem(password)
    if problem:
        raise InvalidValueError(problem)
    if password != password_again:
        raise InvalidValueError("Password again: the two passwords differ.")
    body = {"schemas": [CORE_USER_URN], "userName": user_name, "displayName": display_name}
    try:
        resource = load_user({**body, "active": True})  # the same rules as SCIM
    except ScimError as error:
        raise InvalidValueError(error.detail) from None
    directory = store().find_directory_by_name(DEFAULT_DIRECTORY) or store().create_directory(
        DEFAULT_DIRECTORY, "Created on first start"
    )
    try:
        created = store().create_first_administrator(
            directory["id"], resource, auth.hash_password(password), SETUP_ACTOR
        )
    except UniquenessError as error:
        raise InvalidValueError(str(error)) from None
    return store().account(directory["id"], created["id"])


# -- signing in and out -------------------------------------------------------------------------


@bp.get("/login")
def login() -> Any:
    if auth.current_account() is not None:
        return redirect(url_for("pages.people"))
    return login_page(
        request.args.get("directory"),
        request.args.get("next"),
        provider_logout=session.pop(auth.PROVIDER_LOGOUT, None),
    )


def login_page(
    directory_id: str | None,
    next_target: str | None,
    user_name: str = "",
    error: str | None = None,
    status: int = 200,
    headers: dict | None = None,
    provider_logout: dict | None = None,
) -> Any:
    """The directory picker: directories whose method is not "none"; the chosen one (or the
    only one) shows the form of its method."""
    directories = [d for d in store().list_directories() if d.get("auth_method") != "none"]
    chosen = next((d for d in directories if d["id"] == directory_id), None)
    if chosen is None and len(directories) == 1:
        chosen = directories[0]
    origin = auth.form_action_origin(chosen) if chosen else None
    if origin:
        request.environ[FORM_ACTION_ORIGINS] = [origin]
    page = render_template(
        "login.html",
        directories=directories,
        chosen=chosen,
        next_target=next_target or "",
        user_name=user_name,
        error=error,
        provider_logout=provider_logout,
    )
    return page, status, headers or {}


@bp.post("/login")
def sign_in() -> Any:
    form = request.form
    directory = store().get_directory(form.get("directory_id", ""))
    user_name = form.get("userName", "").strip()
    try:
        account = auth.sign_in_locally(
            store(), directory, user_name, form.get("password", ""), request.remote_addr, throttle()
        )
    except auth.CredentialsRefused as refusal:
        status, headers = 400, {}
        if refusal.retry_after:
            status, headers = 429, {"Retry-After": str(refusal.retry_after)}
        directory_id = directory["id"] if directory else None
        return login_page(
            directory_id, form.get("next"), user_name, refusal.message, status, headers
        )
    auth.start_session(account)
    return redirect(local_target(form.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Ends the session, and every other one of the account (see :func:`auth.sign_out`). For
    a directory that signs in with an OpenID Connect provider, the login page then offers to
    sign out there too (the provider's session would otherwise sign the next person at this
    computer straight back in)."""
    account = auth.current_account()
    directory = store().get_directory(account["directory_id"]) if account else None
    auth.sign_out(store())
    elsewhere = auth.provider_logout(directory)
    if elsewhere:
        session[auth.PROVIDER_LOGOUT] = elsewhere
    return redirect(url_for("pages.login"))


# -- people -------------------------------------------------------------------------------------


@bp.get("/")
@auth.login_required
def people() -> str:
    """Search across directories: one box, filters, 20 per page, inactive people marked."""
    args = request.args
    criteria = {
        "text": args.get("q", "").strip(),
        "directory_id": args.get("directory") or None,
        "department": args.get("department", "").strip() or None,
        "title": args.get("title", "").strip() or None,
        "manager_id": args.get("manager") or None,
    }
    page = max(args.get("page", 1, type=int) or 1, 1)
    total, found = store().search_people(
        **criteria, start_index=(page - 1) * PAGE_SIZE + 1, count=PAGE_SIZE
    )
    directories = store().list_directories()
    manager_name = None
    if criteria["manager_id"] and found:
        manager_name = store().display_name_of(found[0]["directory_id"], criteria["manager_id"])
    return render_template(
        "people.html",
        args=args,
        total=total,
        results=[person_summary(r["directory_id"], r["resource"]) for r in found],
        page=page,
        pages=max(math.ceil(total / PAGE_SIZE), 1),
        directories=directories,
        directory_names={d["id"]: d["name"] for d in directories},
        manager_name=manager_name,
    )


def person_summary(directory_id: str, resource: dict) -> dict:
    """What one search result shows."""
    values = {label: value for label, _entra, value in mapped_attributes(resource)}
    return {
        "directory_id": directory_id,
        "id": resource["id"],
        "displayName": resource.get("displayName") or resource["userName"],
        "title": values.get("Job title"),
        "department": values.get("Department"),
        "email": values.get("Mail"),
        "phone": values.get("Office phone") or values.get("Mobile Phone"),
        "active": resource.get("active") is not False,
    }


@bp.get("/people/<directory_id>/<user_id>")
@auth.login_required
def person(directory_id: str, user_id: str) -> str:
    """A contact: every mapped attribute with a value, manager, direct reports, groups."""
    resource = store().get_user(directory_id, user_id)
    if resource is None:
        abort(404)
    return render_template(
        "person.html",
        person=contact_card(directory_id, resource),
        directory=store().get_directory(directory_id),
    )


def contact_card(directory_id: str, resource: dict) -> dict:
    """The contact page's content, shared with My account."""
    rows = []
    for label, _entra, value in mapped_attributes(resource):
        link = None
        if label == "Manager":
            manager_id = value.get("value", "")
            name = store().display_name_of(directory_id, manager_id)
            if name is None:
                continue  # a manager since deleted
            value, link = name or manager_id, person_url(directory_id, manager_id)
        elif label == "Mail":
            link = f"mailto:{value}"
        elif label in ("Office phone", "Mobile Phone"):
            link = f"tel:{value}"
        rows.append({"label": label, "value": value, "link": link})
    reports = sorted(
        store().direct_reports(directory_id, resource["id"]),
        key=lambda r: (r.get("displayName") or r["userName"]).casefold(),
    )
    return {
        "displayName": resource.get("displayName") or resource["userName"],
        "active": resource.get("active") is not False,
        "rows": rows,
        "reports": [
            {
                "name": r.get("displayName") or r["userName"],
                "url": person_url(directory_id, r["id"]),
            }
            for r in reports
        ],
        "groups": [
            name for _group_id, name in store().groups_of_user(directory_id, resource["id"])
        ],
    }


def person_url(directory_id: str, user_id: str) -> str:
    return url_for("pages.person", directory_id=directory_id, user_id=user_id)


# -- my account ---------------------------------------------------------------------------------


# Read-only on My account: the userName is what the person signs in with and what Entra matches
# on, the manager is the organisation's to set, and the object ID is Entra's link to the user.
OWN_PROFILE_READ_ONLY = (admin_users.USER_NAME, admin_users.MANAGER, "objectId")


@bp.get("/account")
@auth.login_required
def my_account() -> Any:
    return account_page()


def may_edit_own_profile(directory: dict) -> bool:
    """The directory's "My Account" setting (absent means no)."""
    return directory.get("my_account") is True


def account_page(
    error: str | None = None,
    status: int = 200,
    headers: dict | None = None,
    profile_values: dict[str, str] | None = None,
    profile_errors: dict[str, str] | None = None,
):
    """The profile, with a form to edit it when the directory allows, and the password form."""
    account = auth.current_account()
    directory = store().get_directory(account["directory_id"])
    can_change_password = account["has_password"] and directory.get("auth_method") == "local"
    profile_fields, profile_error = [], None
    if may_edit_own_profile(directory):
        values = profile_values or admin_users.stored_values(
            account["directory_id"], account["resource"]
        )
        errors = profile_errors or {}
        profile_fields = [
            f
            for f in admin_users.form_fields(values, errors)
            if f["name"] not in OWN_PROFILE_READ_ONLY
        ]
        shown = {f["name"] for f in profile_fields}  # a message no field shows goes on top
        profile_error = " ".join(m for name, m in errors.items() if name not in shown) or None
    page = render_template(
        "account.html",
        person=contact_card(account["directory_id"], account["resource"]),
        directory=directory,
        role=account["role"],
        can_change_password=can_change_password,
        password_rule=auth.PASSWORD_RULE,
        error=error,
        profile_fields=profile_fields,
        profile_error=profile_error,
        version=account["resource"]["meta"]["version"],
    )
    return page, status, headers or {}


@bp.post("/account/profile")
@auth.login_required
def update_own_profile() -> Any:
    """Save the signed-in user's own attributes, by the rules SCIM and the admin form use; the
    audit log names the user as the actor. Refused unless the directory allows it."""
    account = auth.current_account()
    directory_id, user_id = account["directory_id"], account["id"]
    if not may_edit_own_profile(store().get_directory(directory_id)):
        abort(403)
    values = {
        name: value
        for name, value in admin_users.form_values(request.form).items()
        if name not in OWN_PROFILE_READ_ONLY
    }
    current = admin_users.without_server_attributes(account["resource"])
    user, errors = admin_users.validated_user(
        admin_users.scim_user(current, values), admin_users.LABELS
    )
    if user is not None:
        expected = (request.form.get("version", "").removeprefix("W/"),)
        try:
            store().update_user(
                directory_id, user_id, lambda _current: user, auth.actor_of(account), expected
            )
        except NotFoundError:
            abort(404)
        except PreconditionFailed as error:
            errors = admin_users.store_errors(error, values)
        else:
            flash("Your profile was saved.")
            return redirect(url_for("pages.my_account"))
    return account_page(status=400, profile_values=values, profile_errors=errors)


@bp.post("/account/password")
@auth.login_required
def change_password() -> Any:
    account = auth.current_account()
    directory = store().get_directory(account["directory_id"])
    if not account["has_password"] or directory.get("auth_method") != "local":
        abort(403)
    form = request.form
    try:
        auth.change_own_password(
            store(),
            account,
            form.get("current_password", ""),
            form.get("new_password", ""),
            form.get("new_password_again", ""),
            throttle(),
        )
    except auth.CredentialsRefused as refusal:
        if refusal.retry_after:
            return account_page(refusal.message, 429, {"Retry-After": str(refusal.retry_after)})
        return account_page(refusal.message, 400)
    flash("Your password was changed.")
    return redirect(url_for("pages.my_account"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions[THROTTLE] = auth.FailureThrottle()
