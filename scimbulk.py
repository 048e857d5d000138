"""SCIM Bulk (RFC 7644 §3.7) at ``/v2/Bulk``: many operations in one request.

Each operation runs through the same functions as the plain endpoints in scim.py, so a bulk
POST, PUT, PATCH or DELETE validates, stores and fails exactly as its single twin. What is
Bulk's own lives here: the BulkRequest message, bulkId references resolved across operations
(an operation waits for a later POST it names), failOnErrors and the operation limit.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response

from schemas import ERROR_URN
from scim import (
    MAX_BULK_OPERATIONS,
    bp,
    create_group_from,
    create_user_from,
    delete_group_by_id,
    delete_user_by_id,
    entity_tags,
    message_operations,
    patch_group_from,
    patch_user_from,
    replace_group_from,
    replace_user_from,
    request_object,
    resource_location,
    scim_response,
    shown_version,
)
from scimlang import ScimError

BULK_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
BULK_ID = re.compile(r'bulkId:([^"\\/\s]+)')  # a reference inside JSON text or a path


@bp.post("/Bulk", strict_slashes=False)
def bulk() -> Response:
    """Run a BulkRequest: each operation applied and answered on its own (§3.7.3).

    The body limit (maxPayloadSize) is the app's MAX_CONTENT_LENGTH, so an oversized body is
    a 413 before it is read; more than maxOperations is a 413 tooMany.
    """
    fields, operations = message_operations(request_object("a BulkRequest"), BULK_REQUEST_URN)
    if len(operations) > MAX_BULK_OPERATIONS:
        raise ScimError(413, f"at most {MAX_BULK_OPERATIONS} operations per request", "tooMany")
    fail_on_errors = fields.get("failonerrors")
    if fail_on_errors is not None and (
        not isinstance(fail_on_errors, int)
        or isinstance(fail_on_errors, bool)
        or fail_on_errors < 1
    ):
        raise ScimError(400, "failOnErrors must be a positive integer", "invalidValue")
    results = run_bulk(operations, fail_on_errors)
    return scim_response({"schemas": [BULK_RESPONSE_URN], "Operations": results})


def run_bulk(operations: list, fail_on_errors: int | None) -> list[dict]:
    """Run operations in order; one that refers to a bulkId whose POST comes later waits for it.

    Each pass runs every operation whose references are resolved or can no longer be; what is
    left after a pass without progress refers in a cycle (409). bulkIds must be unique.
    """
    bulk_ids = [bulk_id_of(operation) for operation in operations]
    named = [bulk_id for bulk_id in bulk_ids if bulk_id is not None]
    if len(named) != len(set(named)):
        duplicate = next(b for b in named if named.count(b) > 1)
        raise ScimError(
            400, f"bulkId {duplicate} is used by more than one operation", "invalidValue"
        )
    references = [
        set(BULK_ID.findall(json.dumps(op))) if isinstance(op, dict) else set() for op in operations
    ]
    created: dict[str, str] = {}  # bulkId -> id of the resource its POST created
    not_run = set(named)
    results: dict[int, dict] = {}
    pending = list(range(len(operations)))
    errors = 0
    while pending:
        waiting = []
        for index in pending:
            if references[index] & (not_run - {bulk_ids[index]}):
                waiting.append(index)
                continue
            not_run.discard(bulk_ids[index])
            results[index] = run_bulk_operation(operations[index], created)
            if int(results[index]["status"]) >= 400:
                errors += 1
                if fail_on_errors is not None and errors >= fail_on_errors:
                    return [results[i] for i in sorted(results)]
        if len(waiting) == len(pending):
            for index in waiting:
                results[index] = bulk_error(
                    operations[index], ScimError(409, "a bulkId it refers to cannot be resolved")
                )
            break
        pending = waiting
    return [results[i] for i in sorted(results)]


def bulk_id_of(operation: Any) -> str | None:
    """An operation's bulkId, the key matched in any case like every SCIM name."""
    if not isinstance(operation, dict):
        return None
    value = next((v for k, v in operation.items() if k.casefold() == "bulkid"), None)
    return value if isinstance(value, str) and value else None


