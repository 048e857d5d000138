"""The administrator pages under ``/admin``: directories (settings, delete), directory keys,
groups (read-only: they come from SCIM) and the audit log.

Every view is :func:`auth.administrator_required`: anonymous visitors sign in first, plain users
get 403. Forms are plain HTML posts with a CSRF token (``CSRFProtect``, set up in the factory);
the rules are the store's, and each broken rule is shown next to its field.

A new key's access token is rendered once, in the response to the POST that made it, with
``Cache-Control: no-store``; it is never stored, put in the session or redirected through, so
no later request can show it again. So a reload of that response would send the form again:
each form names itself (``form_id``), and one already sent creates no second key.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.datastructures import MultiDict

import auth
import scim
from store import (
    AUTH_METHODS,
    DIRECTORY_DESCRIPTION_MAX,
    DIRECTORY_NAME_MAX,
    KEY_NAME_MAX,
    SIGN_IN_FIELDS,
    InvalidValueError,
    NotFoundError,
    PreconditionFailed,
    Store,
    UniquenessError,
    directory_setting_problems,
    settings_version,
)

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE_SIZE = 50
GROUPS_PAGE_SIZE = 50
AUTH_METHOD_LABELS = {
    "none": "None (nobody signs in)",
    "local": "Local accounts",
    "microsoft": "Microsoft accounts",
    "oidc": "OpenID Connect",
}
FIELD_LABELS = {
    "name": "Name",
    "description": "Description",
    "auth_method": "Authentication method",
    "my_account": "My Account",
    "microsoft_tenant": "Entra tenant",
    "microsoft_client_id": "Application (client) ID",
    "microsoft_client_secret": "Client secret",
    "oidc_configuration_url": "Configuration URL",
    "oidc_client_id": "Client ID",
    "oidc_client_secret": "Client secret",
    "oidc_logout_url": "Logout URL",
}


def store() -> Store:
    return current_app.extensions["roster.store"]


def actor() -> str:
    return auth.actor_of(auth.current_account())


def directory_or_404(directory_id: str) -> dict:
    directory = store().get_directory(directory_id)
    if directory is None:
        abort(404)
    return directory


@bp.context_processor
def layout_context() -> dict:
    """The layout's navigation (who is signed in) and the labels the admin templates share."""
    return {
        "signed_in": auth.current_account(),
        "auth_method_labels": AUTH_METHOD_LABELS,
    }


@bp.app_template_filter("utc_time")
def utc_time(value: str | None) -> str:
    """A stored ISO 8601 time (``2026-11-27T01:02:03.456Z``) as ``2026-11-27 01:02 UTC``."""
    if not value:
        return "never"
    return f"{value[:10]} {value[11:16]} UTC"


# -- directories --------------------------------------------------------------------------------


@bp.get("")
@auth.administrator_required
def index() -> str:
    """The directories, with their settings and user counts."""
    directories = store().list_directories()
    return render_template(
        "admin/directories.html",
        directories=directories,
        user_counts={d["id"]: store().count_users(d["id"]) for d in directories},
    )


def directory_settings(form: MultiDict, directory: dict | None) -> dict[str, Any]:
    """The form's settings; for an OpenID Connect method also its provider settings, the
    client secret encrypted, or the saved one kept when the field is left empty."""
    settings: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip(),
        "auth_method": form.get("auth_method", ""),
        "my_account": form.get("my_account") == "on",
    }
    method = settings["auth_method"]
    if method in SIGN_IN_FIELDS:
        provider = {f: form.get(f"{method}_{f}", "").strip() for f in SIGN_IN_FIELDS[method]}
        if provider["client_secret"]:
            provider["client_secret"] = auth.encrypt_client_secret(
                current_app.config["SECRET_KEY"], provider["client_secret"]
            )
        else:
            provider["client_secret"] = ((directory or {}).get(method) or {}).get(
                "client_secret", ""
            )
        settings[method] = provider
    return settings


