"""The SCIM 2.0 API at ``/v2`` (RFC 7643/7644), as Microsoft Entra ID provisioning uses it.

Every request carries a directory key; the key's directory is the whole world the request can see
(another directory's user answers 404). Errors of any kind leave as SCIM error bodies
(RFC 7644 §3.12), never as HTML pages.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import auth
from schemas import (
    CORE_GROUP_URN,
    CORE_USER_URN,
    ENTERPRISE_USER_URN,
    ERROR_URN,
    GROUP_RESOURCE,
    LIST_RESPONSE_URN,
    PATCH_OP_URN,
    SCHEMA_DEFINITIONS,
    SEARCH_REQUEST_URN,
    USER_RESOURCE,
    load_group,
    load_patched_user,
    load_user,
)
from scimlang import (
    ScimError,
    apply_patch,
    compile_filter,
    equality_terms,
    parse_filter,
    project,
    sort_key,
    split_member_operations,
    text_terms,
)
from store import (
    BrokenReferenceError,
    NotFoundError,
    PreconditionFailed,
    Store,
    StoreClosed,
    UniquenessError,
    shown_user_version,
    version_matches,
)

bp = Blueprint("scim", __name__, url_prefix="/v2")

SCIM_MEDIA_TYPE = "application/scim+json"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
KEY_NAME = "roster.key_name"  # the environ entry naming the verified key, for the request log
ENDPOINT_NAMES = ("Users", "Groups", "Schemas", "ResourceTypes", "ServiceProviderConfig", "Bulk")
RESOURCE_TYPES = {
    "User": {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": CORE_USER_URN,
        "schemaExtensions": [{"schema": ENTERPRISE_USER_URN, "required": False}],
    },
    "Group": {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "Group",
        "schema": CORE_GROUP_URN,
        "schemaExtensions": [],
    },
}
PUBLISHED_SCHEMAS = (CORE_USER_URN, ENTERPRISE_USER_URN, CORE_GROUP_URN)
MAX_BULK_OPERATIONS = 1000  # advertised in ServiceProviderConfig, enforced by scimbulk.py


class CanonicalScimPaths:
    """WSGI middleware: ``/v2/users`` and ``/v2/USERS/`` reach the ``/v2/Users`` endpoint.

    SCIM clients disagree on the case of endpoint names; RFC 7644 §3.2 names them, and matching
    them case-insensitively costs one regex before routing.
    """

    _pattern = re.compile(r"^/v2/(" + "|".join(ENDPOINT_NAMES) + r")(?=/|$)", re.IGNORECASE)
    _canonical = {name.casefold(): name for name in ENDPOINT_NAMES}

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        match = self._pattern.match(path)
        if match:
            name = self._canonical[match.group(1).casefold()]
            environ["PATH_INFO"] = f"/v2/{name}{path[match.end() :]}"
        return self.wsgi_app(environ, start_response)


# -- plumbing -----------------------------------------------------------------------------------


def store() -> Store:
    return current_app.extensions["roster.store"]


class EncodedJSON:
    """A value already encoded as JSON (a cached user), embedded in a body as it is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _embed_orjson(value: Any) -> Any:
    if isinstance(value, EncodedJSON):
        return orjson.Fragment(value.data)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _embed_json(value: Any) -> Any:
    if isinstance(value, EncodedJSON):
        return json.loads(value.data)
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode_json(body: Any) -> bytes:
    """orjson encodes a user ten times faster than the json module, which matters for a page
    of 100; json remains for what orjson refuses (an integer beyond 64 bits in an echoed
    startIndex, say)."""
    try:
        return orjson.dumps(body, default=_embed_orjson)
    except TypeError:
        return json.dumps(body, default=_embed_json).encode()


