"""A patient in real headless Chromium, driven as a person would, with a headless clinician."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from playwright.async_api import Browser, Page, expect

from telehealth.config import Settings
from telehealth.media.participant import Participant, ParticipantOptions

from browser import frames_decoded, launch, person, shoot
from conftest import Clock, Running

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, ice_host_addresses=("127.0.0.1",),
                   practice_name="Riverside Counseling")




async def identity(page: Page, month: str = "April", day: str = "27", year: str = "1990") -> None:
    await page.get_by_label("Month").select_option(label=month)
    await page.get_by_label("Day").fill(day)
    await page.get_by_label("Year").fill(year)
    await page.get_by_role("button", name="Continue").click()


async def rising(page: Page, peer_id: str) -> None:
    """framesDecoded from that peer goes up between two samples."""
    await expect(page.locator(f"[data-peer-id='{peer_id}']")).to_be_attached(timeout=20_000)
    first = await frames_decoded(page, peer_id)
    for _ in range(40):
        await asyncio.sleep(0.5)
        if await frames_decoded(page, peer_id) > first:
            return
    raise AssertionError("no video frames decoded from the other side")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
async def test_patient_joins_from_the_link_and_sees_the_clinician(
    server: Running, browser: Browser, phone: bool
) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    ids = {p.role: p.id for p in created.participants}
    size = "phone" if phone else "desktop"
    page = await (await person(browser, phone=phone)).new_page()

    await page.goto(created.link_for_role("patient"))
    await expect(page.get_by_role("heading", name="Welcome to your visit")).to_be_visible()
    await expect(page.get_by_text("Dana Rivera, LCSW")).to_be_visible()
    await expect(page.get_by_text("Alex Morgan")).to_have_count(0)  # not before the check
    await shoot(page, f"patient-identity-{size}")

    await identity(page, day="28")
    await expect(page.get_by_role("alert")).to_contain_text("4 tries left")
    await page.get_by_label("Day").fill("27")
    await page.get_by_role("button", name="Continue").click()

    await expect(page.get_by_role("heading", name="Check your camera and sound")).to_be_visible()
    await expect(page.get_by_text("Good connection")).to_be_visible(timeout=20_000)
    await shoot(page, f"patient-precall-{size}")
    await page.get_by_role("button", name="Continue", exact=True).click()

    await expect(page.get_by_role("heading", name="Where are you right now?")).to_be_visible()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("alert")).to_contain_text("choose your state")
    await page.get_by_label("State").select_option("CA")
    await page.get_by_label("Yes, I'm at home").check()
    await shoot(page, f"patient-location-{size}")
    await page.get_by_role("button", name="Continue").click()

    await expect(page.get_by_role("heading", name="Your clinician will let you in shortly")
                 ).to_be_visible()
    await shoot(page, f"patient-waiting-{size}")

    dr = Participant(created.link_for_role("clinician"),
                     options=ParticipantOptions(admit_all=True))
    call = asyncio.create_task(dr.run())
    try:
        await rising(page, ids["clinician"])
        await expect(page.get_by_text("Dana Rivera", exact=True)).to_be_visible()
        for _ in range(40):
            peer = dr.snapshot().peers.get(ids["patient"])
            if peer is not None and peer.video_frames > 10:
                break
            await asyncio.sleep(0.25)
        assert peer is not None and peer.video_frames > 10
        await shoot(page, f"patient-call-{size}")
        await dr.end_visit()
    finally:
        if not call.done():
            await dr.leave()
        await call
    await expect(page.get_by_role("heading", name="Your visit has ended")).to_be_visible()
    await shoot(page, f"patient-ended-{size}")

    events = await server.services.timeline(created.visit)
    located = [e.detail for e in events if e.kind == "location"]
    assert located == [{"state": "CA", "at_home": True, "place": "", "callback_phone": ""}]
    assert any(e.kind == "media_connected" and e.participant_id == ids["patient"]
               for e in events)


async def test_every_state_of_a_link_has_a_page(
    server: Running, browser: Browser, clock: Clock
) -> None:
    clinician, _ = await server.clinician()
    page = await (await person(browser, phone=True)).new_page()
    cancelled = await server.visit(clinician)
    await server.services.finish_visit(cancelled.visit, "cancelled")
    ended = await server.visit(clinician)
    await server.services.finish_visit(ended.visit, "ended")
    early = await server.visit(clinician, scheduled_start=clock() + timedelta(hours=5))
    cases = [
        (cancelled.link_for_role("patient"), "This visit was cancelled", "book a new time",
         "link-cancelled"),
        (ended.link_for_role("patient"), "This visit has ended", "contact your practice",
         "link-ended"),
        (early.link_for_role("patient"), "Your visit is not open yet", "a little before",
         "link-not-open"),
        (ended.link_for_role("patient")[:-6] + "AAAAAA", "This link does not work",
         "whole link", "link-invalid"),
    ]
    for link, heading, action, name in cases:
        response = await page.goto(link)
        assert response is not None and response.status >= 400
        await expect(page.get_by_role("heading", name=heading)).to_be_visible()
        await expect(page.get_by_text(action, exact=False)).to_be_visible()
        await shoot(page, f"{name}-phone")

    locked = await server.visit(clinician)
    await page.goto(locked.link_for_role("patient"))
    for _ in range(5):
        await identity(page, year="1991")
        await page.wait_for_timeout(150)
    await expect(page.get_by_role("alert")).to_contain_text("locked")
    await page.goto(locked.link_for_role("patient"))
    await expect(page.get_by_role("heading", name="This link is locked for now")).to_be_visible()
    await shoot(page, "link-locked-phone")

    expired = await server.visit(clinician, scheduled_start=clock() - timedelta(hours=2))
    clock.advance(hours=1, seconds=1)
    await page.goto(expired.link_for_role("patient"))
    await expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
    await shoot(page, "link-expired-phone")


@pytest.mark.parametrize("problem", ["denied", "no-devices"])
async def test_camera_problems_show_help_and_audio_only(server: Running, problem: str) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    denied = problem == "denied"
    # Denied: the prompt is refused, as a person pressing Block would. No devices: no camera
    # or microphone at all.
    async for b in launch(devices=denied, allow=not denied,
                          extra_args=["--deny-permission-prompts"] if denied else []):
        ctx = await person(b, phone=True, media=not denied)
        page = await ctx.new_page()
        await page.goto(created.link_for_role("patient"))
        await identity(page)
        if problem == "denied":
            await expect(page.get_by_role(
                "heading", name="Your browser is blocking the camera and microphone"
            )).to_be_visible(timeout=15_000)
            await expect(page.get_by_role("button", name="Try again")).to_be_visible()
        else:
            await expect(page.get_by_role("heading", name="We could not find a camera")
                         ).to_be_visible(timeout=15_000)
            await expect(page.get_by_role("button", name="Continue with audio only")
                         ).to_be_visible()
        await shoot(page, f"precall-{problem}-phone")


async def test_waiting_patient_and_clinician_exchange_notes(
    server: Running, browser: Browser
) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    page = await (await person(browser, phone=True)).new_page()
    await page.goto(created.link_for_role("patient"))
    await identity(page)
    # The identity step's own Continue is still on screen (disabled) for a moment.
    await expect(page.get_by_role("heading", name="Check your camera and sound")).to_be_visible()
    await page.get_by_role("button", name="Continue", exact=True).click()
    await page.get_by_label("State").select_option("NY")
    await page.get_by_label("No, somewhere else").check()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Your clinician will let you in shortly")
                 ).to_be_visible()

    # Nobody from the care team is connected yet: the patient is told, nothing is lost silently.
    await page.get_by_label("Message your clinician").fill("I'm here")
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_text("isn't connected yet")).to_be_visible()

    status, grant = await server.post("/api/v1/join", {
        "token": created.link_for_role("clinician").rsplit("/v/", 1)[1]})
    assert status == 200
    async with server.http.ws_connect(server.url + "/ws") as ws:
        await ws.send_json({"type": "hello", "v": 1, "ticket": grant["ticket"]})
        patient_id = next(p.id for p in created.participants if p.role == "patient")
        await page.get_by_label("Message your clinician").fill("Running 2 minutes late, sorry")
        await page.get_by_role("button", name="Send").click()
        while True:
            frame = await ws.receive_json(timeout=10)
            if frame["type"] == "lobby_chat":
                break
        assert frame["text"] == "Running 2 minutes late, sorry"
        assert frame["with"] == patient_id
        await ws.send_json({"type": "lobby_chat", "to": patient_id, "text": "No problem!"})
        log = page.get_by_role("log", name="Messages with your clinician")
        await expect(log).to_contain_text("No problem!")
        await expect(log).to_contain_text("Running 2 minutes late")
        await shoot(page, "patient-waiting-chat-phone")