def labelled(problems: dict[str, str]) -> dict[str, str]:
    """The store names a setting by its key ("name: 1 to 100 characters"); the form by its
    label ("Name: 1 to 100 characters")."""
    return {
        field: f"{FIELD_LABELS.get(field, field)}: {message.partition(': ')[2] or message}"
        for field, message in problems.items()
    }


def settings_problems(settings: dict[str, Any], directory_id: str | None) -> dict[str, str]:
    """Each broken rule by field: the store's rules, a name taken by another directory, and
    an administrator switching their own directory to no sign-in (which would end their session
    at once and could leave nobody able to sign in)."""
    problems = labelled(directory_setting_problems(settings))
    holder = store().find_directory_by_name(settings["name"]) if settings["name"] else None
    if "name" not in problems and holder and holder["id"] != directory_id:
        problems["name"] = name_taken(settings["name"])
    own = auth.current_account()["directory_id"] == directory_id
    if own and settings["auth_method"] == "none":
        problems["auth_method"] = (
            "Authentication method: your own account is in this directory, so it must allow "
            "sign-in (local accounts, Microsoft accounts or OpenID Connect)"
        )
    return problems


def name_taken(name: str) -> str:
    return f'Name: a directory named "{name}" already exists (names are unique, ignoring case)'


CHANGED_SINCE_OPENED = (
    "This directory was changed by another administrator since this page was opened. The "
    "form shows your values: check them against the directory's list and save again."
)


def directory_form(directory: dict | None, settings: dict, problems: dict, status: int = 200):
    page = render_template(
        "admin/directory_form.html",
        directory=directory,
        version=settings_version(directory) if directory else None,
        settings=settings,
        problems=problems,
        auth_methods=AUTH_METHODS,
        redirect_uri=auth.callback_url(),
        name_max=DIRECTORY_NAME_MAX,
        description_max=DIRECTORY_DESCRIPTION_MAX,
    )
    return page, status


@bp.route("/directories/new", methods=["GET", "POST"])
@auth.administrator_required
def create_directory() -> Any:
    if request.method == "GET":
        blank = {"name": "", "description": "", "auth_method": "none", "my_account": False}
        return directory_form(None, blank, {})
    settings = directory_settings(request.form, None)
    problems = settings_problems(settings, None)
    if not problems:
        try:
            directory = store().create_directory(**settings, actor=actor())
        except UniquenessError:  # created by someone else since the check
            problems = {"name": name_taken(settings["name"])}
        except InvalidValueError as error:
            problems = labelled({str(error).partition(":")[0]: str(error)})
    if problems:
        return directory_form(None, settings, problems, 400)
    flash(f"Directory {directory['name']} created.")
    return redirect(url_for("admin.index"))


@bp.route("/directories/<directory_id>", methods=["GET", "POST"])
@auth.administrator_required
def edit_directory(directory_id: str) -> Any:
    directory = directory_or_404(directory_id)
    if request.method == "GET":
        settings = {**directory, "my_account": directory.get("my_account") is True}
        return directory_form(directory, settings, {})
    settings = directory_settings(request.form, directory)
    problems = settings_problems(settings, directory_id)
    if not problems:
        try:
            expected = request.form.get("version", "")
            store().update_directory(directory_id, settings, actor(), expected)
        except NotFoundError:
            abort(404)
        except UniquenessError:
            problems = {"name": name_taken(settings["name"])}
        except InvalidValueError as error:
            problems = labelled({str(error).partition(":")[0]: str(error)})
        except PreconditionFailed:
            problems = {"version": CHANGED_SINCE_OPENED}
            directory = directory_or_404(directory_id)  # the form then carries its version
    if problems:
        return directory_form(directory, settings, problems, 400)
    flash(f"Directory {settings['name']} saved.")
    return redirect(url_for("admin.index"))


