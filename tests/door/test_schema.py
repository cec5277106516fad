"""compile_schema: config errors at load, 422 errors with an RFC 6901 pointer per request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastwebhook.core.errors import ConfigError, RequestError
from fastwebhook.door.schema import SchemaError, compile_schema

PATH = "workflows.orders.schema"

ORDER = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "customer": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}},
            "additionalProperties": {"type": "string"},
        },
        "a/b": {"type": "integer"},
        "m~n": {"type": "integer"},
        "dot.ted": {"type": "object", "properties": {"x[0]": {"type": "integer"}}},
        "{brace}": {"type": "integer"},
        "é\"q": {"type": "integer"},
        "count": {"type": "integer", "default": 1},
    },
}


def write(tmp_path: Path, schema, name: str = "order.schema.json") -> str:
    (tmp_path / name).write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return name


@pytest.fixture
def validate(tmp_path: Path):
    return compile_schema(write(tmp_path, ORDER), tmp_path, PATH)


def failure(validate, data) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        validate(data)
    return caught.value


def test_valid_bodies_pass_untouched(validate) -> None:
    body = {"items": [{"id": 1, "tags": ["a"]}, {"id": 2}], "customer": {"email": "a@example.com"}}
    before = json.dumps(body)
    assert validate(body) is None
    assert json.dumps(body) == before                     # schema defaults are not filled in


@pytest.mark.parametrize("data, pointer, message", [
    ({"items": [{"id": "7"}]}, "/items/0/id", "data.items[0].id must be integer"),
    ({"items": [{"id": 1}, {"id": 2, "tags": ["ok", 3]}]}, "/items/1/tags/1", "data.items[1].tags[1] must be string"),
    ({"items": [{"id": 1}, {}]}, "/items/1", "data.items[1] must contain ['id'] properties"),
    ({}, "", "data must contain ['items'] properties"),                       # missing: the object
    ([], "", "data must be object"),                                           # root type
    ({"items": {}}, "/items", "data.items must be array"),
    ({"items": [], "customer": {"email": "nope"}}, "/customer/email", "data.customer.email must be email"),
    ({"items": [], "customer": {"x/y": 1}}, "/customer/x~1y", None),            # additionalProperties key
    ({"items": [], "a/b": "s"}, "/a~1b", None),
    ({"items": [], "m~n": "s"}, "/m~0n", None),
    ({"items": [], "dot.ted": {"x[0]": "s"}}, "/dot.ted/x[0]", None),
    ({"items": [], "{brace}": "s"}, "/{brace}", None),
    ({"items": [], "é\"q": "s"}, "/é\"q", None),
])
def test_failures_point_at_the_place(validate, data, pointer: str, message: str | None) -> None:
    error = failure(validate, data)
    assert error.pointer == pointer
    if message is not None:
        assert error.message == message
    assert isinstance(error, RequestError)
    assert (error.status, error.reason) == (422, "schema")


def test_ambiguous_names_follow_the_data(tmp_path: Path) -> None:
    """fastjsonschema writes both {"a.b": x} and {"a": {"b": x}} as data.a.b; the data decides."""
    schema = {"properties": {"a.b": {"type": "integer"}, "a": {"properties": {"b": {"type": "integer"}}}}}
    validate = compile_schema(write(tmp_path, schema), tmp_path, PATH)
    assert failure(validate, {"a.b": "s", "a": {"b": 1}}).pointer == "/a.b"
    assert failure(validate, {"a.b": 1, "a": {"b": "s"}}).pointer == "/a/b"


def test_detail_names_rule_and_place(validate) -> None:
    error = failure(validate, {"items": [{"id": "7"}]})
    assert error.detail == "rule type at /items/0/id"


def test_local_refs_and_boolean_schemas(tmp_path: Path) -> None:
    schema = {"$defs": {"id": {"type": "integer"}}, "properties": {"ids": {"items": {"$ref": "#/$defs/id"}}}}
    validate = compile_schema(write(tmp_path, schema), tmp_path, PATH)
    validate({"ids": [1, 2]})
    assert failure(validate, {"ids": [1, "x"]}).pointer == "/ids/1"
    assert compile_schema(write(tmp_path, "true", "yes.json"), tmp_path, PATH)({"any": "thing"}) is None
    assert failure(compile_schema(write(tmp_path, "false", "no.json"), tmp_path, PATH), {}).pointer == ""


def test_recursive_schema_on_a_very_deep_body_is_a_422(tmp_path: Path) -> None:
    schema = {"type": "array", "items": {"$ref": "#"}}
    validate = compile_schema(write(tmp_path, schema), tmp_path, PATH)
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert failure(validate, deep).reason == "schema"


def test_relative_to_the_config_folder_and_absolute(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    write(tmp_path / "schemas", {"type": "object"}, "s.json")
    compile_schema("schemas/s.json", tmp_path, PATH)({})
    compile_schema(str(tmp_path / "schemas" / "s.json"), Path("/nonexistent"), PATH)({})


@pytest.mark.parametrize("content, says", [
    ("{not json", "invalid JSON in schema file"),
    ("", "invalid JSON in schema file"),
    ("[1, 2]", "(root): a schema must be an object or true/false, not an array"),
    ('"string"', "(root): a schema must be an object or true/false, not a string"),
    ('{"type": "integr"}', "/type: 'integr' is not one of"),
    ('{"properties": {"id": {"type": "object", "properties": 3}}}', "/properties/id/properties: must be an object"),
    ('{"items": [{"type": "string"}, 5]}', "/items/1: a schema must be an object"),
    ('{"anyOf": []}', "/anyOf: must be a non-empty array"),
    ('{"properties": {"a/b": {"required": "x"}}}', "/properties/a~1b/required: must be an array"),
    ('{"properties": {"a": {"pattern": "("}}}', "/properties/a/pattern: not a usable regular expression"),
    ('{"patternProperties": {"[": true}}', "/patternProperties/[: not a usable regular expression"),
    ('{"minimum": "x"}', "minimum must be a number"),
    ('{"$ref": "#/$defs/missing"}', "Unresolvable ref"),
    ('{"$ref": "https://example.com/schema.json"}', "points outside this file"),
    ('{"$ref": "other.json"}', "points outside this file"),
    ('{"$ref": "file:///etc/passwd"}', "points outside this file"),
])
def test_bad_schema_files(tmp_path: Path, content: str, says: str) -> None:
    name = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        compile_schema(name, tmp_path, PATH)
    assert caught.value.path == PATH
    assert says in caught.value.message
    assert str(tmp_path / name) in caught.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_schema("nope.json", tmp_path, PATH)
    assert caught.value.path == PATH
    assert caught.value.message == f"cannot read schema file {tmp_path / 'nope.json'}: No such file or directory"


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_schema_is_a_config_error(tmp_path: Path, depth: int) -> None:
    text = '{"items": ' * depth + "{}" + "}" * depth
    with pytest.raises(ConfigError) as caught:
        compile_schema(write(tmp_path, text), tmp_path, PATH)
    assert "invalid JSON" in caught.value.message


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20)


@given(JSON)
def test_arbitrary_bodies_pass_or_point_into_themselves(data) -> None:
    validate = _ORDER_VALIDATOR
    try:
        validate(data)
    except SchemaError as error:
        target = data
        for token in error.pointer.split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            target = target[int(key)] if isinstance(target, list) else target[key]


def _compile_order() -> object:
    import tempfile  # noqa: PLC0415 - hypothesis tests cannot take function-scoped fixtures

    with tempfile.TemporaryDirectory() as folder:
        return compile_schema(write(Path(folder), ORDER), Path(folder), PATH)


_ORDER_VALIDATOR = _compile_order()
