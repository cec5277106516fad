"""`fastwebhook replay --workflow K --status failed --since 1h [--until T] [--limit N] [--dry-run]`:
the admin API's bulk replay, through a running server when one answers (its queue counts the
replays), else straight into the store, where the next server's claim finds them."""

from __future__ import annotations

import http.client
import sys
import time
from datetime import datetime, timezone

import orjson

from ..admin.records import BadQuery
from ..admin.replays import PATH, KeyInUse, bulk_replay, replay_filter
from ..config.model import Config
from ..config.units import parse_duration
from ..core.errors import ConfigError, FastwebhookError
from ..store import Store


def add_arguments(replay) -> None:
    """The bulk form's options on the `replay` command (its ID is then left out)."""
    replay.add_argument("--workflow", help="bulk: replay this workflow's executions")
    replay.add_argument("--status", action="append",
                        help="bulk: executions ending so (repeat or comma-separate; default failed)")
    replay.add_argument("--since", help="bulk: made since this RFC 3339 time, or this long ago (1h, 30m, 2d)")
    replay.add_argument("--until", help="bulk: made before this RFC 3339 time, or this long ago")
    replay.add_argument("--limit", type=int, help="bulk: at most this many, oldest first (up to 10000)")
    replay.add_argument("--dry-run", action="store_true", help="bulk: list what would be replayed, replay nothing")
    replay.add_argument("--idempotency-key", help="bulk: the same key again replays nothing more")


def is_bulk(args) -> bool:
    bulk = any(getattr(args, name) for name in ("workflow", "status", "since", "until", "limit", "dry_run",
                                                  "idempotency_key"))
    if bulk and args.id is not None:
        raise BadQuery("give an execution ID, or the bulk options (--workflow, --status, ...), not both")
    return args.id is None


def request_body(args, now: float) -> dict:
    body: dict = {}
    if args.workflow:
        body["workflow"] = args.workflow
    if args.status:
        body["status"] = [s.strip() for given in args.status for s in given.split(",") if s.strip()]
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            body[name] = _rfc3339(value, now, f"--{name}")
    if args.limit is not None:
        body["limit"] = args.limit
    if args.dry_run:
        body["dry_run"] = True
    return body


def _rfc3339(value: str, now: float, option: str) -> str:
    """A duration ("1h") is that long before now; anything else is passed on as a time."""
    try:
        ago = parse_duration(value, option)
    except ConfigError:
        return value
    return datetime.fromtimestamp(now - ago, timezone.utc).isoformat().replace("+00:00", "Z")


async def run(args, config: Config, store: Store) -> int:
    body = request_body(args, time.time())
    try:
        answer = _through_server(config, body, args.idempotency_key)
        if answer is False:
            answer = await bulk_replay(store, config, replay_filter(body), args.idempotency_key)
    except BadQuery as exc:
        print(f"fastwebhook: {exc}", file=sys.stderr)
        return 2
    except KeyInUse as exc:
        print(f"fastwebhook: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        verb = "would replay" if answer.get("dry_run") else "replayed"
        print(f"{verb} {len(answer['items'])} of {answer['matched']} matching execution(s)")
        for item in answer["items"]:
            print(f"  {item['replay_of']} -> {item['id'] or '(dry run)'}")
        for item in answer["not_replayed"]:
            print(f"  {item['replay_of']} not replayed: {item['reason']}")
    return 1 if answer["not_replayed"] and not answer.get("dry_run") else 0


def _through_server(config: Config, body: dict, key: str | None):
    """The running server's answer, or False when none answers at the configured address."""
    if not config.admin_token or config.server.tls_enabled or not config.server.listen:
        return False
    host, port = config.server.listen[0]
    if not port:
        return False
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    headers = {"Authorization": f"Bearer {config.admin_token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    connection = http.client.HTTPConnection(host, port, timeout=max(30.0, config.queue.hold * 4))
    try:
        connection.request("POST", PATH, body=orjson.dumps(body), headers=headers)
        response = connection.getresponse()
        answer = response.read()
    except OSError:
        return False
    finally:
        connection.close()
    if response.status in (400, 409):
        message = orjson.loads(answer).get("error", "refused")
        raise BadQuery(message) if response.status == 400 else KeyInUse(message)
    if response.status != 202:
        raise FastwebhookError(f"the server at {host}:{port} refused the replay: {response.status} {answer[:300]!r}")
    return orjson.loads(answer)
