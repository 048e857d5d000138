"""A quicker walk through marshmallow schemas, for the bodies they accept.

Marshmallow spends most of a User load on its own machinery (error stores, a getter closure and a
validator chain per field), not on the rules. :func:`compile_loader` reads a schema's fields,
validators and hooks once and returns a loader that applies the same rules in plain Python.

The loader only ever accepts. Whenever it meets something it does not reproduce exactly (a field
or validator class it does not know, a value that breaks a rule, a type marshmallow would refuse)
it raises :class:`Unsure`, and the caller runs the schema's own ``load``: every refusal and every
error message still comes from marshmallow. When it accepts, its result equals what ``load``
returns, key order included. The rules themselves stay declared once, in the marshmallow schemas;
the schema's hooks are its own methods, called as marshmallow calls them. A fallback runs the
pre_load hooks a second time, so they must not change their input (Roster's do not).

Supported, with marshmallow 4's semantics: ``String`` (``str`` only), ``Boolean`` (its own
``truthy``/``falsy`` sets), ``Nested``, ``List``, the ``Length`` and ``Regexp`` validators,
``data_key``, ``required``, ``allow_none``, ``unknown=EXCLUDE`` and pre_load, validates_schema
and post_load hooks. Anything else makes the part of the schema that uses it always unsure.
Written against marshmallow 4.4 (pinned in requirements.txt); the equivalence tests in
tests/test_schemas.py and tests/test_fastload.py tell when an upgrade changes what to reproduce.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA
from marshmallow.exceptions import ValidationError
from marshmallow.utils import missing

Loader = Callable[[Any], Any]


class Unsure(Exception):
    """The quick path cannot vouch for this input; marshmallow's ``load`` must decide."""


class _NotCompiled(Exception):
    """A schema feature the quick path does not reproduce; that part always falls back."""


def _refuse(_value: Any) -> Any:
    """The loader of whatever is not reproduced: marshmallow decides every value it meets."""
    raise Unsure


def compile_loader(schema: Schema, unknown: str | None = None) -> Loader:
    """A loader equal to ``schema.load`` on what it accepts, raising :class:`Unsure` otherwise.

    ``unknown`` is the override a ``Nested`` field passes to its schema's ``load``.
    """
    try:
        return _schema_loader(schema, unknown)
    except _NotCompiled:
        return _refuse


def _schema_loader(schema: Schema, unknown: str | None) -> Loader:
    """The steps of marshmallow's ``Schema._do_load`` for one object, without an error store."""
    unknown = schema.unknown if unknown is None else unknown
    if unknown != EXCLUDE or schema.many or schema.partial not in (None, False):
        raise _NotCompiled
    if schema.dict_class is not dict or schema._hooks[VALIDATES]:
        raise _NotCompiled
    load_fields = _fields_loader(
        [_field_plan(name, field) for name, field in schema.load_fields.items()]
    )
    pre_load = _hooks(schema, PRE_LOAD)
    validators = _hooks(schema, VALIDATES_SCHEMA)
    post_load = _hooks(schema, POST_LOAD)
    if not (pre_load or validators or post_load):
        return load_fields
    hook_kwargs = {"many": False, "partial": schema.partial, "unknown": unknown}
    return _hooked_loader(load_fields, pre_load, validators, post_load, hook_kwargs)


def _fields_loader(plan: list[tuple[str, str, Loader, bool]]) -> Loader:
    """Each load field's value, under its attribute name, in the schema's field order (the
    order marshmallow's result has); keys the schema does not declare are left out."""

    def load(data: Any) -> dict:
        if type(data) is not dict:
            raise Unsure
        result = {}
        for key, name, load_value, required in plan:
            value = data.get(key, missing)
            if value is missing:
                if required:
                    raise Unsure
                continue
            result[name] = load_value(value)
        return result

    return load


def _hooked_loader(
    load_fields: Loader,
    pre_load: list[Callable[..., Any]],
    validators: list[Callable[..., Any]],
    post_load: list[Callable[..., Any]],
    hook_kwargs: dict[str, Any],
) -> Loader:
    """The fields' loader between the schema's own hooks, called as marshmallow calls them; a
    ValidationError from any of them leaves the decision, and its message, to marshmallow."""

    def load(data: Any) -> dict:
        try:
            for hook in pre_load:
                data = hook(data, **hook_kwargs)
            result = load_fields(data)
            for hook in validators:
                hook(result, **hook_kwargs)
            for hook in post_load:
                result = hook(result, **hook_kwargs)
        except ValidationError:
            raise Unsure from None
        return result

    return load


