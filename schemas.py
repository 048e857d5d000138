"""SCIM resource rules: the published schema definitions, marshmallow schemas, the mapping table.

One place for each rule: what a User may hold (RFC 7643 §4.1 and §4.3, narrowed by the hosted
product's field limits in ``hosted-product-api.swagger.json``), which of its attributes the
Microsoft Entra ID mapping table fills, and how loosely-typed input (Entra's ``"True"`` strings,
attribute names in any case, ``null`` for absent) becomes one canonical form. POST, PUT and the
result of a PATCH all pass through :func:`load_user` before they are stored. The marshmallow
schemas below are the rules; :mod:`fastload` runs them quicker for the bodies they accept.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from fastload import Unsure, compile_loader
from scimlang import ResourceSchema, ScimError

CORE_USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

with open(os.path.join(os.path.dirname(__file__), "scim_schemas.json"), encoding="utf-8") as _f:
    SCHEMA_DEFINITIONS: dict[str, dict] = {s["id"]: s for s in json.load(_f)}

# The attributes Roster serves for users: RFC 7643 §4.1 core plus the §4.3 enterprise extension.
USER_RESOURCE = ResourceSchema(
    SCHEMA_DEFINITIONS[CORE_USER_URN], [SCHEMA_DEFINITIONS[ENTERPRISE_USER_URN]]
)

# Groups: RFC 7643 §4.2. Entra also lists Microsoft's own group schema URN in a POST.
MICROSOFT_GROUP_URN = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
GROUP_RESOURCE = ResourceSchema(SCHEMA_DEFINITIONS[CORE_GROUP_URN])

# The Microsoft Entra ID attribute mapping table from the hosted product's "Integrate with
# Microsoft" page: Entra source attribute -> the SCIM path Roster stores it under. Every row is
# stored, returned and searchable; the first two are mandatory.
MAPPING_TABLE: list[tuple[str, str, str, bool]] = [
    ("User Name", "userPrincipalName", "userName", True),
    ("Display name", "displayName", "displayName", True),
    ("Given name", "givenName", "name.givenName", False),
    ("Last name", "surname", "name.familyName", False),
    ("Mail", "mail", 'emails[type eq "work"].value', False),
    ("Office phone", "telephoneNumber", 'phoneNumbers[type eq "work"].value', False),
    ("Mobile Phone", "mobile", 'phoneNumbers[type eq "mobile"].value', False),
    ("Street address", "streetAddress", 'addresses[type eq "work"].streetAddress', False),
    ("City", "city", 'addresses[type eq "work"].locality', False),
    ("State or province", "state", 'addresses[type eq "work"].region', False),
    ("ZIP or postal Code", "postalCode", 'addresses[type eq "work"].postalCode', False),
    ("Country or region", "country", 'addresses[type eq "work"].country', False),
    ("Preferred language", "preferredLanguage", "preferredLanguage", False),
    ("Employee number", "employeeNumber", f"{ENTERPRISE_USER_URN}:employeeNumber", False),
    ("Cost center", "costCenter", f"{ENTERPRISE_USER_URN}:costCenter", False),
    ("Job title", "jobTitle", "title", False),
    ("Department", "department", f"{ENTERPRISE_USER_URN}:department", False),
    ("Manager", "manager", f"{ENTERPRISE_USER_URN}:manager", False),
    ("Object ID", "objectId", "externalId", False),
]

_MAPPED_PATH = re.compile(r'(\w+)(?:\[type eq "(\w+)"\])?(?:\.(\w+))?')


def mapped_value(resource: dict, path: str) -> Any:
    """The value a mapping-table path (``title``, ``name.givenName``,
    ``emails[type eq "work"].value``, ``<extension URN>:department``) holds in a stored user,
    or None. Types compare ignoring case, as RFC 7643 §2.4 canonical values do."""
    container: Any = resource
    if path.startswith("urn:"):
        urn, _, path = path.rpartition(":")
        container = resource.get(urn, {})
    attribute, kind, sub_attribute = _MAPPED_PATH.fullmatch(path).groups()
    value = container.get(attribute)
    if kind is not None:
        entries = value if isinstance(value, list) else []
        value = next(
            (
                e
                for e in entries
                if isinstance(e, dict) and (e.get("type") or "").casefold() == kind
            ),
            None,
        )
    if sub_attribute is not None:
        value = value.get(sub_attribute) if isinstance(value, dict) else None
    return value


def mapped_attributes(resource: dict) -> list[tuple[str, str, Any]]:
    """(label, Entra attribute, value) of each mapping-table row that has a value, in the
    table's order: what a contact page shows."""
    rows = []
    for label, entra_name, path, _mandatory in MAPPING_TABLE:
        value = mapped_value(resource, path)
        if value not in (None, "", [], {}):
            rows.append((label, entra_name, value))
    return rows


