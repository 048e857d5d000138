"""The quick loader reproduces marshmallow's load for what it accepts and is unsure of the rest."""

from __future__ import annotations

import itertools
import re

import pytest
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from fastload import Unsure, compile_loader


class Excluding(Schema):
    """Schemas that ignore unknown keys, as Roster's do (RAISE is left to marshmallow)."""

    class Meta:
        unknown = EXCLUDE


class Inner(Excluding):
    code = fields.String(required=True, validate=validate.Length(equal=3))
    flag = fields.Boolean()


class Outer(Excluding):
    name = fields.String(required=True, validate=[validate.Length(min=2, max=5)])
    mail = fields.String(validate=validate.Regexp(r"\w+@", error="no"))
    maybe = fields.String(allow_none=True)
    inner = fields.Nested(Inner, data_key="$inner")
    inners = fields.List(fields.Nested(Inner))
    tags = fields.List(fields.String())

    @post_load
    def renamed(self, data: dict, **kwargs) -> dict:
        if "inner" in data:
            data["INNER"] = data.pop("inner")
        return data


VALUES = [
    None,
    "",
    "a",
    "ab",
    "abc",
    "abcde",
    "abcdef",
    "x@y",
    "@y",
    "x@",
    0,
    1,
    "True",
    "no",
    [],
    ["ab"],
    [{"code": "abc"}],
    [{"code": "ab"}],
    [None],
    ("ab",),
    {},
    {"code": "abc"},
    {"code": "abc", "flag": "yes", "other": 1},
    {"code": "abc", "flag": "perhaps"},
    {"flag": True},
]


def outcome(load, data):
    try:
        return "loaded", load(data)
    except (ValidationError, Unsure):
        return "refused", None


@pytest.mark.parametrize("key", ["name", "mail", "maybe", "$inner", "inner", "inners", "tags"])
def test_whatever_it_accepts_is_what_marshmallow_loads(key):
    schema = Outer()
    quick = compile_loader(schema)
    accepted = 0
    for value in VALUES:
        data = {"name": "abc", key: value}
        quick_outcome = outcome(quick, data)
        if quick_outcome[0] == "loaded":
            accepted += 1
            assert quick_outcome == outcome(schema.load, data), data
            assert list(quick_outcome[1]) == list(schema.load(data)), data
    assert accepted


def test_what_marshmallow_refuses_it_is_unsure_of():
    schema = Outer()
    quick = compile_loader(schema)
    for key, value in itertools.product(["name", "mail", "$inner", "inners", "tags"], VALUES):
        data = {"name": "abc", key: value}
        if outcome(schema.load, data)[0] == "refused":
            with pytest.raises(Unsure):
                quick(data)


def test_length_bounds_and_equal_are_marshmallows():
    quick = compile_loader(Outer())
    for name, accepted in [("a", False), ("ab", True), ("abcde", True), ("abcdef", False)]:
        assert outcome(quick, {"name": name})[0] == ("loaded" if accepted else "refused")
    for code, accepted in [("ab", False), ("abc", True), ("abcd", False)]:
        data = {"name": "ab", "inners": [{"code": code}]}
        assert outcome(quick, data)[0] == ("loaded" if accepted else "refused")


def test_a_null_is_loaded_only_where_the_field_allows_it():
    quick = compile_loader(Outer())
    assert quick({"name": "ab", "maybe": None}) == {"name": "ab", "maybe": None}
    with pytest.raises(Unsure):
        quick({"name": "ab", "mail": None})


def test_the_booleans_own_truthy_and_falsy_sets_decide():
    class Flags(Excluding):
        strict = fields.Boolean(truthy={"si"}, falsy={"no"})
        usual = fields.Boolean()

    quick = compile_loader(Flags())
    assert quick({"strict": "si", "usual": "On"}) == {"strict": True, "usual": True}
    assert quick({"strict": "no", "usual": 0}) == {"strict": False, "usual": False}
    for data in ({"strict": "true"}, {"usual": "si"}, {"usual": [1]}, {"usual": 2}):
        with pytest.raises(Unsure):
            quick(data)


def test_unknown_field_types_and_validators_are_left_to_marshmallow():
    class Other(Excluding):
        count = fields.Integer()
        kind = fields.String(validate=validate.OneOf(["a"]))
        plain = fields.String()

    quick = compile_loader(Other())
    assert quick({"plain": "x"}) == Other().load({"plain": "x"})
    for data in ({"count": 1}, {"kind": "a"}):
        with pytest.raises(Unsure):
            quick(data)


@pytest.mark.parametrize(
    "schema",
    [
        Schema.from_dict({"name": fields.String()})(unknown=RAISE),
        Schema.from_dict({"name": fields.String(load_default="x")})(unknown=EXCLUDE),
        Schema.from_dict({"name": fields.String(attribute="other")})(unknown=EXCLUDE),
        Schema.from_dict({"name": fields.String()})(unknown=EXCLUDE, partial=True),
        Schema.from_dict({"name": fields.String(pre_load=str.strip)})(unknown=EXCLUDE),
    ],
)
def test_schema_options_it_does_not_reproduce_leave_everything_to_marshmallow(schema):
    quick = compile_loader(schema)
    assert schema.load({"name": "a"})
    with pytest.raises(Unsure):
        quick({"name": "a"})


def test_a_hook_that_wants_the_original_data_is_left_to_marshmallow():
    class Original(Excluding):
        name = fields.String()

        @post_load(pass_original=True)
        def keep(self, data: dict, original: dict, **kwargs) -> dict:
            return data

    with pytest.raises(Unsure):
        compile_loader(Original())({})


def test_a_bytes_pattern_or_bytes_value_is_left_to_marshmallow():
    class Bytes(Excluding):
        raw = fields.String(validate=validate.Regexp(re.compile(b"x")))
        text = fields.String()

    quick = compile_loader(Bytes())
    assert quick({"text": "t"}) == {"text": "t"}
    for data in ({"raw": "x"}, {"text": b"t"}):
        with pytest.raises(Unsure):
            quick(data)
