"""The TOML config, loaded once into frozen dataclasses.

Every problem is collected with its TOML key path (0-based list indexes) so `fastwebhook check`
can print them all in one go.  The workflow side's sections (`[channels]`, `[collections]`,
`[workflows]`) are loaded by their own modules, through the same loader.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit
from typing import Any, Callable, Mapping

from ..core.errors import ConfigError, ConfigErrors
from ..workflow.channels import load_channels
from ..workflow.collections import load_collections
from ..workflow.outbound import DEFAULT_DENY
from .model import (Config, Durability, Known, OutboundConfig, QueueConfig, ServerConfig, StorageConfig,
                    Workflow)
from ..core.units import parse_duration, parse_size
from .workflows import dangling_on_failure, load_workflow

DEFAULT_LOCATIONS = ("./config.toml", "/etc/fastwebhook/config.toml")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Admin tokens published with fastwebhook (the repo's config.toml falls back to one so that
# `make run` works on a fresh clone): anyone can read them.  A server does not serve with one
# unless FASTWEBHOOK_DEMO=1 says it is the demo (`make run` does).
DEMO_ADMIN_TOKENS = frozenset({"demo-admin-token"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")   # an RFC 9110 token


def find_config(explicit: str | None = None) -> str:
    """-c PATH, else $FASTWEBHOOK_CONFIG, else ./config.toml, else /etc/fastwebhook/config.toml."""
    if explicit:
        return explicit
    if os.environ.get("FASTWEBHOOK_CONFIG"):
        return os.environ["FASTWEBHOOK_CONFIG"]
    for candidate in DEFAULT_LOCATIONS:
        if Path(candidate).exists():
            return candidate
    return DEFAULT_LOCATIONS[0]


def load_config(path: str, environ: Mapping[str, str] | None = None, scripts: list | None = None) -> Config:
    """Read, substitute ${VAR}, validate; raise ConfigErrors listing every problem (their
    messages do not name the file: whoever prints them does, once).  `scripts`, if given,
    receives a workflows.ScriptSite per script, even when ConfigErrors is raised (for `check`)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError("", f"invalid TOML: {exc}")]) from None
    loader = _Loader(Path(path), os.environ if environ is None else environ)
    loader.scripts = scripts
    config = loader.load(raw)
    if loader.errors:
        raise ConfigErrors(loader.errors)
    return config