def with_bulk_ids_resolved(value: Any, created: dict[str, str]) -> Any:
    """Replace "bulkId:x" references (a whole string value) with the id the POST created."""
    if isinstance(value, dict):
        return {k: with_bulk_ids_resolved(v, created) for k, v in value.items()}
    if isinstance(value, list):
        return [with_bulk_ids_resolved(v, created) for v in value]
    if isinstance(value, str) and value.startswith("bulkId:"):
        bulk_id = value[len("bulkId:") :]
        if bulk_id not in created:
            raise ScimError(409, f"bulkId {bulk_id} names no resource created in this request")
        return created[bulk_id]
    return value


def run_bulk_operation(operation: Any, created: dict[str, str]) -> dict:
    """One operation through the same functions the plain endpoints use."""
    try:
        if not isinstance(operation, dict):
            raise ScimError(400, "each operation must be a JSON object", "invalidSyntax")
        fields = {key.casefold(): value for key, value in operation.items()}
        method = str(fields.get("method", "")).upper()
        path = fields.get("path")
        if not isinstance(path, str):
            raise ScimError(400, "path is required", "invalidSyntax")
        path = "/".join(with_bulk_ids_resolved(part, created) for part in path.split("/"))
        data = with_bulk_ids_resolved(fields.get("data"), created)
        version = fields.get("version")
        if version is not None and not isinstance(version, str):
            raise ScimError(400, "version must be an ETag string", "invalidValue")
        expected = entity_tags(version) if version else None
        outcome = dispatch_bulk(method, path, data, expected, bulk_id_of(operation))
    except ScimError as error:
        return bulk_error(operation, error)
    status, resource = outcome
    result = {"method": method, "status": str(status)}
    bulk_id = bulk_id_of(operation)
    if bulk_id is not None:
        result["bulkId"] = bulk_id
        if resource is not None and method == "POST":
            created[bulk_id] = resource["id"]
    if resource is not None:
        result["location"] = resource_location(resource)
        result["version"] = shown_version(resource)
    return result


def dispatch_bulk(
    method: str, path: str, data: Any, expected: tuple[str, ...] | None, bulk_id: Any
) -> tuple[int, dict | None]:
    parts = path.strip("/").split("/")
    kind = {"users": "Users", "groups": "Groups"}.get(parts[0].casefold()) if parts else None
    if kind is None or len(parts) > 2:
        raise ScimError(400, f"path {path} names no Users or Groups resource", "invalidPath")
    resource_id = parts[1] if len(parts) == 2 else None
    if method == "POST" and resource_id is None:
        if not isinstance(bulk_id, str) or not bulk_id:
            raise ScimError(400, "a POST operation needs a bulkId (RFC 7644 §3.7)", "invalidValue")
        create = create_user_from if kind == "Users" else create_group_from
        return 201, create(object_or_error(data))
    if resource_id is None or method not in ("PUT", "PATCH", "DELETE"):
        raise ScimError(
            400, f"{method} {path} is not a bulk operation Roster runs", "invalidSyntax"
        )
    if method == "DELETE":
        (delete_user_by_id if kind == "Users" else delete_group_by_id)(resource_id, expected)
        return 204, None
    run = {
        ("PUT", "Users"): replace_user_from,
        ("PUT", "Groups"): replace_group_from,
        ("PATCH", "Users"): patch_user_from,
        ("PATCH", "Groups"): patch_group_from,
    }[(method, kind)]
    return 200, run(resource_id, object_or_error(data), expected)


def object_or_error(data: Any) -> dict:
    if not isinstance(data, dict):
        raise ScimError(400, "data must be a JSON object", "invalidSyntax")
    return data


def bulk_error(operation: Any, error: ScimError) -> dict:
    body: dict[str, Any] = {
        "schemas": [ERROR_URN],
        "status": str(error.status),
        "detail": error.detail,
    }
    if error.scim_type:
        body["scimType"] = error.scim_type
    result = {"status": str(error.status), "response": body}
    if isinstance(operation, dict):
        method = next((v for k, v in operation.items() if k.casefold() == "method"), "")
        result["method"] = str(method).upper()
        if bulk_id_of(operation) is not None:
            result["bulkId"] = bulk_id_of(operation)
    return result
