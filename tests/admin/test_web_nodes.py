"""The admin page's workflow view and failure links (issue 20 item 5), in headless Chromium as in
test_web.py, against a real server with real executions: a workflow's nodes as the tree they run
in (a condition's `then` and `else`), each with its runs, failure rate and p50/p99 from
GET /api/admin/stats; a failure workflow's execution links to the failed execution it reports.
No console error anywhere."""

from __future__ import annotations

import re

import web_support
from admin_support import admin, send
from wait_support import wait_for
from web_support import console_errors, shoot, sign_in, text, until

chromium, browser = web_support.chromium, web_support.browser   # the fixtures

WORKFLOWS = """
[workflows.orders]
title = "Price an order"
path = "/orders"
on_failure = "alerts"
[[workflows.orders.nodes]]
key = "checked"
type = "condition"
expression = "$context.data.n > 0"
  [[workflows.orders.nodes.then]]
  key = "priced"
  type = "script"
  code = "if ($context.data.n > 2) throw new Error('too many'); return $context.data.n * 10;"
  [[workflows.orders.nodes.else]]
  key = "refused"
  type = "end"
  status = "resolved"

[workflows.alerts]
path = "/alerts"
[[workflows.alerts.nodes]]
key = "note"
type = "script"
code = "return $context.data.execution_id;"
"""


def _settled(running, workflow: str, count: int) -> list[dict] | None:
    items = admin(running, f"/api/admin/executions?workflow={workflow}")[2]["items"]
    return items if len(items) == count and all(x["status"] not in ("queued", "started") for x in items) else None


def _server(serve):
    running = serve(WORKFLOWS)
    for n in (1, 2, 3, 0):
        assert send(running, "/orders", {"n": n})[0] == 202
    orders = wait_for(lambda: _settled(running, "orders", 4), failure="the four orders never finished")
    alerts = wait_for(lambda: _settled(running, "alerts", 1), failure="the alert never finished")
    return running, orders, alerts


def _signed_in(driver, running) -> None:
    sign_in(driver, running)
    until(driver, lambda d: "orders" in text(d) and "alerts" in text(d))
    assert console_errors(driver) == []


def test_a_workflow_shows_its_nodes_as_the_tree_they_run_in_with_their_figures(serve, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    running, _, _ = _server(serve)
    _signed_in(browser, running)
    browser.find_element(By.ID, "nodes-orders").click()
    until(browser, lambda d: "Workflow orders" in text(d) and "runs" in text(d))
    shoot(browser, "workflow-nodes")

    def node(path: str):
        return browser.find_element(By.CSS_SELECTOR, path + " > .node-line").text

    checked = node("#view ol.nodes > li[data-node=checked]")
    priced = node("li[data-node=checked] > .branch[data-branch=then] > ol > li[data-node=priced]")
    refused = node("li[data-node=checked] > .branch[data-branch=else] > ol > li[data-node=refused]")
    assert checked.startswith("checked (condition) 4 runs · 0.0% failed · p50 ≤ ")
    assert priced.startswith("priced (script) 3 runs · 33.3% failed · p50 ≤ ")
    assert refused.startswith("refused (end) 1 run · 0.0% failed")
    for line in (checked, priced, refused):
        p50, p99 = (float(x) for x in re.search(r"p50 ≤ ([\d.e-]+) ms · p99 ≤ ([\d.e-]+) ms", line).groups())
        assert 0 < p50 <= p99
    # the branches are the condition's own, nothing else hangs from the other nodes
    assert len(browser.find_elements(By.CSS_SELECTOR, "#view .branch")) == 2
    assert "Price an order" in text(browser)
    # its failure workflow is a link to that workflow's view
    browser.find_element(By.ID, "on-failure").click()
    until(browser, lambda d: "Workflow alerts" in text(d) and "note (script) 1 run ·" in text(d))
    assert console_errors(browser) == []


def test_a_failure_workflows_execution_links_to_the_failed_execution_it_reports(serve, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    running, orders, alerts = _server(serve)
    failed = [x["id"] for x in orders if x["status"] == "failed"]
    assert len(failed) == 1 and alerts[0]["failure_of"] == failed[0]
    _signed_in(browser, running)
    browser.get(f"{running.url}/admin/#/execution/{alerts[0]['id']}")
    link = until(browser, lambda d: d.find_element(By.ID, "failure-of") if d.find_elements(By.ID, "failure-of") else None)
    assert link.text == failed[0] and "Reports the failed execution" in text(browser)
    shoot(browser, "failure-of")
    link.click()
    until(browser, lambda d: failed[0] in text(d, "#view h1") and "too many" in text(d))
    assert browser.find_elements(By.ID, "failure-of") == []      # an ordinary execution reports nothing
    assert not browser.execute_script(   # and says nothing of it, not even "null"
        "return [...document.getElementById('view').childNodes].some((n) => n.nodeType === 3)")
    assert console_errors(browser) == []
