"""A small HTTP client for the end-to-end suites: one request per connection, and the admin
API's answers read back (executions, request-log entries)."""

from __future__ import annotations

import http.client

import orjson

from wait_support import wait_for

ADMIN = {"Authorization": "Bearer test-token"}


class Answer:
    def __init__(self, response: http.client.HTTPResponse):
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.body = response.read()

    def json(self):
        return orjson.loads(self.body)


def request(running, method: str, target: str, body: bytes | None = None,
            headers: dict | list | None = None, source: str | None = None) -> Answer:
    """One request on its own connection, from `source` (a local address) when given;
    `headers` as a list of pairs may repeat a name."""
    conn = http.client.HTTPConnection(running.host, running.port, timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items() if isinstance(headers, dict) else (headers or []):
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return Answer(conn.getresponse())
    finally:
        conn.close()


def exchange(running, method: str, target: str, body: bytes = b"{}", headers: dict | None = None) -> tuple[int, bytes]:
    """`request` with a JSON content type, as (status, body)."""
    answer = request(running, method, target, body, {"Content-Type": "application/json", **(headers or {})})
    return answer.status, answer.body


def metric(running, name: str, **labels: str) -> float:
    """One series of /metrics (0 when absent)."""
    answer = request(running, "GET", "/metrics")
    assert answer.status == 200
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in answer.body.decode().splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def post_json(running, path: str, value, headers: dict | None = None, source: str | None = None) -> Answer:
    return request(running, "POST", path, orjson.dumps(value), {"Content-Type": "application/json", **(headers or {})},
                   source)


def run_to_end(running, path: str, value, headers: dict | None = None) -> dict:
    """POST `value` as JSON to an async workflow and wait for its execution record."""
    answer = post_json(running, path, value, headers)
    assert answer.status == 202, answer.body
    return wait_for_execution(running, answer.json()["execution_id"])


def jobs_by_node(record: dict) -> dict:
    return {job["node"]: job for job in record["jobs"]}


def admin(running, path: str) -> Answer:
    answer = request(running, "GET", f"/api/admin{path}", headers=ADMIN)
    assert answer.status == 200, (path, answer.status, answer.body)
    return answer


def wait_for_execution(running, execution_id: str, timeout: float = 10.0) -> dict:
    """Its record once final."""
    def final():
        record = admin(running, f"/executions/{execution_id}").json()
        return record["status"] not in ("queued", "started") and record
    return wait_for(final, timeout, failure=f"execution {execution_id} never finished")


def wait_until_started(running, execution_id: str, timeout: float = 10.0) -> None:
    """Until the execution's nodes are running (its record says "started")."""
    def started() -> bool:
        status = admin(running, f"/executions/{execution_id}").json()["status"]
        assert status in ("queued", "started"), f"execution {execution_id} is {status}"
        return status == "started"
    wait_for(started, timeout, step=0.01, failure=f"execution {execution_id} did not start")


def log_entry(running, answer: Answer, timeout: float = 5.0) -> dict:
    """The request-log entry of the request `answer` answered (by its X-Request-Id)."""
    request_id = answer.headers["x-request-id"]
    return wait_for(lambda: next((item for item in admin(running, "/requests?limit=1000").json()["items"]
                                  if item["request_id"] == request_id), None),
                    timeout, failure=f"no request log entry for {request_id}")