@bp.route("/directories/<directory_id>/delete", methods=["GET", "POST"])
@auth.administrator_required
def delete_directory(directory_id: str) -> Any:
    """A confirmation that names how many users go with the directory, then the deletion."""
    directory = directory_or_404(directory_id)
    error = None
    if request.method == "POST":
        shown = request.form.get("user_count", "")
        try:
            expected = int(shown) if shown.isdigit() else -1
            deleted = store().delete_directory(directory_id, actor(), expected)
        except NotFoundError:
            abort(404)
        except InvalidValueError as refusal:
            error = f"Cannot delete: {str(refusal).partition(': ')[2]}."
        except PreconditionFailed:
            error = (
                "The directory's users changed since this page was opened: nothing was "
                "deleted. Check the number below, and delete again if you still mean it."
            )
        else:
            users = "user" if deleted == 1 else "users"
            flash(f"Directory {directory['name']} deleted, with {deleted} {users}.")
            return redirect(url_for("admin.index"))
    page = render_template(
        "admin/directory_delete.html",
        directory=directory,
        user_count=store().count_users(directory_id),
        key_count=len(store().list_keys(directory_id)),
        own=auth.current_account()["directory_id"] == directory_id,
        error=error,
    )
    return page, 400 if error else 200


# -- keys ---------------------------------------------------------------------------------------


@bp.get("/directories/<directory_id>/keys")
@auth.administrator_required
def keys(directory_id: str) -> Any:
    return keys_page(directory_or_404(directory_id))


SENT_KEY_FORMS = "sent_key_forms"  # in the session: the last form_ids that created a key
SENT_KEY_FORMS_KEPT = 20
SENT_AGAIN = (
    "This form was sent before, and its key created then; a reload sends it again. The key's "
    "token was shown that once: if it was not copied, delete the key and create a new one."
)


def keys_page(
    directory: dict,
    created: dict | None = None,
    token: str | None = None,
    name: str = "",
    problem: str | None = None,
    notice: str | None = None,
) -> Any:
    page = render_template(
        "admin/keys.html",
        directory=directory,
        keys=store().list_keys(directory["id"]),
        created=created,
        token=token,
        tenant_url=scim.base_url(),
        name=name,
        problem=problem,
        notice=notice,
        form_id=secrets.token_urlsafe(12),
        name_max=KEY_NAME_MAX,
    )
    if token:  # the only response that ever carries the token: no cache may keep it
        return page, 200, {"Cache-Control": "no-store"}
    return page, 400 if problem or notice else 200


@bp.post("/directories/<directory_id>/keys")
@auth.administrator_required
def create_key(directory_id: str) -> Any:
    """Create a key and show its access token, in this response only (the Tenant URL with
    it, both to paste into Entra's provisioning settings)."""
    directory = directory_or_404(directory_id)
    name = request.form.get("name", "").strip()
    form_id = request.form.get("form_id", "")
    sent = session.get(SENT_KEY_FORMS, [])
    if form_id and form_id in sent:
        return keys_page(directory, notice=SENT_AGAIN)
    try:
        key, token = auth.create_directory_key(store(), directory_id, name, actor())
    except InvalidValueError as error:
        return keys_page(directory, name=name, problem=labelled({"name": str(error)})["name"])
    except NotFoundError:
        abort(404)
    if form_id:
        session[SENT_KEY_FORMS] = [*sent, form_id][-SENT_KEY_FORMS_KEPT:]
    return keys_page(directory, created=key, token=token)


def key_or_404(directory_id: str, key_id: str) -> dict:
    found = [k for k in store().list_keys(directory_id) if k["id"] == key_id]
    if not found:
        abort(404)
    return found[0]


@bp.route("/directories/<directory_id>/keys/<key_id>/delete", methods=["GET", "POST"])
@auth.administrator_required
def delete_key(directory_id: str, key_id: str) -> Any:
    directory = directory_or_404(directory_id)
    key = key_or_404(directory_id, key_id)
    if request.method == "GET":
        return render_template("admin/key_delete.html", directory=directory, key=key)
    try:
        store().delete_key(key_id, actor())
    except NotFoundError:
        abort(404)
    flash(f"Key {key['name']} deleted; its access token no longer works.")
    return redirect(url_for("admin.keys", directory_id=directory_id))


# -- groups -------------------------------------------------------------------------------------


