"""`{{ path }}` templates, compiled once at load.

A string that is exactly one template yields the value's own type; a template inside longer
text is stringified (objects as JSON).  A missing path yields None / "" and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

_TAG = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_MISSING = object()


def lookup(scope: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = scope
    for part in path:
        # dict first: typing's and abc's isinstance checks cost microseconds, paid per part
        if isinstance(value, dict) or (not isinstance(value, list) and isinstance(value, Mapping)):
            try:  # indexing, not .get(), so a dict's __missing__ can compute lazy fields
                value = value[part]
            except KeyError:
                return None
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            value = getattr(value, part, _MISSING) if part.isidentifier() and not part.startswith("_") else _MISSING
        if value is _MISSING:
            return None
    return value


def stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


class Template:
    """One compiled string: literal text and paths, rendered against a scope."""

    __slots__ = ("source", "_parts", "_whole")

    def __init__(self, source: str):
        self.source = source
        parts: list[str | tuple[str, ...]] = []
        end = 0
        for match in _TAG.finditer(source):
            if match.start() > end:
                parts.append(source[end:match.start()])
            parts.append(tuple(match[1].split(".")))
            end = match.end()
        if end < len(source):
            parts.append(source[end:])
        self._parts = tuple(parts)
        self._whole = parts[0] if len(parts) == 1 and isinstance(parts[0], tuple) else None

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        return tuple(p for p in self._parts if isinstance(p, tuple))

    @property
    def is_constant(self) -> bool:
        return all(isinstance(p, str) for p in self._parts)

    def render(self, scope: Mapping[str, Any]) -> Any:
        if self._whole is not None:
            return lookup(scope, self._whole)
        return "".join(p if isinstance(p, str) else stringify(lookup(scope, p)) for p in self._parts)

    def render_text(self, scope: Mapping[str, Any]) -> str:
        return stringify(self.render(scope))


def compile_value(value: Any) -> Any:
    """Strings anywhere inside tables and lists become Templates."""
    if isinstance(value, str):
        return Template(value) if "{{" in value else value
    if isinstance(value, Mapping):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(scope)
    if isinstance(value, dict):
        return {k: render_value(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, scope) for v in value]
    return value


ROOTS = frozenset({"$context", "$jobsMapByNodeKey", "$nodes", "$execution", "$workflow", "$env", "$system"})
NODE_ROOTS = ("$jobsMapByNodeKey", "$nodes")


def template_paths(value: Any):
    """Every path of every template inside a compiled value."""
    if isinstance(value, Template):
        yield from value.paths
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from template_paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from template_paths(item)


def check_references(value: Any, where: str, report, *, upstream: frozenset[str] | None = None,
                     env: Mapping[str, Any] | None = None, roots: frozenset[str] = ROOTS) -> None:
    """At load: every template names a known root, a node key that runs before (`upstream`;
    None = any node may be named) and an `[env]` name that exists."""
    for path in template_paths(value):
        root = path[0]
        text = ".".join(path)
        if root not in roots:
            known = ", ".join(sorted(roots))
            report(where, f"template {{{{{text}}}}} names an unknown root {root!r} (known: {known})")
        elif root in NODE_ROOTS and upstream is not None and len(path) > 1:
            if path[1] not in upstream:
                report(where, f"template {{{{{text}}}}} names node {path[1]!r}, which does not run before this one")
        elif root == "$env" and env is not None and len(path) > 1 and path[1] not in env:
            report(where, f"template {{{{{text}}}}} names {path[1]!r}, which the [env] table does not hold")
