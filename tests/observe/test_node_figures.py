"""Per-node figures (SPEC section 10, issue 20 item 4): `node_duration_seconds{workflow,node}`,
`node_failures_total{workflow,node}` in /metrics, and each node's runs, failures and p50/p99 in
`GET /api/admin/stats`, from a real server running real V8 scripts."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from burst_support import wait_until
from client_support import admin, metric, post_json, request, wait_for_execution

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
[admin]
token = "test-token"

[workflows.orders]
[[workflows.orders.nodes]]
key = "checked"
type = "condition"
expression = "$context.data.n > 0"
  [[workflows.orders.nodes.then]]
  key = "priced"
  type = "script"
  code = "if ($context.data.n > 2) throw new Error('too many'); return $context.data.n * 10;"
"""


def test_each_node_has_its_duration_and_failures_in_metrics_and_stats(serve):
    server = serve(CONFIG)
    ids = [post_json(server, "/api/webhooks/orders", {"n": n}).json()["execution_id"] for n in (1, 2, 3, 0)]
    records = [wait_for_execution(server, execution) for execution in ids]
    statuses = [record["status"] for record in records]
    assert statuses == ["resolved", "resolved", "failed", "resolved"]

    runs = 'fastwebhook_node_duration_seconds_count{node="checked",workflow="orders"} 4.0'

    def counted():
        scraped = request(server, "GET", "/metrics")
        return scraped if runs in scraped.body.decode() else None
    answer = wait_until(counted, timeout=5, step=0.02)
    assert answer is not None, "the node runs were never counted"
    assert metric(server, "fastwebhook_node_duration_seconds_count", workflow="orders", node="priced") == 3
    assert metric(server, "fastwebhook_node_failures_total", workflow="orders", node="priced") == 1
    assert metric(server, "fastwebhook_node_failures_total", workflow="orders", node="checked") == 0

    nodes = admin(server, "/stats").json()["workflows"]["orders"]["nodes"]
    assert {key: (figures["count"], figures["failures"]) for key, figures in nodes.items()} == \
        {"checked": (4, 0), "priced": (3, 1)}
    for figures in nodes.values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run([promtool, "check", "metrics"], input=answer.body, capture_output=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout == b"" and checked.stderr == b"", checked.stdout + checked.stderr