class _Loader:
    """Walks the raw TOML once, collecting errors instead of stopping at the first."""

    def __init__(self, path: Path, environ: Mapping[str, str]):
        self.path = path
        self.environ = environ
        self.errors: list[ConfigError] = []
        self.metrics_path = "/metrics"
        self.known = Known()
        # None: any file may be named (the operator's own config); else the only folders a
        # workflow's files may lie in (one stored through the admin API: stored_file_roots)
        self.file_roots: tuple[Path, ...] | None = None
        self.scripts: list | None = None     # see load_config
        self.reading = path                  # the file the workflow being loaded is written in

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    # -- generic helpers -------------------------------------------------------------------
    def substitute(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return _ENV_REF.sub(lambda m: self._env_value(m, path), value)
        if isinstance(value, dict):
            return {k: self.substitute(v, _join(path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def _env_value(self, match: re.Match, path: str) -> str:
        name, default = match[1], match[2]
        if name in self.environ:
            return self.environ[name]
        if default is not None:
            return default
        self.error(path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")
        return ""

    def table(self, raw: Mapping, key: str, path: str) -> dict:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.error(_join(path, key), "must be a table")
            return {}
        return value

    def take(self, table: Mapping, key: str, path: str, kind: type | tuple, default: Any) -> Any:
        value = table.get(key, default)
        wrong_type = value is not default and not isinstance(value, kind)
        bool_for_number = isinstance(value, bool) and kind in (int, float)  # bool is an int subclass
        if wrong_type or bool_for_number:
            self.error(_join(path, key), f"must be {_kind_name(kind)}, not {type(value).__name__}")
            return default
        return value

    def convert(self, fn: Callable, value: Any, path: str, default: Any) -> Any:
        try:
            return fn(value, path)
        except ConfigError as exc:
            self.errors.append(exc)
            return default

    def unknown_keys(self, table: Mapping, known: set[str], path: str) -> None:
        for key in table:
            if key not in known:
                self.error(_join(path, key), "unknown setting")

    # -- sections --------------------------------------------------------------------------
    def load(self, raw: dict) -> Config:
        raw = self.substitute(raw, "")
        self.unknown_keys(raw, {"server", "storage", "queue", "metrics", "admin", "log", "env",
                                "channels", "collections", "workflows", "workflows_dir", "outbound"}, "")
        server = self.server(self.table(raw, "server", ""))
        storage = self.storage(self.table(raw, "storage", ""))
        queue = self.queue(self.table(raw, "queue", ""))
        outbound = self.outbound(self.table(raw, "outbound", ""))
        metrics = self.table(raw, "metrics", "")
        self.unknown_keys(metrics, {"path"}, "metrics")
        metrics_path = self.take(metrics, "path", "metrics", str, "/metrics")
        self.metrics_path = metrics_path
        admin = self.table(raw, "admin", "")
        self.unknown_keys(admin, {"token", "secrets_dir"}, "admin")
        secrets_dir = self.take(admin, "secrets_dir", "admin", str, "")
        if secrets_dir:   # relative to the config file, made absolute for a reload from anywhere
            secrets_dir = os.path.abspath(self.path.parent / secrets_dir)
            if not os.path.isdir(secrets_dir):
                self.error("admin.secrets_dir", f"not a directory: {secrets_dir}")
        log = self.table(raw, "log", "")
        self.unknown_keys(log, {"level", "format", "access"}, "log")
        log_level = self.take(log, "level", "log", str, "info").lower()
        if log_level not in ("debug", "info", "warning", "error"):
            self.error("log.level", f"must be one of debug, info, warning, error, not {log_level!r}")
        log_format = self.take(log, "format", "log", str, "json")
        if log_format not in ("json", "text"):
            self.error("log.format", f"must be \"json\" or \"text\", not {log_format!r}")
        log_access = self.take(log, "access", "log", bool, False)
        env = {k: str(v) for k, v in self.table(raw, "env", "").items()}

        channels = load_channels(self, self.table(raw, "channels", ""), "channels")
        collections = load_collections(self, self.table(raw, "collections", ""), "collections")
        self.known = Known(channels=channels, collections=collections, env=env)
        workflows = self.workflows(raw, server)
        return Config(
            source=str(self.path), server=server, storage=storage, queue=queue,
            metrics_path=metrics_path, admin_token=self.take(admin, "token", "admin", str, ""),
            log_level=log_level, log_format=log_format, log_access=log_access, env=MappingProxyType(env),
            channels=MappingProxyType(channels), collections=MappingProxyType(collections),
            workflows=MappingProxyType(workflows), secrets_dir=secrets_dir, outbound=outbound)

    def outbound(self, t: dict) -> OutboundConfig:
        self.unknown_keys(t, set(OutboundConfig.__dataclass_fields__), "outbound")
        return OutboundConfig(deny=self.networks(t.get("deny", list(DEFAULT_DENY)), "outbound.deny"))

    def server(self, t: dict) -> ServerConfig:
        p = "server"
        self.unknown_keys(t, set(ServerConfig.__dataclass_fields__), p)
        d = ServerConfig()
        listen = []
        for i, entry in enumerate(self.take(t, "listen", p, list, ["127.0.0.1:8080"])):
            try:
                listen.append(parse_listen(entry))
            except ValueError as exc:
                self.error(f"{p}.listen[{i}]", str(exc))
        processes = self.take(t, "processes", p, int, 1)
        if processes < 0:
            self.error(f"{p}.processes", "must be 0 (one per core) or more")
        # PEM paths are relative to the config file, and made absolute (symlinks kept, so a
        # certbot renewal is seen) for a SIGHUP reload whatever the working directory.
        tls_cert, tls_key = (os.path.abspath(self.path.parent / name) if name else ""
                             for name in (self.take(t, "tls_cert", p, str, ""),
                                          self.take(t, "tls_key", p, str, "")))
        if bool(tls_cert) != bool(tls_key):
            given, missing = ("tls_cert", "tls_key") if tls_cert else ("tls_key", "tls_cert")
            self.error(f"{p}.{missing}", f"{given} is set but {missing} is not: set both for HTTPS, or neither")
        elif tls_cert:
            from ..http.tls import check_pair  # noqa: PLC0415 - only a TLS config pays for the import

            self.errors.extend(check_pair(tls_cert, tls_key, p))
        return ServerConfig(
            listen=tuple(listen), processes=processes,
            max_body_size=self.convert(parse_size, t.get("max_body_size", d.max_body_size), f"{p}.max_body_size", d.max_body_size),
            max_header_size=self.convert(parse_size, t.get("max_header_size", d.max_header_size), f"{p}.max_header_size", d.max_header_size),
            read_timeout=self.convert(parse_duration, t.get("read_timeout", d.read_timeout), f"{p}.read_timeout", d.read_timeout),
            keepalive_timeout=self.convert(parse_duration, t.get("keepalive_timeout", d.keepalive_timeout), f"{p}.keepalive_timeout", d.keepalive_timeout),
            trusted_proxies=self.networks(t.get("trusted_proxies", []), f"{p}.trusted_proxies"),
            tls_cert=tls_cert, tls_key=tls_key)

    def storage(self, t: dict) -> StorageConfig:
        p = "storage"
        self.unknown_keys(t, set(StorageConfig.__dataclass_fields__), p)
        url = self.take(t, "url", p, str, StorageConfig.url)
        if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
            self.error(f"{p}.url", f"must start with sqlite:// or postgresql://, not {url!r}")
        file = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if file and file != ":memory:" and not os.path.isabs(file):
            # relative to the config file, as tls_cert is: the server and the CLI's reads, run
            # from any folder, open the one database
            url = "sqlite:///" + os.path.abspath(self.path.parent / file)
        durability = self.choice(t, "durability", p, Durability, Durability.COMMIT)
        retention = self.convert(parse_duration, t.get("retention", "7d"), f"{p}.retention", StorageConfig.retention)
        budget = self.convert(parse_duration, t.get("statement_timeout", "250ms"), f"{p}.statement_timeout",
                              StorageConfig.statement_timeout)
        if budget <= 0:
            self.error(f"{p}.statement_timeout", "must be longer than 0s")
        return StorageConfig(url=url, durability=durability, retention=retention, statement_timeout=budget,
                             redact_headers=self.header_names(t, "redact_headers", p))

    def choice(self, t: dict, key: str, path: str, kind: type[StrEnum], default: StrEnum) -> StrEnum:
        """One of an enum's values, else an error naming them."""
        value = self.take(t, key, path, str, default.value)
        try:
            return kind(value)
        except ValueError:
            names = " or ".join(f'"{member.value}"' for member in kind)
            self.error(f"{path}.{key}", f"must be {names}, not {value!r}")
            return default

    def header_names(self, t: dict, key: str, path: str) -> frozenset[str]:
        names = set()
        for i, name in enumerate(self.take(t, key, path, list, [])):
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                self.error(f"{path}.{key}[{i}]", f"must be a header name, not {name!r}")
            else:
                names.add(name.lower())
        return frozenset(names)

    def queue(self, t: dict) -> QueueConfig:
        p = "queue"
        self.unknown_keys(t, set(QueueConfig.__dataclass_fields__), p)
        capacity = self.take(t, "capacity", p, int, 10000)
        workers = self.take(t, "workers", p, int, 64)
        if capacity < 1:
            self.error(f"{p}.capacity", "must be at least 1")
        if workers < 1:
            self.error(f"{p}.workers", "must be at least 1")
        lease = self.convert(parse_duration, t.get("lease", "30s"), f"{p}.lease", QueueConfig.lease)
        if lease < 1:
            self.error(f"{p}.lease", "must be at least 1s (it is renewed every third of it)")
        hold = self.convert(parse_duration, t.get("hold", "2s"), f"{p}.hold", QueueConfig.hold)
        if hold < 0:
            self.error(f"{p}.hold", "must be 0s (refuse at once) or more")
        return QueueConfig(capacity=capacity, workers=workers, lease=lease, hold=hold)

    def networks(self, entries: Any, path: str) -> tuple:
        if not isinstance(entries, list):
            self.error(path, "must be a list of CIDRs")
            return ()
        networks = []
        for i, entry in enumerate(entries):
            try:
                networks.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError:
                self.error(f"{path}[{i}]", f"not a valid CIDR: {entry!r}")
        return tuple(networks)

    def workflows(self, raw: dict, server: ServerConfig) -> dict[str, Workflow]:
        tables = dict(self.table(raw, "workflows", ""))
        files: dict[str, Path] = {}
        directory = raw.get("workflows_dir")
        if directory:
            folder = (self.path.parent / directory)
            if not folder.is_dir():
                self.error("workflows_dir", f"not a directory: {folder}")
            else:
                for file in sorted(folder.glob("*.toml")):
                    if file.stem in tables:
                        self.error(f"workflows.{file.stem}", f"defined twice: in the config and in {file}")
                        continue
                    try:
                        tables[file.stem] = self.substitute(tomllib.loads(file.read_text()), f"workflows.{file.stem}")
                        files[file.stem] = file
                    except (OSError, tomllib.TOMLDecodeError) as exc:
                        self.error(f"workflows.{file.stem}", f"cannot load {file}: {exc}")
        workflows: dict[str, Workflow] = {}
        claimed: dict[tuple[str, str], str] = {}
        for key, table in tables.items():
            path = f"workflows.{key}"
            self.reading = files.get(key, self.path)
            workflow = load_workflow_table(self, key, table, path, server)
            if workflow is not None and self.claim_routes(workflow, claimed):
                workflows[key] = workflow
        # a failure workflow of the file's is the file's: `check` and a reload see it, the store's may be gone
        self.errors.extend(dangling_on_failure(workflows.values(), tables.keys()))
        return workflows

    def claim_routes(self, workflow: Workflow, claimed: dict[tuple[str, str], str]) -> bool:
        """Whether none of the workflow's method and path pairs is another's already."""
        shape = re.sub(r"\{[^/]*\}", "{}", workflow.path)  # /p/{a} and /p/{b} are one route
        taken = [(method, claimed[shape, method]) for method in workflow.methods
                 if claimed.get((shape, method), workflow.key) != workflow.key]
        for method, other in taken:
            self.error(f"workflows.{workflow.key}.path",
                       f"{method} {workflow.path} is already claimed by workflows.{other}")
        if not taken:
            claimed.update(((shape, method), workflow.key) for method in workflow.methods)
        return not taken


def with_stored(config: Config, stored: Mapping[str, dict],
                environ: Mapping[str, str] | None = None) -> tuple[Config, dict[str, list[ConfigError]]]:
    """`config` with the file's workflows and those stored through the admin API (`stored`:
    key -> the workflow's table, as JSON), and the stored ones refused, with their errors.

    A stored workflow is loaded like a `[workflows.<key>]` table.  One that no longer loads
    (the file took its path, or dropped a channel it names) is left out alone: it never stops a
    start or a reload.  The file's workflow of the same key wins (`shadowed` names it)."""
    loader = _Loader(Path(config.source), os.environ if environ is None else environ)
    loader.metrics_path = config.metrics_path
    loader.known = Known(channels=config.channels, collections=config.collections, env=config.env)
    loader.file_roots = stored_file_roots(config, loader.environ)
    workflows = {key: w for key, w in config.workflows.items() if w.origin == "file"}
    claimed: dict[tuple[str, str], str] = {}
    for workflow in workflows.values():
        loader.claim_routes(workflow, claimed)
    refused: dict[str, list[ConfigError]] = {}
    shadowed = []
    for key, table in sorted(stored.items()):
        if key in workflows:
            shadowed.append(key)
            continue
        path, before = f"workflows.{key}", len(loader.errors)
        # no ${VAR} here: an admin token must not read the process's environment through a workflow
        workflow = load_workflow_table(loader, key, table, path, config.server)
        if workflow is not None and loader.claim_routes(workflow, claimed):
            workflows[key] = dataclasses.replace(workflow, origin="api")
        else:
            refused[key] = loader.errors[before:]
    return dataclasses.replace(config, workflows=MappingProxyType(workflows), shadowed=tuple(shadowed)), refused


def stored_file_roots(config: Config, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The folders a stored workflow may name files in: an admin token must not read the
    server's other files (its config, /proc/self/environ) through a `secret_file`."""
    folders = (environ.get("CREDENTIALS_DIRECTORY", ""), config.secrets_dir)
    return tuple(Path(folder).resolve() for folder in folders if folder)


def load_workflow_table(loader: "_Loader", key: str, table: Any, path: str, server: ServerConfig) -> Workflow | None:
    if not isinstance(table, dict):
        loader.error(path, "must be a table")
        return None
    return load_workflow(loader, key, table, path, server)


def demo_token_error(config: Config, environ: Mapping[str, str]) -> ConfigError | None:
    """Why `serve` and `check` refuse `config`'s admin token, or None."""
    if config.admin_token not in DEMO_ADMIN_TOKENS or environ.get("FASTWEBHOOK_DEMO") == "1":
        return None
    return ConfigError("admin.token", "is the demo token of the repo's config.toml, known to anyone: set "
                       "FASTWEBHOOK_ADMIN_TOKEN (or [admin] token) to a secret of your own, e.g. "
                       "`openssl rand -hex 32`; FASTWEBHOOK_DEMO=1 allows it for a demo, as `make run` does")


def display_url(url: str) -> str:
    """A storage URL fit for logs: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_listen(entry: Any) -> tuple[str, int]:
    """"host:port" or "[v6]:port" into (host, port)."""
    if not isinstance(entry, str) or ":" not in entry:
        raise ValueError(f"not host:port: {entry!r}")
    host, _, port = entry.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a valid port in {entry!r}")
    return host or "0.0.0.0", int(port)


def _join(path: str, key: str) -> str:
    if not path:
        return key
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'{path}."{key}"'


def _kind_name(kind: type | tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
