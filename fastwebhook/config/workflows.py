"""One `[workflows.<key>]` table into a frozen Workflow, errors reported with TOML paths."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from .model import (ADMIN_PAGE, ADMIN_PREFIX, METHODS, RESERVED_PATHS, Mode, OnSyncTimeout, DedupConfig,
                    NodeSpec, ResponseConfig, ServerConfig, VerifyConfig, Workflow)
from ..core.errors import ConfigError
from ..workflow.nodes import NODE_TYPES
from ..workflow.scripts import Script
from ..door.ratelimit import parse_rate
from ..door.schema import compile_schema
from ..workflow.templates import check_references, compile_value
from .files import read_secret_file, stored_file
from ..core.units import parse_duration, parse_size
from ..verify import SCHEMES, build_verifier, public_url_base

WORKFLOW_FIELDS = {
    "title", "path", "methods", "mode", "enabled", "sync_timeout", "on_sync_timeout", "ip_allow",
    "max_body_size", "content_types", "rate_limit", "schema", "order_key", "concurrency",
    "max_queued", "public_url", "on_failure", "verify", "dedup", "response", "nodes",
}
NODE_COMMON_FIELDS = {"key", "type", "title", "ignore_fail", "then", "else"}
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# One segment of a workflow's path: a {name} parameter, or RFC 3986 path characters.
PATH_SEGMENT = re.compile(r"^(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z0-9._~!$&'()*+,;=:@%-]*)$")


def load_workflow(loader, key: str, t: dict, path: str, server: ServerConfig) -> Workflow | None:
    errors_before = len(loader.errors)
    loader.unknown_keys(t, WORKFLOW_FIELDS, path)
    if not _KEY.match(key):
        loader.error(path, "a workflow key may hold only letters, digits, '-' and '_'")
    url_path = loader.take(t, "path", path, str, f"/api/webhooks/{key}")
    _check_path(loader, url_path, f"{path}.path")
    methods, listed = [], loader.take(t, "methods", path, list, ["POST"])
    for i, method in enumerate(listed):
        if not isinstance(method, str) or method.upper() not in METHODS:
            loader.error(f"{path}.methods[{i}]", f"must be one of {', '.join(METHODS)}, not {method!r}")
        else:
            methods.append(method.upper())
    methods = tuple(methods)
    if not listed:
        loader.error(f"{path}.methods", "must name at least one method")
    mode = loader.choice(t, "mode", path, Mode, Mode.ASYNC)
    on_timeout = loader.choice(t, "on_sync_timeout", path, OnSyncTimeout, OnSyncTimeout.ACCEPT)
    max_body = loader.convert(parse_size, t.get("max_body_size", server.max_body_size),
                              f"{path}.max_body_size", server.max_body_size)
    if max_body > server.max_body_size:
        loader.error(f"{path}.max_body_size", f"may only lower server.max_body_size ({server.max_body_size} bytes)")
    content_types = loader.take(t, "content_types", path, list, [])
    concurrency = loader.take(t, "concurrency", path, int, 0)
    if concurrency < 0:
        loader.error(f"{path}.concurrency", "must be 0 (no limit) or more")
    max_queued = loader.take(t, "max_queued", path, int, 0)
    if max_queued < 0:
        loader.error(f"{path}.max_queued", "must be 0 (a fair share of [queue] capacity) or more")
    verify = _verify(loader, loader.table(t, "verify", path), f"{path}.verify")
    order_key = loader.take(t, "order_key", path, str, "")
    # the order key is worked out before any node runs: the request, [env] and the workflow only
    check_references(compile_value(order_key), f"{path}.order_key", loader.error, env=loader.known.env,
                     roots=frozenset({"$context", "$env", "$workflow"}))
    workflow = Workflow(
        key=key, path=url_path, title=loader.take(t, "title", path, str, ""), methods=methods,
        mode=mode, enabled=loader.take(t, "enabled", path, bool, True),
        sync_timeout=loader.convert(parse_duration, t.get("sync_timeout", "30s"), f"{path}.sync_timeout", 30.0),
        on_sync_timeout=on_timeout,
        ip_allow=loader.networks(t.get("ip_allow", []), f"{path}.ip_allow"),
        max_body_size=min(max_body, server.max_body_size),
        content_types=frozenset(str(c).lower() for c in content_types),
        rate_limit=_rate_limit(loader, t, path),
        schema=loader.take(t, "schema", path, str, ""),
        schema_validator=_schema(loader, t, path),
        order_key=order_key,
        concurrency=concurrency,
        max_queued=max_queued,
        public_url=_public_url(loader, t, path),
        on_failure=loader.take(t, "on_failure", path, str, ""),
        verify=verify,
        dedup=_dedup(loader, loader.table(t, "dedup", path), f"{path}.dedup", verify),
        response=_response(loader, loader.table(t, "response", path), f"{path}.response"),
        nodes=_nodes(loader, t.get("nodes", []), f"{path}.nodes", set(), frozenset()),
        version=hashlib.sha256(orjson.dumps(t, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:12],
    )
    return workflow if len(loader.errors) == errors_before else None


def dangling_on_failure(workflows, keys) -> list[ConfigError]:
    """An error for each of `workflows` whose `on_failure` names none of `keys` (a failure
    workflow must exist when the failure comes: it is not looked for then)."""
    return [ConfigError(f"workflows.{w.key}.on_failure", f"no workflow {w.on_failure!r} to run when this one fails")
            for w in workflows if w.on_failure and w.on_failure not in keys]


def _public_url(loader, t: dict, path: str) -> str:
    text = loader.take(t, "public_url", path, str, "")
    loader.convert(public_url_base, text, f"{path}.public_url", "")
    return text


def _rate_limit(loader, t: dict, path: str) -> str:
    text = loader.take(t, "rate_limit", path, str, "")
    loader.convert(parse_rate, text, f"{path}.rate_limit", None)
    return text


def _schema(loader, t: dict, path: str):
    file = loader.take(t, "schema", path, str, "")
    if not file:
        return None
    if loader.file_roots is not None:
        found = stored_file(loader, file, f"{path}.schema")
        if found is None:
            return None
        file = str(found)
    return loader.convert(lambda f, where: compile_schema(f, loader.path.parent, where), file, f"{path}.schema", None)


def _check_path(loader, url_path: str, where: str) -> None:
    if not url_path.startswith("/"):
        loader.error(where, f"must start with '/': {url_path!r}")
        return
    admin = any(url_path == prefix or url_path.startswith(prefix + "/") for prefix in (ADMIN_PREFIX, ADMIN_PAGE))
    if url_path in RESERVED_PATHS or url_path == loader.metrics_path or admin:
        loader.error(where, f"{url_path} is reserved")
    for segment in url_path.split("/")[1:]:
        if not PATH_SEGMENT.match(segment):
            loader.error(where, f"invalid path segment {segment!r} (a parameter is written {{name}})")


def _verify(loader, t: dict, path: str) -> VerifyConfig:
    scheme = loader.take(t, "scheme", path, str, "none")
    options = {k: v for k, v in t.items() if k not in ("scheme", "secret", "secrets", "secret_file")}
    secrets = _secrets(loader, t, path)
    known = SCHEMES.get(scheme)
    if known is not None and known.needs_secret and not secrets:
        loader.error(f"{path}.secret", f"scheme {scheme!r} needs a secret (secret, secrets or secret_file)")
        return VerifyConfig(scheme=scheme)
    try:
        verifier = build_verifier(scheme, options, secrets, path)
    except ConfigError as exc:
        loader.errors.append(exc)
        verifier = None
    return VerifyConfig(scheme=scheme, secrets=secrets, options=MappingProxyType(options), verifier=verifier)


def _secrets(loader, t: dict, path: str) -> tuple[bytes, ...]:
    secrets: list[str] = []
    if "secret" in t:
        secrets.append(loader.take(t, "secret", path, str, ""))
    for i, value in enumerate(loader.take(t, "secrets", path, list, [])):
        if not isinstance(value, str):
            loader.error(f"{path}.secrets[{i}]", "must be a string")
        else:
            secrets.append(value)
    if "secret_file" in t:
        secrets.append(read_secret_file(loader, loader.take(t, "secret_file", path, str, ""), f"{path}.secret_file"))
    return tuple(s.encode() for s in secrets if s)


def _dedup(loader, t: dict, path: str, verify: VerifyConfig) -> DedupConfig:
    loader.unknown_keys(t, {"key", "ttl", "enabled"}, path)
    key = loader.take(t, "key", path, str, "")
    scheme = SCHEMES.get(verify.scheme)
    has_default = scheme is not None and (scheme.dedup_key is not None or getattr(scheme, "dedup_from_data", None))
    enabled = loader.take(t, "enabled", path, bool, bool(key) or bool(has_default))
    if enabled and not key and not has_default:
        loader.error(f"{path}.key", f"scheme {verify.scheme!r} has no default dedup key: set one")
    ttl = loader.convert(parse_duration, t.get("ttl", "24h"), f"{path}.ttl", 86400.0)
    return DedupConfig(enabled=enabled, key=key, ttl=ttl)


def _response(loader, t: dict, path: str) -> ResponseConfig:
    loader.unknown_keys(t, {"status", "headers", "body"}, path)
    status = loader.take(t, "status", path, int, 200)
    if not 100 <= status <= 599:
        loader.error(f"{path}.status", f"must be an HTTP status between 100 and 599, not {status}")
    headers = loader.take(t, "headers", path, dict, {"Content-Type": "application/json"})
    body = t.get("body", ResponseConfig.body)
    if not isinstance(body, (str, dict, list)):
        loader.error(f"{path}.body", "must be a string or a table")
    check_references(compile_value(body), f"{path}.body", loader.error, env=loader.known.env)
    check_references(compile_value(headers), f"{path}.headers", loader.error, env=loader.known.env)
    return ResponseConfig(status=status, headers=tuple((str(k), compile_value(str(v))) for k, v in headers.items()),
                          body=compile_value(body))


def _nodes(loader, entries: Any, path: str, keys: set[str], upstream: frozenset[str]) -> tuple[NodeSpec, ...]:
    """A node list; `upstream` holds the keys of the nodes that run before it (a template may
    name only those)."""
    if not isinstance(entries, list):
        loader.error(path, "must be a list of node tables ([[...nodes]])")
        return ()
    specs = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        if not isinstance(entry, dict):
            loader.error(where, "must be a table")
            continue
        key, kind = entry.get("key"), entry.get("type")
        if not isinstance(key, str) or not _KEY.match(key):
            loader.error(f"{where}.key", "a node needs a key of letters, digits, '-' and '_'")
        elif key in keys:
            loader.error(f"{where}.key", f"duplicate node key {key!r}")
        else:
            keys.add(key)
        node_type = NODE_TYPES.get(kind)
        if node_type is None:
            loader.error(f"{where}.type", f"unknown node type {kind!r} (known: {', '.join(sorted(NODE_TYPES))})")
            continue
        fields = {k: v for k, v in entry.items() if k not in NODE_COMMON_FIELDS}
        loader.unknown_keys(fields, node_type.fields, where)
        for name, value in fields.items():
            if name in node_type.code_fields:   # JavaScript, not a template
                continue
            check_references(compile_value(value), f"{where}.{name}", loader.error, upstream=upstream,
                             env=loader.known.env)
        prepared = node_type.prepare(fields, where, loader.error, loader.known)
        _note_script(loader, where, prepared)
        if not node_type.branches:
            for branch in ("then", "else"):
                if branch in entry:
                    loader.error(f"{where}.{branch}", f"only a condition has branches, not a {kind!r} node")
        inside = upstream | {str(key)}
        then = _nodes(loader, entry.get("then", []), f"{where}.then", keys, inside)
        otherwise = _nodes(loader, entry.get("else", []), f"{where}.else", keys, inside)
        specs.append(NodeSpec(
            key=str(key), type=kind, path=where, title=str(entry.get("title", "")),
            ignore_fail=bool(entry.get("ignore_fail", False)), prepared=prepared,
            then=then, otherwise=otherwise))
        upstream = inside | _all_keys(then) | _all_keys(otherwise)
    return tuple(specs)


@dataclass(frozen=True)
class ScriptSite:
    """A script as `check` compiles it (load_config's `scripts`): its TOML path, the file it is
    written in (the config or a workflows_dir file) and how many errors the loader had found
    before it, which is where its own error goes in the list."""

    path: str
    script: Script
    file: Path
    errors_before: int


def _note_script(loader, where: str, prepared) -> None:
    script = getattr(prepared, "script", None)   # a script node's code, a condition's expression
    if loader.scripts is None or not isinstance(script, Script):
        return
    field = "code" if script.body == script.source else "expression"
    loader.scripts.append(ScriptSite(f"{where}.{field}", script, loader.reading, len(loader.errors)))


def _all_keys(nodes: tuple[NodeSpec, ...]) -> frozenset[str]:
    keys = set()
    for node in nodes:
        keys.add(node.key)
        keys |= _all_keys(node.then) | _all_keys(node.otherwise)
    return frozenset(keys)