def scim_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(encode_json(body), status=status, mimetype=SCIM_MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_body(status: int, detail: str, scim_type: str | None = None) -> dict:
    """An RFC 7644 §3.12 error: status as a string, scimType only where one applies."""
    body: dict[str, Any] = {"schemas": [ERROR_URN], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def error_response(status: int, detail: str, scim_type: str | None = None, headers=None):
    return scim_response(error_body(status, detail, scim_type), status, headers)


def handle_scim_error(error: ScimError) -> Response:
    return error_response(error.status, error.detail, error.scim_type)


def handle_http_error(error: HTTPException) -> Response:
    """Routing and protocol errors (404, 405, 413, ...) under /v2 become SCIM error bodies."""
    if not request.path.startswith("/v2"):
        return error
    headers = {k: v for k, v in error.get_headers() if k.lower() == "allow"}
    detail = error.description or error.name
    if error.code == 413:
        detail = f"the request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    return error_response(error.code or 500, detail, None, headers)


def handle_unexpected_error(error: Exception) -> Response:
    """A bug must still answer in SCIM, and the log gets the traceback (never the body)."""
    if isinstance(error, HTTPException):
        return handle_http_error(error)
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    if not request.path.startswith("/v2"):
        raise error
    return error_response(500, "internal server error")


@bp.before_request
def require_directory_key() -> Response | None:
    """Every SCIM request needs a valid directory key (RFC 6750 bearer token)."""
    key = auth.verify_directory_key(store(), request.headers.get("Authorization"))
    if key is None:
        return error_response(
            401,
            "a valid directory key is required: Authorization: Bearer <access token>",
            headers={"WWW-Authenticate": 'Bearer realm="Roster SCIM"'},
        )
    g.actor = key["name"]
    g.directory_id = key["directory_id"]
    request.environ[KEY_NAME] = key["name"]
    store().touch_key(key["id"])
    return None


@bp.after_request
def scim_media_type(response: Response) -> Response:
    """Flask's automatic OPTIONS answer is the one /v2 response not built here."""
    if request.method == "OPTIONS":
        response.mimetype = SCIM_MEDIA_TYPE
    return response


def request_json() -> Any:
    """The request body as JSON; SCIM and plain JSON media types, with or without charset."""
    mimetype = request.mimetype
    if mimetype and mimetype not in (SCIM_MEDIA_TYPE, "application/json"):
        raise ScimError(415, f"unsupported Content-Type {mimetype}; send {SCIM_MEDIA_TYPE}")
    raw = request_body()
    try:
        return parse_json(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ScimError(400, f"the body is not valid JSON: {error}", "invalidSyntax") from None
    except RecursionError:
        raise ScimError(400, "the body nests too deeply", "invalidSyntax") from None


def request_body() -> bytes:
    """The body, read from the WSGI input in one call when the server names its length.

    werkzeug's stream reads through a ``LimitedStream`` in a loop of Python calls: a twentieth
    of a whole disable. Waitress always names the length (it de-chunks chunked bodies first);
    without one, werkzeug's own reading is used. The body limit is the same either way.
    """
    environ = request.environ
    length = environ.get("CONTENT_LENGTH")
    if not length or not length.isdecimal():
        return request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and int(length) > limit:
        raise RequestEntityTooLarge()
    return environ["wsgi.input"].read(int(length))


def parse_json(raw: bytes) -> Any:
    """``json.loads(raw)``, mostly by orjson: twice as fast, and the same values and errors.

    Whatever orjson refuses goes to the standard library, to be accepted as before (NaN, a
    byte order mark, UTF-16) or refused with its message. One difference remains: orjson
    reads an integer beyond 64 bits as a float. No SCIM attribute here is an integer, and a
    startIndex or count that large is past any end either way. Entra's batch of 1,000 members
    is 65 KB of JSON, and parsing it was a fifth of that PATCH.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return refuse_lone_surrogates(json.loads(raw))


def refuse_lone_surrogates(value: Any) -> Any:
    """json reads an escaped lone surrogate (``"\\ud800"``) into a string that is not text:
    no UTF-8 encoder, orjson's included, writes it out again, so such a user could never be
    shown. Refused at the door, like any other body that is not JSON text."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("a lone surrogate (\\ud800 to \\udfff) is not a character") from None
    return value


def request_object(what: str) -> dict:
    """The body as a JSON object: anything else is the wrong message structure (invalidSyntax)."""
    body = request_json()
    if not isinstance(body, dict):
        raise ScimError(400, f"the body of {what} must be a JSON object", "invalidSyntax")
    return body


def base_url() -> str:
    """Where clients reach /v2: ROSTER_PUBLIC_URL when set (behind a proxy), else the request's."""
    public_url = current_app.config.get("PUBLIC_URL")
    if public_url:
        return public_url.rstrip("/") + bp.url_prefix
    environ = request.environ
    origin = (
        environ["wsgi.url_scheme"],
        environ.get("HTTP_HOST"),
        environ.get("SERVER_NAME"),
        environ.get("SERVER_PORT"),
        environ.get("SCRIPT_NAME"),
    )
    base = _base_urls.get(origin)
    if base is None:  # werkzeug's url_root decodes and re-encodes the host: worth caching
        base = request.url_root.rstrip("/") + bp.url_prefix
        if len(_base_urls) < 1000:  # the Host header is the client's: keep the cache small
            _base_urls[origin] = base
    return base


_base_urls: dict[tuple, str] = {}


# -- users --------------------------------------------------------------------------------------


def user_location(user_id: str) -> str:
    return f"{base_url()}/Users/{user_id}"


def render_user_with(
    resource: dict, groups: list[tuple[str, str]], manager_name: str | None
) -> dict:
    """The stored user as the API shows it: meta.location and the version covering what is
    added here, the groups they are a member of (read-only, RFC 7643 §4.1.2), and the
    manager's $ref and name.

    The manager is returned as the RFC 7643 §4.3 complex object, never a bare string (Entra
    cannot read one); a manager who has since been deleted is left out."""
    rendered = dict(resource)
    rendered["meta"] = {
        **resource["meta"],
        "location": user_location(resource["id"]),
        "version": shown_user_version(resource["meta"]["version"], groups, manager_name),
    }
    if groups:
        rendered["groups"] = [
            {
                "value": group_id,
                "$ref": f"{base_url()}/Groups/{group_id}",
                "display": name,
                "type": "direct",
            }
            for group_id, name in groups
        ]
    enterprise = resource.get(ENTERPRISE_USER_URN)
    if enterprise and "manager" in enterprise:
        manager_id = enterprise["manager"]["value"]
        rendered_enterprise = {k: v for k, v in enterprise.items() if k != "manager"}
        if manager_name is not None:
            reference = {"value": manager_id, "$ref": user_location(manager_id)}
            if manager_name:
                reference["displayName"] = manager_name
            rendered_enterprise["manager"] = reference
        if rendered_enterprise:
            rendered[ENTERPRISE_USER_URN] = rendered_enterprise
        else:
            rendered.pop(ENTERPRISE_USER_URN)
            rendered["schemas"] = [CORE_USER_URN]
    return rendered


UserInputs = tuple[list[tuple[str, str]], str | None]  # groups, manager's name


def shape_users(
    resources: list[dict],
    attributes: list[str] | None = None,
    excluded: list[str] | None = None,
    inputs: list[UserInputs] | None = None,
) -> list[dict | EncodedJSON]:
    """Render and apply attributes/excludedAttributes (RFC 7644 §3.4.2.5); without either,
    the cached encodings of the users' default renderings. ``inputs`` are the users' groups
    and managers' names, when the caller has them already."""
    if inputs is None:
        inputs = store().groups_and_manager_names(g.directory_id, resources)
    if attributes or excluded:
        return [
            project(render_user_with(resource, *found), USER_RESOURCE, attributes, excluded)
            for resource, found in zip(resources, inputs, strict=True)
        ]
    return [EncodedJSON(encoded) for encoded in default_user_json(resources, inputs)]


def default_user_json(resources: list[dict], inputs: list[UserInputs]) -> list[bytes]:
    """The users rendered with no attributes parameters and encoded: from the cache for each
    user whose inputs (version, base URL, groups, manager's name) are those it was made from.

    Everything a page shares (base URL, cache) is looked up once per page, and ``inputs``
    holds every user's groups and manager's name, asked of the store once for the page.
    """
    base, cache = base_url(), rendered_users()
    encoded_users = []
    for resource, (groups, manager_name) in zip(resources, inputs, strict=True):
        key = (resource["meta"]["version"], base, manager_name, tuple(groups))
        encoded = cache.get(resource["id"], key)
        if encoded is None:
            rendered = render_user_with(resource, groups, manager_name)
            # A copy of exactly its size: orjson's own bytes keep the whole buffer it wrote
            # into, about 8 KiB for a 1 KiB user, which at 50,000 cached users is 400 MB.
            encoded = bytes(memoryview(orjson.dumps(project(rendered, USER_RESOURCE, None, None))))
            cache.put(resource["id"], key, encoded)
        encoded_users.append(encoded)
    return encoded_users


class RenderedUsers:
    """Encoded default renderings of users, each with the inputs it was made from.

    Rendering and encoding a user cost more than the rest of a request that lists 100 of them.
    An entry is served only while its key (version, base URL, groups, manager's name) is the
    one asked for, so a change anywhere shows at once; it is simply replaced. At most
    ``limit`` entries are kept (about 2 KiB each); past that the oldest tenth goes.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._entries: dict[str, tuple[tuple, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str, key: tuple) -> bytes | None:
        entry = self._entries.get(user_id)
        return entry[1] if entry is not None and entry[0] == key else None

    def put(self, user_id: str, key: tuple, encoded: bytes) -> None:
        with self._lock:
            if len(self._entries) >= self.limit:
                for old in list(itertools.islice(self._entries, self.limit // 10 or 1)):
                    del self._entries[old]
            self._entries[user_id] = (key, encoded)

    def discard(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)


def rendered_users() -> RenderedUsers:
    return current_app.extensions["roster.rendered_users"]


def user_response(resource: dict, status: int = 200) -> Response:
    """The user with the version they are shown with; their groups and manager's name are
    asked of the store once, for both."""
    inputs = store().groups_and_manager_names(g.directory_id, [resource])
    version = shown_user_version(resource["meta"]["version"], *inputs[0])

    def shape(resource: dict, *attributes) -> dict | EncodedJSON:
        return shape_users([resource], *attributes, inputs=inputs)[0]

    return resource_response(resource, shape, status, version)


def resource_response(
    resource: dict, shape: Callable, status: int = 200, version: str | None = None
) -> Response:
    """A resource with its ETag (RFC 7644 §3.14), shaped by the request's attributes params."""
    headers = {"ETag": version or shown_version(resource)}
    if status == 201:
        headers["Location"] = resource_location(resource)
    if not request.environ.get("QUERY_STRING"):  # the usual case: no query to parse
        return scim_response(shape(resource), status, headers)
    search = search_request(request.args.to_dict())
    return scim_response(shape(resource, search.attributes, search.excluded), status, headers)


def shown_version(resource: dict) -> str:
    """The version a resource is shown with: a user's also covers their groups and manager's
    name (see :func:`store.shown_user_version`); a group's is the stored one, which changes
    with its members and their names."""
    if resource["meta"]["resourceType"] != "User":
        return resource["meta"]["version"]
    [(groups, manager_name)] = store().groups_and_manager_names(g.directory_id, [resource])
    return shown_user_version(resource["meta"]["version"], groups, manager_name)


def resource_location(resource: dict) -> str:
    return f"{base_url()}/{resource['meta']['resourceType']}s/{resource['id']}"


def if_match() -> tuple[str, ...] | None:
    """The versions an If-Match header accepts, or None without one."""
    header = request.headers.get("If-Match")
    return entity_tags(header) if header else None


def entity_tags(header: str) -> tuple[str, ...]:
    """Opaque tags of a comma-separated list, ``W/`` dropped: RFC 7644 §3.14 versions are
    weak, so they are compared weakly (RFC 9110 §8.8.3.2). "*" stays "*"."""
    tags = (tag.strip() for tag in header.split(","))
    return tuple(tag[2:] if tag.startswith("W/") else tag for tag in tags if tag)


def not_modified(resource: dict) -> Response | None:
    """RFC 7644 §3.14 If-None-Match on a GET: 304 when the client's version is current."""
    header = request.headers.get("If-None-Match")
    if not header:
        return None
    version = shown_version(resource)
    if version_matches(version, entity_tags(header)):
        return Response(status=304, headers={"ETag": version})
    return None


def storable_user(body: Any, own_id: str | None = None) -> dict:
    """Validate a user body and the references it makes; raises SCIM 400s."""
    user = load_user(body)
    check_manager(user, own_id)
    return user


def check_manager(user: dict, own_id: str | None) -> None:
    """Drop an empty manager; refuse a user as their own manager. (That the manager is a user
    of the directory is checked by the store, under its lock.)

    The extension object is replaced, never edited: after a PATCH it may be the stored one."""
    extension = user.get(ENTERPRISE_USER_URN, {})
    manager = extension.get("manager")
    if manager is None:
        return
    manager_id = manager.get("value")
    if not manager_id:
        rest = {key: value for key, value in extension.items() if key != "manager"}
        if rest:
            user[ENTERPRISE_USER_URN] = rest
        else:
            user.pop(ENTERPRISE_USER_URN)
            user["schemas"] = [CORE_USER_URN]
        return
    if manager_id == own_id:
        raise ScimError(400, "manager: a user cannot be their own manager", "invalidValue")
    if manager != {"value": manager_id}:
        user[ENTERPRISE_USER_URN] = {**extension, "manager": {"value": manager_id}}


def stored_change(write: Callable[[], dict]) -> dict:
    """Run a store write, turning its domain errors into SCIM errors."""
    try:
        return write()
    except UniquenessError as error:
        raise ScimError(409, str(error), "uniqueness") from None
    except NotFoundError:
        raise ScimError(404, "resource not found") from None
    except BrokenReferenceError as error:
        raise ScimError(400, str(error), "invalidValue") from None
    except StoreClosed as error:
        raise ScimError(503, str(error)) from None
    except PreconditionFailed as error:
        raise ScimError(412, f"the resource has changed: its version is now {error}") from None


def create_user_from(body: Any) -> dict:
    user = storable_user(body)
    return stored_change(lambda: store().create_user(g.directory_id, user, g.actor))


def replace_user_from(user_id: str, body: Any, expected: tuple[str, ...] | None) -> dict:
    existing_user(user_id)
    user = storable_user(body, user_id)
    return stored_change(
        lambda: store().replace_user(g.directory_id, user_id, user, g.actor, expected)
    )


def patch_user_from(user_id: str, body: Any, expected: tuple[str, ...] | None) -> dict:
    operations = patch_operations(body)

    def patched(current: dict) -> dict:
        current = {k: v for k, v in current.items() if k not in ("id", "meta")}
        user = load_patched_user(current, apply_patch(current, operations, USER_RESOURCE))
        check_manager(user, user_id)
        return user

    return stored_change(
        lambda: store().update_user(g.directory_id, user_id, patched, g.actor, expected)
    )


def delete_user_by_id(user_id: str, expected: tuple[str, ...] | None) -> None:
    stored_change(lambda: store().delete_user(g.directory_id, user_id, g.actor, expected))
    rendered_users().discard(user_id)


@bp.post("/Users", strict_slashes=False)
def create_user() -> Response:
    return user_response(create_user_from(request_object("a User")), 201)


@dataclass(frozen=True)
class SearchRequest:
    """A query's parameters, from the URL (RFC 7644 §3.4.2) or a POST body (§3.4.3)."""

    filter: str | None = None
    sort_by: str | None = None
    descending: bool = False
    start_index: int = 1
    count: int = DEFAULT_PAGE_SIZE
    attributes: list[str] | None = None
    excluded: list[str] | None = None


def search_request(values: dict[str, Any]) -> SearchRequest:
    """Read and check query parameters; names in any case, unknown ones (Entra's flags) ignored.

    startIndex below 1 counts as 1 and a negative count as 0 (RFC 7644 §3.4.2.4); count is
    capped at the advertised maxResults.
    """
    fields = {key.casefold(): value for key, value in values.items()}
    order = str(fields.get("sortorder") or "ascending").casefold()
    if order not in ("ascending", "descending"):
        raise ScimError(400, "sortOrder must be ascending or descending", "invalidValue")
    start_index = max(integer_value("startIndex", fields.get("startindex"), 1), 1)
    count = min(
        max(integer_value("count", fields.get("count"), DEFAULT_PAGE_SIZE), 0), MAX_PAGE_SIZE
    )
    return SearchRequest(
        filter=fields.get("filter") or None,
        sort_by=fields.get("sortby") or None,
        descending=order == "descending",
        start_index=start_index,
        count=count,
        attributes=attribute_list(fields.get("attributes")),
        excluded=attribute_list(fields.get("excludedattributes")),
    )


def integer_value(name: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ScimError(400, f"{name} must be an integer, got {value!r}", "invalidValue")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ScimError(400, f"{name} must be an integer, got {value!r}", "invalidValue") from None


def attribute_list(value: Any) -> list[str] | None:
    """``attributes`` is comma-separated in a URL and a list in a SearchRequest body."""
    if not value:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ScimError(400, "attributes must be a list of attribute names", "invalidValue")
    return [part.strip() for part in parts if part.strip()]


def user_list_response(search: SearchRequest) -> Response:
    return list_page(*find_users(search), search)


def find_users(search: SearchRequest) -> tuple[int, list[dict]]:
    """totalResults and the requested page of users, shaped for the response."""
    parsed = parse_filter(search.filter) if search.filter is not None else None
    matches = compile_filter(parsed, USER_RESOURCE) if parsed else None
    terms = equality_terms(parsed, USER_RESOURCE) if parsed else {}
    texts = text_terms(parsed, USER_RESOURCE) if parsed else []
    total, page = store().search_users(
        g.directory_id,
        matches=matches,
        equal_terms=terms,
        text_terms=texts,
        sort_key=sort_key(search.sort_by, USER_RESOURCE) if search.sort_by else None,
        descending=search.descending,
        start_index=search.start_index,
        count=search.count,
    )
    return total, shape_users(page, search.attributes, search.excluded)


def list_page(total: int, resources: list[dict], search: SearchRequest) -> Response:
    """A ListResponse (RFC 7644 §3.4.2): totalResults, startIndex, itemsPerPage, Resources."""
    return scim_response(
        {
            "schemas": [LIST_RESPONSE_URN],
            "totalResults": total,
            "startIndex": search.start_index,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
    )


@bp.get("/Users", strict_slashes=False)
def list_users() -> Response:
    return user_list_response(search_request(request.args.to_dict()))


@bp.post("/Users/.search", strict_slashes=False)
def search_users() -> Response:
    """RFC 7644 §3.4.3 search by POST."""
    return user_list_response(search_request(search_request_body()))


@bp.post("/.search", strict_slashes=False)
def search_everything() -> Response:
    """RFC 7644 §3.4.3 at the root: Users, then Groups, one page across both.

    A filter naming an attribute that one resource type lacks matches none of that type
    (only when neither type knows it is it invalidFilter); sortBy orders within each type.
    """
    search = search_request(search_request_body())
    begin, total, page, failures = search.start_index - 1, 0, [], []
    for find in (find_users, find_groups):
        try:
            found, _ = find(replace(search, start_index=1, count=0))
        except ScimError as error:
            failures.append(error)
            continue
        if len(page) < search.count and begin < total + found:
            start = max(begin - total, 0) + 1
            _, more = find(replace(search, start_index=start, count=search.count - len(page)))
            page.extend(more)
        total += found
    if len(failures) == 2:
        raise failures[0]
    return list_page(total, page, search)


def search_request_body() -> dict:
    body = request_object("a SearchRequest")
    schemas = [s.casefold() for s in body.get("schemas", []) if isinstance(s, str)]
    if SEARCH_REQUEST_URN.casefold() not in schemas:
        raise ScimError(400, f"schemas must list {SEARCH_REQUEST_URN}", "invalidSyntax")
    return body


@bp.get("/Users/<user_id>", strict_slashes=False)
def get_user(user_id: str) -> Response:
    resource = existing_user(user_id)
    return not_modified(resource) or user_response(resource)


def existing_user(user_id: str) -> dict:
    resource = store().read_user(g.directory_id, user_id)
    if resource is None:
        raise ScimError(404, f"no user with id {user_id}")
    return resource


@bp.put("/Users/<user_id>", strict_slashes=False)
def replace_user(user_id: str) -> Response:
    return user_response(replace_user_from(user_id, request_object("a User"), if_match()))


@bp.patch("/Users/<user_id>", strict_slashes=False)
def patch_user(user_id: str) -> Response:
    return user_response(patch_user_from(user_id, request_object("a PatchOp"), if_match()))


def message_operations(body: dict, urn: str) -> tuple[dict[str, Any], list]:
    """A PatchOp or BulkRequest message's fields (keys case-folded, as every SCIM name is
    matched) and its Operations; the message must list ``urn`` in its schemas and carry a
    non-empty Operations list, else it is malformed (400 invalidSyntax)."""
    fields = {key.casefold(): value for key, value in body.items()}
    schemas = fields.get("schemas")
    if not isinstance(schemas, list) or urn.casefold() not in (
        s.casefold() for s in schemas if isinstance(s, str)
    ):
        raise ScimError(400, f"schemas must list {urn}", "invalidSyntax")
    operations = fields.get("operations")
    if not isinstance(operations, list) or not operations:
        raise ScimError(400, "Operations must be a non-empty list", "invalidSyntax")
    return fields, operations


def patch_operations(body: dict) -> list:
    """The Operations of a PatchOp request (RFC 7644 §3.5.2), keys matched in any case."""
    _fields, operations = message_operations(body, PATCH_OP_URN)
    return [
        {key.casefold(): value for key, value in op.items()} if isinstance(op, dict) else op
        for op in operations
    ]


@bp.delete("/Users/<user_id>", strict_slashes=False)
def delete_user(user_id: str) -> Response:
    delete_user_by_id(user_id, if_match())
    return Response(status=204)


# -- groups (RFC 7643 §4.2) ---------------------------------------------------------------------


def render_group(resource: dict, with_members: bool) -> dict:
    """The stored group as the API shows it; members are read from the membership index and
    only when the response includes them (Entra reads groups with excludedAttributes=members)."""
    rendered = {**resource, "meta": {**resource["meta"], "location": resource_location(resource)}}
    if with_members:
        members = store().group_members(g.directory_id, resource["id"])
        if members:
            rendered["members"] = [
                {"value": user_id, "$ref": user_location(user_id), "display": name, "type": "User"}
                for user_id, name in members
            ]
    return rendered


def shows_members(attributes: list[str] | None, excluded: list[str] | None) -> bool:
    named = {name.casefold().rsplit(":", 1)[-1].split(".")[0] for name in attributes or []}
    dropped = {name.casefold().rsplit(":", 1)[-1] for name in excluded or []}
    return "members" not in dropped and (not attributes or "members" in named)


def shape_group(
    resource: dict, attributes: list[str] | None = None, excluded: list[str] | None = None
) -> dict:
    rendered = render_group(resource, shows_members(attributes, excluded))
    return project(rendered, GROUP_RESOURCE, attributes, excluded)


def group_response(resource: dict, status: int = 200) -> Response:
    return resource_response(resource, shape_group, status)


def existing_group(group_id: str) -> dict:
    resource = store().get_group(g.directory_id, group_id)
    if resource is None:
        raise ScimError(404, f"no group with id {group_id}")
    return resource


def create_group_from(body: Any) -> dict:
    group, member_ids = load_group(body)
    created, _skipped = stored_change(
        lambda: store().create_group(g.directory_id, group, member_ids, g.actor)
    )
    return created


def replace_group_from(group_id: str, body: Any, expected: tuple[str, ...] | None) -> dict:
    group, member_ids = load_group(body)
    updated, _skipped = stored_change(
        lambda: store().update_group(
            g.directory_id,
            group_id,
            lambda _old: group,
            [("replace", member_ids)],
            g.actor,
            expected,
        )
    )
    return updated


def patch_group_from(group_id: str, body: Any, expected: tuple[str, ...] | None) -> dict:
    """Attribute operations go through the PATCH engine; member operations become index edits."""
    attribute_operations, member_edits = split_member_operations(patch_operations(body))

    def patched(current: dict) -> dict:
        current = {k: v for k, v in current.items() if k not in ("id", "meta")}
        group, _members = load_group(apply_patch(current, attribute_operations, GROUP_RESOURCE))
        return group

    change = patched if attribute_operations else None
    updated, _skipped = stored_change(
        lambda: store().update_group(
            g.directory_id, group_id, change, member_edits, g.actor, expected
        )
    )
    return updated


def delete_group_by_id(group_id: str, expected: tuple[str, ...] | None) -> None:
    stored_change(lambda: store().delete_group(g.directory_id, group_id, g.actor, expected))


@bp.post("/Groups", strict_slashes=False)
def create_group() -> Response:
    return group_response(create_group_from(request_object("a Group")), 201)


@bp.get("/Groups", strict_slashes=False)
def list_groups() -> Response:
    return group_list_response(search_request(request.args.to_dict()))


@bp.post("/Groups/.search", strict_slashes=False)
def search_groups() -> Response:
    return group_list_response(search_request(search_request_body()))


def group_list_response(search: SearchRequest) -> Response:
    return list_page(*find_groups(search), search)


def find_groups(search: SearchRequest) -> tuple[int, list[dict]]:
    """totalResults and the requested page of groups, shaped for the response."""
    parsed = parse_filter(search.filter) if search.filter is not None else None
    total, page = store().search_groups(
        g.directory_id,
        matches=compile_filter(parsed, GROUP_RESOURCE) if parsed else None,
        equal_terms=equality_terms(parsed, GROUP_RESOURCE) if parsed else {},
        sort_key=sort_key(search.sort_by, GROUP_RESOURCE) if search.sort_by else None,
        descending=search.descending,
        start_index=search.start_index,
        count=search.count,
        with_members="members" in (search.filter or "").casefold(),
    )
    page = [{k: v for k, v in r.items() if k != "members"} for r in page]
    return total, [shape_group(r, search.attributes, search.excluded) for r in page]


@bp.get("/Groups/<group_id>", strict_slashes=False)
def get_group(group_id: str) -> Response:
    resource = existing_group(group_id)
    return not_modified(resource) or group_response(resource)


@bp.put("/Groups/<group_id>", strict_slashes=False)
def replace_group(group_id: str) -> Response:
    return group_response(replace_group_from(group_id, request_object("a Group"), if_match()))


@bp.patch("/Groups/<group_id>", strict_slashes=False)
def patch_group(group_id: str) -> Response:
    """204 No Content with the new ETag, unless the request names ``attributes`` or
    ``excludedAttributes``: then 200 with the group, shaped by them.

    Microsoft recommends 204 for group PATCH, since returning all members of a large group on
    every batch "isn't advisable", and RFC 7644 §3.5.2 allows it; a 200 with the whole group
    would make each batch of 50 members cost as much as the group is large.
    """
    updated = patch_group_from(group_id, request_object("a PatchOp"), if_match())
    if asks_for_representation():
        return group_response(updated)
    return Response(status=204, headers={"ETag": updated["meta"]["version"]})


def asks_for_representation() -> bool:
    return any(name.casefold() in ("attributes", "excludedattributes") for name in request.args)


@bp.delete("/Groups/<group_id>", strict_slashes=False)
def delete_group(group_id: str) -> Response:
    delete_group_by_id(group_id, if_match())
    return Response(status=204)


# -- discovery (RFC 7644 §4) --------------------------------------------------------------------


def service_provider_config() -> dict:
    """What this server supports, and nothing it does not (RFC 7643 §5)."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": MAX_BULK_OPERATIONS,
            "maxPayloadSize": current_app.config["MAX_CONTENT_LENGTH"],
        },
        "filter": {"supported": True, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Directory key",
                "description": "The access token of a Roster directory key, sent as a bearer token",
                "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url()}/ServiceProviderConfig",
        },
    }


def list_response(resources: list[dict]) -> Response:
    return scim_response(
        {
            "schemas": [LIST_RESPONSE_URN],
            "totalResults": len(resources),
            "startIndex": 1,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
    )


def schema_resource(urn: str) -> dict:
    location = f"{base_url()}/Schemas/{urn}"
    return {**SCHEMA_DEFINITIONS[urn], "meta": {"resourceType": "Schema", "location": location}}


def resource_type_resource(name: str) -> dict:
    location = f"{base_url()}/ResourceTypes/{name}"
    return {**RESOURCE_TYPES[name], "meta": {"resourceType": "ResourceType", "location": location}}


@bp.get("/ServiceProviderConfig", strict_slashes=False)
def get_service_provider_config() -> Response:
    return scim_response(service_provider_config())


@bp.get("/Schemas", strict_slashes=False)
def list_schemas() -> Response:
    return list_response([schema_resource(urn) for urn in PUBLISHED_SCHEMAS])


@bp.get("/Schemas/<path:urn>", strict_slashes=False)
def get_schema(urn: str) -> Response:
    known = {u.casefold(): u for u in PUBLISHED_SCHEMAS}
    if urn.casefold() not in known:
        raise ScimError(404, f"no schema {urn}")
    return scim_response(schema_resource(known[urn.casefold()]))


@bp.get("/ResourceTypes", strict_slashes=False)
def list_resource_types() -> Response:
    return list_response([resource_type_resource(name) for name in RESOURCE_TYPES])


@bp.get("/ResourceTypes/<name>", strict_slashes=False)
def get_resource_type(name: str) -> Response:
    known = {n.casefold(): n for n in RESOURCE_TYPES}
    if name.casefold() not in known:
        raise ScimError(404, f"no resource type {name}")
    return scim_response(resource_type_resource(known[name.casefold()]))


def init_app(app: Flask) -> None:
    """Mount the API: blueprint, SCIM error bodies for every failure, case-insensitive paths."""
    app.register_blueprint(bp)
    app.extensions["roster.rendered_users"] = RenderedUsers()
    app.register_error_handler(ScimError, handle_scim_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected_error)
    app.wsgi_app = CanonicalScimPaths(app.wsgi_app)


import scimbulk  # noqa: E402,F401  (registers /v2/Bulk on bp; it needs the functions above)
