"""The dashboard in a real headless browser (Debian's chromium + chromium-driver, via Selenium).

A gateway with ``admin.token`` and real upstreams takes traffic; the page is loaded
from the admin listener, asks for the token, and must then show per route the
same totals and quantiles as ``/-/metrics``, the targets' state, and the last
errors with their request ids. A path chosen by a client is shown as text, never
run as HTML. Browser calls run in a worker thread so the test's IOLoop keeps
serving the gateway and the upstreams meanwhile.

The screenshot is kept as ``<pytest tmp dir>/dashboard.png`` (the path is printed);
with ``DASHBOARD_SCREENSHOT=path`` it is also copied there (the README's
``docs/dashboard.png`` is made that way).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.web import Application, RequestHandler

from gateway.stats import histogram_quantile
from tests.conftest import Fetch

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs chromium and chromium-driver (`make chromium`, which `make test` runs)"),
    pytest.mark.timeout(120),
]

ADMIN_TOKEN = "dashboard-test-token-0123456789abcdef0123456789"
# A request target cannot hold '<' (the gateway answers 400), but entities can: innerHTML would turn
# them into markup (and an encoded tag into a live element); textContent shows them as sent.
HOSTILE_PATH = "/api/404/&lt;b&gt;bold&lt;/b&gt;%3Cimg%20src=x%20onerror=alert(1)%3E"
T = TypeVar("T")


def upstream_app() -> Application:
    class Handler(RequestHandler):
        async def get(self, status: str, delay_ms: str) -> None:
            await asyncio.sleep(int(delay_ms or 0) / 1000)
            self.set_status(int(status))
            self.finish("x")

    return Application([(r"/(\d+)/?(\d*)", Handler)])


def config(upstream: str) -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: 0.5}}
    admin: {{host: 127.0.0.1, port: 0, token: {ADMIN_TOKEN}}}
    upstreams:
      backend:
        targets: ["{upstream}"]
        circuit_breaker: {{failure_threshold: 50, open_seconds: 30}}
    routes:
      - {{name: api, path: /api, upstream: backend, strip_prefix: true}}
      - {{name: reports, path: /reports, upstream: backend, strip_prefix: true}}
      - {{name: quiet, path: /quiet, upstream: backend}}
    """


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1600,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def off_loop(call: Callable[[], T]) -> T:
    """Run a blocking browser call in a thread: the IOLoop keeps serving the gateway."""
    return await asyncio.get_running_loop().run_in_executor(None, call)