EMAIL_PATTERN = r"^.+@.+\..+$"
PHONE_PATTERN = r"^[ 0-9_./()*#+-]*$"
# A userName is printed, typed and matched: no control characters, not blank.
USER_NAME_PATTERN = r"^(?!\s*$)[^\x00-\x1f\x7f]+$"
NOT_BLANK_PATTERN = r"^(?!\s*$)"  # displayName: mandatory, and spaces alone are no name


def _text(maximum: int, *rules: validate.Validator) -> fields.String:
    return fields.String(validate=[validate.Length(max=maximum), *rules])


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE


class NameSchema(_Strict):
    formatted = _text(300)
    familyName = _text(200)
    givenName = _text(200)
    middleName = _text(200)
    honorificPrefix = _text(50)
    honorificSuffix = _text(50)


class _MultiValue(_Strict):
    """Common sub-attributes of RFC 7643 §2.4 multi-valued attributes."""

    type = _text(50)
    primary = fields.Boolean()
    display = _text(200)


class EmailSchema(_MultiValue):
    value = _text(200, validate.Regexp(EMAIL_PATTERN, error="not an email address"))


class PhoneNumberSchema(_MultiValue):
    value = _text(45, validate.Regexp(PHONE_PATTERN, error="only digits, spaces and ./()*#+-_"))


class AddressSchema(_MultiValue):
    formatted = _text(300)
    streetAddress = _text(200)
    locality = _text(200)
    region = _text(200)
    postalCode = _text(45)
    country = _text(150)


class ValueSchema(_MultiValue):
    value = _text(1024)


class ManagerSchema(_Strict):
    value = fields.String()
    ref = fields.String(data_key="$ref")
    displayName = fields.String()

    @post_load
    def scim_names(self, data: dict, **kwargs: Any) -> dict:
        """Loaded data keeps SCIM's names, so it is stored as it is, without a dump pass."""
        if "ref" in data:
            data["$ref"] = data.pop("ref")
        return data


class EnterpriseUserSchema(_Strict):
    employeeNumber = _text(200)
    costCenter = _text(200)
    organization = _text(100)
    division = _text(200)
    department = _text(200)
    manager = fields.Nested(ManagerSchema)


def _many(schema: type[Schema]) -> fields.List:
    return fields.List(fields.Nested(schema))


