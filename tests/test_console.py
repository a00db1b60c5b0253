"""The migration console: `GET /migration` for a browser, driven in a real headless Chromium (Debian's
`chromium` and `chromium-driver`, with selenium) over loopback. The page's rows are /migration's JSON,
a mismatch shows within one refresh, the filters work, a group name carrying markup is text, and the
page asks nothing of any origin but the shim's. Also: the pure readiness rule, the content negotiation,
the assets' paths, and the screenshot in docs/ (SHIM_UPDATE_SCREENSHOT=1 writes it again).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import GROUP, PROJECT, RCG, call, start_server, write_mappings
from migration_world import (
    GROUPS,
    PARKED_GROUP,
    PARKED_RCG,
    SHADOW_GROUP,
    SHADOW_RCG,
    MigrationWorld,
    entry,
    migration_world,
)
from processes import write_config
from shim.config import load_settings, settings_from_mapping
from shim.mappings import CONSISTENCY_GROUPS_FILE, load_mappings
from shim.migration.readiness import NextStepContext, readiness
from shim.migration.records import Comparison, with_comparison, with_dry_run
from shim.migration.report import shadow_summary
from shim.runtime import demo
from shim.runtime.reload import reload_config
from shim.runtime.server import start_site
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.server import seed_demo_group
from shim.translate.url_space import CONSOLE_ASSETS, MANAGEMENT_PATHS
from shim.web.app import build_app, build_management_app
from shim.web.console import CONTENT_SECURITY_POLICY, wants_html
from shim.web.shim_state import STATE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REFRESH_SECONDS = 3.0  # console.js REFRESH_MS
MARKUP = '<img src=x onerror="document.body.dataset.pwned=1">'
OTHER_PROJECT = "1a2b3c4d5e6f708192a3b4c5d6e7f801"
OTHER_RCG = "9e4c0a51-6f73-4182-8d94-b5c6d7e8f90a"
OTHER_GROUP = "0f5d1b62-7084-4293-9ea5-c6d7e8f90a1b"
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "console.png"

# -- the browser -------------------------------------------------------------------------------------


def _have_browser() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module. Every host but 127.0.0.1 is unresolvable to it, so a request
    anywhere else could not succeed; the tests also read every request it made from its network log."""
    if not _have_browser():
        if os.environ.get("CI"):
            pytest.fail("chromium, chromium-driver and selenium are needed (.ci/run installs them)")
        pytest.skip("chromium, chromium-driver or selenium is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="shim-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1500,1300", f"--user-data-dir={profile}",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def in_browser(work: Callable[..., Any], *args: Any) -> Any:
    """Run blocking selenium calls in a thread: the shim and its upstreams run on this event loop."""
    return await asyncio.to_thread(work, *args)


def wait_until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
        except Exception:  # noqa: BLE001 - an element replaced while read: read again
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def rows(driver: Any) -> dict[str, dict[str, Any]]:
    """The list's rows as the page shows them (visible text and data attributes)."""
    return driver.execute_script("""
        const out = {};
        for (const row of document.querySelectorAll('#groups tbody tr')) {
          const cell = (col) => row.querySelector('[data-col="' + col + '"]');
          const count = (name) => Number(row.querySelector('[data-count="' + name + '"]').textContent);
          out[row.dataset.rcg] = {
            mode: row.dataset.mode, verdict: row.dataset.verdict,
            project: cell('project').textContent,
            reason: row.querySelector('.reason').textContent,
            name: cell('name') ? cell('name').textContent : null,
            match: count('match'), mismatch: count('mismatch'), error: count('error'),
            ticks: row.querySelectorAll('.tick').length,
            last_mismatch: cell('last-mismatch').textContent,
            action: cell('action').textContent,
            next: cell('next').textContent,
          };
        }
        return out;""")


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (its DevTools network log)."""
    urls = []
    for entry_ in driver.get_log("performance"):
        message = json.loads(entry_["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


# -- the world: a group in every mode, two projects, a name carrying markup ------------------------------


def console_mapping() -> list[dict[str, Any]]:
    parked = {**entry(PARKED_RCG, PARKED_GROUP, "legacy"),
              "legacy": {"name": MARKUP, "description": "<b>bold</b>", "pairs": []}}
    return [entry(RCG, GROUP), entry(SHADOW_RCG, SHADOW_GROUP, "shadow"), parked,
            entry(OTHER_RCG, OTHER_GROUP, "sdrs", project=OTHER_PROJECT)]


@pytest.fixture
async def world(make_shim) -> AsyncIterator[MigrationWorld]:
    async for built in migration_world(make_shim, console_mapping()):
        yield built


async def json_report(world: MigrationWorld, query: str = "") -> dict[str, Any]:
    reply = await call("GET", world.shim + "/migration" + query, headers={"Accept": "application/json"})
    assert reply.status == 200, reply.body
    return reply.json()


def expected_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["rcg_id"]: {
        "mode": group["mode"], "verdict": group["readiness"]["verdict"], "project": group["project_id"],
        "reason": group["readiness"]["reason"], "name": (group["identity"] or {}).get("name"),
        "match": group["shadow"]["comparisons"]["match"], "mismatch": group["shadow"]["comparisons"]["mismatch"],
        "error": group["shadow"]["comparisons"]["error"], "ticks": len(group["shadow"]["timeline"]),
    } for group in report["groups"]}


def shown(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keys = ("mode", "verdict", "project", "reason", "name", "match", "mismatch", "error", "ticks")
    return {rcg: {key: row[key] for key in keys} for rcg, row in found.items()}


async def test_the_page_shows_the_reports_rows_updates_filters_and_asks_nothing_elsewhere(world, browser):
    # A shadow comparison that matches, and a dry run, before the page opens.
    assert (await world.get(f"{GROUPS}/{SHADOW_RCG}")).status == 200
    await world.wait_for(SHADOW_RCG, lambda group: group["shadow"]["comparisons"]["match"] == 1)
    report = await json_report(world)
    assert {group["mode"] for group in report["groups"]} == {"legacy", "shadow", "sdrs"}
    origin = world.shim

    def open_page() -> dict[str, dict[str, Any]]:
        browser.get_log("performance")  # start the network log here
        browser.get(origin + "/migration")
        wait_until(lambda: browser.find_elements("css selector", "#groups tbody tr"), 10, "the rows")
        return rows(browser)

    found = await in_browser(open_page)
    assert shown(found) == expected_rows(report)
    assert found[SHADOW_RCG]["verdict"] == "ready"
    assert found[SHADOW_RCG]["reason"].startswith("ready: 1 comparison over ")
    assert "shim mode set" in found[SHADOW_RCG]["next"] and f"--group {SHADOW_RCG} sdrs" in found[SHADOW_RCG]["next"]
    assert "mode: sdrs" in found[SHADOW_RCG]["next"]  # the mapping edit, the switch's other way
    assert found[PARKED_RCG]["verdict"] == "not_ready" and "mode: shadow" in found[PARKED_RCG]["next"]
    assert found[RCG]["verdict"] == "serving"

    # A group name carrying markup is text: shown as written, no element made of it, no handler ran.
    assert found[PARKED_RCG]["name"] == MARKUP
    markup_check = await in_browser(browser.execute_script, """
        return {imgs: document.querySelectorAll('img').length, bold: document.querySelectorAll('main b').length,
                pwned: document.body.dataset.pwned || null};""")
    assert markup_check == {"imgs": 0, "bold": 0, "pwned": None}

    # A mismatch shows within one refresh of being recorded, with both values.
    world.legacy.group(PROJECT, SHADOW_RCG).status = "error"
    assert (await world.get(f"{GROUPS}/{SHADOW_RCG}")).status == 200
    recorded = await world.wait_for(SHADOW_RCG, lambda group: group["shadow"]["comparisons"]["mismatch"] == 1)
    recorded_at = time.monotonic()

    def mismatch_row() -> dict[str, Any]:
        return wait_until(lambda: (row := rows(browser).get(SHADOW_RCG)) and row["mismatch"] == 1 and row,
                          REFRESH_SECONDS + 2.0, "the mismatch on the page")

    row = await in_browser(mismatch_row)
    assert time.monotonic() - recorded_at < REFRESH_SECONDS + 2.0
    assert row["verdict"] == "not_ready"
    assert row["reason"].startswith("not ready: status differs since ")
    differences = recorded["shadow"]["last_mismatch"]["differences"]
    assert "status" in differences
    assert f"legacy {differences['status']['legacy']}" in row["last_mismatch"]
    assert f"sdrs {differences['status']['sdrs']}" in row["last_mismatch"]
    assert "shim explain" in row["next"]
    expected = expected_rows(await json_report(world))  # every row again equals the JSON, after a refresh
    await in_browser(wait_until, lambda: shown(rows(browser)) == expected, REFRESH_SECONDS + 2.0, "rows = JSON")

    # Filters: mode, not ready, project; each one a stable URL.
    def filter_by(select_id: str, value: str) -> tuple[set[str], str]:
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element("id", select_id)).select_by_value(value)
        return set(rows(browser)), browser.current_url

    only_shadow, url = await in_browser(filter_by, "filter-mode", "shadow")
    assert only_shadow == {SHADOW_RCG} and url.endswith("/migration?mode=shadow")
    everything, _ = await in_browser(filter_by, "filter-mode", "")
    assert everything == {RCG, SHADOW_RCG, PARKED_RCG, OTHER_RCG}
    other, url = await in_browser(filter_by, "filter-project", OTHER_PROJECT)
    assert other == {OTHER_RCG} and f"project={OTHER_PROJECT}" in url
    await in_browser(filter_by, "filter-project", "")

    def not_ready_only() -> set[str]:
        browser.find_element("id", "filter-not-ready").click()
        return set(rows(browser))

    assert await in_browser(not_ready_only) == {SHADOW_RCG, PARKED_RCG}

    def reopen(url: str) -> set[str]:  # the filtered view's URL gives the same view
        browser.get(url)
        wait_until(lambda: browser.find_elements("css selector", "#groups"), 10, "the table")
        return set(rows(browser))

    assert await in_browser(reopen, origin + "/migration?not_ready=1&mode=legacy") == {PARKED_RCG}

    # The group's own view: a stable URL, the whole history.
    def detail() -> tuple[int, str, str]:
        browser.get(origin + "/migration")
        wait_until(lambda: browser.find_elements("css selector", f'tr[data-rcg="{SHADOW_RCG}"] a'), 10, "the link")
        browser.find_element("css selector", f'tr[data-rcg="{SHADOW_RCG}"] a.group-link').click()
        wait_until(lambda: browser.find_elements("css selector", "#history tbody tr"), 10, "the history")
        assert "[object" not in browser.find_element("tag name", "body").text  # every value rendered as text
        assert not browser.find_element("id", "controls").is_displayed()  # the list's filters are not the group's
        return (len(browser.find_elements("css selector", "#history tbody tr")), browser.current_url,
                browser.find_element("id", "detail-title").text)

    history_rows, url, title = await in_browser(detail)
    one = await json_report(world, f"?group={SHADOW_RCG}")
    assert history_rows == len(one["groups"][0]["shadow"]["timeline"]) == 2
    assert url == f"{origin}/migration?group={SHADOW_RCG}" and SHADOW_RCG in title
    assert await in_browser(lambda: (browser.get(url), wait_until(
        lambda: browser.find_elements("css selector", "#history tbody tr"), 10, "history"))[1] and len(
        browser.find_elements("css selector", "#history tbody tr"))) == 2

    # Nothing was asked of any origin but the shim's (the page, its two files, the JSON refreshes).
    # (The log also shows the browser's own chrome:// pages, which are not network requests.)
    urls = [url for url in await in_browser(requested_urls, browser) if not url.startswith(("chrome:", "data:"))]
    assert urls and all(url.startswith(origin + "/") for url in urls), urls
    assert {url.removeprefix(origin) for url in urls if url.startswith(origin + "/migration/assets/")} == set(
        CONSOLE_ASSETS)
    resources = await in_browser(browser.execute_script,
                                 "return performance.getEntriesByType('resource').map((e) => e.name);")
    assert all(name.startswith(origin + "/") or name.startswith("data:") for name in resources), resources
    problems = [entry_ for entry_ in await in_browser(browser.get_log, "browser") if entry_["level"] == "SEVERE"]
    assert problems == []  # no script error, no Content-Security-Policy violation


async def test_the_page_the_assets_and_the_json_are_told_apart_and_never_relayed(make_shim, simulator,
                                                                                 legacy_upstream):
    _, sdrs = simulator
    recorder, legacy = legacy_upstream
    shim = await make_shim(sdrs=sdrs, legacy=legacy)
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    page = await call("GET", shim + "/migration", headers={"Accept": browser_accept})
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["Vary"] == "Accept"
    body = page.body.decode()
    assert "http://" not in body.replace(shim, "") and "https://" not in body
    with_token = await call("GET", shim + "/migration", headers={"Accept": browser_accept,
                                                                 "X-Auth-Token": "gAAAAAconsole-secret-token"})
    assert with_token.status == 200 and b"console-secret-token" not in with_token.body  # never shown
    for path in CONSOLE_ASSETS:
        asset = await call("GET", shim + path)
        assert asset.status == 200 and asset.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert asset.headers["Content-Type"].startswith(("text/javascript", "text/css"))
        assert b"http://" not in asset.body and b"https://" not in asset.body
        assert (await call("POST", shim + path)).status == 405
    for accept in (None, "*/*", "application/json", "text/html;q=0.5, application/json"):
        reply = await call("GET", shim + "/migration", headers={"Accept": accept} if accept else {})
        assert reply.headers["Content-Type"].startswith("application/json"), accept
        assert reply.json()["groups"]
    assert recorder.requests == []  # nothing of the console reached the legacy endpoint
    assert set(CONSOLE_ASSETS) <= set(MANAGEMENT_PATHS)  # the nginx front sends them to the shim too


async def test_the_management_listener_serves_the_page_and_its_files(tmp_path, simulator):
    _, sdrs = simulator
    mappings = write_mappings(tmp_path / "mappings", [entry(RCG, GROUP)])
    settings = settings_from_mapping({"upstreams": {"sdrs": sdrs}, "mappings": str(mappings),
                                      "management": {"port": 9, "also_on_listen": False}},
                                     source="test", base_dir=tmp_path)
    app = build_app(settings, load_mappings(settings.mappings))
    runner, _ = await start_site(app, "127.0.0.1", 0, settings=settings)
    management_runner, management = await start_server(build_management_app(app))
    try:
        page = await call("GET", management + "/migration", headers={"Accept": "text/html"})
        assert page.status == 200 and b'id="report-data"' in page.body
        for path in CONSOLE_ASSETS:
            assert (await call("GET", management + path)).status == 200
        assert (await call("GET", management + "/migration/assets/other.js")).status == 404
    finally:
        await management_runner.cleanup()
        await runner.cleanup()


# -- the screenshot of the demo's page ------------------------------------------------------------------


async def test_the_demos_console_screenshot(browser, tmp_path):
    """The README's picture: the demo's world after its steps, as the console shows it. Written to
    docs/console.png with SHIM_UPDATE_SCREENSHOT=1; otherwise the committed one must exist."""
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=1.0, job_run_seconds=20))
    seed_demo_group(sim)
    legacy = demo.legacy_stub()
    demo.seed_migration_groups(sim, legacy)
    sim_runner, sdrs = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    (tmp_path / CONSISTENCY_GROUPS_FILE).write_text(demo.DEMO_MAPPING)
    settings = demo.demo_settings(0, sdrs, legacy_url, tmp_path)
    runner, port = await start_site(build_app(settings, load_mappings(settings.mappings)), "127.0.0.1", 0,
                                    settings=settings)
    try:
        urls = demo.DemoUrls(f"http://127.0.0.1:{port}", sdrs, legacy_url)
        assert await demo.run_checks(demo.demo_steps(urls)) == 0
        await demo.settled_report(urls)
        picture = tmp_path / "console.png"

        def shoot() -> None:
            browser.get(urls.console)
            wait_until(lambda: len(rows(browser)) == 3, 10, "the demo's three groups")
            browser.set_window_size(1440, 900)
            browser.save_screenshot(str(picture))

        await in_browser(shoot)
    finally:
        for each in (runner, legacy_runner, sim_runner):
            await each.cleanup()
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SHIM_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(picture, DOCS_SCREENSHOT)
    assert DOCS_SCREENSHOT.exists(), "make it: SHIM_UPDATE_SCREENSHOT=1 pytest tests/test_console.py"


# -- the readiness rule (pure) -----------------------------------------------------------------------------

CONTEXT = NextStepContext("/etc/shim/mappings/consistency-groups.yaml", 42, "/etc/shim/shim.yaml")
DAY = 86400.0


def shadow_group(document: dict[str, Any] | None, mode: str = "shadow") -> dict[str, Any]:
    return {"project_id": PROJECT, "rcg_id": SHADOW_RCG, "protection_group_id": SHADOW_GROUP, "mode": mode,
            "shadow": shadow_summary(document), "deleted": None}


def comparisons(document: dict[str, Any] | None, start: float, results: list[tuple[str, dict[str, Any]]],
                step: float) -> dict[str, Any] | None:
    for index, (result, differences) in enumerate(results):
        document = with_comparison(document, Comparison(start + index * step, result, "GET group",  # type: ignore[arg-type]
                                                        differences))
    return document


def test_ready_says_how_much_evidence_and_names_the_switch():
    document = comparisons(None, 1_000_000.0, [("match", {})] * 312, 3 * DAY / 311)
    for _ in range(4):
        document = with_dry_run(document, "agree", {"at": 1_000_000.0 + DAY, "action": "x"})
    verdict = readiness(shadow_group(document), CONTEXT)
    assert verdict["verdict"] == "ready"
    assert verdict["reason"] == "ready: 312 comparisons over 3 days, 0 mismatches, 4 dry runs agree"
    switch = f"shim mode set --config /etc/shim/shim.yaml --group {SHADOW_RCG} sdrs"
    assert verdict["next_step"]["command"] == switch
    assert verdict["next_step"]["text"] == (
        f"{switch} (or, in /etc/shim/mappings/consistency-groups.yaml, set `mode: sdrs` on the entry with "
        f"replication_consistency_group_id: {SHADOW_RCG}, then: kill -HUP 42)")


def test_a_difference_that_lasts_is_not_ready_since_it_began():
    status = {"status": {"legacy": "available", "sdrs": "error"}}
    document = comparisons(None, 1_000_000.0, [("match", {}), ("mismatch", status), ("error", {}),
                                               ("mismatch", status)], 60)
    verdict = readiness(shadow_group(document), CONTEXT)
    assert verdict["verdict"] == "not_ready"
    assert verdict["reason"] == ("not ready: status differs since 1970-01-12T13:47:40Z "
                                 "(2 mismatches in 3 comparisons)")
    assert verdict["next_step"]["command"] == (
        f"shim explain --config /etc/shim/shim.yaml GET /v2/{PROJECT}/os-vendor-replication-consistency-groups/"
        f"{SHADOW_RCG}")


def test_a_past_difference_asks_for_review_and_a_disagreeing_dry_run_is_not_ready():
    status = {"status": {"legacy": "available", "sdrs": "error"}}
    document = comparisons(None, 1_000_000.0, [("mismatch", status), ("match", {}), ("match", {})], 3600)
    verdict = readiness(shadow_group(document), CONTEXT)
    assert verdict["verdict"] == "review" and "1 earlier mismatch (status)" in verdict["reason"]
    disagreeing = with_dry_run(document, "disagree", {"at": 1_100_000.0, "action": "os-failover",
                                                      "legacy_status": 202, "would_answer": 400})
    verdict = readiness(shadow_group(disagreeing), CONTEXT)
    assert verdict["verdict"] == "not_ready"
    assert verdict["reason"].startswith("not ready: the last dry run disagrees (os-failover: legacy answered 202, "
                                        "sdrs mode would answer 400")


def test_no_evidence_legacy_and_sdrs_groups():
    assert readiness(shadow_group(None), CONTEXT)["reason"] == "not ready: no comparison yet"
    errors = comparisons(None, 1.0, [("error", {})], 1)
    assert readiness(shadow_group(errors), CONTEXT)["reason"].startswith("not ready: no comparison finished (1 error")
    legacy = readiness(shadow_group(None, "legacy"), CONTEXT)
    assert legacy["verdict"] == "not_ready" and legacy["next_step"]["edit"] == "mode: shadow"
    assert readiness(shadow_group(None, "sdrs"), CONTEXT) == {
        "verdict": "serving", "reason": "served by SDRS (mode sdrs)", "next_step": None}


def test_the_record_keeps_a_bounded_timeline_the_first_comparison_and_the_last_mismatch():
    status = {"status": {"legacy": "a", "sdrs": "b"}}
    document = comparisons(None, 10.0, [("mismatch", status)] + [("match", {})] * 80, 1)
    summary = shadow_summary(document, None)
    assert summary["timeline_kept"] == 50 and len(summary["timeline"]) == 50
    assert len(shadow_summary(document)["timeline"]) == 20
    assert summary["first_at"] == "1970-01-01T00:00:10Z" and summary["evidence_seconds"] == 80
    assert summary["last_mismatch"]["differences"] == status and summary["differing_since"] == {}
    assert shadow_summary({"comparisons": {"match": 3}})["first_at"] is None  # a record from before


@pytest.mark.parametrize(("accept", "html"), [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
    ("text/html", True), ("*/*", False), (None, False), ("application/json", False),
    ("application/json, text/html;q=0.9", False), ("text/html;q=0", False),
])
def test_only_a_browser_gets_the_page(accept, html):
    assert wants_html(accept) is html


async def test_a_mode_change_by_reload_shows_when_and_how(tmp_path, simulator):
    _, sdrs = simulator
    config = write_config(tmp_path, sdrs, None)
    write_mappings(tmp_path / "mappings", [entry(SHADOW_RCG, SHADOW_GROUP, "shadow")])
    settings = load_settings(config)
    app = build_app(settings, load_mappings(settings.mappings))
    runner, port = await start_site(app, "127.0.0.1", 0, settings=settings)
    try:
        shim = f"http://127.0.0.1:{port}"
        (before,) = (await call("GET", shim + "/migration")).json()["groups"]
        assert before["mode_changed"] is None
        write_mappings(tmp_path / "mappings", [entry(SHADOW_RCG, SHADOW_GROUP, "sdrs")])
        assert reload_config(app[STATE], config)
        # The reload is a fleet switch (README, One switch for the fleet): the group is fenced until this
        # shim, the fleet's one member, acknowledged it.
        for _ in range(100):
            (after,) = (await call("GET", shim + "/migration")).json()["groups"]
            if after["readiness"]["verdict"] == "serving":
                break
            await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    changed = after["mode_changed"]
    assert (changed["old_mode"], changed["new_mode"]) == ("shadow", "sdrs")
    assert changed["at"].endswith("Z") and changed["by"] == f"a reload (SIGHUP) of {config}"
    assert after["readiness"]["verdict"] == "serving"
