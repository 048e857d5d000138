"""The SCIM filter and PATCH language (RFC 7644 §3.4.2, §3.5.2), apart from Flask and storage.

Resources are plain dicts in canonical SCIM JSON form; what an attribute path means (its type,
caseExact, mutability, returned) comes from RFC 7643 schema representations wrapped in a
``ResourceSchema``. Microsoft Entra ID's habits (docs: shared/reference/entra-scim.md §3) are
handled here, in one place, so that the views only move JSON in and out.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple


class ScimError(Exception):
    """One SCIM error (RFC 7644 §3.12): status int, scim_type str|None, detail str."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type


def _bad_request(scim_type: str, detail: str) -> ScimError:
    return ScimError(400, detail, scim_type)


# ---------------------------------------------------------------------------------------------
# Attribute metadata


@dataclass(frozen=True)
class _Attr:
    """One attribute definition of an RFC 7643 §7 schema representation."""

    name: str
    type: str
    multi_valued: bool
    case_exact: bool
    mutability: str
    returned: str
    sub_attributes: dict[str, _Attr]  # keyed by lower-case name: names are case-insensitive

    @classmethod
    def from_definition(cls, definition: dict) -> _Attr:
        """Read the RFC 7643 §7 keys, with the defaults §2.2 gives for omitted characteristics."""
        subs = (cls.from_definition(sub) for sub in definition.get("subAttributes") or ())
        return cls(
            name=definition["name"],
            type=definition.get("type", "string"),
            multi_valued=bool(definition.get("multiValued", False)),
            case_exact=bool(definition.get("caseExact", False)),
            mutability=definition.get("mutability", "readWrite"),
            returned=definition.get("returned", "default"),
            sub_attributes={sub.name.lower(): sub for sub in subs},
        )


def _string(name: str, **characteristics: Any) -> dict:
    return {"name": name, "type": "string", "caseExact": True, **characteristics}


# RFC 7643 §3 and §3.1: every resource carries these, yet no schema representation lists them.
# "schemas" is kept by this module (see _sync_schemas), so PATCH may not target it.
_COMMON_ATTRIBUTES = [
    _string(
        "schemas", type="reference", multiValued=True, mutability="readOnly", returned="always"
    ),
    _string("id", mutability="readOnly", returned="always"),
    _string("externalId"),
    {
        "name": "meta",
        "type": "complex",
        "mutability": "readOnly",
        "subAttributes": [
            _string("resourceType", mutability="readOnly"),
            {"name": "created", "type": "dateTime", "mutability": "readOnly"},
            {"name": "lastModified", "type": "dateTime", "mutability": "readOnly"},
            _string("location", type="reference", mutability="readOnly"),
            _string("version", mutability="readOnly"),
        ],
    },
]


@dataclass(frozen=True)
class _AttrRef:
    """A resolved attribute path: the attribute, maybe one sub-attribute, and where it lives."""

    urn: str | None  # the extension URN whose object holds the attribute; None for core
    attr: _Attr
    sub: _Attr | None = None

    @property
    def key(self) -> str:
        """The canonical lower-case path, e.g. "name.givenname" or "urn:...:user:department"."""
        path = self.attr.name if self.sub is None else f"{self.attr.name}.{self.sub.name}"
        return (f"{self.urn}:{path}" if self.urn else path).lower()

    @property
    def target(self) -> _Attr:
        return self.sub or self.attr


class ResourceSchema:
    """The attribute definitions of one resource type: core schema + extension schemas."""

    def __init__(self, core: dict, extensions: Iterable[dict] = ()):
        self.core_urn: str = core["id"]
        definitions = [*_COMMON_ATTRIBUTES, *core.get("attributes", ())]  # the schema's own win
        self._core = {a.name.lower(): a for a in map(_Attr.from_definition, definitions)}
        self._extensions: dict[str, tuple[str, dict[str, _Attr]]] = {
            ext["id"].lower(): (
                ext["id"],
                {a.name.lower(): a for a in map(_Attr.from_definition, ext.get("attributes", ()))},
            )
            for ext in extensions
        }
        self.hidden_by_default = self._hidden_by_default()
        self.patch_targets: dict[str, _PatchTarget] = {}  # see _parse_patch_path

    def _hidden_by_default(self) -> frozenset[str] | None:
        """Top-level names a default response leaves out ("returned": never/request), or None
        when some sub-attribute is hidden too, so that the default needs the full projection."""
        hidden = set()
        attributes = list(self._core.values())
        for _urn, extension in self._extensions.values():
            attributes.extend(extension.values())
        for attr in attributes:
            if attr.returned in ("never", "request"):
                hidden.add(attr.name)
            elif any(s.returned in ("never", "request") for s in attr.sub_attributes.values()):
                return None
        return frozenset(hidden)

    @property
    def extension_urns(self) -> list[str]:
        return [urn for urn, _ in self._extensions.values()]

    def extension_urn(self, text: str) -> str | None:
        """The canonical spelling of the extension schema URN ``text`` names, if it names one."""
        found = self._extensions.get(text.lower())
        return found[0] if found else None

    def resolve(self, path: str, scim_type: str = "invalidPath") -> _AttrRef:
        """Resolve an RFC 7644 §3.10 attribute path, case-insensitively.

        ``scim_type`` is the error raised for an unknown path: "invalidPath" for PATCH paths,
        "invalidFilter" for filters (RFC 7644 §3.12, Table 9). Unqualified names missing from
        the core schema resolve to the one extension that defines them (Entra's legacy
        ``"path": "manager"``).
        """
        urn, attrs, rest = self._schema_of(path, scim_type)
        name, _, sub_name = rest.partition(".")
        attr = attrs.get(name.lower())
        if attr is None and urn is None and not path.lower().startswith("urn:"):
            urn, attr = self._extension_attribute(name)
        if attr is None:
            raise _bad_request(scim_type, f"unknown attribute {path!r}")
        if not sub_name:
            return _AttrRef(urn, attr)
        sub = attr.sub_attributes.get(sub_name.lower())
        if sub is None:
            raise _bad_request(scim_type, f"{attr.name!r} has no sub-attribute {sub_name!r}")
        return _AttrRef(urn, attr, sub)

    def _schema_of(self, path: str, scim_type: str) -> tuple[str | None, dict[str, _Attr], str]:
        """Split a URN prefix off ``path`` (RFC 7644 §3.10: the URN is the attribute's schema)."""
        lowered = path.lower()
        if not lowered.startswith("urn:"):
            return None, self._core, path
        schemas = [(self.core_urn, None, self._core)]
        schemas += [(urn, urn, attrs) for urn, attrs in self._extensions.values()]
        for prefix, urn, attrs in sorted(schemas, key=lambda s: -len(s[0])):
            if lowered.startswith(prefix.lower() + ":"):
                return urn, attrs, path[len(prefix) + 1 :]
        raise _bad_request(scim_type, f"unknown schema in attribute path {path!r}")

    def _extension_attribute(self, name: str) -> tuple[str | None, _Attr | None]:
        found = [
            (urn, attrs[name.lower()])
            for urn, attrs in self._extensions.values()
            if name.lower() in attrs
        ]
        return found[0] if len(found) == 1 else (None, None)

    def core_attribute(self, name: str) -> _Attr | None:
        return self._core.get(name.lower())

    def extension_attribute(self, urn: str, name: str) -> _Attr | None:
        return self._extensions[urn.lower()][1].get(name.lower())


