"""`fastwebhook replay ID`, and `fastwebhook replay --workflow K --status failed --since 1h
[--until T] [--limit N] [--dry-run]`: one execution, or every one a filter matches, run again.

A running server takes them through its admin API (its queue counts them).  Only when nothing
listens at its address (the connection is refused) does the CLI append them to the store itself,
where the next server's claim finds them.  Once the request went out, a lost answer is never
followed by a replay from here: the server may have made it, and a second one would run the
requests twice."""

from __future__ import annotations

import http.client
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import quote

import orjson

from ..admin.api import STATUSES
from ..admin.records import BadQuery
from ..admin.replays import PATH, KeyInUse, bulk_replay, replay, replay_filter
from ..config.model import Config
from ..core.units import parse_duration
from ..core.errors import ConfigError, FastwebhookError
from ..store import Store
from .output import print_json

# Past the server's own bound on an answer (Config.answer_timeout): its 503 comes first, so the
# CLI never gives up on an answer still coming.
ANSWER_MARGIN = 10.0
FILTERS = ("workflow", "since", "status")   # a bulk replay names at least one of them
NO_SERVER = object()   # nothing listens at the server's address: the CLI replays into the store


class AnswerLost(FastwebhookError):
    """The request went out and no answer came back: the server may have replayed."""


class NotFound(FastwebhookError):
    """The server answered 404."""


def add_arguments(replay_command) -> None:
    """The bulk form's options on the `replay` command (its ID is then left out)."""
    replay_command.add_argument("--workflow", help="bulk: replay this workflow's executions")
    replay_command.add_argument("--status", action="append", metavar="STATUS",
                                help=f"bulk: executions ending so: {', '.join(STATUSES)} "
                                     "(repeat or comma-separate; default failed)")
    replay_command.add_argument("--since", help="bulk: made since this RFC 3339 time, or this long ago (1h, 30m, 2d)")
    replay_command.add_argument("--until", help="bulk: made before this RFC 3339 time, or this long ago")
    replay_command.add_argument("--limit", type=int, help="bulk: at most this many, oldest first (up to 10000)")
    replay_command.add_argument("--dry-run", action="store_true",
                                help="bulk: list what would be replayed, replay nothing")
    replay_command.add_argument("--idempotency-key",
                                help="bulk: the same key again replays nothing more (default: one made up)")
    replay_command.set_defaults(usage_error=replay_command.error)


def check_arguments(args) -> None:
    """An ID, or a filter: the usage line and exit 2 otherwise (with neither, a bulk replay
    would run every failed execution of every workflow again)."""
    bulk = any(getattr(args, name) for name in ("workflow", "status", "since", "until", "limit", "dry_run",
                                                  "idempotency_key"))
    if bulk and args.id is not None:
        args.usage_error("give an execution ID, or the bulk options (--workflow, --status, ...), not both")
    if args.id is None and not any(getattr(args, name) for name in FILTERS):
        args.usage_error("give an execution ID, or at least one of --workflow, --since, --status")


async def run(args, config: Config, store: Store) -> int:
    return await (_replay_one(args, config, store) if args.id is not None else _replay_bulk(args, config, store))


async def _replay_one(args, config: Config, store: Store) -> int:
    path = f"/api/admin/executions/{quote(args.id, safe='')}/replay"
    lost = f"see whether `fastwebhook executions --json` lists a replay_of {args.id} before replaying it again"
    try:
        answer = _through_server(config, path, b"", {}, lost)
    except NotFound:
        answer = None
    else:
        if answer is NO_SERVER:   # into the store, where the next server finds it
            answer = await replay(store, config, args.id)
    if answer is None:
        print(f"fastwebhook: no execution {args.id}", file=sys.stderr)
        return 1
    _report(args, answer, [f"replaying {args.id} as {answer['execution_id']} (queued)"])
    return 0


async def _replay_bulk(args, config: Config, store: Store) -> int:
    body = request_body(args, time.time())
    headers = {"Content-Type": "application/json"}
    lost = f"see `fastwebhook executions{' --workflow ' + args.workflow if args.workflow else ''}`"
    if not args.dry_run:
        # Made up when not given: a request that went out is then never replayed twice, since
        # the same key again answers what the first did (the error says which key to retry with).
        key = headers["Idempotency-Key"] = args.idempotency_key or f"cli-{uuid.uuid4()}"
        lost += f"; to retry without replaying anything twice, add --idempotency-key {key}"
    try:
        answer = _through_server(config, PATH, orjson.dumps(body), headers, lost)
        if answer is NO_SERVER:   # appended by the CLI itself: only a key someone may give again counts
            answer = await bulk_replay(store, config, replay_filter(body), args.idempotency_key)
    except KeyInUse as exc:
        print(f"fastwebhook: {exc}", file=sys.stderr)
        return 1
    verb = "would replay" if answer.get("dry_run") else "replayed"
    _report(args, answer, [f"{verb} {len(answer['items'])} of {answer['matched']} matching execution(s)",
                           *(f"  {item['replay_of']} -> {item['id'] or '(dry run)'}" for item in answer["items"]),
                           *(f"  {item['replay_of']} not replayed: {item['reason']}"
                             for item in answer["not_replayed"])])
    return 1 if answer["not_replayed"] and not answer.get("dry_run") else 0


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


def _report(args, answer: dict, lines: Iterable[str]) -> None:
    if args.json:
        print_json(answer)
    else:
        for line in lines:
            print(line)


def _through_server(config: Config, path: str, body: bytes, headers: dict, lost: str) -> Any:
    """The running server's 202 answer to POST `path`, or NO_SERVER when there is none to ask
    (no admin API over plain HTTP configured, or the connection refused).  Raises BadQuery
    (400), KeyInUse (409), NotFound (404), AnswerLost once the request went out and no answer
    came (`lost` says what to do then), FastwebhookError for any other answer."""
    address = _address(config)
    if address is None:
        return NO_SERVER
    host, port = address
    where = f"the server at {host}:{port}"
    connection = http.client.HTTPConnection(host, port, timeout=config.answer_timeout() + ANSWER_MARGIN)
    try:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return NO_SERVER
        except OSError as exc:
            raise FastwebhookError(f"{where} could not be reached ({exc}): nothing was replayed") from None
        try:
            connection.request("POST", path, body=body, headers={
                "Authorization": f"Bearer {config.admin_token}", "Content-Length": str(len(body)), **headers})
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AnswerLost(f"{where} got the replay but gave no answer ({str(exc) or type(exc).__name__}): it may "
                             f"have replayed; {lost}") from None
    finally:
        connection.close()
    status = response.status
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = {"error": raw[:300].decode("utf-8", "replace")}
    if status == 202:
        return answer
    error = answer.get("error", "") if isinstance(answer, dict) else ""
    if status == 400:
        raise BadQuery(error)
    if status == 409:
        raise KeyInUse(error)
    if status == 404:
        raise NotFound(f"{where} answered 404: {error}")
    if status >= 500:
        raise AnswerLost(f"{where} answered {status} {error}: it may have replayed; {lost}")
    raise FastwebhookError(f"{where} refused the replay: {status} {error}")


def _address(config: Config) -> tuple[str, int] | None:
    """Where this config's server listens, as a client reaches it; None when the CLI cannot ask
    it (no admin token, TLS, no fixed port)."""
    if not config.admin_token or config.server.tls_enabled or not config.server.listen:
        return None
    host, port = config.server.listen[0]
    if not port:
        return None
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port