class UserSchema(_Strict):
    """RFC 7643 §4.1 User with the §4.3 enterprise extension, as Roster stores it."""

    schemas = fields.List(fields.String(), required=True)
    externalId = _text(200)
    userName = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=150),
            validate.Regexp(
                USER_NAME_PATTERN, error="must not be blank or hold control characters"
            ),
        ],
    )
    name = fields.Nested(NameSchema)
    displayName = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=200),
            validate.Regexp(NOT_BLANK_PATTERN, error="must not be blank"),
        ],
    )
    nickName = _text(200)
    profileUrl = _text(200)
    title = _text(200)
    userType = _text(150)
    preferredLanguage = _text(45)
    locale = _text(45)
    timezone = _text(45)
    active = fields.Boolean()
    emails = _many(EmailSchema)
    phoneNumbers = _many(PhoneNumberSchema)
    ims = _many(ValueSchema)
    photos = _many(ValueSchema)
    addresses = _many(AddressSchema)
    entitlements = _many(ValueSchema)
    roles = _many(ValueSchema)
    x509Certificates = _many(ValueSchema)
    enterprise = fields.Nested(EnterpriseUserSchema, data_key=ENTERPRISE_USER_URN)

    @pre_load
    def canonicalise(self, data: Any, **kwargs: Any) -> Any:
        """Entra's input, made canonical before validation.

        Attribute names and schema URNs are case-insensitive (RFC 7643 §2.1), JSON null means
        absent, ``""`` means "clear this attribute", and read-only attributes a client sends back
        (id, meta, groups) are ignored rather than refused (RFC 7644 §3.5.1).
        """
        if not isinstance(data, dict):
            raise ValidationError("a User must be a JSON object", "_schema")
        canonical = canonical_attributes(data)
        return prune_empty(canonical)

    @validates_schema
    def one_entry_per_type(self, data: dict, **kwargs: Any) -> None:
        """The hosted product keeps one entry per ``type`` in each multi-valued attribute."""
        for attribute in ("emails", "phoneNumbers", "addresses", "ims", "photos"):
            seen: set[str] = set()
            entries = data.get(attribute, [])
            for entry in entries:
                kind = (entry.get("type") or "").casefold()
                if not kind:
                    continue
                if kind in seen:
                    raise ValidationError(f'more than one entry of type "{kind}"', attribute)
                seen.add(kind)
            if sum(1 for entry in entries if entry.get("primary")) > 1:
                raise ValidationError("at most one entry may be primary", attribute)

    @post_load
    def scim_names(self, data: dict, **kwargs: Any) -> dict:
        if "enterprise" in data:
            data[ENTERPRISE_USER_URN] = data.pop("enterprise")
        return data

    @validates_schema
    def lists_core_schema(self, data: dict, **kwargs: Any) -> None:
        if CORE_USER_URN not in data.get("schemas", []):
            raise ValidationError(f"must list {CORE_USER_URN}", "schemas")


_USER_SCHEMA = UserSchema()
_QUICK_USER_LOAD = compile_loader(_USER_SCHEMA)
_READ_ONLY = {"id", "meta", "groups"}


class MemberSchema(_Strict):
    value = fields.String(required=True, validate=validate.Length(min=1))