# ---------------------------------------------------------------------------------------------
# Values


def _as_boolean(value: object) -> bool | None:
    """Entra's default job sends "True"/"False" strings for booleans (entra-scim.md §3.2)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _parse_datetime(text: str) -> datetime | None:
    """RFC 7643 §2.3.5 dateTime (xsd:dateTime); a missing offset is read as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _comparable(value: object, attr: _Attr) -> Any:
    """The form RFC 7644 §3.4.2.2 compares values in for ``attr``; None when it does not fit.

    Strings of caseExact-false attributes compare case-insensitively (RFC 7643 §2.2), dateTimes
    chronologically, everything else as JSON values.
    """
    if attr.type == "boolean":
        return _as_boolean(value)
    if attr.type in ("integer", "decimal"):
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if not isinstance(value, str):
        return None
    if attr.type == "dateTime":
        return _parse_datetime(value)
    return value if attr.case_exact else value.casefold()


def _is_present(value: object) -> bool:
    """RFC 7644 §3.4.2.2 "pr": has a non-empty value."""
    return value not in (None, "", [], {})


def _values_at(ref: _AttrRef, resource: dict) -> list:
    """Every value at ``ref`` in ``resource``, multi-valued attributes flattened."""
    container = resource if ref.urn is None else resource.get(ref.urn)
    if not isinstance(container, dict):
        return []
    value = container.get(ref.attr.name)
    items = value if isinstance(value, list) else [value]
    if ref.sub is None:
        return items
    return [item.get(ref.sub.name) for item in items if isinstance(item, dict)]


def _scalar_ref(ref: _AttrRef, path: str, scim_type: str) -> _AttrRef:
    """Point a complex multi-valued attribute at its "value" (RFC 7644 §3.4.2.2, `emails co`)."""
    if ref.target.type != "complex":
        return ref
    value_attr = ref.attr.sub_attributes.get("value")
    if ref.sub is None and ref.attr.multi_valued and value_attr is not None:
        return replace(ref, sub=value_attr)
    raise _bad_request(scim_type, f"{path!r} is complex: name one of its sub-attributes")


# ---------------------------------------------------------------------------------------------
# Filter syntax (RFC 7644 §3.4.2.2, Figure 1)


class Filter:
    """A parsed filter expression; evaluate it with ``compile_filter``."""

    __slots__ = ()


@dataclass(frozen=True)
class _Comparison(Filter):
    path: str
    op: str
    value: Any


@dataclass(frozen=True)
class _Present(Filter):
    path: str


@dataclass(frozen=True)
class _ValuePath(Filter):
    path: str
    entry_filter: Filter


@dataclass(frozen=True)
class _And(Filter):
    left: Filter
    right: Filter


@dataclass(frozen=True)
class _Or(Filter):
    left: Filter
    right: Filter


@dataclass(frozen=True)
class _Not(Filter):
    operand: Filter


_COMPARISON_OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z$_][\w$:.\-]*|[()\[\]]'
    r"|\.[A-Za-z$][\w$\-]*"  # the ".value" of 'emails[type eq "work"].value'
)
# attrPath = [URI ":"] ATTRNAME *1subAttr, with ATTRNAME = ALPHA *(nameChar) and "$ref".
_ATTR_PATH = re.compile(r"(?:urn:[\w.:\-]+:)?[A-Za-z$][\w$\-]*(?:\.[A-Za-z$][\w$\-]*)?", re.I)


def _invalid_filter(detail: str) -> ScimError:
    return _bad_request("invalidFilter", detail)


class _Token(NamedTuple):
    text: str
    position: int

    @property
    def kind(self) -> str:
        first = self.text[:1]
        if not first:
            return "end"
        if first == '"':
            return "string"
        if first == "-" or first.isdigit():
            return "number"
        if first == ".":
            return "sub-attribute"
        return "word" if first not in "()[]" else "punctuation"

    @property
    def word(self) -> str:
        """Keywords and operators are case-insensitive (RFC 7644 §3.4.2.2)."""
        return self.text.lower() if self.kind == "word" else ""

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else f"{self.text!r}"


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return [*tokens, _Token("", position)]
        match = _TOKEN.match(text, position)
        if match is None:
            problem = (
                "unterminated string"
                if text[position] == '"'
                else f"unexpected character {text[position]!r}"
            )
            raise _invalid_filter(f"{problem} at position {position}")
        tokens.append(_Token(match.group(), position))
        position = match.end()


