"""A workflow's `schema`: a JSON Schema file compiled once at load, checked against each body.

fastjsonschema turns the schema into Python source once; a request pays only for that code.  A
failure answers 422 with fastjsonschema's message and an RFC 6901 JSON Pointer to the place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator

import fastjsonschema
import orjson
from fastjsonschema import JsonSchemaDefinitionException, JsonSchemaValueException

from ..core.errors import ConfigError, RequestError

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas (drafts 4 to
# 2020-12); checked before compiling so a mistake is reported where it sits in the file.
_ONE = ("additionalItems", "additionalProperties", "contains", "else", "if", "not",
        "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("$defs", "definitions", "dependentSchemas", "patternProperties", "properties")
_TYPES = {"array", "boolean", "integer", "null", "number", "object", "string"}


class SchemaError(RequestError):
    """The parsed body does not match the workflow's schema; `pointer` says where (RFC 6901)."""

    status = 422
    reason = "schema"

    def __init__(self, message: str, pointer: str, *, detail: str | None = None):
        super().__init__(message, detail=detail)
        self.pointer = pointer


def compile_schema(file: str, base_dir: Path, path: str) -> Callable[[Any], None]:
    """The validator for the JSON Schema in `file` (relative to `base_dir`, the config's folder).

    The validator returns None or raises `SchemaError`.  It never changes the data: schema
    ``default`` values are not filled in.  A ``$ref`` may only point inside the file: fetching
    schemas over the network at load would make a reload hang on someone else's server.
    """
    location = base_dir / file
    try:
        text = location.read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot read schema file {location}: {exc.strerror}") from None
    try:
        definition = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(path, f"invalid JSON in schema file {location}: {exc}") from None
    try:
        problem = next(_shape_problems(definition, ""), None)
        if problem is None:
            check = fastjsonschema.compile(definition, handlers=_NO_REMOTE, use_default=False)
    except RecursionError:
        problem = "nested too deeply"
    except Exception as exc:  # noqa: BLE001 - fastjsonschema also lets TypeError, re.error out
        problem = str(exc) or type(exc).__name__
    if problem is not None:
        raise ConfigError(path, f"invalid JSON Schema in {location}: {problem}")

    def validate(data: Any) -> None:
        try:
            check(data)
        except JsonSchemaValueException as exc:
            pointer = _pointer(exc, data)
            raise SchemaError(exc.message, pointer,
                              detail=f"rule {exc.rule} at {pointer or '(root)'}") from None
        except RecursionError:  # a recursive schema ($ref) walking a body nested a thousand deep
            raise SchemaError("data is nested too deeply to check against the schema", "") from None

    return validate


def _shape_problems(schema: Any, at: str) -> Iterator[str]:
    """What is structurally wrong in `schema`, each with the JSON Pointer of the place."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        yield f"{at or '(root)'}: a schema must be an object or true/false, not {_json_type(schema)}"
        return
    for key in _ONE:
        if key in schema:
            yield from _shape_problems(schema[key], f"{at}/{key}")
    if "items" in schema:
        items = schema["items"]
        if isinstance(items, list):
            for i, item in enumerate(items):
                yield from _shape_problems(item, f"{at}/items/{i}")
        else:
            yield from _shape_problems(items, f"{at}/items")
    for key in _LIST:
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                yield f"{at}/{key}: must be a non-empty array of schemas"
                continue
            for i, item in enumerate(schema[key]):
                yield from _shape_problems(item, f"{at}/{key}/{i}")
    for key in _MAP:
        if key in schema:
            if not isinstance(schema[key], dict):
                yield f"{at}/{key}: must be an object mapping names to schemas"
                continue
            for name, item in schema[key].items():
                yield from _shape_problems(item, f"{at}/{key}/{_escape(name)}")
    kinds = schema.get("type", "object")
    if not all(isinstance(k, str) and k in _TYPES for k in (kinds if isinstance(kinds, list) else [kinds])):
        yield f"{at}/type: {kinds!r} is not one of {', '.join(sorted(_TYPES))} (or a list of them)"
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        yield f"{at}/required: must be an array of property names"
    patterns = [("pattern", schema["pattern"])] if "pattern" in schema else []
    if isinstance(schema.get("patternProperties"), dict):
        patterns += [(f"patternProperties/{_escape(p)}", p) for p in schema["patternProperties"]]
    for where, pattern in patterns:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            yield f"{at}/{where}: not a usable regular expression {pattern!r}: {exc}"


def _refuse_remote(uri: str) -> Any:
    raise JsonSchemaDefinitionException(
        f"$ref {uri!r} points outside this file; only references within it ('#/$defs/...') work")


class _RefuseEveryScheme(dict):
    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse_remote


_NO_REMOTE = _RefuseEveryScheme()


def _pointer(exc: JsonSchemaValueException, data: Any) -> str:
    """The RFC 6901 pointer of the failing value.

    fastjsonschema names it as text, ``data.items[0].id``, which is ambiguous when a key holds
    '.', '[' or ']'; so the name is read against the data itself (this runs only on failure).
    """
    name = exc.name or "data"
    rest = name[4:] if name.startswith("data") else name
    try:
        tokens = _follow(rest, data, exc.value, exact=True)
        if tokens is None:
            tokens = _follow(rest, data, exc.value, exact=False)
    except RecursionError:
        tokens = None
    if tokens is None:
        tokens = exc.path[1:]
    return "".join("/" + _escape(str(token)) for token in tokens)


def _follow(rest: str, value: Any, target: Any, exact: bool) -> list[str] | None:
    """Tokens spelling `rest` (".key" and "[index]" steps) through `value`, ending at `target`
    when `exact`; None when no reading of `rest` fits the data."""
    if not rest:
        return [] if not exact or value is target else None
    if rest[0] == "[" and isinstance(value, list):
        index, bracket, tail = rest[1:].partition("]")
        if bracket and index.isdigit() and int(index) < len(value):
            found = _follow(tail, value[int(index)], target, exact)
            if found is not None:
                return [index, *found]
    if rest[0] == "." and isinstance(value, dict):
        text = rest[1:]
        # A key ends where a step may start: just before a '.' or '[' or at the end.
        for end in [i for i, c in enumerate(text) if c in ".["] + [len(text)]:
            key = text[:end]
            if key in value:
                found = _follow(text[end:], value[key], target, exact)
                if found is not None:
                    return [key, *found]
    return None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)