class GroupSchema(_Strict):
    """RFC 7643 §4.2 Group as Roster stores it; members are kept apart (see store.py)."""

    schemas = fields.List(fields.String(), required=True)
    externalId = _text(70)
    displayName = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=200),
            validate.Regexp(USER_NAME_PATTERN, error="must not be blank or hold control chars"),
        ],
    )
    members = _many(MemberSchema)

    @pre_load
    def canonicalise(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            raise ValidationError("a Group must be a JSON object", "_schema")
        canonical = _canonical_group(data)
        members = canonical.get("members")
        if members is not None and (
            not isinstance(members, list)
            or not all(isinstance(m, dict) and m.get("value") for m in members)
        ):
            # Checked before pruning, which would turn a member without a value into nothing.
            raise ValidationError("each member needs a user id as its value", "members")
        return prune_empty(canonical)

    @validates_schema
    def lists_core_schema(self, data: dict, **kwargs: Any) -> None:
        if CORE_GROUP_URN not in data.get("schemas", []):
            raise ValidationError(f"must list {CORE_GROUP_URN}", "schemas")


_GROUP_SCHEMA = GroupSchema()


class _Attribute(NamedTuple):
    """An attribute definition prepared once, so canonicalising a body does no set-up per value:
    the schema's spelling of the name and, for a complex attribute, its sub-attributes by
    case-folded name."""

    name: str
    sub_attributes: dict[str, _Attribute] | None
    multi_valued: bool


def _attributes_by_name(attributes: list[dict]) -> dict[str, _Attribute]:
    return {a["name"].casefold(): _prepared(a) for a in attributes}


def _prepared(definition: dict) -> _Attribute:
    sub_attributes = definition.get("subAttributes")
    return _Attribute(
        definition["name"],
        _attributes_by_name(sub_attributes) if sub_attributes else None,
        bool(definition.get("multiValued")),
    )


_GROUP_CORE = _attributes_by_name(
    [
        {"name": "schemas"},
        {"name": "externalId"},
        {"name": "displayName"},
        {"name": "members", "multiValued": True, "subAttributes": [{"name": "value"}]},
    ]
)
_GROUP_URNS = {u.casefold(): u for u in (CORE_GROUP_URN, MICROSOFT_GROUP_URN)}


def _canonical_group(data: dict) -> dict:
    """Group keys in the schema's spelling; URNs canonical; unknown and read-only keys go."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        attribute = _GROUP_CORE.get(key.casefold())
        if attribute is None:
            continue
        if attribute.name == "schemas" and isinstance(value, list):
            value = [_GROUP_URNS.get(u.casefold(), u) if isinstance(u, str) else u for u in value]
        result[attribute.name] = _canonical_value(value, attribute)
    return result


def load_group(data: Any) -> tuple[dict, list[str]]:
    """Validate a Group body: its stored form (no members) and its member ids, in order.

    Microsoft's extra schema URN is accepted but not kept: it defines nothing Roster stores.
    """
    try:
        loaded = _GROUP_SCHEMA.load(data)
    except ValidationError as error:
        raise ScimError(400, describe_validation_error(error.messages), "invalidValue") from None
    group = prune_empty(loaded)
    member_ids = list(dict.fromkeys(m["value"] for m in group.pop("members", [])))
    group["schemas"] = [CORE_GROUP_URN]
    return group, member_ids


# externalId is common to all resources (RFC 7643 §3.1) and so not in the User schema itself.
_EXTERNAL_ID = {"name": "externalId", "type": "string", "multiValued": False}
# The core attributes a client may write; read-only ones it sends back are dropped.
_USER_CORE = {
    key: attribute
    for key, attribute in _attributes_by_name(
        [*SCHEMA_DEFINITIONS[CORE_USER_URN]["attributes"], _EXTERNAL_ID]
    ).items()
    if attribute.name not in _READ_ONLY
}
_USER_EXTENSIONS = {
    ENTERPRISE_USER_URN.casefold(): (
        ENTERPRISE_USER_URN,
        _attributes_by_name(SCHEMA_DEFINITIONS[ENTERPRISE_USER_URN]["attributes"]),
    )
}
_USER_URNS = {
    CORE_USER_URN.casefold(): CORE_USER_URN,
    **{key: urn for key, (urn, _attributes) in _USER_EXTENSIONS.items()},
}


def canonical_attributes(data: dict) -> dict:
    """Rename a User's keys to the schema's spelling; drop keys the schema does not know.

    Unknown attributes are ignored, never stored (RFC 7644 §3.3 lets a service provider ignore
    what it does not support). Schema URNs are matched case-insensitively too.
    """
    result: dict[str, Any] = {}
    for key, value in data.items():
        lowered = key.casefold()
        attribute = _USER_CORE.get(lowered)
        if attribute is not None:
            result[attribute.name] = _canonical_value(value, attribute)
        elif lowered == "schemas":
            result["schemas"] = _canonical_urns(value)
        elif lowered in _USER_EXTENSIONS:
            urn, attributes = _USER_EXTENSIONS[lowered]
            if isinstance(value, dict):
                result[urn] = _canonical_complex(value, attributes)
    return result


def _canonical_urns(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [_USER_URNS.get(u.casefold(), u) if isinstance(u, str) else u for u in value]


def _canonical_value(value: Any, attribute: _Attribute) -> Any:
    sub_attributes = attribute.sub_attributes
    if sub_attributes is None:
        return value
    if attribute.multi_valued and isinstance(value, list):
        return [_canonical_complex(v, sub_attributes) if isinstance(v, dict) else v for v in value]
    if isinstance(value, dict):
        return _canonical_complex(value, sub_attributes)
    return value


def _canonical_complex(value: dict, attributes: dict[str, _Attribute]) -> dict:
    result = {}
    for key, item in value.items():
        attribute = attributes.get(key.casefold())
        if attribute is not None:
            result[attribute.name] = _canonical_value(item, attribute)
    return result


def prune_empty(value: Any) -> Any:
    """Drop null, ``""``, ``[]`` and ``{}`` at every depth: absent and cleared look the same.

    Always returns new dicts and lists, never the ones passed in.
    """
    kind = type(value)
    if kind is dict:
        return _pruned_dict(value)
    if kind is list:
        return _pruned_list(value)
    if isinstance(value, dict):
        return _pruned_dict(value)
    if isinstance(value, list):
        return _pruned_list(value)
    return value


def _pruned_dict(value: dict) -> dict:
    result = {}
    for key, item in value.items():
        item = _pruned_item(item)
        if item is not _EMPTY:
            result[key] = item
    return result


def _pruned_list(value: list) -> list:
    result = []
    for item in value:
        item = _pruned_item(item)
        if item is not _EMPTY:
            result.append(item)
    return result


_EMPTY = object()


def _pruned_item(item: Any) -> Any:
    """The pruned item, or ``_EMPTY`` when pruning leaves nothing to keep.

    The plain JSON types are told apart by their exact type first: a body holds little else,
    and one ``type()`` is cheaper than four equality tests against each value.
    """
    kind = type(item)
    if kind is str:
        return item if item else _EMPTY
    if kind is dict:
        item = _pruned_dict(item)
        return item if item else _EMPTY
    if kind is list:
        item = _pruned_list(item)
        return item if item else _EMPTY
    if kind is bool or kind is int or kind is float:
        return item
    item = prune_empty(item)
    return _EMPTY if _is_empty(item) else item


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def load_user(data: Any) -> dict:
    """Validate a User body into its canonical stored form, or raise a SCIM 400 invalidValue.

    The ``schemas`` list is rebuilt to name exactly the schemas the resource uses (RFC 7643 §3).
    """
    return _with_schemas(_validated_user(data))


def load_patched_user(before: dict, after: dict) -> dict:
    """Validate a PATCH result by checking only the attributes the PATCH changed.

    ``before`` is the stored user, already valid and canonical; every rule here is about one
    top-level attribute at a time, except the mandatory userName and displayName, which are
    always checked. Entra's commonest PATCH flips ``active`` alone, and validating the whole
    user for it cost more than the rest of the request.
    """
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    checked = changed | _ALWAYS_CHECKED
    validated = _validated_user({key: after[key] for key in checked if key in after})
    unchanged = {key: value for key, value in before.items() if key not in checked}
    return _with_schemas({**unchanged, **validated})


_ALWAYS_CHECKED = {"schemas", "userName", "displayName"}


def _validated_user(data: Any) -> dict:
    """What marshmallow's UserSchema makes of ``data``, pruned; usually by the quick loader.

    The quick loader applies the same schema's rules, and whatever it is unsure of (every body
    with an error among them) goes to marshmallow itself, so results and messages are the same.
    """
    try:
        loaded = _QUICK_USER_LOAD(data)
    except Unsure:
        return _marshmallow_validated_user(data)
    return prune_empty(loaded)


def _marshmallow_validated_user(data: Any) -> dict:
    """The reference path: marshmallow's own load, kept for errors and for the tests."""
    try:
        loaded = _USER_SCHEMA.load(data)
    except ValidationError as error:
        raise ScimError(400, describe_validation_error(error.messages), "invalidValue") from None
    return prune_empty(loaded)


def _with_schemas(user: dict) -> dict:
    user["schemas"] = [CORE_USER_URN] + (
        [ENTERPRISE_USER_URN] if ENTERPRISE_USER_URN in user else []
    )
    return user


def describe_validation_error(messages: Any, prefix: str = "") -> str:
    """Flatten marshmallow's nested messages into one line that names each field and rule."""
    if isinstance(messages, dict):
        parts = []
        for key, inner in messages.items():
            name = prefix if key == "_schema" else _join_path(prefix, key)
            parts.append(describe_validation_error(inner, name))
        return "; ".join(parts)
    if isinstance(messages, list):
        texts = [
            m if isinstance(m, str) else describe_validation_error(m, prefix) for m in messages
        ]
        return f"{prefix}: {' '.join(texts)}" if prefix else " ".join(texts)
    return f"{prefix}: {messages}" if prefix else str(messages)


def _join_path(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)