class _FilterParser:
    """Recursive descent over RFC 7644 Figure 1; "and" binds tighter than "or" (§3.4.2.2)."""

    def __init__(self, text: str):
        self._tokens = _tokenize(text)
        self._index = 0

    def parse(self, in_value_path: bool = False) -> Filter:
        node = self._or(in_value_path)
        end = self._next()
        if end.kind != "end":
            raise _invalid_filter(f"unexpected {end.describe()} at position {end.position}")
        return node

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _next(self) -> _Token:
        token = self._tokens[self._index]
        self._index += token.kind != "end"
        return token

    def _or(self, in_value_path: bool) -> Filter:
        node = self._and(in_value_path)
        while self._peek().word == "or":
            self._next()
            node = _Or(node, self._and(in_value_path))
        return node

    def _and(self, in_value_path: bool) -> Filter:
        node = self._unary(in_value_path)
        while self._peek().word == "and":
            self._next()
            node = _And(node, self._unary(in_value_path))
        return node

    def _unary(self, in_value_path: bool) -> Filter:
        token = self._next()
        if token.word == "not":
            opening = self._next()
            if opening.text != "(":
                raise _invalid_filter(f"expected '(' after 'not' at position {opening.position}")
            return _Not(self._group(opening, in_value_path))
        if token.text == "(":
            return self._group(token, in_value_path)
        if token.kind == "word" and token.word not in ("and", "or"):
            return self._attribute_expression(token, in_value_path)
        raise _invalid_filter(
            f"expected an attribute path, '(' or 'not' but found {token.describe()} "
            f"at position {token.position}"
        )

    def _group(self, opening: _Token, in_value_path: bool) -> Filter:
        node = self._or(in_value_path)
        closing = self._next()
        if closing.text != ")":
            raise _invalid_filter(
                f"missing ')' for the '(' at position {opening.position}; "
                f"found {closing.describe()} at position {closing.position}"
            )
        return node

    def _attribute_expression(self, path: _Token, in_value_path: bool) -> Filter:
        name = path.text.removeprefix(".")
        if not _ATTR_PATH.fullmatch(name):
            raise _invalid_filter(f"{name!r} at position {path.position} is not an attribute path")
        token = self._next()
        if token.text == "[" and not in_value_path:
            node = self._or(in_value_path=True)
            closing = self._next()
            if closing.text != "]":
                raise _invalid_filter(
                    f"missing ']' for the '[' at position {token.position}; "
                    f"found {closing.describe()} at position {closing.position}"
                )
            if self._peek().kind == "sub-attribute":
                node = _And(node, self._attribute_expression(self._next(), in_value_path=True))
            return _ValuePath(name, node)
        if token.word == "pr":
            return _Present(name)
        if token.word in _COMPARISON_OPERATORS:
            return _Comparison(name, token.word, self._literal(token))
        raise _invalid_filter(
            f"expected an operator after {name!r} but found {token.describe()} "
            f"at position {token.position}"
        )

    def _literal(self, operator_token: _Token) -> Any:
        """compValue = false / null / true / number / string (RFC 7644 Figure 1; JSON forms)."""
        token = self._next()
        if token.kind in ("string", "number"):
            try:
                return json.loads(token.text)
            except ValueError:
                raise _invalid_filter(f"malformed literal at position {token.position}") from None
        if token.word in ("true", "false", "null"):
            return json.loads(token.word)
        raise _invalid_filter(
            f"expected a value (a quoted string, number, true, false or null) after "
            f"{operator_token.text!r} but found {token.describe()} at position {token.position}"
        )


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data, about three times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def _too_deep_is(scim_type: str) -> Callable:
    """A filter or path nested past Python's recursion limit is bad input, never a 500."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except RecursionError:
                raise _bad_request(scim_type, "the expression nests too deeply") from None

        return guarded

    return decorate


@_too_deep_is("invalidFilter")
def parse_filter(text: str) -> Filter:
    """Parse a SCIM filter (RFC 7644 §3.4.2.2); syntax errors raise 400 invalidFilter.

    Beyond Figure 1, ``emails[type eq "work"].value eq "x"`` is accepted and read as "an entry
    of type work whose value equals x": Entra filters on its matching attribute, and the mail
    mapping is that very path (entra-scim.md §3.11).
    """
    if not isinstance(text, str):
        raise _invalid_filter("the filter must be a string")
    if not text.strip():
        raise _invalid_filter("the filter is empty")
    return _string_equality(text) or _FilterParser(text).parse()


# What Entra sends to match a user or group: one attribute, "eq", one quoted string.
_STRING_EQUALITY = re.compile(r'\s*([A-Za-z$_][\w$:.\-]*)\s+[eE][qQ]\s+("(?:[^"\\]|\\.)*")\s*')


def _string_equality(text: str) -> _Comparison | None:
    """``attr eq "value"``, the filter of every matching lookup, read without the tokenizer and
    the recursive descent, which cost a lookup about 25 µs. It returns what the parser would,
    or None for anything else, which the parser then reads (and refuses, if it must): a path
    the grammar rejects, a keyword as a path, a literal JSON cannot read."""
    match = _STRING_EQUALITY.fullmatch(text)
    if match is None:
        return None
    name, literal = match.groups()
    if name.lower() in ("and", "or", "not") or not _ATTR_PATH.fullmatch(name):
        return None
    try:
        return _Comparison(name, "eq", json.loads(literal))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Filter evaluation


_ORDERINGS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
_SUBSTRING_TESTS = {"co": operator.contains, "sw": str.startswith, "ew": str.endswith}


@_too_deep_is("invalidFilter")
def compile_filter(text_or_filter: str | Filter, schema: ResourceSchema) -> Callable[[dict], bool]:
    """Turn a filter into a predicate over resources, resolving every attribute up front.

    An unknown attribute, or an operator the attribute's type does not support, raises
    400 invalidFilter before any resource is looked at (RFC 7644 §3.4.2.2).
    """
    node = parse_filter(text_or_filter) if isinstance(text_or_filter, str) else text_or_filter
    return _compile(node, schema, None)


def _compile(node: Filter, schema: ResourceSchema, scope: _Attr | None) -> Callable[[dict], bool]:
    """``scope`` is the complex attribute whose entries a value filter ("emails[...]") tests."""
    match node:
        case _And(left, right):
            first, second = _compile(left, schema, scope), _compile(right, schema, scope)
            return lambda resource: first(resource) and second(resource)
        case _Or(left, right):
            first, second = _compile(left, schema, scope), _compile(right, schema, scope)
            return lambda resource: first(resource) or second(resource)
        case _Not(operand):
            negated = _compile(operand, schema, scope)
            return lambda resource: not negated(resource)
        case _Present(path):
            ref = _filter_ref(path, schema, scope)
            return lambda resource: any(_is_present(v) for v in _values_at(ref, resource))
        case _ValuePath(path, entry_filter):
            return _compile_value_path(path, entry_filter, schema)
        case _Comparison(path, op, literal):
            return _compile_comparison(_filter_ref(path, schema, scope), path, op, literal)
    raise TypeError(f"not a filter node: {node!r}")


def _filter_ref(path: str, schema: ResourceSchema, scope: _Attr | None) -> _AttrRef:
    if scope is None:
        return schema.resolve(path, "invalidFilter")
    sub = scope.sub_attributes.get(path.lower())
    if sub is None:
        raise _invalid_filter(f"{scope.name!r} has no sub-attribute {path!r}")
    return _AttrRef(None, sub)


def _compile_value_path(path: str, entry_filter: Filter, schema: ResourceSchema):
    ref = schema.resolve(path, "invalidFilter")
    if ref.sub is not None or ref.attr.type != "complex":
        raise _invalid_filter(f"{path!r} is not a complex attribute, so it takes no [filter]")
    entry_matches = _compile(entry_filter, schema, ref.attr)
    return lambda resource: any(
        isinstance(entry, dict) and entry_matches(entry) for entry in _values_at(ref, resource)
    )


def _compile_comparison(ref: _AttrRef, path: str, op: str, literal: Any):
    """Multi-valued attributes match when any value matches (RFC 7644 §3.4.2.2)."""
    ref = _scalar_ref(ref, path, "invalidFilter")
    if literal is None and op in ("eq", "ne"):
        # "eq null" asks for an unassigned attribute: RFC 7643 §2.5 treats null as unassigned.
        wanted = op == "ne"
        return lambda resource: any(_is_present(v) for v in _values_at(ref, resource)) == wanted
    fast = _top_level_string_test(ref, op, literal)
    if fast is not None:
        return fast
    test = _value_test(ref.target, path, "eq" if op == "ne" else op, literal)
    if op == "ne":
        # "ne" is read as "not eq": a user without the attribute does not equal the literal.
        return lambda resource: not any(test(v) for v in _values_at(ref, resource))
    return lambda resource: any(test(v) for v in _values_at(ref, resource))


def _top_level_string_test(ref: _AttrRef, op: str, literal: Any) -> Callable[[dict], bool] | None:
    """The commonest searches (``displayName co "..."``, ``userName eq "..."``) as one tight
    closure, with the same semantics as the general path: scanning 100,000 users must stay
    well under 150 ms, and the general path costs several times more per resource."""
    attr = ref.attr
    if (
        ref.urn is not None
        or ref.sub is not None
        or attr.multi_valued
        or attr.type not in ("string", "reference")
        or op not in ("eq", "co", "sw", "ew")
        or not isinstance(literal, str)
    ):
        return None
    name = attr.name
    if attr.case_exact:
        fold, needle = str, literal
    else:
        fold, needle = str.casefold, literal.casefold()
    if op == "eq":
        return lambda r: isinstance(v := r.get(name), str) and fold(v) == needle
    if op == "co":
        return lambda r: isinstance(v := r.get(name), str) and needle in fold(v)
    if op == "sw":
        return lambda r: isinstance(v := r.get(name), str) and fold(v).startswith(needle)
    return lambda r: isinstance(v := r.get(name), str) and fold(v).endswith(needle)


def _value_test(attr: _Attr, path: str, op: str, literal: Any) -> Callable[[object], bool]:
    expected = _comparable(literal, attr)
    if expected is None:
        raise _invalid_filter(f"{literal!r} is not a valid {attr.type} value for {path!r}")
    if op == "eq":
        return lambda value: _comparable(value, attr) == expected
    if op in _SUBSTRING_TESTS:
        if not isinstance(expected, str):
            raise _invalid_filter(f"{op!r} needs a string attribute; {path!r} is {attr.type}")
        substring_test = _SUBSTRING_TESTS[op]
        return lambda value: (
            isinstance(v := _comparable(value, attr), str) and substring_test(v, expected)
        )
    if attr.type in ("boolean", "binary"):
        # RFC 7644 §3.4.2.2: gt/ge/lt/le on boolean or binary attributes is a 400 invalidFilter.
        raise _invalid_filter(f"{op!r} cannot compare the {attr.type} attribute {path!r}")
    ordering = _ORDERINGS[op]
    return lambda value: (v := _comparable(value, attr)) is not None and ordering(v, expected)


def _conjuncts(node: Filter) -> Iterator[Filter]:
    if isinstance(node, _And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


@_too_deep_is("invalidFilter")
def equality_terms(text_or_filter: str | Filter, schema: ResourceSchema) -> dict[str, str]:
    """The top-level ``attr eq "literal"`` terms joined by ``and``, keyed by lower-case path.

    Every resource the filter matches satisfies each term, so a store may use an index on, say,
    "username" or "externalid" to find candidates, then run the compiled filter on them. Values
    are returned as written; compare them as the attribute's caseExact says (RFC 7643 §2.2).
    """
    node = parse_filter(text_or_filter) if isinstance(text_or_filter, str) else text_or_filter
    terms: dict[str, str] = {}
    for term in _conjuncts(node):
        if isinstance(term, _Comparison) and term.op == "eq" and isinstance(term.value, str):
            terms.setdefault(schema.resolve(term.path, "invalidFilter").key, term.value)
    return terms


@_too_deep_is("invalidFilter")
def text_terms(text_or_filter: str | Filter, schema: ResourceSchema) -> list[tuple[str, str, str]]:
    """The top-level ``attr co|sw|ew|eq "literal"`` terms joined by ``and`` on single-valued,
    case-insensitive core string attributes, as (attribute name, op, case-folded literal).

    Every resource the filter matches satisfies each term, so a store that keeps an
    attribute's case-folded values apart may scan those strings alone for candidates, then run
    the compiled filter on them: a ``displayName co`` over 100,000 users then walks 100,000
    strings, not 100,000 documents.
    """
    node = parse_filter(text_or_filter) if isinstance(text_or_filter, str) else text_or_filter
    terms = []
    for term in _conjuncts(node):
        if not (
            isinstance(term, _Comparison)
            and term.op in ("eq", "co", "sw", "ew")
            and isinstance(term.value, str)
        ):
            continue
        ref = schema.resolve(term.path, "invalidFilter")
        attr = ref.attr
        if (
            ref.urn is None
            and ref.sub is None
            and not attr.multi_valued
            and not attr.case_exact
            and attr.type in ("string", "reference")
        ):
            terms.append((attr.name, term.op, term.value.casefold()))
    return terms


# ---------------------------------------------------------------------------------------------
# Sorting and projection


def sort_key(sort_by: str, schema: ResourceSchema) -> Callable[[dict], tuple]:
    """A key for ``sorted`` implementing RFC 7644 §3.4.2.3 ``sortBy``.

    Multi-valued attributes sort by their primary value, else the first. Resources without a
    value sort last; ``reverse=True`` puts them first, as §3.4.2.3 wants for "descending".
    An unknown attribute is 400 invalidValue (§3.4.2.3 names no error; the value is bad).
    """
    if not isinstance(sort_by, str):
        raise _bad_request("invalidValue", "sortBy must be an attribute name")
    ref = _scalar_ref(schema.resolve(sort_by, "invalidValue"), sort_by, "invalidValue")

    def key(resource: dict) -> tuple:
        value = _comparable(_sort_value(ref, resource), ref.target)
        return (1,) if value is None else (0, value)

    return key


def _sort_value(ref: _AttrRef, resource: dict) -> object:
    container = resource if ref.urn is None else resource.get(ref.urn)
    value = container.get(ref.attr.name) if isinstance(container, dict) else None
    if isinstance(value, list):
        primary = [v for v in value if isinstance(v, dict) and v.get("primary") is True]
        value = (primary or value or [None])[0]
    if ref.sub is not None:
        return value.get(ref.sub.name) if isinstance(value, dict) else None
    return value


_WHOLE = None  # in a projection index: the whole attribute, not a set of its sub-attributes


def project(
    resource: dict,
    schema: ResourceSchema,
    attributes: list[str] | None,
    excluded: list[str] | None,
) -> dict:
    """Apply RFC 7644 §3.4.2.5 ``attributes`` / ``excludedAttributes`` to ``resource``.

    The result is a new dict, but values it keeps whole are shared with ``resource``, not copied.

    ``attributes`` replaces the default set; ``excluded`` trims it. Attributes whose schema
    "returned" is "always" (id, schemas) stay either way, "never" ones (password) always go, and
    "request" ones appear only when named. Names the schema does not know are ignored: §3.4.2.5
    defines no error for them.
    """
    if not attributes and not excluded and schema.hidden_by_default is not None:
        hidden = schema.hidden_by_default
        return {k: v for k, v in resource.items() if k not in hidden and _is_present(v)}
    included = _projection_index(attributes, schema) if attributes else None
    dropped = _projection_index(excluded or [], schema)
    projected: dict = {}
    for key, value in resource.items():
        urn, attr = schema.extension_urn(key), schema.core_attribute(key)
        if urn is not None:
            kept = _project_extension(urn, value, schema, included, dropped)
        elif attr is not None:
            kept = _project_attribute(None, attr, value, included, dropped)
        else:
            kept = value if included is None else None  # a key no schema describes
        if _is_present(kept):
            projected[key] = kept
    return projected


def _projection_index(paths: list[str], schema: ResourceSchema) -> dict:
    """{(urn, attribute name): _WHOLE or {sub-attribute names}}; (urn, None) = whole extension."""
    index: dict = {}
    for path in paths:
        urn = schema.extension_urn(path)
        if urn is not None:
            index[(urn, None)] = _WHOLE
            continue
        try:
            ref = schema.resolve(path)
        except ScimError:
            continue
        key = (ref.urn, ref.attr.name.lower())
        if ref.sub is None:
            index[key] = _WHOLE
        elif index.get(key, set()) is not _WHOLE:
            index.setdefault(key, set()).add(ref.sub.name.lower())
    return index


def _project_extension(urn, value, schema, included, dropped) -> dict | None:
    if not isinstance(value, dict) or (included is None and (urn, None) in dropped):
        return None
    if included is not None and (urn, None) in included:
        included = {**included, **{(urn, name.lower()): _WHOLE for name in value}}
    projected = {}
    for name, item in value.items():
        attr = schema.extension_attribute(urn, name)
        kept = _project_attribute(urn, attr, item, included, dropped) if attr else None
        if _is_present(kept):
            projected[name] = kept
    return projected


def _project_attribute(urn, attr: _Attr, value, included, dropped):
    key = (urn, attr.name.lower())
    if attr.returned == "never":
        return None
    if attr.returned == "always":
        return _project_subattributes(attr, value, _WHOLE, set())
    if included is not None:
        return (
            _project_subattributes(attr, value, included[key], set()) if key in included else None
        )
    if attr.returned == "request" or (key in dropped and dropped[key] is _WHOLE):
        return None
    return _project_subattributes(attr, value, _WHOLE, dropped.get(key) or set())


def _project_subattributes(attr: _Attr, value, wanted, unwanted: set):
    """Keep the sub-attributes of a complex value (or of each entry) that are asked for."""
    if attr.type != "complex":
        return value

    def keep(entry):
        if not isinstance(entry, dict):
            return entry
        return {
            name: item
            for name, item in entry.items()
            if _returns_sub_attribute(attr.sub_attributes.get(name.lower()), wanted, unwanted)
        }

    if isinstance(value, list):
        return [kept for kept in map(keep, value) if _is_present(kept)]
    return keep(value)


def _returns_sub_attribute(sub: _Attr | None, wanted, unwanted: set) -> bool:
    if sub is None or sub.returned == "never":
        return False
    if sub.returned == "always":
        return True
    name = sub.name.lower()
    return (wanted is _WHOLE or name in wanted) and name not in unwanted


# ---------------------------------------------------------------------------------------------
# PATCH (RFC 7644 §3.5.2)


# Sub-attributes that describe a multi-valued entry's value rather than being one (RFC 7643
# §2.4): an entry left with only these after a removal holds nothing and is dropped.
_QUALIFIERS = frozenset({"type", "primary", "display"})


@dataclass(frozen=True)
class _PatchTarget:
    """Where a PATCH path points: an attribute, optionally narrowed to entries and a sub-attribute.

    ``matches`` selects entries of a multi-valued complex attribute; ``template`` is the entry a
    write creates when nothing matches (None when the filter cannot describe one).
    """

    urn: str | None
    attr: _Attr
    sub: _Attr | None = None
    matches: Callable[[dict], bool] | None = None
    template: dict | None = None


@_too_deep_is("invalidPath")
def apply_patch(resource: dict, operations: list[dict], schema: ResourceSchema) -> dict:
    """Apply PATCH ``operations`` (RFC 7644 §3.5.2) to a copy of ``resource``; return it.

    §3.5.2 makes a PATCH atomic: any bad operation raises ScimError and nothing is applied;
    ``resource`` itself is never changed. The result shares the values no operation touched.
    """
    if not isinstance(operations, list) or not operations:
        raise _bad_request("invalidSyntax", "Operations must be a non-empty list")
    patched = _CopyOnWrite(resource)
    patched.own("schemas")  # _sync_schemas edits the list in place
    extensions_before = {urn for urn in schema.extension_urns if urn in patched}
    for index, operation in enumerate(operations):
        try:
            _apply_operation(patched, _operation_verb(operation), operation, schema)
        except ScimError as error:
            raise ScimError(
                error.status, f"Operations[{index}]: {error.detail}", error.scim_type
            ) from None
    _sync_schemas(patched, schema, extensions_before)
    return dict(patched)


class _CopyOnWrite(dict):
    """A shallow copy of a resource whose top-level values are deep-copied the first time an
    operation writes under them (see :func:`_container`), so that Entra's commonest PATCH,
    ``active`` alone, does not copy the whole user: that copy was 5 % of the request."""

    __slots__ = ("_owned",)

    def __init__(self, resource: dict) -> None:
        super().__init__(resource)
        self._owned: set[str] = set()

    def own(self, key: str) -> None:
        if key not in self._owned:
            self._owned.add(key)
            if key in self:
                self[key] = copy_json(self[key])


def _operation_verb(operation: object) -> str:
    """``op`` is case-insensitive: Entra's default job sends "Add"/"Replace"/"Remove" (§3.1).

    Any other op is 400 invalidSyntax: the PatchOp message itself does not conform to §3.5.2,
    which is what invalidSyntax means in RFC 7644 §3.12 (invalidValue is about attribute values).
    """
    if not isinstance(operation, dict):
        raise _bad_request("invalidSyntax", "each operation must be a JSON object")
    verb = operation.get("op")
    if not isinstance(verb, str) or verb.lower() not in ("add", "replace", "remove"):
        raise _bad_request("invalidSyntax", f"op must be add, replace or remove, not {verb!r}")
    return verb.lower()


def _apply_operation(resource: dict, verb: str, operation: dict, schema: ResourceSchema) -> None:
    path = operation.get("path")
    if path is not None and not isinstance(path, str):
        raise _bad_request("invalidPath", "path must be a string")
    if verb == "remove":
        if not path:
            raise _bad_request("noTarget", "remove needs a path (RFC 7644 §3.5.2.2)")
        _remove_path(resource, path, operation.get("value"), schema)
        return
    if "value" not in operation:
        raise _bad_request("invalidSyntax", f"{verb} needs a value (RFC 7644 §3.5.2.1, §3.5.2.3)")
    value = operation["value"]
    if not path:
        _write_pathless(resource, verb, value, schema)
    elif schema.extension_urn(path):
        _write_pathless(resource, verb, {path: value}, schema)
    else:
        _write(resource, verb, _parse_patch_path(path, schema), value)


def _split_value_path(path: str) -> tuple[str, str | None, str | None]:
    """Split ``attr[filter].sub`` into its three parts (RFC 7644 §3.5.2, Figure 3 PATH)."""
    start = path.find("[")
    if start < 0:
        if "]" in path:
            raise _bad_request("invalidPath", f"unbalanced ']' in path {path!r}")
        return path, None, None
    end = _closing_bracket(path, start)
    rest = path[end + 1 :]
    if rest and (not rest.startswith(".") or len(rest) == 1):
        raise _bad_request("invalidPath", f"unexpected {rest!r} after ']' in path {path!r}")
    return path[:start], path[start + 1 : end], rest[1:] or None


def _closing_bracket(path: str, start: int) -> int:
    in_string, escaped = False, False
    for index in range(start + 1, len(path)):
        char = path[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = in_string
        elif char == '"':
            in_string = not in_string
        elif char == "]" and not in_string:
            return index
    raise _bad_request("invalidPath", f"missing ']' in path {path!r}")


def _parse_patch_path(path: str, schema: ResourceSchema) -> _PatchTarget:
    """Resolve a PATCH path; errors in the [filter] part are invalidFilter (RFC 7644 Table 9).

    Each path is resolved once per schema: Entra sends the same few paths for every user, and
    one with a [filter] (``phoneNumbers[type eq "mobile"].value``) costs a filter parse and
    compile, an eighth of a PATCH. Targets are immutable; paths come from clients, so at most
    10,000 are kept.
    """
    target = schema.patch_targets.get(path)
    if target is None:
        target = _resolve_patch_path(path, schema)
        if len(schema.patch_targets) < 10_000:
            schema.patch_targets[path] = target
    return target


def _resolve_patch_path(path: str, schema: ResourceSchema) -> _PatchTarget:
    attr_path, filter_text, sub_name = _split_value_path(path)
    ref = schema.resolve(attr_path, "invalidPath")
    if filter_text is None:
        if ref.sub is not None and ref.attr.multi_valued:
            # "emails.value" with no filter: every entry (and a new one if there are none).
            return _PatchTarget(ref.urn, ref.attr, ref.sub, lambda entry: True, {})
        return _PatchTarget(ref.urn, ref.attr, ref.sub)
    if ref.sub is not None or ref.attr.type != "complex" or not ref.attr.multi_valued:
        raise _bad_request("invalidPath", f"{attr_path!r} is not multi-valued complex: no [filter]")
    entry_filter = _FilterParser(filter_text).parse(in_value_path=True)
    sub = None
    if sub_name is not None:
        sub = ref.attr.sub_attributes.get(sub_name.lower())
        if sub is None:
            raise _bad_request(
                "invalidPath", f"{ref.attr.name!r} has no sub-attribute {sub_name!r}"
            )
    return _PatchTarget(
        ref.urn,
        ref.attr,
        sub,
        _compile(entry_filter, schema, ref.attr),
        _entry_template(entry_filter, ref.attr),
    )


def _entry_template(entry_filter: Filter, attr: _Attr) -> dict | None:
    """The entry an eq-only filter describes, e.g. {"type": "work"} for ``[type eq "work"]``.

    Entra adds ``emails[type eq "work"].value`` and ``addresses[type eq "work"].locality`` to
    users that have no such entry yet, expecting it to be created (entra-scim.md §3.4).
    """
    template = {}
    for term in _conjuncts(entry_filter):
        if not isinstance(term, _Comparison) or term.op != "eq" or not _is_present(term.value):
            return None
        sub = attr.sub_attributes[term.path.lower()]
        template[sub.name] = _normalize(sub, term.value)
    return template


def _check_mutability(target: _PatchTarget) -> None:
    """RFC 7643 §2.2: readOnly is never written by clients; immutable not after creation."""
    for attr in (target.attr, target.sub):
        if attr is not None and attr.mutability in ("readOnly", "immutable"):
            raise _bad_request("mutability", f"{attr.name!r} is {attr.mutability}")


def _container(resource: _CopyOnWrite, target: _PatchTarget) -> dict:
    """The object holding the target's attribute: the resource itself, or its extension's
    object; what the caller may change in place there is the resource's own copy."""
    urn = target.urn
    resource.own(urn or target.attr.name)
    if urn is None:
        return resource
    found = resource.get(urn)
    if not isinstance(found, dict):
        found = resource[urn] = {}
    return found


