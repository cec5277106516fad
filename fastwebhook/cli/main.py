"""`fastwebhook`: serve, check, read what happened (the admin API's code paths), send a test."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import sys
from typing import Any
from urllib.parse import quote

import orjson

from ..admin import api as admin, finding
from . import bulk_replay, send
from ..config.model import Config
from ..config.loader import demo_token_error, display_url, find_config, load_config, with_stored
from ..core.errors import ConfigErrors, FastwebhookError, StoreError
from ..store import open_store, reach_store


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "send":  # a client: it needs no config, and its receiver may be elsewhere
        return send.send(args)
    return _with_config(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastwebhook", description="A fast, durable webhook receiver.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("-c", "--config", help="config file (default: $FASTWEBHOOK_CONFIG, ./config.toml, /etc/fastwebhook/config.toml)")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    command("serve", "run the server in the foreground")
    command("check", "validate the config and every workflow")
    command("workflows", "list workflows")
    executions = command("executions", "list executions, newest first")
    executions.add_argument("--workflow")
    executions.add_argument("--status")
    executions.add_argument("--limit", default=20)
    executions.add_argument("--cursor")
    executions.add_argument("--dedup-key", help="only the execution(s) of this dedup key")
    executions.add_argument("--request-id", help="only the execution of this request (the X-Request-Id its sender saw)")
    executions.add_argument("--data", action="append", metavar="PATH=VALUE",
                            help="only executions whose body has this field, e.g. order.id=42 (repeatable)")
    execution = command("execution", "show one execution")
    execution.add_argument("id")
    replay = command("replay", "run an execution's stored request again as a new execution, or (without "
                               "ID) every one --workflow, --status, --since and --until match")
    replay.add_argument("id", nargs="?")
    bulk_replay.add_arguments(replay)
    records = command("records", "list the records of a collection, newest first")
    records.add_argument("collection")
    records.add_argument("--filter", help='JSON, e.g. \'{"score": {"gte": 5}}\'')
    records.add_argument("--limit", default=20)
    records.add_argument("--cursor")
    requests = command("requests", "list the request log, newest first")
    requests.add_argument("--limit", default=20)
    requests.add_argument("--cursor")
    send.add_arguments(commands.add_parser(
        "send", help="send a test webhook signed the way a provider signs it",
        description="Send a test webhook signed the way scheme S's provider signs it; print the "
                    "response. Exit 0 on 2xx, 1 otherwise, 2 on usage errors."))
    return parser


def _with_config(args) -> int:
    path = find_config(args.config)
    try:
        config = load_config(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"{path}: {error}", file=sys.stderr)
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    # only what serves (or checks before serving): the CLI's reads never send the token
    refused = demo_token_error(config, os.environ) if args.command in ("serve", "check") else None
    if refused is not None:
        print(f"{path}: {refused}", file=sys.stderr)
        return 1
    try:
        if args.command == "serve":
            return _serve(config)
        if args.command == "check":
            asyncio.run(reach_store(config.storage))   # a database server that cannot be reached is an error
            broken = asyncio.run(_script_errors(config))
            for where, message in broken.items():
                print(f"{path}: {where}: {message}", file=sys.stderr)
            if broken:
                print(f"{path}: {len(broken)} error(s)", file=sys.stderr)
                return 1
            print(f"{path}: ok: {len(config.workflows)} workflow(s), storage {display_url(config.storage.url)}")
            return 0
        if args.command == "workflows":
            return asyncio.run(_workflows(args, config))
        return asyncio.run(_read(args, config))
    except FastwebhookError as exc:
        print(f"fastwebhook: {exc}", file=sys.stderr)
        return 1


async def _script_errors(config: Config) -> dict[str, str]:
    """JavaScript that does not compile (script code, condition expressions), by TOML path.
    Only here: the server must not start V8 before it forks its workers."""
    from ..workflow.scripts import Script  # noqa: PLC0415 - V8 only for those who check
    from ..workflow.v8 import syntax_errors  # noqa: PLC0415

    bodies: dict[str, tuple[str, bool]] = {}

    def walk(nodes) -> None:
        for node in nodes:
            script = getattr(node.prepared, "script", None)   # a script node's, a condition's expression
            if isinstance(script, Script):
                own_lines = script.body == script.source
                bodies[f"{node.path}.{'code' if own_lines else 'expression'}"] = (script.body, own_lines)
            walk(node.then)
            walk(node.otherwise)

    for workflow in config.workflows.values():
        walk(workflow.nodes)
    return await syntax_errors(bodies) if bodies else {}


def _serve(config: Config) -> int:
    from ..observe.logs import setup_logging  # noqa: PLC0415 - only the server logs
    from ..process.supervisor import run  # noqa: PLC0415

    setup_logging(config.log_level, config.log_format)
    return run(config)


async def _read(args, config: Config) -> int:
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
        if args.command == "replay" and bulk_replay.is_bulk(args):
            return await bulk_replay.run(args, config, store)
        if args.command == "replay":
            answer = _replay_through_server(config, args.id)
            if answer is False:   # no server to ask: into the store, where the next one finds it
                answer = await admin.replay(store, config, args.id)
            if answer is None:
                print(f"fastwebhook: no execution {args.id}", file=sys.stderr)
                return 1
            if args.json:
                print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
            else:
                print(f"replaying {args.id} as {answer['execution_id']} (queued)")
            return 0
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
            print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
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
    a warning, when the store cannot be read (another user's state directory, say)."""
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


def _replay_through_server(config: Config, id_text: str):
    """A running server takes the replay through its admin API (the same code path), so its
    intake counts it like any other; False when none answers there."""
    if not config.admin_token or config.server.tls_enabled or not config.server.listen:
        return False
    host, port = config.server.listen[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("POST", f"/api/admin/executions/{quote(id_text, safe='')}/replay",
                           headers={"Authorization": f"Bearer {config.admin_token}", "Content-Length": "0"})
        response = connection.getresponse()
        body = response.read()
    except OSError:
        return False
    finally:
        connection.close()
    if response.status == 404:
        return None
    if response.status != 202:
        raise FastwebhookError(f"the server at {host}:{port} refused the replay: {response.status} {body[:200]!r}")
    return orjson.loads(body)


def _show(args, data: Any, columns: tuple[str, ...]) -> int:
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
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
