"""`fastwebhook check`: the config loaded and every script compiled in one run.

Every error is named by its TOML path, in the order the loader met them, a script's among the
others (a config with many errors still shows its broken script), and a script's line is the
line of the file it is written in: the config, or its workflows_dir file.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from pathlib import Path
from typing import Mapping

from ..config.loader import demo_token_error, display_url, load_config
from ..config.model import StorageConfig
from ..config.positions import StringValue, string_values
from ..config.workflows import ScriptSite
from ..core.errors import ConfigError, ConfigErrors, StoreError
from ..store import reach_store, sqlite_file


def check(path: str, environ: Mapping[str, str]) -> int:
    sites: list[ScriptSite] = []
    try:
        config = load_config(path, scripts=sites)
        errors: list[ConfigError] = []
    except ConfigErrors as exc:
        config, errors = None, list(exc.errors)
    for site, error in reversed(asyncio.run(script_errors(sites, Path(path)))):
        errors.insert(site.errors_before, error)   # sites are in load order: so are these
    if config is not None and not errors:
        refused = demo_token_error(config, environ)
        errors += [refused] if refused is not None else []
    if errors:
        for error in errors:
            print(f"{path}: {error}", file=sys.stderr)
        if len(errors) > 1:
            print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    moved = moved_database(config.storage, Path(path))
    if moved is not None:
        print(f"{path}: storage.url: {moved}", file=sys.stderr)
        return 1
    try:
        asyncio.run(reach_store(config.storage))   # a database server that cannot be reached is an error
    except StoreError as exc:
        print(f"{path}: storage.url: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: ok: {len(config.workflows)} workflow(s), storage {display_url(config.storage.url)}")
    return 0


def moved_database(storage: StorageConfig, config_file: Path) -> str | None:
    """Earlier versions took a relative SQLite path as relative to the working directory; it is
    now relative to the config file's folder.  An upgrade whose database is only where the old
    rule put it would start on an empty one (and leave what it had acknowledged unrun): named
    here, both paths, for `check` and `serve` to refuse."""
    file = sqlite_file(storage)
    if file is None or os.path.exists(file):
        return None
    written = _written_url(config_file)
    if written is None or "${" in written or not written.startswith("sqlite:///"):
        return None   # (a substituted url: whoever sets the variable chose the path)
    relative = written[len("sqlite:///"):]
    if not relative or relative == ":memory:" or os.path.isabs(relative):
        return None
    legacy = os.path.abspath(relative)
    if legacy == file or not os.path.exists(legacy):
        return None
    return (f"the database is {file} (a relative path is relative to the config file's folder), which "
            f"does not exist, but {legacy} (relative to the working directory) does: move it there, "
            "or give storage.url as an absolute path")


def _written_url(config_file: Path) -> str | None:
    """storage.url as the file writes it (its default when it writes none)."""
    try:
        raw = tomllib.loads(config_file.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    storage = raw.get("storage", {})
    url = storage.get("url", StorageConfig.url) if isinstance(storage, dict) else None
    return url if isinstance(url, str) else None


async def script_errors(sites: list[ScriptSite], config_file: Path) -> list[tuple[ScriptSite, ConfigError]]:
    """The scripts that do not compile, in load order, each error at its TOML path.
    Only here: the server must not start V8 before it forks its workers."""
    if not sites:
        return []
    from ..workflow.v8 import syntax_errors  # noqa: PLC0415 - V8 only for those who check

    broken = await syntax_errors({site.path: site.script.body for site in sites})
    places = _places(sites)
    found = []
    for site in sites:
        if site.path not in broken:
            continue
        message, line = broken[site.path]
        found.append((site, ConfigError(site.path, f"script does not compile: {message}"
                                                   f"{_where(site, places.get(site.path), line, config_file)}")))
    return found


def _where(site: ScriptSite, place: StringValue | None, line: int | None, config_file: Path) -> str:
    if place is None:   # not found in the file (an inline table, ${VAR} in the code)
        own_lines = site.script.body == site.script.source
        return f" (line {line} of the code)" if line is not None and own_lines else ""
    at = place.file_line(line) if line is not None else place.first
    return f" (line {at})" if site.file == config_file else f" (line {at} of {site.file})"


def _places(sites: list[ScriptSite]) -> dict[str, StringValue]:
    """Each site's string in its file: the k-th site of a file with a given field and text is
    that file's k-th such string (both are in file order)."""
    places: dict[str, StringValue] = {}
    written: dict[tuple[Path, str], list[StringValue]] = {}
    for site in sites:
        field = site.path.rpartition(".")[2]
        if (site.file, field) not in written:
            try:
                written[site.file, field] = string_values(site.file.read_text(), field)
            except OSError:
                written[site.file, field] = []
        candidates = written[site.file, field]
        match = next((value for value in candidates if value.value == site.script.source), None)
        if match is not None:
            candidates.remove(match)
            places[site.path] = match
    return places