def _write_pathless(resource: dict, verb: str, value: object, schema: ResourceSchema) -> None:
    """RFC 7644 §3.5.2.1/§3.5.2.3 without "path": each key of ``value`` is applied as a path.

    Keys may be dotted or URN-qualified paths (Entra's batched replace, entra-scim.md §3.3) or a
    whole extension URN holding an object. Keys the schema does not know are ignored.
    """
    if not isinstance(value, dict):
        raise _bad_request("invalidValue", f"{verb} without a path needs an object of attributes")
    for key, item in value.items():
        urn = schema.extension_urn(key)
        if urn is None:
            _write_known_key(resource, verb, key, item, schema)
        elif isinstance(item, dict):
            for name, sub_item in item.items():
                _write_known_key(resource, verb, f"{urn}:{name}", sub_item, schema)
        elif item is not None:
            raise _bad_request("invalidValue", f"{urn} must hold an object of attributes")


def _write_known_key(resource: dict, verb: str, key: str, value: object, schema) -> None:
    try:
        target = _parse_patch_path(key, schema)
    except ScimError as error:
        if error.scim_type == "invalidPath":
            return  # not an attribute of this resource type: ignored, not stored
        raise
    _write(resource, verb, target, value)


def _write(resource: dict, verb: str, target: _PatchTarget, value: object) -> None:
    """add or replace at ``target`` (RFC 7644 §3.5.2.1, §3.5.2.3).

    JSON null means "no value" (entra-scim.md §1): add then sets nothing, while replace leaves the
    attribute unassigned. "" clears for both (entra-scim.md §3.10).
    """
    _check_mutability(target)
    if verb == "add" and value is None:
        return
    container = _container(resource, target)
    attr = target.attr
    if target.matches is not None:
        _write_entries(container, verb, target, value)
    elif target.sub is not None:
        update = {target.sub.name: _normalize(target.sub, value)}
        container[attr.name] = _merge_single_complex(container.get(attr.name), update)
    elif attr.multi_valued:
        _write_values(container, verb, attr, _normalize(attr, value))
    elif attr.type == "complex":
        update = _normalize(attr, value)
        current = container.get(attr.name)
        container[attr.name] = _merge_single_complex(current, update) if update else None
    else:
        container[attr.name] = _normalize(attr, value)
    _tidy(resource, target.urn, attr)


