"""The executions page at /admin/ (issue 11), in Debian's headless Chromium driven by Selenium,
against a real server with real executions: sign-in with a good and a wrong token, the views and
their filters, an execution's jobs and logs, replay, the request log, a 375 px screen, and a
hostile payload that must run nothing.  Screenshots of each view go to $FASTWEBHOOK_SCREENSHOTS
(default: /tmp/fastwebhook-screenshots); they are not part of the repository."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re

import pytest

import web_support
from admin_support import admin, call, send
from wait_support import wait_for
from web_support import APP_JS, console_errors, refresh, shoot, sign_in, text, until

chromium, browser = web_support.chromium, web_support.browser   # the fixtures

WORKFLOWS = """
[workflows.scripted]
path = "/scripted"
mode = "sync"
[[workflows.scripted.nodes]]
key = "shout"
type = "script"
code = "console.log('got', $context.data.name); return {shouted: String($context.data.name).toUpperCase()};"
[[workflows.scripted.nodes]]
key = "answer"
type = "response"
body = "{{$jobsMapByNodeKey.shout}}"

[workflows.fails]
path = "/fails"
[[workflows.fails.nodes]]
key = "broken"
type = "script"
code = "console.log('about to fail'); throw new Error('no such customer');"

[workflows.gh]
path = "/gh"
[workflows.gh.verify]
scheme = "github"
secret = "gh-secret"
"""
HOSTILE = {"name": '<img src=x onerror="window.pwned = 1">', "note": "<script>window.pwned = 2</script>"}


@pytest.fixture
def server(serve):
    running = serve(WORKFLOWS)
    assert send(running, "/scripted", {"name": "ada"})[0] == 200
    assert send(running, "/scripted", HOSTILE)[0] == 200
    for _ in range(2):
        assert send(running, "/fails", {"n": 1})[0] == 202
    assert send(running, "/gh", {"zen": "x"}, {"X-Hub-Signature-256": "sha256=" + "0" * 64})[0] == 401
    signed = json.dumps({"zen": "ok"}).encode()
    signature = "sha256=" + hmac.new(b"gh-secret", signed, hashlib.sha256).hexdigest()
    assert call(running, "POST", "/gh", signed, {"Content-Type": "application/json", "X-Hub-Signature-256": signature})[0] == 202
    wait_for(lambda: (items := admin(running, "/api/admin/executions")[2]["items"]) and len(items) == 5
             and all(x["status"] not in ("queued", "started") for x in items), 10,
             failure="the five executions never finished")
    return running


def signed_in(driver, server) -> None:
    """Sign in and wait for the workflows view; the page must have loaded without a console error."""
    sign_in(driver, server)
    until(driver, lambda d: "scripted" in text(d))
    assert console_errors(driver) == []


def test_the_page_is_served_with_strict_headers_and_only_with_an_admin_token(server, serve, tmp_path):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", "/admin/")
    response = conn.getresponse()
    page = response.read()
    assert response.status == 200 and b"<script src=\"app.js\" defer></script>" in page
    policy = response.getheader("content-security-policy")
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert response.getheader("x-content-type-options") == "nosniff"
    conn.request("GET", "/admin")
    moved = conn.getresponse()
    moved.read()
    assert moved.status == 301 and moved.getheader("location") == "/admin/"
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        conn.request("GET", f"/admin/{name}")
        asset = conn.getresponse()
        assert asset.status == 200 and asset.getheader("content-type").startswith(kind) and asset.read()
    conn.request("GET", "/admin/../config.toml")
    assert conn.getresponse().status == 404
    conn.close()
    javascript = APP_JS.read_text()
    assert "innerHTML" not in javascript and "insertAdjacentHTML" not in javascript and "eval(" not in javascript


def test_without_an_admin_token_there_is_no_page(serve, tmp_path):
    running = serve('[server]\nlisten = ["127.0.0.1:0"]\n[storage]\nurl = "sqlite:///{db}"\n[workflows.w]\n', "other.db")
    assert call(running, "GET", "/admin/")[0] == 404


def test_sign_in_refuses_a_wrong_token_and_takes_the_right_one(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    sign_in(browser, server, "not-the-token")
    until(browser, lambda d: "Wrong token" in text(d, "#sign-in-error"))
    refused = console_errors(browser)   # the console is read: the refused token's 401 is there
    assert refused and all("status of 401" in message for message in refused), refused
    shoot(browser, "sign-in-refused")
    assert browser.execute_script("return sessionStorage.length") == 0
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys("test-token")
    browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    until(browser, lambda d: "scripted" in text(d))
    assert browser.find_element(By.ID, "nav").is_displayed() and not browser.find_element(By.ID, "sign-in").is_displayed()
    assert "test-token" not in browser.current_url and browser.get_cookies() == []
    listed = text(browser)
    assert all(key in listed for key in ("scripted", "fails", "gh")) and "resolved 2" in listed and "failed 2" in listed
    shoot(browser, "workflows")
    browser.find_element(By.ID, "sign-out").click()
    until(browser, lambda d: d.find_element(By.ID, "sign-in").is_displayed())
    assert browser.execute_script("return sessionStorage.length") == 0


def test_executions_list_filters_and_pages(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/executions")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#view tbody tr")) == 5)
    shoot(browser, "executions")
    Select(browser.find_element(By.NAME, "workflow")).select_by_value("fails")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#view tbody tr")) == 2)
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#view tbody tr")]
    assert all("fails" in row and "failed" in row and "no such customer" in row for row in rows)
    Select(browser.find_element(By.NAME, "status")).select_by_value("resolved")
    until(browser, lambda d: "No executions." in text(d))
    browser.get(f"{server.url}/admin/#/executions?before=2000-01-01T00:00")   # the time filter: nothing that old
    until(browser, lambda d: "No executions." in text(d))
    for _ in range(55):   # more than a page (50)
        assert send(server, "/fails", {"n": 2})[0] == 202
    browser.get(f"{server.url}/admin/#/executions?workflow=fails")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#view tbody tr")) == 50)
    browser.find_element(By.LINK_TEXT, "Older").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#view tbody tr")) == 7)



def test_the_executions_list_refreshes_itself_until_paused(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/executions?workflow=fails")
    rows = lambda d: len(d.find_elements(By.CSS_SELECTOR, "#view tbody tr"))  # noqa: E731
    listed = lambda: len(admin(server, "/api/admin/executions?workflow=fails")[2]["items"])  # noqa: E731
    until(browser, lambda d: rows(d) == 2)
    assert send(server, "/fails", {"n": 3})[0] == 202
    until(browser, lambda d: listed() == 3)
    refresh(browser)                                              # the next refresh shows it
    until(browser, lambda d: rows(d) == 3)
    browser.find_element(By.ID, "pause").click()
    assert browser.find_element(By.ID, "pause").text == "Resume refresh"
    assert send(server, "/fails", {"n": 4})[0] == 202
    until(browser, lambda d: listed() == 4)
    for _ in range(2):                                            # refresh periods pass, paused
        refresh(browser)
    assert rows(browser) == 3
    browser.find_element(By.ID, "pause").click()
    refresh(browser)
    until(browser, lambda d: rows(d) == 4)


def test_the_workflows_chart_shows_requests_per_second(server, browser):
    signed_in(browser, server)
    for _ in range(10):
        assert send(server, "/fails", {"n": 5})[0] == 202
    refresh(browser)                                                         # the second sample
    until(browser, lambda d: re.search(r"\d+\.\d/s", text(d)))              # two samples: a rate
    assert "so far" not in text(browser)
    fails = [line for line in text(browser).splitlines() if line.startswith("fails")][0]
    assert float(re.search(r"(\d+\.\d)/s", fails)[1]) > 0
    shoot(browser, "workflows-chart")


def test_an_execution_shows_its_request_jobs_and_logs_and_replays(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    failing = admin(server, "/api/admin/executions?workflow=fails&limit=1")[2]["items"][0]["id"]
    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/execution/{failing}")
    until(browser, lambda d: "Jobs (1)" in text(d))
    shown = text(browser)
    assert "broken (script) failed" in shown and "no such customer" in shown and "about to fail" in shown
    assert "POST /fails" in shown and "content-type" in shown and '"n": 1' in shown
    shoot(browser, "execution")
    browser.find_element(By.ID, "replay").click()
    link = until(browser, lambda d: d.find_element(By.ID, "replayed") if d.find_elements(By.ID, "replayed") else None)
    replayed = link.text
    assert replayed != failing
    link.click()
    until(browser, lambda d: replayed in text(d) and "Jobs (1)" in text(d))
    assert admin(server, f"/api/admin/executions/{replayed}")[2]["workflow"] == "fails"


def test_the_request_log_shows_rejections_with_their_reasons(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/requests")
    rejected = until(browser, lambda d: [row.text for row in d.find_elements(By.CSS_SELECTOR, "#view tbody tr")
                                         if "401" in row.text and "signature" in row.text])[0]
    assert "/gh" in rejected and "gh" in rejected
    shoot(browser, "requests")


def test_a_hostile_payload_is_shown_as_text_and_runs_nothing(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    hostile = [x for x in admin(server, "/api/admin/executions?workflow=scripted")[2]["items"]
               if "img" in json.dumps(admin(server, f"/api/admin/executions/{x['id']}")[2]["request"]["data"])][0]["id"]
    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/execution/{hostile}")
    until(browser, lambda d: "Jobs (2)" in text(d))
    for details in browser.find_elements(By.CSS_SELECTOR, "#view details"):
        if details.get_attribute("open") is None:
            details.find_element(By.TAG_NAME, "summary").click()
    shown = text(browser)
    assert '<img src=x onerror=\\"window.pwned = 1\\">' in shown and "<script>window.pwned = 2</script>" in shown
    assert "<IMG SRC=X ONERROR" in shown          # the script's result, as text too
    assert browser.find_elements(By.CSS_SELECTOR, "#view img, #view script") == []
    # Had the payload become an <img src=x>, its onerror would follow a request for "x": ask for
    # "x" ourselves and wait for the answer and one more task, by then it would have run.
    browser.execute_async_script("const done = arguments[arguments.length - 1];"
                                 "fetch('x').catch(() => null).finally(() => setTimeout(done, 0));")
    assert browser.execute_script("return window.pwned === undefined")
    shoot(browser, "hostile")


def test_the_page_works_on_a_375_px_screen(server, browser):
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.set_window_size(375, 812)
    signed_in(browser, server)
    browser.get(f"{server.url}/admin/#/executions")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#view tbody tr")) == 5)
    width = browser.execute_script("return window.innerWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width   # tables scroll in their box
    shoot(browser, "executions-375px")


def test_a_workflow_on_a_parameter_path_does_not_take_the_admin_paths(serve):
    running = serve('[server]\nlisten = ["127.0.0.1:0"]\n[storage]\nurl = "sqlite:///{db}"\n[admin]\ntoken = "t"\n'
                    '[workflows.two]\npath = "/{a}/{b}"\n[workflows.three]\npath = "/{a}/{b}/{c}"\n', "params.db")
    conn = http.client.HTTPConnection(running.host, running.port, timeout=5)
    conn.request("GET", "/admin/app.js")
    script = conn.getresponse()
    assert script.status == 200 and script.getheader("content-type").startswith("text/javascript") and script.read()
    conn.request("GET", "/api/admin/executions", headers={"Authorization": "Bearer t"})
    listed = conn.getresponse()
    assert listed.status == 200 and json.loads(listed.read())["items"] == []
    conn.close()
    assert call(running, "POST", "/x/y", b"{}", {"Content-Type": "application/json"})[0] == 202   # still theirs
