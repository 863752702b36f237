"""The clinician's day in a real browser (Chromium through Playwright), by roles and labels:
log in, create a visit, add an interpreter, copy links, see a patient arrive, admit from
the dashboard, end the visit, read the summary; then the call page. Saves screenshots of
every clinician page (desktop 1280x800, phone 390x844) into docs/screenshots/."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from browser import DESKTOP, PHONE, SCREENSHOTS
from conftest import Running

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
DOB = "1990-04-27"
ZONE = "America/New_York"  # not the server's (UTC): times must be converted both ways
SIZES = {"desktop": DESKTOP, "phone": PHONE}


class Guest:
    """Someone with a link, waiting on a bare WebSocket (no media)."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # Reading all the time also answers the server's heartbeat pings.
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def join(cls, server: Running, link: str, dob: str | None = None) -> Guest:
        body = {"token": link.rsplit("/v/", 1)[1], **({"dob": dob} if dob else {})}
        http = aiohttp.ClientSession()
        async with http.post(server.url + "/api/v1/join", json=body) as resp:
            grant = await resp.json()
            assert resp.status == 200, grant
        ws = await http.ws_connect(server.url + "/ws")
        guest = cls(http, ws)
        await ws.send_str(json.dumps({"type": "hello", "v": 1, "ticket": grant["ticket"]}))
        assert (await guest.next("welcome"))["state"] == "waiting"
        return guest

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frames.put_nowait(json.loads(msg.data))

    async def next(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (frame := await self.frames.get())["type"] != type_:
                pass
        return frame

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.http.close()


async def shoot_both(page: Page, name: str) -> None:
    """`docs/screenshots/<name>-desktop.png` and `-phone.png`, the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in SIZES.items():
        await page.set_viewport_size(viewport)
        await page.evaluate("window.scrollTo(0, 0)")  # sticky alerts where they belong
        await page.wait_for_timeout(300)  # layout and fonts settle
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)
    await page.set_viewport_size(SIZES["desktop"])


def watch_errors(page: Page) -> list[str]:
    """Script errors on the page (an uncaught one fails the test at the end)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


def link_box(page: Page, label: str) -> Locator:
    """The read-only text box showing a link (copying may not work everywhere)."""
    return page.get_by_role("textbox", name=label, exact=True)


async def log_in(page: Page, server: Running) -> None:
    await page.goto(server.url + "/dashboard")
    await expect(page).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"))
    await expect(page.get_by_role("heading", name="Clinician log in")).to_be_visible()
    await page.get_by_label("Email").fill("dr.rivera@example.org")
    await page.get_by_label("Password").fill("not my password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("do not match")
    await shoot_both(page, "login")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(server.url + "/dashboard")
    await expect(page.get_by_role("heading", name="Your visits")).to_be_visible()


async def create_visit(page: Page, start: datetime) -> str:
    """Fill the new-visit form; the patient link the page shows afterwards."""
    await page.get_by_role("button", name="New visit").click()
    await page.get_by_label("Patient's full name").fill("Alex Morgan")
    await page.get_by_label("Patient's date of birth").fill(DOB)
    await page.get_by_label("Scheduled start").fill(start.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_label("Visit type").select_option("intake")
    await page.get_by_role("button", name="Create visit").click()
    created = page.get_by_role("region", name="Visit created")
    await expect(created).to_be_visible()
    await expect(created).to_contain_text("Alex Morgan, Intake")
    link = await link_box(page, "Patient link").input_value()
    assert "/v/" in link
    return link


async def test_a_clinicians_visit_from_the_dashboard(server: Running, browser: Browser) -> None:
    dr, _ = await server.clinician()
    context = await browser.new_context(viewport=SIZES["desktop"], timezone_id=ZONE,
                                        locale="en-US",
                                        permissions=["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    await log_in(page, server)  # (a wrong password first: a 401 the console reports)
    errors = watch_errors(page)

    # A new visit, ten minutes from now in the browser's own zone.
    start = (datetime.now(ZoneInfo(ZONE)) + timedelta(minutes=10)).replace(second=0,
                                                                          microsecond=0)
    patient_link = await create_visit(page, start)
    (visit,) = await server.services.store.visits_for(dr.id)
    assert visit.scheduled_start == start.astimezone(UTC)
    row = page.locator("tbody", has=page.get_by_text("Alex Morgan", exact=True))
    # (Intl puts a narrow no-break space before AM/PM)
    await expect(row.get_by_text(re.compile(start.strftime("^%-I:%M\\s%p$")))).to_be_visible()
    await expect(row.get_by_text("Consent: not on file")).to_be_visible()
    await expect(row.get_by_text("Scheduled", exact=True)).to_be_visible()

    # Copying puts the very link on the clipboard.
    await page.get_by_role("button", name="Copy patient link").click()
    await expect(page.get_by_role("status").filter(has_text="Link copied.")).to_be_attached()
    assert await page.evaluate("navigator.clipboard.readText()") == patient_link

    # An interpreter, with a link of their own.
    await page.get_by_role("button", name="Add participant to the visit with Alex Morgan").click()
    await page.get_by_label("Role").select_option("interpreter")
    await page.get_by_label("Their full name").fill("Ana Ruiz")
    await page.get_by_role("button", name="Add participant", exact=True).click()
    interpreter_link = link_box(page, "Link for Ana Ruiz (interpreter)")
    await expect(interpreter_link).to_be_focused()
    assert "/v/" in await interpreter_link.input_value()
    await page.get_by_role("button", name="Copy link for Ana Ruiz (interpreter)").click()
    assert (await page.evaluate("navigator.clipboard.readText()")
            == await interpreter_link.input_value())
    assert await link_box(page, "Link for Alex Morgan (patient)").input_value() == patient_link

    # The patient arrives: an alert, a chime, a line with Admit and Deny.
    guest = await Guest.join(server, patient_link, DOB)
    try:
        alert = page.get_by_role("alert").filter(has_text="Alex Morgan (patient) is waiting")
        await expect(alert).to_be_visible()
        await expect(row.get_by_text(re.compile(r"Alex Morgan is waiting \(just now\)"))
                     ).to_be_visible()
        await expect(page.locator("#waiting-alerts")).to_have_attribute("data-chimes", "1")
        await expect(page).to_have_title(re.compile(r"^\(1 waiting\) Dashboard"))
        await shoot_both(page, "dashboard")

        await page.get_by_role("button", name="Admit Alex Morgan").click()
        assert (await guest.next("admitted"))["participants"] == []
        await expect(row.get_by_text("In the call now: Alex Morgan (patient)")).to_be_visible()
        await expect(alert).to_have_count(0)
        await expect(row.get_by_text("In progress", exact=True)).to_be_visible()

        # End it for everyone, after a confirmation.
        await page.get_by_role("button", name="End the visit with Alex Morgan").click()
        dialog = page.get_by_role("dialog", name="End the visit for everyone?")
        await dialog.get_by_role("button", name="End visit for everyone").click()
        assert (await guest.next("ended"))["reason"] == "ended"
    finally:
        await guest.close()
    await expect(row.get_by_text("Ended", exact=True)).to_be_visible()
    await row.get_by_role("link", name="Summary of the visit with Alex Morgan").click()

    # The summary: who was there, when, for how long, in the browser's zone.
    await expect(page.get_by_role("heading", name="Visit with Alex Morgan")).to_be_visible()
    who = page.get_by_role("region", name="Who was there")
    patient_row = who.get_by_role("row").filter(has_text="Alex Morgan")
    await expect(patient_row).to_contain_text("Patient")
    await expect(patient_row).to_contain_text(re.compile(r"\d:\d\d:\d\d [AP]M E[SD]T"))
    await expect(who.get_by_role("row").filter(has_text="Ana Ruiz")).to_contain_text(
        "Did not join")
    timeline = page.get_by_role("region", name="Timeline")
    await expect(timeline).to_contain_text("Alex Morgan (Patient) entered the waiting room")
    await expect(timeline).to_contain_text(
        "Alex Morgan (Patient) was admitted by Dana Rivera (Clinician)")
    await expect(timeline).to_contain_text("The visit was ended")
    await shoot_both(page, "summary")
    assert errors == []


async def test_the_clinicians_call_page(server: Running, browser: Browser) -> None:
    dr, _ = await server.clinician()
    created = await server.visit(dr, patient_name="Jordan Lee")
    context = await browser.new_context(viewport=SIZES["desktop"], timezone_id=ZONE,
                                        locale="en-US")
    page = await context.new_page()
    await log_in(page, server)  # (a wrong password first: a 401 the console reports)
    errors = watch_errors(page)
    call_url = f"{server.url}/visits/{created.visit.id}/call"

    # Camera and microphone refused: plain-words help and ways on.
    refused = await context.new_page()
    await refused.add_init_script("navigator.mediaDevices.getUserMedia = () => Promise.reject("
                                  "new DOMException('no', 'NotAllowedError'));")
    await refused.goto(call_url)
    await expect(refused.get_by_text("Your browser was not allowed to use the camera")
                 ).to_be_visible()
    await expect(refused.get_by_role("button", name="Join with audio only")).to_be_visible()
    await shoot_both(refused, "clinician-call-devices")
    await refused.close()

    # With (fake) devices: straight into the call; a patient waits and is let in from here.
    guest = await Guest.join(server, created.link_for_role("patient"), DOB)
    try:
        await page.get_by_role("link", name="Start visit with Jordan Lee").click()
        await expect(page).to_have_url(call_url)
        await expect(page.get_by_role("button", name="End visit for everyone")).to_be_visible(
            timeout=15000)
        admit = page.get_by_role("button", name=re.compile(r"^Admit"))
        await expect(admit).to_be_visible()
        await shoot_both(page, "clinician-call")
        await admit.click()
        await guest.next("admitted")
        await page.get_by_role("button", name="End visit for everyone").click()
        await page.get_by_role("button", name="Yes, end visit").click()
        assert (await guest.next("ended"))["reason"] == "ended"
    finally:
        await guest.close()
    await expect(page).to_have_url(re.compile(
        rf"/visits/{created.visit.id}/summary\?tz=America%2FNew_York$"))
    await expect(page.get_by_role("region", name="Timeline")).to_contain_text(
        "Jordan Lee (Patient) was admitted by Dana Rivera (Clinician)")
    assert errors == []