def _write_values(container: dict, verb: str, attr: _Attr, values: list | None) -> None:
    """add appends values not already there (RFC 7644 §3.5.2.1: re-adding one is no change);
    replace without a filter replaces the whole list (§3.5.2.3)."""
    if verb == "replace":
        container[attr.name] = values
        _demote_other_primaries(values or [], values or [])
        return
    entries = container.get(attr.name)
    entries = entries if isinstance(entries, list) else []
    added = []
    for value in values or []:
        if not any(_same_entry(attr, value, entry) for entry in entries):
            entries.append(value)
            added.append(value)
    container[attr.name] = entries
    _demote_other_primaries(entries, added)


def _write_entries(container: dict, verb: str, target: _PatchTarget, value: object) -> None:
    """Write the entries the path's filter selects (RFC 7644 §3.5.2.3 valuePath rules).

    No match: an eq-only filter creates the entry it describes, so Entra's five address ops end
    in one work address; otherwise §3.5.2.3's 400 noTarget, for add as well as replace.
    """
    attr = target.attr
    entries = container.get(attr.name)
    entries = entries if isinstance(entries, list) else []
    matched = [entry for entry in entries if isinstance(entry, dict) and target.matches(entry)]
    update = (
        {target.sub.name: _normalize(target.sub, value)}
        if target.sub is not None
        else _normalize(attr, value, single=True)
    )
    created = None
    if not matched:
        if not update or all(item is None for item in update.values()):
            return  # clearing what is not there is already done
        if target.template is None:
            raise _bad_request("noTarget", "no value matches the path's filter")
        created = dict(target.template)
        entries.append(created)
        matched = [created]
    for entry in matched:
        if update is None:  # "" or null for whole entries: they go
            entries = [kept for kept in entries if kept is not entry]
            continue
        if verb == "replace" and target.sub is None and entry is not created:
            replacement = _without_clears(update)  # §3.5.2.3: matching values are replaced
        else:
            replacement = _merge_complex(entry, update)
        entry.clear()
        entry.update(replacement)
    container[attr.name] = entries
    _demote_other_primaries(entries, matched)


