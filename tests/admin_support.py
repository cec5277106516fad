"""The admin API as its tests call it: one request per connection, answered as (status, headers,
parsed JSON body), with the token every test server's [admin] section holds."""

from __future__ import annotations

import http.client
import json

TOKEN = {"Authorization": "Bearer test-token"}


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


def admin(server, path: str, headers: dict | None = TOKEN):
    return call(server, "GET", path, headers=headers)


def send(server, path: str, data: dict | None = None, headers: dict | None = None):
    return call(server, "POST", path, json.dumps(data or {}).encode(),
                {"Content-Type": "application/json", **(headers or {})})
