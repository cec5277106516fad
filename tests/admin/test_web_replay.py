"""The executions page's operator tools (issue 20) in headless Chromium, against a real server:
finding an execution by its dedup key, request id or a body field; "Replay N matching" with a
confirmation that states N, which survives the list's refresh and replays those N once (not one
that failed after the count); an execution's replay_of link.  No console error."""

from __future__ import annotations

import json

import pytest

import web_support
from admin_support import admin, call
from wait_support import wait_for
from web_support import console_errors, refresh, shoot, sign_in, text, until

chromium, browser = web_support.chromium, web_support.browser   # the fixtures

WORKFLOWS = """
[workflows.flaky]
path = "/flaky"
[[workflows.flaky.nodes]]
key = "stop"
type = "end"
status = "failed"

[workflows.orders]
path = "/orders"
[workflows.orders.dedup]
key = "{{$context.headers.x-delivery}}"
[[workflows.orders.nodes]]
key = "answer"
type = "response"
"""


def send(server, path: str, body: dict, headers: dict | None = None) -> tuple[str, str]:
    status, answered, got = call(server, "POST", path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **(headers or {})})
    assert status == 202, got
    return got["execution_id"], answered["x-request-id"]


def all_final(server, count: int) -> bool:
    items = admin(server, "/api/admin/executions?limit=1000")[2]["items"]
    return len(items) == count and all(x["status"] not in ("queued", "started") for x in items)


@pytest.fixture
def server(serve):
    running = serve(WORKFLOWS)
    running.flaky = [send(running, "/flaky", {"n": n})[0] for n in range(3)]
    running.orders = [send(running, "/orders", {"order": {"id": n}}, {"X-Delivery": f"d-{n}"}) for n in (41, 42)]
    wait_for(lambda: all_final(running, 5), failure="the executions did not finish")
    return running


def signed_in(driver, server) -> None:
    sign_in(driver, server)
    until(driver, lambda d: "flaky" in text(d))
    assert console_errors(driver) == []


def rows(driver) -> list[str]:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#view tbody tr")]


def find_by(driver, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    field = until(driver, lambda d: d.find_element(By.NAME, name))
    field.clear()
    field.send_keys(value)
    driver.find_element(By.ID, "find").click()


def test_the_list_finds_an_execution_by_what_it_carried(server, browser):
    (_, _), (wanted, request_id) = server.orders
    signed_in(browser, server)
    for name, value in (("dedup_key", "d-42"), ("request_id", request_id), ("data", "order.id=42")):
        browser.get(f"{server.url}/admin/#/executions")
        until(browser, lambda d: len(rows(d)) == 5)
        find_by(browser, name, value)
        until(browser, lambda d: len(rows(d)) == 1)
        assert wanted in rows(browser)[0], (name, rows(browser))
    shoot(browser, "executions-found")
    browser.get(f"{server.url}/admin/#/executions?data=order.id%3D43")
    until(browser, lambda d: "No executions." in text(d))
    assert console_errors(browser) == []


def test_replay_n_matching_confirms_n_and_replays_them_once(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/executions?workflow=flaky&status=failed")
    until(browser, lambda d: len(rows(d)) == 3)
    browser.find_element(By.ID, "replay-matching").click()
    asked = until(browser, lambda d: text(d, "#replay-confirmation"))
    assert "Replay 3 matching executions (workflow flaky, status failed)" in asked
    browser.find_element(By.ID, "replay-cancel").click()                  # cancelled: nothing replayed
    until(browser, lambda d: d.find_elements(By.ID, "replay-matching"))
    assert all_final(server, 5)

    browser.find_element(By.ID, "replay-matching").click()
    asked = until(browser, lambda d: text(d, "#replay-confirmation"))
    assert "Replay 3 matching executions (workflow flaky, status failed) created before " in asked
    late = send(server, "/flaky", {"n": 3})[0]                            # fails after the count: not in the 3
    wait_for(lambda: all_final(server, 6), failure="the late execution did not finish")
    refresh(browser)                                                      # the list refreshes meanwhile
    until(browser, lambda d: len(rows(d)) == 4 and "Replay 3 matching" in text(d, "#replay-confirm"))
    shoot(browser, "replay-matching-confirm")
    browser.find_element(By.ID, "replay-confirm").click()
    assert until(browser, lambda d: text(d, "#replay-outcome")) == "Replayed 3 of 3."
    wait_for(lambda: all_final(server, 9), failure="the replays did not finish")
    replays = [x for x in admin(server, "/api/admin/executions?workflow=flaky&limit=100")[2]["items"]
               if x.get("replay_of")]
    assert sorted(x["replay_of"] for x in replays) == sorted(server.flaky)   # the late one is not among them
    assert late not in [x["replay_of"] for x in replays]

    browser.get(f"{server.url}/admin/#/execution/{replays[0]['id']}")
    link = until(browser, lambda d: d.find_element(By.ID, "replay-of") if d.find_elements(By.ID, "replay-of") else None)
    assert link.text == replays[0]["replay_of"]
    shoot(browser, "execution-replay-of")
    link.click()
    until(browser, lambda d: replays[0]["replay_of"] in text(d, "#view h1"))
    assert not browser.find_elements(By.ID, "replay-of")                  # the original replays nothing
    assert console_errors(browser) == []


def test_no_bulk_replay_is_offered_for_a_search_by_what_was_carried(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/executions?dedup_key=d-41")
    until(browser, lambda d: len(rows(d)) == 1)
    assert not browser.find_elements(By.ID, "replay-matching")
    assert console_errors(browser) == []
