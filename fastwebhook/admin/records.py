"""Store rows into the objects the admin API and the CLI show (SPEC section 9), one shape for all."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from ..door.body import decode_content, parse_body
from ..door.context import headers_of, query_of
from ..core.ids import from_text, to_text
from ..store.rows import ExecutionRecord, RequestLine
from ..core.units import timestamp

SHOW_LIMIT = 64 << 20


class BadQuery(ValueError):
    """What a client asked for does not read (answered 400; the CLI exits 2)."""


execution_id = to_text
parse_execution_id = from_text


def request_data(headers: dict, body: bytes) -> Any:
    """The stored body is the bytes as received: decode and parse it as the intake did."""
    try:
        decoded = decode_content(body, headers.get("content-encoding"), SHOW_LIMIT)
        return parse_body(decoded, headers.get("content-type"))
    except Exception:  # noqa: BLE001 - a stored body that no longer parses is shown as it is
        return base64.b64encode(body).decode()


def execution(record: ExecutionRecord) -> dict[str, Any]:
    stored = record.request
    headers = headers_of(stored.headers) if stored else {}
    shown = {
        "id": execution_id(record.id), "workflow": record.workflow, "version": record.version,
        "status": record.status.value, "dedup_key": record.dedup_key,
        "created_at": timestamp(record.created_at), "started_at": timestamp(record.started_at),
        "finished_at": timestamp(record.finished_at), "attempts": record.attempts, "error": record.error,
        "request": {"method": stored.method if stored else None, "path": stored.path if stored else None,
                    "headers": headers, "query": query_of(stored.query) if stored else {},
                    "params": stored.params if stored else {}, "ip": stored.ip if stored else None,
                    "data": request_data(headers, record.body) if stored else None},
    }
    if record.duplicate_of is not None:
        shown["duplicate_of"] = execution_id(record.duplicate_of)
    if record.failure_of is not None:   # a failure workflow's execution: the failed one it reports
        shown["failure_of"] = execution_id(record.failure_of)
    if record.replay_of is not None:
        shown["replay_of"] = execution_id(record.replay_of)
    if record.jobs is not None:
        shown["jobs"] = [{
            "node": job.node, "type": job.type, "status": job.status,
            "result": orjson.loads(job.result) if job.result is not None else None, "error": job.error,
            "logs": orjson.loads(job.logs) if job.logs is not None else [], "duration_ms": job.duration_ms,
        } for job in record.jobs]
    return shown


def request(line: RequestLine) -> dict[str, Any]:
    return {"at": timestamp(line.at), "ip": line.ip, "method": line.method, "path": line.path,
            "workflow": line.workflow, "status": line.status, "reason": line.reason,
            "body_size": line.body_size, "duration_ms": line.duration_ms, "request_id": line.request_id,
            "execution_id": execution_id(line.execution) if line.execution else None}


def request_cursor(line: RequestLine) -> str:
    return f"{line.at!r}_{line.request_id}"


def parse_request_cursor(text: str) -> tuple[float, str] | None:
    at, separator, request_id = text.partition("_")
    try:
        return (float(at), request_id) if separator else None
    except ValueError:
        return None


def scan_cursor(seq: int, index: int, before: bytes | None) -> str:
    """Where a search by what executions carried goes on: a position in the intake, and the
    id the first page was bounded by (pages after it keep that bound)."""
    return f"{seq}.{index}" + (f".{before.hex()}" if before is not None else "")


def parse_scan_cursor(text: str) -> tuple[int, int, bytes | None] | None:
    parts = text.split(".")
    if len(parts) not in (2, 3) or not all(part.isascii() and part.isdigit() for part in parts[:2]):
        return None
    seq, index = int(parts[0]), int(parts[1])
    if seq >= 1 << 63 or index >= 1 << 31:
        return None
    try:
        before = bytes.fromhex(parts[2]) if len(parts) == 3 else None
    except ValueError:
        return None
    if before is not None and len(before) != 16:
        return None
    return seq, index, before
