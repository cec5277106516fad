"""Rows into the objects the admin API and the CLI show (SPEC section 9), one shape for all."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

import orjson

from .door.body import decode_content, parse_body

SHOW_LIMIT = 64 << 20
from .ids import from_text, to_text


execution_id = to_text
parse_execution_id = from_text


def timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_data(request: dict, body: bytes) -> Any:
    """The stored body is the bytes as received: decode and parse it as the intake did."""
    headers = request.get("headers", {})
    try:
        decoded = decode_content(body, headers.get("content-encoding"), SHOW_LIMIT)
        return parse_body(decoded, headers.get("content-type"))
    except Exception:  # noqa: BLE001 - a stored body that no longer parses is shown as it is
        return base64.b64encode(body).decode()


def execution(row: tuple, jobs: list | None) -> dict[str, Any]:
    (id_, workflow, version, status, dedup_key, created, started, finished, attempts, error,
     request, body) = row
    meta = orjson.loads(request)
    record = {
        "id": execution_id(id_), "workflow": workflow, "version": version, "status": status,
        "dedup_key": dedup_key, "created_at": timestamp(created), "started_at": timestamp(started),
        "finished_at": timestamp(finished), "attempts": attempts, "error": error,
        "request": {"method": meta.get("method"), "path": meta.get("path"),
                    "headers": meta.get("headers", {}), "query": meta.get("query", {}),
                    "params": meta.get("params", {}), "ip": meta.get("ip"),
                    "data": request_data(meta, body)},
    }
    if jobs is not None:
        record["jobs"] = [{
            "node": node, "type": kind, "status": job_status,
            "result": orjson.loads(result) if result is not None else None, "error": job_error,
            "logs": orjson.loads(logs) if logs is not None else [], "duration_ms": duration,
        } for node, kind, job_status, result, job_error, logs, duration in jobs]
    return record


def request(row: tuple) -> dict[str, Any]:
    (seq, at, ip, method, path, workflow, status, reason, body_size, duration, request_id, execution_) = row
    return {"seq": seq, "at": timestamp(at), "ip": ip, "method": method, "path": path,
            "workflow": workflow, "status": status, "reason": reason, "body_size": body_size,
            "duration_ms": duration, "request_id": request_id,
            "execution_id": execution_id(execution_) if execution_ else None}