def _hooks(schema: Schema, tag: str) -> list[Callable[..., Any]]:
    """The schema's hooks of one kind, bound, in the order marshmallow runs them for one object
    (``pass_collection`` hooks first). A hook that wants the original data is not reproduced."""
    hooks = schema._hooks[tag]  # what Schema._do_load reads
    if any(kwargs.get("pass_original") for _name, _many, kwargs in hooks):
        raise _NotCompiled
    collection_first = sorted(hooks, key=lambda hook: not hook[1])  # stable: keeps their order
    return [getattr(schema, name) for name, _many, _kwargs in collection_first]


def _field_plan(name: str, field: fields.Field) -> tuple[str, str, Loader, bool]:
    """(input key, output key, value loader, required) for one load field."""
    if field.attribute is not None or "." in name or field.load_default is not missing:
        raise _NotCompiled
    key = field.data_key if field.data_key is not None else name
    return key, name, _field_loader(field), field.required


def _field_loader(field: fields.Field) -> Loader:
    """``field.deserialize`` for a present value, or a loader that is always unsure."""
    if getattr(field, "pre_load", None) or getattr(field, "post_load", None):
        return _refuse
    kind = type(field)
    try:
        if kind is fields.String:
            return _string_loader(field)
        if kind is fields.Boolean:
            return _boolean_loader(field)
        if kind is fields.Nested:
            return _nested_loader(field)
        if kind is fields.List:
            return _list_loader(field)
    except _NotCompiled:
        pass
    return _refuse


def _string_loader(field: fields.String) -> Loader:
    """``fields.String`` refuses anything but ``str`` (bytes never come out of JSON, so they are
    left to marshmallow), then runs its validators on the value."""
    shortest, longest = _length_bounds(field.validators)
    matchers = _regex_matchers(field.validators)
    allow_none = field.allow_none

    def load(value: Any) -> Any:
        if type(value) is not str:
            return _none_or_unsure(value, allow_none)
        if not shortest <= len(value) <= longest:
            raise Unsure
        for match in matchers:
            if match(value) is None:
                raise Unsure
        return value

    return load


def _boolean_loader(field: fields.Boolean) -> Loader:
    """``fields.Boolean``: in its truthy set is True, in its falsy set False, else refused.

    An unhashable value makes the ``in`` raise TypeError, which marshmallow also refuses.
    """
    truthy, falsy = field.truthy, field.falsy
    if not truthy or field.validators:
        raise _NotCompiled  # an empty truthy set means bool(value) for anything
    allow_none = field.allow_none

    def load(value: Any) -> Any:
        try:
            if value in truthy:
                return True
            if value in falsy:
                return False
        except TypeError:
            raise Unsure from None
        return _none_or_unsure(value, allow_none)

    return load


def _nested_loader(field: fields.Nested) -> Loader:
    """``fields.Nested`` of one object: its schema's own steps, with the field's ``unknown``."""
    schema = field.schema
    if field.many or schema.many or field.validators:
        raise _NotCompiled
    load_object = compile_loader(schema, field.unknown)
    allow_none = field.allow_none

    def load(value: Any) -> Any:
        if value is None:
            return _none_or_unsure(value, allow_none)
        return load_object(value)

    return load


def _list_loader(field: fields.List) -> Loader:
    """``fields.List``: a list in, a new list of its entries, each loaded by the inner field.

    marshmallow also takes tuples and other collections; those are left to it.
    """
    if field.validators:
        raise _NotCompiled
    load_entry = _field_loader(field.inner)
    allow_none = field.allow_none

    def load(value: Any) -> Any:
        if type(value) is not list:
            return _none_or_unsure(value, allow_none)
        return [load_entry(entry) for entry in value]

    return load


def _none_or_unsure(value: Any, allow_none: bool) -> None:
    """marshmallow returns None for a null where the field allows it, and refuses it otherwise."""
    if value is None and allow_none:
        return None
    raise Unsure


def _length_bounds(validators: list[Any]) -> tuple[int, int]:
    """The inclusive length range all of a field's ``Length`` validators accept together.

    ``equal``, when set, is the only bound marshmallow checks. Only ``Length`` and ``Regexp``
    validators are reproduced.
    """
    shortest, longest = 0, sys.maxsize
    for validator in validators:
        if type(validator) is validate.Length:
            if validator.equal is not None:
                low = high = validator.equal
            else:
                low = validator.min if validator.min is not None else 0
                high = validator.max if validator.max is not None else sys.maxsize
            shortest, longest = max(shortest, low), min(longest, high)
        elif type(validator) is not validate.Regexp:
            raise _NotCompiled
    return shortest, longest


def _regex_matchers(validators: list[Any]) -> list[Callable[[str], Any]]:
    """``Regexp`` validators test with ``regex.match``: anchored at the start only."""
    matchers = []
    for validator in validators:
        if type(validator) is validate.Regexp:
            if not isinstance(validator.regex.pattern, str):
                raise _NotCompiled
            matchers.append(validator.regex.match)
    return matchers