def _remove_path(resource: dict, path: str, value: object, schema: ResourceSchema) -> None:
    """remove (RFC 7644 §3.5.2.2). Removing what is not there is no error: §3.5.2.2 names no
    failure for a filter matching nothing, and Entra retries removes it already made."""
    urn = schema.extension_urn(path)
    if urn is not None:
        resource.pop(urn, None)
        return
    target = _parse_patch_path(path, schema)
    _check_mutability(target)
    container = _container(resource, target)
    attr = target.attr
    current = container.get(attr.name)
    if target.matches is not None and isinstance(current, list):
        for entry in [e for e in current if isinstance(e, dict) and target.matches(e)]:
            if target.sub is None:
                current.remove(entry)
            else:
                entry.pop(target.sub.name, None)
    elif target.sub is not None and isinstance(current, dict):
        current.pop(target.sub.name, None)
    elif attr.multi_valued and value is not None and isinstance(current, list):
        # Entra removes group members by listing them in "value" (entra-scim.md §3.6): only
        # those go, never the whole attribute.
        doomed = _normalize(attr, value) or []
        container[attr.name] = [
            entry for entry in current if not any(_same_entry(attr, entry, d) for d in doomed)
        ]
    elif target.matches is None:
        container.pop(attr.name, None)
    _tidy(resource, target.urn, attr)


