"""The console in a real browser (Debian's Chromium through Playwright) against a real `cos-relay serve` and a
real subscriber, on each backend: an operator finds a job, follows it to its dead delivery and retries it,
pauses and resumes a subscriber; markup in an object key stays text; axe-core finds nothing serious on any
page; nothing is requested from anywhere but the gateway. Screenshots go to $RELAY_SCREENSHOTS (default: the
test's tmp)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Error, Page, Request, expect, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, axe_source, serious_violations
from tests.conftest import ADMIN_TOKEN, callback_url, job_body, job_id
from tests.console.test_console_pages import MARKUP, with_object_key
from tests.live import ProcessServer, wait_until
from tests.sink import Sink
from tests.test_connections import TOKENS

#: Slow tier: a gateway, a subscriber and a browser as real processes.
#: Without /usr/bin/chromium they fail (scripts/system-packages installs it), never skip.
pytestmark = pytest.mark.slow

DEAD = job_id(40)
MARKED = job_id(41)


@dataclass
class World:
    gateway: ProcessServer
    sink: Sink
    api: httpx.Client
    shots: Path
    axe: str = field(repr=False)

    def url(self, path: str) -> str:
        return f"{self.gateway.url}{path}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One gateway (on SQLite: the console's reads on PostgreSQL are tests/store's) for the module's tests."""
    sink = Sink().serve()
    db = tmp_path_factory.mktemp("console") / "relay.db"
    args = (*TOKENS, "--allow-networks", "127.0.0.0/8", "--poll-interval", "0.1")
    gateway = ProcessServer(db, args=args).start()
    shots = Path(os.environ.get("RELAY_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as api:
        # billing fails twice, and with one retry its first delivery (job 40's) is dead; later requests succeed.
        created = api.post(
            "/api/subscribers", json={"name": "billing", "url": f"{sink.url}/flaky/2", "retry_schedule": [0]}
        )
        assert created.status_code == 201, created.text
        api.post("/api/subscribers", json={"name": "audit", "url": f"{sink.url}/ok", "types": ["cos.job.*"]})
        xml = {"content-type": "application/xml"}
        api.post(callback_url(), content=job_body(40), headers=xml)
        wait_until(lambda: dead_delivery(api) is not None, what="billing's first delivery dead")
        for number in range(8):
            api.post(callback_url(), content=job_body(number, "Failed" if number % 3 == 0 else "Success"), headers=xml)
        api.post(callback_url(), content=with_object_key(41, MARKUP), headers=xml)
        api.post(callback_url(), content=b"<Response><JobsDetail>", headers=xml)
        wait_until(lambda: len(sink.to("/flaky/2")) == 11, what="billing's other deliveries")
        yield World(gateway, sink, api, shots, axe_source())
    gateway.stop()
    sink.stop()


def dead_delivery(api: httpx.Client) -> int | None:
    found = api.get("/api/deliveries", params={"subscriber": "billing", "state": "dead"}).json()["items"]
    return int(found[0]["id"]) if found else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page with everything it did that it should not: dialogs, console errors, requests elsewhere."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)


@pytest.fixture
def watched(browser: Browser, world: World) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    seen = Watched(page)

    def dialog(opened: Dialog) -> None:
        seen.dialogs.append(opened.message)
        opened.dismiss()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.errors.append(message.text)

    def crashed(error: Error) -> None:
        seen.errors.append(str(error))

    def outside(request: Request) -> None:
        if not request.url.startswith(world.gateway.url):
            seen.elsewhere.append(request.url)

    page.on("dialog", dialog)
    page.on("console", console)
    page.on("pageerror", crashed)
    page.on("request", outside)
    yield seen
    context.close()
    assert seen.elsewhere == [], "the console asked for something from elsewhere"
    assert seen.errors == [], "the browser reported errors (a CSP violation, a failed load, a script error)"
    assert seen.dialogs == []


def sign_in(page: Page, world: World) -> None:
    page.goto(world.url("/console/jobs"))
    expect(page).to_have_url(world.url("/console/login?next=/console/jobs"))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(world.url("/console/jobs"))


def check(page: Page, world: World, name: str) -> None:
    """axe-core on the page as served; then a screenshot."""
    assert serious_violations(page, world.axe) == [], name
    page.screenshot(path=str(world.shots / f"{name}.png"))


def test_an_operator_finds_a_job_follows_it_to_its_dead_delivery_and_retries_it(watched: Watched, world: World) -> None:
    page = watched.page
    sign_in(page, world)
    check(page, world, "jobs")
    page.get_by_label("JobId").fill(DEAD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(world.url(f"/console/jobs/{DEAD}"))
    expect(page.get_by_role("heading", level=1)).to_have_text(DEAD)
    check(page, world, "job")
    dead = dead_delivery(world.api)
    page.get_by_role("link", name=f"#{dead}").click()
    expect(page).to_have_url(world.url(f"/console/deliveries/{dead}"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("dead")
    check(page, world, "delivery-dead")
    before = len(world.sink.to("/flaky/2"))
    page.get_by_role("button", name="Retry now").click()
    expect(page.get_by_role("status")).to_contain_text("Queued again")
    world.sink.wait_for("/flaky/2", before + 1)  # the retry arrived at the real subscriber
    wait_until(lambda: world.api.get(f"/api/deliveries/{dead}").json()["state"] == "delivered", what="delivered")
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_contain_text("delivered")
    expect(page.get_by_role("cell", name="manual")).to_be_visible()
    check(page, world, "delivery")


def test_an_operator_pauses_and_resumes_a_subscriber(watched: Watched, world: World) -> None:
    page = watched.page
    sign_in(page, world)
    page.get_by_role("link", name="Subscribers").click()
    check(page, world, "subscribers")
    page.get_by_role("link", name="audit").click()
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("paused")
    assert world.api.get("/api/subscribers/audit").json()["state"] == "paused"
    check(page, world, "subscriber-paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("enabled")
    assert world.api.get("/api/subscribers/audit").json()["state"] == "enabled"
    check(page, world, "subscriber")


def test_markup_in_an_object_key_shows_as_text_and_runs_nothing(watched: Watched, world: World) -> None:
    page = watched.page
    sign_in(page, world)
    for path in ("/console/jobs", f"/console/jobs/{MARKED}"):
        page.goto(world.url(path))
        expect(page.get_by_text(MARKUP).first).to_be_visible()
        assert page.locator("img[src='x']").count() == 0
    # The watched fixture fails the test on any dialog or script error.


def test_every_page_is_keyboard_reachable_and_has_no_serious_accessibility_finding(
    watched: Watched, world: World
) -> None:
    page = watched.page
    page.goto(world.url("/console/login"))
    check(page, world, "login")
    # Signing in by keyboard alone: the token field has focus, Enter submits.
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(world.url("/console/"))
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    check(page, world, "overview")
    page.goto(world.url("/console/callbacks"))
    check(page, world, "callbacks")
    page.goto(world.url("/console/jobs?state=nonsense"))
    expect(page.get_by_role("alert")).to_contain_text("state must be one of")
    check(page, world, "error")
    # The one error the browser reports is this page's own status, 400.
    assert watched.errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    watched.errors.clear()


#: A phone (an iPhone 12-15's CSS width) and a desktop.
WIDTHS = (390, 1440)


def console_pages(world: World) -> dict[str, str]:
    delivery = dead_delivery(world.api)
    return {
        "overview": "/console/",
        "jobs": "/console/jobs",
        "job": f"/console/jobs/{DEAD}",
        "callbacks": "/console/callbacks",
        "subscribers": "/console/subscribers",
        "subscriber": "/console/subscribers/billing",
        "delivery": f"/console/deliveries/{delivery}",
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_a_phone_and_a_desktop_with_the_header_controls_in_view(
    browser: Browser, world: World, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, world)
        for name, path in console_pages(world).items():
            page.goto(world.url(path))
            # The page itself never scrolls sideways: a wide table scrolls inside its own box.
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name} at {width} px is {overflow} px wider than the screen"
            for control in ("Sign out", "Sign out everywhere"):
                box = page.get_by_role("button", name=control, exact=True).bounding_box()
                assert box is not None, f"{name}: {control} is not shown"
                assert box["x"] >= 0, f"{name} at {width} px: {control} is cut off on the left"
                assert box["x"] + box["width"] <= width, f"{name} at {width} px: {control} is cut off on the right"
            sections = page.get_by_role("navigation", name="Sections")
            for link in ("Overview", "Jobs", "Callbacks", "Subscribers"):
                expect(sections.get_by_role("link", name=link, exact=True)).to_be_in_viewport()
            page.screenshot(path=str(world.shots / f"{name}-{width}.png"), full_page=True)
    finally:
        context.close()
