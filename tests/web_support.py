"""The admin page's tests in Debian's headless Chromium driven by Selenium: one browser per test
module, a blank page for each test, and the helpers that wait on the page.  A test module takes
the fixtures by assignment, `chromium, browser = web_support.chromium, web_support.browser` (so
a test's `browser` argument redefines no import), and the helpers by import.  Without chromium
and chromedriver the tests skip, or fail under $FASTWEBHOOK_REQUIRE_BROWSER."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
APP_JS = Path(__file__).parents[1] / "fastwebhook" / "admin" / "web" / "app.js"
REFRESH_MS = int(re.search(r"const REFRESH_MS = (\d+);", APP_JS.read_text())[1])
# The page's refresh timer, held until the test fires it (window.fireRefresh() runs the pending
# one and says whether there was one): a test waits for the page's next refresh, not 5 s of a
# clock, and no refresh re-renders a view in the middle of a test reading it.
HOLD_REFRESH = """
(() => {
  const held = new Map();
  let next = -1;
  const realSetTimeout = window.setTimeout, realClearTimeout = window.clearTimeout;
  window.setTimeout = function (fn, ms, ...args) {
    if (ms !== %d) return realSetTimeout.call(window, fn, ms, ...args);
    held.set(next, () => fn(...args));
    return next--;
  };
  window.clearTimeout = function (id) { held.delete(id); realClearTimeout.call(window, id); };
  window.fireRefresh = () => {
    const due = [...held.values()];
    held.clear();
    due.forEach((fn) => fn());
    return due.length;
  };
})();
""" % REFRESH_MS


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """One headless Chromium for the module (starting one costs most of a second); `browser`
    gives each test a blank page, the default window and an empty console."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("FASTWEBHOOK_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("chromium and chromium-driver are not installed")
    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager must not look for drivers on the network
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})   # for console_errors
    profile = tmp_path_factory.mktemp("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_REFRESH})
    yield driver, driver.get_window_size()
    driver.quit()


@pytest.fixture
def browser(chromium):
    chromium, size = chromium
    chromium.get("about:blank")
    chromium.set_window_size(size["width"], size["height"])   # as it started: one test narrows it
    chromium.get_log("browser")          # read and so emptied: the console starts clean
    yield chromium
    # Each server has its own port, so its own origin and storage; emptied anyway, so that a
    # port the kernel hands out again finds no token signed in.
    chromium.execute_script("try { sessionStorage.clear(); localStorage.clear(); } catch (e) {}")
    chromium.delete_all_cookies()
    chromium.get("about:blank")


def shoot(driver, name: str) -> None:
    folder = Path(os.environ.get("FASTWEBHOOK_SCREENSHOTS", "/tmp/fastwebhook-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / f"{name}.png"))


def until(driver, condition, timeout: float = 10.0):
    """`condition(driver)`'s first true value; asked again when the view was replaced while it looked."""
    from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))


def refresh(driver) -> None:
    """Fire the page's pending refresh timer, waiting for one if a render is still under way."""
    until(driver, lambda d: d.execute_script("return window.fireRefresh()") == 1)


def text(driver, selector: str = "#view") -> str:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def console_errors(driver) -> list[str]:
    """The console's errors since the last call (a failed load, such as a 404, is one)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def sign_in(driver, server, token: str = "test-token") -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.get(f"{server.url}/admin/")
    field = until(driver, lambda d: d.find_element(By.ID, "token") if d.find_element(By.ID, "token").is_displayed() else None)
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