@bp.get("/directories/<directory_id>/groups")
@auth.administrator_required
def groups(directory_id: str) -> str:
    """The directory's groups by name, 50 a page, with their member counts. Read-only: groups
    come from SCIM (Entra ID), which would overwrite any change made here."""
    directory = directory_or_404(directory_id)
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    total, found = store().search_groups(
        directory_id,
        sort_key=lambda group: group["displayName"].casefold(),
        start_index=(page - 1) * GROUPS_PAGE_SIZE + 1,
        count=GROUPS_PAGE_SIZE,
    )
    rows = [
        {
            "id": group["id"],
            "displayName": group["displayName"],
            "externalId": group.get("externalId", ""),
            "members": store().group_member_count(directory_id, group["id"]),
        }
        for group in found
    ]
    return render_template(
        "admin/groups.html",
        directory=directory,
        rows=rows,
        total=total,
        page=page,
        pages=max(math.ceil(total / GROUPS_PAGE_SIZE), 1),
    )


@bp.get("/directories/<directory_id>/groups/<group_id>")
@auth.administrator_required
def show_group(directory_id: str, group_id: str) -> str:
    """One group and its members by name, 50 a page, each linked to their contact page."""
    directory = directory_or_404(directory_id)
    resource = store().get_group(directory_id, group_id)
    if resource is None:
        abort(404)
    members = sorted(
        store().group_members(directory_id, group_id),
        key=lambda member: (member[1].casefold(), member[0]),
    )
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    begin = (page - 1) * GROUPS_PAGE_SIZE
    return render_template(
        "admin/group.html",
        directory=directory,
        group=resource,
        members=[
            {
                "name": name or user_id,
                "url": url_for("pages.person", directory_id=directory_id, user_id=user_id),
            }
            for user_id, name in members[begin : begin + GROUPS_PAGE_SIZE]
        ],
        total=len(members),
        page=page,
        pages=max(math.ceil(len(members) / GROUPS_PAGE_SIZE), 1),
    )


# -- audit log ----------------------------------------------------------------------------------


@bp.get("/audit")
@auth.administrator_required
def audit() -> str:
    """Every directory's audit log, and changes to directories themselves."""
    return audit_page(None)


@bp.get("/directories/<directory_id>/audit")
@auth.administrator_required
def directory_audit(directory_id: str) -> str:
    return audit_page(directory_or_404(directory_id))


def audit_page(directory: dict | None) -> str:
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    total, entries = store().audit_page(
        directory["id"] if directory else None, (page - 1) * AUDIT_PAGE_SIZE + 1, AUDIT_PAGE_SIZE
    )
    directory_names = {d["id"]: d["name"] for d in store().list_directories()}
    key_names = {k["id"]: k["name"] for k in store().list_keys()}
    return render_template(
        "admin/audit.html",
        directory=directory,
        entries=[audit_row(e, directory_names, key_names) for e in entries],
        total=total,
        page=page,
        pages=max(math.ceil(total / AUDIT_PAGE_SIZE), 1),
    )


def audit_row(entry: dict, directory_names: dict[str, str], key_names: dict[str, str]) -> dict:
    """An entry with the directory's name and, while the target still exists, its name and
    a link (a user's contact page); a deleted target shows its id alone."""
    directory_id, target = entry["directory_id"], entry["target"]
    kind = entry["action"].partition(".")[0]
    name = link = None
    if kind == "directory":
        name = directory_names.get(target)
        link = url_for("admin.edit_directory", directory_id=target) if name else None
    elif kind == "key":
        name = key_names.get(target)
    elif kind == "user" and directory_id:
        name = store().display_name_of(directory_id, target)
        if name is not None:
            link = url_for("pages.person", directory_id=directory_id, user_id=target)
    elif kind == "group" and directory_id:
        group = store().get_group(directory_id, target)
        name = group.get("displayName") if group else None
        if name is not None:
            link = url_for("admin.show_group", directory_id=directory_id, group_id=target)
    return {
        **entry,
        "directory_name": directory_names.get(directory_id or ""),
        "target_name": name,
        "target_link": link,
    }


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