async def wait_for(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` (in a thread) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await off_loop(check)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# The page redraws its tables every refresh: read what it shows in one script, never through
# element references that the next redraw makes stale.
READ_PAGE = """
const rows = (selector, read) => Array.from(document.querySelectorAll(selector), read);
const fields = (row) => Object.fromEntries(Array.from(row.querySelectorAll('td[data-field]'),
    (td) => [td.dataset.field, [td.dataset.value ?? null, td.textContent, td.title]]));
return {
  routes: Object.fromEntries(rows('#routes tbody tr', (tr) => [tr.dataset.route, {
    ...fields(tr),
    lines: Array.from(tr.querySelectorAll('svg.chart polyline'),
                      (l) => [l.getAttribute('class'), l.getAttribute('points').split(' ').filter(Boolean).length]),
  }])),
  targets: rows('#upstreams [data-upstream] tr[data-target]', (tr) => [tr.closest('[data-upstream]').dataset.upstream,
                                                                      tr.dataset.target, fields(tr)]),
  errors: rows('#errors tbody tr', (tr) => [tr.dataset.requestId, fields(tr)]),
  markup: document.querySelectorAll('#errors b, #errors img, #routes b, #routes img').length,
};
"""


def read_page(driver: Any) -> dict[str, Any]:
    return driver.execute_script(READ_PAGE)


async def expected_from_metrics(http: Fetch, admin: str) -> dict[str, dict[str, Any]]:
    text = (await http(admin + "/-/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).body.decode()
    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            entry = out.setdefault(s.labels.get("route", ""), {"requests": 0, "4xx": 0, "5xx": 0, "buckets": []})
            if s.name == "gateway_requests_total":
                entry["requests"] += int(s.value)
                status = s.labels["status"][0]
                if status in "45":
                    entry[status + "xx"] += int(s.value)
            elif s.name == "gateway_request_duration_seconds_bucket":
                entry["buckets"].append((float(s.labels["le"]), s.value))
    for entry in out.values():
        buckets = sorted(entry["buckets"])
        entry["p50"], entry["p99"] = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
    return out


async def traffic(http: Fetch, url: str, wave: int) -> list[str]:
    """One wave of requests on two routes; returns the request ids of the error answers."""
    ids = []
    calls = [("api", "200/2", 12), ("api", "200/15", 4), ("reports", "200/40", 3)]
    if wave == 1:
        calls += [("api", "503", 2), ("reports", "404", 1)]
    for route, path, times in calls:
        for i in range(times):
            request_id = f"w{wave}-{route}-{path.replace('/', '_')}-{i}"
            answer = await http(f"{url}/{route}/{path}", headers={"X-Request-Id": request_id})
            if answer.code >= 400:
                ids.append(request_id)
    return ids


async def test_dashboard_shows_what_the_metrics_say(start_gateway: Any, start_upstream: Any, http: Fetch,
                                                   browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    gateway = await start_gateway(config(start_upstream(upstream_app()).url))
    admin = f"http://127.0.0.1:{gateway.admin_port}"
    await traffic(http, gateway.url, 0)

    # Without a token the page asks for one; a wrong one is refused; the right one opens it.
    await off_loop(lambda: browser.get(admin + "/"))
    await wait_for(lambda: browser.find_element(By.ID, "token-form").is_displayed(), "the token form")
    assert not browser.find_element(By.ID, "main").is_displayed()
    await off_loop(lambda: browser.find_element(By.ID, "token").send_keys("not-the-token\n"))
    await wait_for(lambda: browser.find_element(By.ID, "token-error").text == "that token was refused",
                   "the wrong token refused")
    await off_loop(lambda: browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN + "\n"))
    await wait_for(lambda: browser.find_element(By.ID, "main").is_displayed(), "the dashboard")
    assert browser.execute_script("return sessionStorage.getItem('gateway.admin.token')") == ADMIN_TOKEN
    assert browser.execute_script("return localStorage.length") == 0

    # Traffic over several refreshes, so the charts have points; errors with known request ids.
    error_ids = []
    for wave in (1, 2, 3):
        error_ids += await traffic(http, gateway.url, wave)
        await asyncio.sleep(2.2)
    hostile = await http(gateway.url + HOSTILE_PATH, headers={"X-Request-Id": "hostile-path"})
    assert hostile.code == 404

    expected = await expected_from_metrics(http, admin)
    assert expected["api"]["requests"] == 4 * 16 + 2 + 1 and expected["reports"]["requests"] == 4 * 3 + 1

    def caught_up() -> dict[str, Any] | None:
        page = read_page(browser)
        routes, errors = page["routes"], page["errors"]
        done = all(routes.get(r, {}).get("requests", [None, ""])[1] == str(expected[r]["requests"])
                   for r in ("api", "reports"))
        return page if done and errors and errors[0][0] == "hostile-path" else None

    page = await wait_for(caught_up, "the page to catch up with /-/metrics")
    for route in ("api", "reports"):
        cells, want = page["routes"][route], expected[route]
        assert cells["requests"][:2] == [str(want["requests"]), str(want["requests"])]
        assert cells["errors_4xx"][:2] == [str(want["4xx"]), str(want["4xx"])]
        assert cells["errors_5xx"][:2] == [str(want["5xx"]), str(want["5xx"])]
        assert float(cells["p50"][0]) == want["p50"] and float(cells["p99"][0]) == want["p99"]
        assert cells["p50"][1] == shown_ms(want["p50"]) and cells["p99"][1] == shown_ms(want["p99"])
        # the charts: one polyline per series, with points once two samples saw traffic
        assert [name for name, _ in cells["lines"]] == ["rate", "errors", "p50", "p99"]
        assert min(points for _, points in cells["lines"][:2]) >= 2
    quiet = page["routes"]["quiet"]
    assert (quiet["requests"][:2], quiet["p50"][:2], quiet["p99"][:2]) == (["0", "0"], ["", "–"], ["", "–"])

    [(upstream, url, target)] = page["targets"]
    assert (upstream, url) == ("backend", gateway_target(gateway))
    assert (target["healthy"][1], target["circuit"][1], target["in_flight"][1]) == ("healthy", "closed", "0")

    errors = page["errors"]
    assert [(rid, f["status"][1], f["route"][1]) for rid, f in errors] == [
        ("hostile-path", "404", "api"),
        *[(rid, "404" if "404" in rid else "503", rid.split("-")[1]) for rid in reversed(error_ids)]]
    assert errors[0][1]["path"][1:] == [HOSTILE_PATH, HOSTILE_PATH]  # shown and titled as sent
    assert page["markup"] == 0

    screenshot = tmp_path / "dashboard.png"
    assert await off_loop(lambda: browser.save_screenshot(str(screenshot)))
    print(f"dashboard screenshot: {screenshot}")
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["DASHBOARD_SCREENSHOT"])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    # the two refused fetches (no token, then a wrong one) are the only console errors
    assert all("401" in e["message"] for e in errors), errors


def gateway_target(gateway: Any) -> str:
    return gateway.holder.runtime.pools["backend"].targets[0].url


def shown_ms(seconds: float) -> str:
    """How app.js's ms() writes a duration."""
    return f"{seconds * 1000:.2f} ms" if seconds < 0.01 else f"{seconds * 1000:.1f} ms"