def _normalize(attr: _Attr, value: object, single: bool = False) -> Any:
    """Bring a client value into canonical form for ``attr``; None means "no value".

    "" and null mean no value (entra-scim.md §3.10, §1); booleans accept "True"/"False" (§3.2);
    complex values get the schema's key spelling and lose unknown, readOnly and null keys.
    ``single`` asks for one entry of a multi-valued attribute.
    """
    if value is None or value == "":
        return None
    if attr.multi_valued and not single:
        items = value if isinstance(value, list) else [value]
        normalized = (_normalize(attr, item, single=True) for item in items)
        kept = [v for v in normalized if v is not None]
        return [_without_clears(v) if isinstance(v, dict) else v for v in kept] or None
    if attr.type == "complex":
        return _normalize_complex(attr, value)
    if isinstance(value, dict | list):
        raise _bad_request("invalidValue", f"{attr.name!r} takes one {attr.type}, not {value!r}")
    if attr.type == "boolean":
        coerced = _as_boolean(value)
        if coerced is None:
            raise _bad_request("invalidValue", f"{attr.name!r} takes true or false, not {value!r}")
        return coerced
    return value


def _normalize_complex(attr: _Attr, value: object) -> dict | None:
    """Complex values: a bare string is a "value" (Entra's manager id, entra-scim.md §3.5) and a
    one-element list is its element (the tutorial's older manager form)."""
    if isinstance(value, str) and "value" in attr.sub_attributes:
        return {"value": value}
    if isinstance(value, list) and len(value) == 1:
        return _normalize_complex(attr, value[0])
    if not isinstance(value, dict):
        raise _bad_request("invalidValue", f"{attr.name!r} takes an object, not {value!r}")
    normalized = {}
    for key, item in value.items():
        sub = attr.sub_attributes.get(key.lower())
        if sub is not None and sub.mutability != "readOnly" and item is not None:
            normalized[sub.name] = _normalize(sub, item)  # None here: clear that sub-attribute
    return normalized or None


def _without_clears(entry: dict) -> dict:
    return {key: item for key, item in entry.items() if item is not None}


def _merge_complex(existing: object, update: dict) -> dict:
    """RFC 7644 §3.5.2.1/§3.5.2.3: sub-attributes not in ``update`` are left unchanged; a None
    in ``update`` removes that sub-attribute."""
    merged = dict(existing) if isinstance(existing, dict) else {}
    for key, item in update.items():
        if item is None:
            merged.pop(key, None)
        else:
            merged[key] = item
    return merged


def _merge_single_complex(existing: object, update: dict) -> dict:
    """Merge into a single-valued complex attribute, except when its "value" changes: then the
    other sub-attributes ($ref, displayName) described the old value, so a new manager id
    starts a fresh object."""
    if (
        isinstance(existing, dict)
        and "value" in update
        and update["value"] != existing.get("value")
    ):
        existing = None
    return _merge_complex(existing, update)


def _same_entry(attr: _Attr, first: object, second: object) -> bool:
    """Entries with equal "value"s are the same entry (a group member is its id)."""
    value_attr = attr.sub_attributes.get("value")
    if isinstance(first, dict) and isinstance(second, dict) and value_attr is not None:
        first, second, attr = first.get("value"), second.get("value"), value_attr
    return first == second or (
        isinstance(first, str) and _comparable(first, attr) == _comparable(second, attr)
    )


