"""`fastwebhook`: serve, check, read what happened (the admin API's code paths), send a test."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from ..admin import api as admin, finding
from . import replays, send
from .check import check, moved_database
from .output import print_json
from ..config.model import Config
from ..config.loader import demo_token_error, find_config, load_config, with_stored
from ..core.errors import ConfigErrors, FastwebhookError, StoreError
from ..store import open_store, sqlite_file


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "replay":
        replays.check_arguments(args)   # before any config is read: a usage error is exit 2
    if args.command == "send":  # a client: it needs no config, and its receiver may be elsewhere
        return send.send(args)
    return _with_config(args)


# Every command's (argparse's own exit code for a bad command line is 2, too):
EXIT_CODES = """exit codes (every command):
  0  done
  1  not found or refused: no such execution, collection or store file; a config with errors;
     a server that cannot start (a busy port, an unreadable certificate); send: a non-2xx answer;
     replay: a server that got the replay but gave no answer (it may have replayed)
  2  usage: an unknown command or option, a bad value (--limit, --status, --cursor, --filter),
     replay with neither an ID nor --workflow, --since or --status"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastwebhook", description="A fast, durable webhook receiver.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastwebhook {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, json: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                                  epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("-c", "--config", help="config file (default: $FASTWEBHOOK_CONFIG, ./config.toml, /etc/fastwebhook/config.toml)")
        if json:
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    def paging(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--limit", default=20, help=f"how many {what} to print, 1 to 1000 (default 20)")
        sub.add_argument("--cursor", help="where the page starts: the value a previous page printed as `(more: --cursor ...)`")

    command("serve", "run the server in the foreground", json=False)
    command("check", "validate the config and every workflow, scripts compiled; every error by TOML path", json=False)
    command("workflows", "list workflows: the config file's and those stored through the admin API")
    executions = command("executions", "list executions, newest first")
    executions.add_argument("--workflow", metavar="KEY", help="only this workflow's executions")
    executions.add_argument("--status", metavar="STATUS", help=f"only those in this status: {', '.join(admin.STATUSES)}")
    executions.add_argument("--dedup-key", help="only the execution(s) of this dedup key")
    executions.add_argument("--request-id", help="only the execution of this request (the X-Request-Id its sender saw)")
    executions.add_argument("--data", action="append", metavar="PATH=VALUE",
                            help="only executions whose body has this field, e.g. order.id=42 (repeatable)")
    paging(executions, "executions")
    execution = command("execution", "show one execution: its request, status and jobs")
    execution.add_argument("id", help="the execution's id (`executions` lists them)")
    replay = command("replay", "run an execution's stored request again as a new execution, or (without "
                               "ID) every one --workflow, --status, --since and --until match")
    replay.add_argument("id", nargs="?", help="the id of the execution to run again")
    replays.add_arguments(replay)
    records = command("records", "list the records of a collection, newest first")
    records.add_argument("collection", help="a collection named in the config ([collections.NAME])")
    records.add_argument("--filter", help='JSON, e.g. \'{"score": {"gte": 5}}\'')
    paging(records, "records")
    requests = command("requests", "list the request log, newest first (refused requests with their reason)")
    paging(requests, "requests")
    send.add_arguments(commands.add_parser(
        "send", help="send a test webhook signed the way a provider signs it",
        description="Send a test webhook signed the way scheme S's provider signs it; print the "
                    "response.", epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _version() -> str:
    try:
        return metadata.version("fastwebhook")
    except metadata.PackageNotFoundError:   # run from a checkout that was never installed
        return "unknown"


def _with_config(args) -> int:
    path = find_config(args.config)
    if args.command == "check":
        return check(path, os.environ)
    try:
        config = load_config(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"{path}: {error}", file=sys.stderr)
        if len(exc.errors) > 1:
            print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    # only what serves (check.py refuses it too): the CLI's reads never send the token
    refused = demo_token_error(config, os.environ) if args.command == "serve" else None
    if refused is not None:
        print(f"{path}: {refused}", file=sys.stderr)
        return 1
    try:
        if args.command == "serve":
            moved = moved_database(config.storage, Path(path))
            if moved is not None:
                print(f"{path}: storage.url: {moved}", file=sys.stderr)
                return 1
            return _serve(config)
        if args.command == "workflows":
            return asyncio.run(_workflows(args, config))
        return asyncio.run(_read(args, config))
    except FastwebhookError as exc:
        print(f"fastwebhook: {exc}", file=sys.stderr)
        return 1


def _serve(config: Config) -> int:
    from ..observe.logs import setup_logging  # noqa: PLC0415 - only the server logs
    from ..process.supervisor import run  # noqa: PLC0415

    setup_logging(config.log_level, config.log_format)
    return run(config)


def _no_store(config: Config) -> str | None:
    """Why there is nothing to read: the SQLite file is not there (opening it would create an
    empty one, and the tables printed would be empty).  None when there is a store to open."""
    file = sqlite_file(config.storage)
    if file is None or os.path.exists(file):
        return None
    return (f"no database at {file}: no server has run with {config.source} yet "
            "(a relative storage.url is relative to that file's folder)")


async def _read(args, config: Config) -> int:
    missing = _no_store(config)
    if missing is not None:
        print(f"fastwebhook: {missing}", file=sys.stderr)
        return 1
    store = open_store(config.storage)
    await store.open()
    try:
        config, _ = with_stored(config, await store.stored_workflows())   # as a server has them
        if args.command == "executions":
            page = await admin.list_executions(store, args.workflow, args.status, args.limit, args.cursor,
                                               finding.from_options(args.dedup_key, args.request_id, args.data))
            return _show(args, page, ("id", "workflow", "status", "created_at", "finished_at", "dedup_key"))
        if args.command == "requests":
            page = await admin.list_requests(store, args.limit, args.cursor)
            return _show(args, page, ("at", "ip", "method", "path", "workflow", "status", "reason"))
        if args.command == "replay":
            return await replays.run(args, config, store)
        if args.command == "records":
            await store.ensure_collections(config.collections.values())   # a server may not have run yet
            page = await admin.list_records(store, config, args.collection, args.filter, args.limit, args.cursor)
            if page is None:
                print(f"fastwebhook: no collection {args.collection!r} in the config", file=sys.stderr)
                return 1
            return _show(args, page, config.collections[args.collection].columns)
        record = await admin.get_execution(store, args.id)
        if record is None:
            print(f"fastwebhook: no execution {args.id}", file=sys.stderr)
            return 1
        if args.json:
            print_json(record)
        else:
            _print_execution(record)
        return 0
    except admin.BadQuery as exc:
        print(f"fastwebhook: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()


async def _workflows(args, config: Config) -> int:
    """The config's workflows and those stored through the admin API; the config's alone, and
    a warning, when there is no store yet or it cannot be read (another user's state
    directory, say)."""
    missing = _no_store(config)
    if missing is not None:
        print(f"fastwebhook: {missing}, so these are the config file's workflows only", file=sys.stderr)
    else:
        store = open_store(config.storage)
        try:
            await store.open()
            config, _ = with_stored(config, await store.stored_workflows())
        except StoreError as exc:
            print(f"fastwebhook: the store could not be read, so these are the config file's workflows only: {exc}",
                  file=sys.stderr)
        finally:
            await store.close()
    return _show(args, {"items": admin.list_workflows(config), "next": None},
                 ("key", "path", "methods", "mode", "enabled", "verify", "origin"))


def _show(args, data: Any, columns: tuple[str, ...]) -> int:
    if args.json:
        print_json(data)
        return 0
    rows = data["items"] if isinstance(data, dict) else data
    table = [columns] + [tuple(_cell(row.get(c)) for c in columns) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if isinstance(data, dict) and data.get("next"):
        print(f"(more: --cursor {data['next']})")
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _print_execution(record: dict) -> None:
    request = record["request"]
    print(f"execution  {record['id']}")
    for key in ("workflow", "version", "status", "dedup_key", "created_at", "started_at", "finished_at", "error"):
        print(f"{key:<11}{_cell(record.get(key))}")
    print(f"request    {request['method']} {request['path']} from {request['ip']}")
    for name, value in request["headers"].items():
        print(f"  {name}: {value}")
    print(f"  data: {orjson.dumps(request['data']).decode()[:2000]}")
    print(f"jobs       {len(record.get('jobs', []))}")
    for job in record.get("jobs", []):
        outcome = job["error"] if job["error"] else orjson.dumps(job["result"]).decode()[:200]
        print(f"  {job['node']} ({job['type']}) {job['status']} {job['duration_ms']:.2f} ms: {outcome}")
        for line in job["logs"]:
            print(f"    log: {line}")


if __name__ == "__main__":
    sys.exit(main())
