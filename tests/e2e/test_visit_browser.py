"""Whole video visits in real Chromium, each person in a browser context of their own,
driven as a person would (roles, labels, clicks and keys): the clinician's dashboard and
call page, the patient's link, a legal representative, a network drop, the end; and a
browser clinician with a headless `telehealth join` patient.

Video is proven from each page's own getStats: `data-frames-decoded` on the remote tiles
(`[data-peer-id]`) must go up between two samples."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from telehealth.config import Settings

from browser import frames_decoded, person, shoot
from conftest import Running
from tcpcut import TcpCutter

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
DOB = "1990-04-27"
RECONNECTING = "Reconnecting… your call will continue automatically"
OUTAGE_S = 5.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A drop of ~5 s must fit in the reconnect grace (the service's default is 60 s; the
    # shared fixture's 5 s would make the browser give up just as the network returns).
    return replace(settings, ice_host_addresses=("127.0.0.1",), reconnect_grace_s=30.0)




def where(page: Page) -> str:
    """The page's address without a link token (failure messages are shown and kept)."""
    return re.sub(r"/v/.*", "/v/<link>", page.url)


def watch_errors(page: Page) -> list[str]:
    """Uncaught script errors (and unhandled rejections) on the page."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{where(page)}: {exc}"))
    return errors


async def log_in(page: Page, server: Running) -> None:
    await page.goto(server.url + "/dashboard")
    await expect(page.get_by_role("heading", name="Clinician log in")).to_be_visible()
    await page.get_by_label("Email").fill("dr.rivera@example.org")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Your visits")).to_be_visible()


async def start_visit_from_dashboard(page: Page, patient: str = "Alex Morgan") -> None:
    """Dashboard -> "Start visit" -> the call page, in the call."""
    await page.get_by_role("link", name=f"Start visit with {patient}").click()
    await expect(page).to_have_url(re.compile(r"/visits/[^/]+/call$"))
    await expect(page.get_by_role("button", name="End visit for everyone")).to_be_visible(
        timeout=15_000)


async def confirm_identity(page: Page, *, own_name: str | None = None) -> None:
    await expect(page.get_by_role("heading", name="Welcome to your visit")).to_be_visible()
    await page.get_by_label("Month").select_option(label="April")
    await page.get_by_label("Day").fill("27")
    await page.get_by_label("Year").fill("1990")
    if own_name is not None:
        await page.get_by_label("Your full name").fill(own_name)
    await page.get_by_role("button", name="Continue").click()


async def check_devices(page: Page, verdict: str | re.Pattern[str] = "Good connection") -> None:
    await expect(page.get_by_role("heading", name="Check your camera and sound")).to_be_visible()
    await expect(page.get_by_text(verdict)).to_be_visible(timeout=20_000)
    await page.get_by_role("button", name="Continue", exact=True).click()


async def give_location(page: Page) -> None:
    await expect(page.get_by_role("heading", name="Where are you right now?")).to_be_visible()
    await page.get_by_label("State").select_option("CA")
    await page.get_by_label("Yes, I'm at home").check()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Your clinician will let you in shortly")
                 ).to_be_visible()


def tile(page: Page, name: str) -> Locator:
    """The video tile of someone else in the call, found by the name it shows."""
    return page.locator("[data-peer-id]").filter(has=page.get_by_text(name, exact=True))


async def sees_video(page: Page, name: str, *, frames: int = 5, timeout: float = 20.0) -> None:
    """The page decodes video from `name`: framesDecoded rises by `frames` between samples."""
    found = tile(page, name)
    await expect(found).to_be_visible(timeout=timeout * 1000)
    peer_id = await found.get_attribute("data-peer-id")
    assert peer_id
    first = await frames_decoded(page, peer_id)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last = first
    while loop.time() < end:
        await asyncio.sleep(0.25)
        last = await frames_decoded(page, peer_id)
        if last >= first + frames:
            return
    raise AssertionError(f"{where(page)}: video from {name} is not decoded ({first} -> {last})")


async def fills_the_window(page: Page) -> None:
    """The call (tiles and controls) uses the whole width of the window."""
    box = await page.get_by_role("region", name="Video visit").bounding_box()
    viewport = page.viewport_size
    assert box is not None and viewport is not None
    assert box["width"] >= viewport["width"] - 20, (where(page), box, viewport)


async def test_a_whole_visit_between_a_clinician_and_a_patient(
    server: Running, browser: Browser
) -> None:
    clinician, _ = await server.clinician()
    dr_context = await person(browser)
    await dr_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    dr = await dr_context.new_page()
    await log_in(dr, server)
    dr_errors = watch_errors(dr)

    # A new visit from the dashboard form (the start time it suggests), and its link.
    await dr.get_by_role("button", name="New visit").click()
    await dr.get_by_label("Patient's full name").fill("Alex Morgan")
    await dr.get_by_label("Patient's date of birth").fill(DOB)
    await dr.get_by_role("button", name="Create visit").click()
    await expect(dr.get_by_role("region", name="Visit created")).to_contain_text("Alex Morgan")
    link = await dr.get_by_role("textbox", name="Patient link", exact=True).input_value()
    await dr.get_by_role("button", name="Copy patient link").click()
    await expect(dr.get_by_role("status").filter(has_text="Link copied.")).to_be_attached()
    assert await dr.evaluate("navigator.clipboard.readText()") == link

    port = int(server.url.rsplit(":", 1)[1])
    async with TcpCutter(port).running() as net:
        # The patient's whole connection (page, API, signaling) goes through the cutter.
        patient_link = link.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{net.port}/")
        assert patient_link != link
        pt_context = await person(browser, phone=True)
        pt = await pt_context.new_page()
        pt_errors = watch_errors(pt)
        await pt.goto(patient_link)
        await confirm_identity(pt)
        await check_devices(pt)
        await give_location(pt)

        # The clinician sees them arrive and lets them in from the dashboard.
        alert = dr.get_by_role("alert").filter(has_text="Alex Morgan (patient) is waiting")
        await expect(alert).to_be_visible()
        await shoot(dr, "visit-clinician-admit-desktop")
        await dr.get_by_role("button", name="Admit Alex Morgan").click()
        await expect(pt.get_by_role("region", name="Video visit")).to_be_visible()
        await expect(pt.get_by_text("Only you so far")).to_be_visible()
        await dr.get_by_role("link", name="Join visit with Alex Morgan").click()
        await expect(dr.get_by_role("button", name="End visit for everyone")).to_be_visible(
            timeout=15_000)

        # Each sees the other.
        await sees_video(dr, "Alex Morgan")
        await sees_video(pt, "Dana Rivera")
        await expect(pt.get_by_text("With Dana Rivera (Clinician)")).to_be_visible()
        # Both clicked their way in: the other's sound plays without another click.
        for page in (dr, pt):
            await expect(page.get_by_role("button", name="Turn on sound")).to_be_hidden()
            await fills_the_window(page)
        await shoot(dr, "visit-call-clinician-desktop")
        await shoot(pt, "visit-call-patient-phone")

        # Chat, both ways.
        await dr.get_by_role("button", name="Chat", exact=True).click()
        await dr.get_by_label("Message", exact=True).fill("Hello Alex, can you hear me?")
        await dr.get_by_role("button", name="Send").click()
        dr_log = dr.get_by_role("log", name="Chat history")
        await expect(dr_log).to_contain_text("Hello Alex, can you hear me?")
        await pt.get_by_role("button", name="Chat, 1 new", exact=True).click()
        pt_log = pt.get_by_role("log", name="Chat history")
        await expect(pt_log.get_by_role("listitem").filter(has_text="Dana Rivera")
                     ).to_contain_text("Hello Alex, can you hear me?")
        await pt.get_by_label("Message", exact=True).fill("Yes, loud and clear.")
        await pt.get_by_label("Message", exact=True).press("Enter")
        await expect(dr_log.get_by_role("listitem").filter(has_text="Alex Morgan")
                     ).to_contain_text("Yes, loud and clear.")
        await expect(pt_log).to_contain_text("Yes, loud and clear.")
        await shoot(pt, "visit-chat-patient-phone")
        await pt.get_by_role("button", name="Close chat").click()
        await dr.get_by_role("button", name="Close chat").click()

        # The patient mutes; the clinician sees it on the patient's tile.
        muted = tile(dr, "Alex Morgan").get_by_text("Muted", exact=True)
        await expect(muted).to_be_hidden()
        await pt.get_by_role("button", name="Mute", exact=True).click()
        await expect(pt.get_by_role("button", name="Unmute", exact=True)).to_be_visible()
        await expect(muted).to_be_visible()

        # The patient's network drops for a few seconds, then comes back.
        assert net.cut() >= 2  # the patient's signaling socket, both legs
        await pt_context.set_offline(True)
        loop = asyncio.get_running_loop()
        dropped_at = loop.time()
        await expect(pt.get_by_text(f"You're offline. {RECONNECTING}")).to_be_visible()
        await expect(tile(dr, "Alex Morgan").get_by_text("Reconnecting…", exact=True)
                     ).to_be_visible()
        await shoot(pt, "visit-reconnecting-patient-phone")
        await shoot(dr, "visit-reconnecting-clinician-desktop")
        await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - dropped_at)))  # the outage
        await pt_context.set_offline(False)

        # It recovers by itself: banners gone, new connections, video again both ways.
        await expect(pt.get_by_text(RECONNECTING)).to_have_count(0, timeout=15_000)
        await expect(tile(dr, "Alex Morgan").get_by_text("Reconnecting…", exact=True)
                     ).to_have_count(0, timeout=15_000)
        await sees_video(pt, "Dana Rivera")
        await sees_video(dr, "Alex Morgan")
        await expect(dr.get_by_text(RECONNECTING)).to_have_count(0)
        await expect(pt.get_by_text(RECONNECTING)).to_have_count(0)
        await expect(muted).to_be_visible()  # still muted: the same place, resumed
        await expect(pt.get_by_role("button", name="Unmute", exact=True)).to_be_visible()
        for page in (dr, pt):
            await expect(page.get_by_role("button", name="Turn on sound")).to_be_hidden()
        await shoot(pt, "visit-recovered-patient-phone")

        # The clinician ends it for everyone.
        await dr.get_by_role("button", name="End visit for everyone").click()
        await dr.get_by_role("button", name="Yes, end visit").click()
        await expect(pt.get_by_role("heading", name="Your visit has ended")).to_be_visible()
        await shoot(pt, "visit-ended-patient-phone")
        await expect(dr).to_have_url(re.compile(r"/visits/[^/]+/summary"))
        await expect(dr.get_by_role("heading", name="Visit with Alex Morgan")).to_be_visible()

    (visit,) = await server.services.store.visits_for(clinician.id)
    patient_id = next(p.id for p in await server.services.store.participants(visit.id)
                      if p.role == "patient")
    kinds = [(e.participant_id, e.kind) for e in await server.services.timeline(visit)]
    assert (patient_id, "reconnecting") in kinds
    assert (patient_id, "rejoined") in kinds
    assert kinds.count((patient_id, "admitted")) == 1  # no second admission after the drop
    assert dr_errors == [] and pt_errors == []


async def test_a_three_way_visit_with_a_legal_representative(
    server: Running, browser: Browser
) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician, representative=True)
    _, rep_link = await server.services.add_participant(
        created.visit, role="legal_representative", name="")
    dr = await (await person(browser)).new_page()
    await log_in(dr, server)
    errors = watch_errors(dr)
    await start_visit_from_dashboard(dr)

    pt = await (await person(browser, phone=True)).new_page()
    rep = await (await person(browser)).new_page()
    errors += watch_errors(pt) + watch_errors(rep)

    async def patient_comes() -> None:
        await pt.goto(created.link_for_role("patient"))
        await confirm_identity(pt)
        await check_devices(pt, re.compile(r"(Good|Fair) connection"))
        await give_location(pt)

    async def representative_comes() -> None:
        await rep.goto(rep_link)
        await expect(rep.get_by_role("group", name="The patient's date of birth")
                     ).to_be_visible()
        await expect(rep.get_by_label("Your full name")).to_be_visible()
        await shoot(rep, "visit-representative-identity-desktop")
        await confirm_identity(rep, own_name="")
        await expect(rep.get_by_role("alert")).to_contain_text("Please enter your full name")
        await rep.get_by_label("Your full name").fill("Sam Morgan")
        await rep.get_by_role("button", name="Continue").click()
        await check_devices(rep, re.compile(r"(Good|Fair) connection"))
        await give_location(rep)

    await asyncio.gather(patient_comes(), representative_comes())

    # Let both in from the call page.
    await dr.get_by_role("button", name="Admit Alex Morgan").click()
    await dr.get_by_role("button", name="Admit Sam Morgan").click()
    await expect(dr.get_by_role("button", name=re.compile("^Admit"))).to_have_count(0)

    people = {dr: ["Alex Morgan", "Sam Morgan"], pt: ["Dana Rivera", "Sam Morgan"],
              rep: ["Dana Rivera", "Alex Morgan"]}
    for page, others in people.items():
        for name in others:
            await sees_video(page, name)
    await expect(rep.get_by_text("With Dana Rivera (Clinician), Alex Morgan (Patient)")
                 ).to_be_visible()
    await expect(tile(pt, "Sam Morgan")).to_contain_text("Legal representative")
    for page in people:
        await fills_the_window(page)
    await shoot(dr, "visit-3way-clinician-desktop")
    await shoot(pt, "visit-3way-patient-phone")
    await shoot(rep, "visit-3way-representative-desktop")

    await dr.get_by_role("button", name="End visit for everyone").click()
    await dr.get_by_role("button", name="Yes, end visit").click()
    for page in (pt, rep):
        await expect(page.get_by_role("heading", name="Your visit has ended")).to_be_visible()
    assert errors == []


async def join_from_the_command_line(link: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "TELEHEALTH_ICE_HOST_ADDRESSES": "127.0.0.1"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telehealth.cli", "join", link, "--dob", DOB,
        "--duration", "20", "--json", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_a_browser_clinician_with_a_headless_patient(
    server: Running, browser: Browser
) -> None:
    clinician, _ = await server.clinician()
    link = (await server.visit(clinician)).link_for_role("patient")
    dr = await (await person(browser)).new_page()
    await log_in(dr, server)
    errors = watch_errors(dr)
    await start_visit_from_dashboard(dr)

    cli = await join_from_the_command_line(link)
    try:
        admit = dr.get_by_role("button", name="Admit Alex Morgan")
        await expect(admit).to_be_visible(timeout=15_000)
        await admit.click()
        await sees_video(dr, "Alex Morgan")
        await expect(dr.get_by_role("button", name="Turn on sound")).to_be_hidden()
        await shoot(dr, "visit-cli-clinician-desktop")
        out, err = await asyncio.wait_for(cli.communicate(), timeout=35)
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
    assert cli.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["connected"] is True, result
    assert result["video_frames_received"] > 0, result
    # It left after its 20 s: the clinician's page shows it gone.
    await expect(tile(dr, "Alex Morgan")).to_have_count(0, timeout=10_000)
    await expect(dr.get_by_text("Only you so far")).to_be_visible()
    assert errors == []