def _demote_other_primaries(entries: list, written: list) -> None:
    """RFC 7644 §3.5.2: setting one value's "primary" to true sets it false on the others."""
    chosen = next((e for e in written if isinstance(e, dict) and e.get("primary") is True), None)
    if chosen is None:
        return
    for entry in entries:
        if entry is not chosen and isinstance(entry, dict) and entry.get("primary") is True:
            entry["primary"] = False


def _is_hollow(attr: _Attr, entry: object) -> bool:
    if not isinstance(entry, dict):
        return not _is_present(entry)
    if "value" in attr.sub_attributes:
        return not _is_present(entry.get("value"))
    return all(key in _QUALIFIERS for key in entry)


def _tidy(resource: dict, urn: str | None, attr: _Attr) -> None:
    """Never store {} or [] (RFC 7643 §2.5: unassigned attributes are omitted), nor an entry
    left without a value, nor an extension object left empty."""
    container = resource if urn is None else resource.get(urn)
    if not isinstance(container, dict):
        return
    value = container.get(attr.name)
    if isinstance(value, list) and attr.type == "complex":
        value = [entry for entry in value if not _is_hollow(attr, entry)]
    elif isinstance(value, dict):
        value = _without_clears(value)
    if _is_present(value):
        container[attr.name] = value
    else:
        container.pop(attr.name, None)
    if urn is not None and not container:
        resource.pop(urn, None)


def _sync_schemas(resource: dict, schema: ResourceSchema, extensions_before: set[str]) -> None:
    """RFC 7643 §3: "schemas" lists the extensions a resource uses. List one that gained a
    value; drop one whose object this PATCH removed (one merely listed is left alone)."""
    listed = resource.setdefault("schemas", [schema.core_urn])
    for urn in schema.extension_urns:
        is_listed = any(isinstance(s, str) and s.lower() == urn.lower() for s in listed)
        if urn in resource and not is_listed:
            listed.append(urn)
        elif urn in extensions_before and urn not in resource and is_listed:
            listed[:] = [s for s in listed if not (isinstance(s, str) and s.lower() == urn.lower())]


# ---------------------------------------------------------------------------------------------
# Group membership PATCH (RFC 7644 §3.5.2 on "members", as Entra sends it)


def split_member_operations(operations: list) -> tuple[list[dict], list[tuple]]:
    """Split a Group PATCH into attribute operations and membership edits, keeping order.

    Membership edits are ("add", ids), ("remove", ids), ("replace", ids) or ("clear",). They
    are applied to the membership index directly, so their cost depends on the ids named, not
    on the group's size. Entra's shapes (entra-scim.md §3.6): ``Add members`` with a value
    list (re-adding is a no-op); ``Remove members`` with a value list removes only those
    members, never the whole group; ``remove members[value eq "id"]``; ``remove members``
    without a value empties the group.
    """
    if not isinstance(operations, list) or not operations:
        raise _bad_request("invalidSyntax", "Operations must be a non-empty list")
    attribute_operations: list[dict] = []
    edits: list[tuple] = []
    for index, operation in enumerate(operations):
        try:
            _split_operation(operation, attribute_operations, edits)
        except ScimError as error:
            raise ScimError(
                error.status, f"Operations[{index}]: {error.detail}", error.scim_type
            ) from None
    return attribute_operations, edits


def _split_operation(operation: object, attribute_operations: list, edits: list) -> None:
    verb = _operation_verb(operation)
    path, value = operation.get("path"), operation.get("value")
    if path is None:
        if verb != "remove" and isinstance(value, dict):
            members_key = next((k for k in value if _without_group_urn(k) == "members"), None)
            if members_key is not None:
                edits.append(
                    ("replace" if verb == "replace" else "add", _member_ids(value[members_key]))
                )
                rest = {k: v for k, v in value.items() if k != members_key}
                if rest:
                    attribute_operations.append({**operation, "value": rest})
                return
        attribute_operations.append(operation)
        return
    if not isinstance(path, str):
        raise _bad_request("invalidPath", "path must be a string")
    target = _without_group_urn(path.strip())
    if target == "members":
        if verb != "remove":
            edits.append((verb, _member_ids(value)))
        elif value is None:  # no value: remove every member (RFC 7644 §3.5.2.2)
            edits.append(("clear",))
        else:  # Entra's value list removes only those; an empty list removes nobody
            edits.append(("remove", _member_ids(value) if value else []))
    elif target.startswith("members["):
        if verb != "remove" or not target.endswith("]"):
            raise _bad_request("invalidPath", "only remove takes a members[value eq ...] path")
        start = len(path.strip()) - len(target) + len("members[")
        edits.append(("remove", _member_filter_ids(path.strip()[start:-1])))
    elif target.startswith("members."):
        raise _bad_request("invalidPath", "members are added or removed whole, by value")
    else:
        attribute_operations.append(operation)


def _without_group_urn(path: str) -> str:
    """``urn:...:Group:members[...]`` -> ``members[...]``, lower-cased up to the filter."""
    lowered = path.lower()
    prefix = f"{_GROUP_URN.lower()}:"
    if lowered.startswith(prefix):
        lowered = lowered[len(prefix) :]
    return lowered


_GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"


def _member_ids(value: object) -> list[str]:
    """Ids from a members value: a list of {"value": id} (Entra adds "$ref": null), or one.

    Entra adds members 1,000 at a time, so the usual shape is read in one comprehension first;
    anything else (a missing or misspelt "value", a member that is no object) goes the long way.
    """
    entries = value if isinstance(value, list) else [value]
    try:
        ids = [entry["value"] for entry in entries]
    except (TypeError, KeyError):
        pass
    else:
        if all(type(user_id) is str and user_id for user_id in ids):
            return ids
    ids = []
    for entry in entries:
        if isinstance(entry, dict):
            entry = entry["value"] if "value" in entry else _value_in_any_case(entry)
        if not isinstance(entry, str) or not entry:
            raise _bad_request("invalidValue", "each member needs a user id as its value")
        ids.append(entry)
    return ids


def _value_in_any_case(entry: dict) -> object:
    return next((v for k, v in entry.items() if k.lower() == "value"), None)


def _member_filter_ids(text: str) -> list[str]:
    """The ids of ``value eq "id"`` terms joined by ``or``, the filters a member removal uses."""
    node = parse_filter(text)
    ids: list[str] = []
    pending = [node]
    while pending:
        term = pending.pop()
        if isinstance(term, _Or):
            pending.extend((term.right, term.left))
        elif (
            isinstance(term, _Comparison)
            and term.path.lower() == "value"
            and term.op == "eq"
            and isinstance(term.value, str)
        ):
            ids.append(term.value)
        else:
            raise _bad_request("invalidFilter", 'a member filter must be value eq "<id>"')
    return ids
