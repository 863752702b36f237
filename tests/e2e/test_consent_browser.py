"""Consent forms in real Chromium, signed with WebCrypto keys made in the page, driven by
roles and labels as a person would: the clinician prepares and signs from the dashboard;
the patient signs from the consent link on a phone; a guardian signs a minor's consent
(and withdraws it); the visit link's consent gate; the /verify page on a good and a
tampered PDF. Every signed PDF is checked offline against the practice CA's root.
Screenshots (desktop 1280x800, phone 390x844) go to docs/screenshots/."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from consent.pki import CA_DIR, load_trust_root
from consent.verify import Report, verify
from telehealth.config import Settings
from telehealth.sign_cli import sign_as_clinician, sign_link

from browser import DESKTOP, PHONE, SCREENSHOTS, person, shoot
from conftest import Running

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
DOB = "1990-04-27"
MINOR_DOB = "2014-06-02"
ZONE = "America/New_York"
SIZES = {"desktop": DESKTOP, "phone": PHONE}
TITLE = "Informed consent for telehealth services"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, ice_host_addresses=("127.0.0.1",),
                   practice_name="Riverside Counseling", require_telehealth_consent=True)


# ---- helpers ---------------------------------------------------------------------------


def watch_errors(page: Page) -> list[str]:
    """Uncaught script errors and anything the browser refused (CSP, framing) on the page.
    (Not every console error: a refused date of birth is a 401 the console reports.)"""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and (
        "Refused" in m.text or "Content Security Policy" in m.text) else None)
    return errors


async def shoot_both(page: Page, name: str) -> None:
    """`docs/screenshots/<name>-desktop.png` and `-phone.png`, the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in SIZES.items():
        await page.set_viewport_size(viewport)
        await page.evaluate("window.scrollTo(0, 0)")
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)
    await page.set_viewport_size(SIZES["desktop"])


async def desktop(browser: Browser) -> BrowserContext:
    return await browser.new_context(viewport=DESKTOP, timezone_id=ZONE, locale="en-US",
                                     permissions=["clipboard-read", "clipboard-write"])


async def log_in(page: Page, server: Running) -> None:
    await page.goto(server.url + "/dashboard")
    await page.get_by_label("Email").fill("dr.rivera@example.org")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Your visits")).to_be_visible()


async def issue(server: Running, token: str, visit_id: str) -> dict[str, Any]:
    status, body = await server.post(f"/api/v1/visits/{visit_id}/consents", {}, token)
    assert status in (200, 201), body
    consent: dict[str, Any] = body["consent"]
    return consent


async def clinician_signed(server: Running, token: str, visit_id: str) -> dict[str, Any]:
    """A consent for the visit's patient, signed by its clinician over the API."""
    consent = await issue(server, token, visit_id)
    signed: dict[str, Any] = (await sign_as_clinician(server.url, consent["id"],
                                                      api_token=token))["consent"]
    assert signed["status"] == "awaiting_patient" and signed["consent_link"]
    return signed


async def consent_pdf(server: Running, token: str, consent_id: str,
                      what: str = "pdf") -> bytes:
    async with server.http.get(f"{server.url}/api/v1/consents/{consent_id}/{what}",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/pdf"
        return await resp.read()


async def consent_status(server: Running, token: str, consent_id: str) -> str:
    status, body = await server.get(f"/api/v1/consents/{consent_id}", token)
    assert status == 200, body
    return str(body["consent"]["status"])


async def verified(settings: Settings, pdf: bytes) -> Report:
    """The report on `pdf` against the practice root in the server's data directory."""
    root = load_trust_root(settings.data_dir / CA_DIR / "ca-cert.pem")
    return await verify(pdf, [root])


async def assert_good(settings: Settings, pdf: bytes, roles: list[str]) -> None:
    report = await verified(settings, pdf)
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    assert [s.role for s in report.signatures if s.kind == "signature"] == roles


async def date_of_birth(page: Page, dob: str) -> None:
    year, month, day = dob.split("-")
    await page.get_by_label("Month").select_option(value=str(int(month)))
    await page.get_by_label("Day").fill(str(int(day)))
    await page.get_by_label("Year").fill(year)


async def read_and_agree(page: Page, size: str | None = None, prefix: str = "consent") -> None:
    """The first two signing steps: read the form (in its frame), agree to e-signatures."""
    await expect(page.get_by_role("heading", name="Please read your consent form")).to_be_visible(
        timeout=15_000)
    frame = page.frame_locator("iframe[title='Your consent form']")
    await expect(frame.get_by_role("heading", name=TITLE)).to_be_visible()
    await expect(page.get_by_role("link", name="Download the form (PDF)")).to_be_visible()
    if size:
        await shoot(page, f"{prefix}-read-{size}")
    await page.get_by_role("button", name="Continue").click()

    await expect(page.get_by_role("heading", name="Signing electronically")).to_be_visible()
    await expect(page.get_by_text("Paper copy.")).to_be_visible()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("alert")).to_contain_text("tick the box")
    await page.get_by_label("I agree to use electronic records and signatures").check()
    if size:
        await shoot(page, f"{prefix}-disclosure-{size}")
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Sign the form")).to_be_visible()


async def sign_as(page: Page, name: str, shot: str | None = None) -> None:
    await page.get_by_label("Type your full name").fill(name)
    if shot:
        await shoot(page, shot)
    await page.get_by_role("button", name="Sign", exact=True).click()
    await expect(page.get_by_role("heading", name="Thank you — your form is signed")
                 ).to_be_visible(timeout=15_000)


# ---- the clinician prepares and signs; the patient signs on a phone -----------------------


async def test_clinician_prepares_then_patient_signs_on_a_phone(
    server: Running, browser: Browser, settings: Settings
) -> None:
    dr, token = await server.clinician()
    created = await server.visit(dr)

    # The clinician: "Not issued" -> Prepare consent -> signs in the dialog.
    page = await (await desktop(browser)).new_page()
    await log_in(page, server)
    errors = watch_errors(page)
    row = page.locator("tbody", has=page.get_by_text("Alex Morgan", exact=True))
    await expect(row.get_by_text("Not issued")).to_be_visible()
    await shoot_both(page, "dashboard-consent-not-issued")
    await row.get_by_role("button", name="Prepare consent for Alex Morgan").click()
    dialog = page.get_by_role("dialog", name="Sign the consent form")
    await expect(dialog).to_be_visible()
    await expect(dialog.frame_locator("iframe").get_by_role("heading", name=TITLE)
                 ).to_be_visible()
    await expect(dialog).to_contain_text("You are signing as: Clinician, LCSW")
    await dialog.get_by_label("Type your full name").fill("Dana Riviera")
    await dialog.get_by_role("button", name="Sign", exact=True).click()
    await expect(dialog.get_by_role("alert")).to_contain_text(
        "doesn't match yours as the practice has it: Dana Rivera")
    await dialog.get_by_label("Type your full name").fill("Dana Rivera")
    await shoot_both(page, "dashboard-consent-sign")
    await dialog.get_by_role("button", name="Sign", exact=True).click()
    await expect(dialog).to_be_hidden(timeout=15_000)
    await expect(row.get_by_text("Waiting for patient")).to_be_visible()
    link_box = page.get_by_role("textbox", name="Consent link for Alex Morgan", exact=True)
    await expect(link_box).to_be_focused()
    link = await link_box.input_value()
    assert "/c/" in link and "?" not in link
    await row.get_by_role("button", name="Copy consent link for Alex Morgan").click()
    assert await page.evaluate("navigator.clipboard.readText()") == link
    await shoot_both(page, "dashboard-consent-waiting")

    # The patient, on a phone: date of birth (a wrong one first), read, agree, sign.
    phone = await (await person(browser, phone=True, media=False)).new_page()
    phone_errors = watch_errors(phone)
    await phone.goto(link)
    await expect(phone.get_by_role("heading", name="Your consent form")).to_be_visible()
    await expect(phone.get_by_text("Alex Morgan")).to_have_count(0)  # not before the check
    await shoot(phone, "consent-identity-phone")
    await date_of_birth(phone, "1990-04-28")
    await phone.get_by_role("button", name="Continue").click()
    await expect(phone.get_by_role("alert")).to_contain_text("4 tries left")
    await date_of_birth(phone, DOB)
    await phone.get_by_role("button", name="Continue").click()
    await read_and_agree(phone, "phone")
    await expect(phone.get_by_text("You are signing as: Patient — I consent to telehealth "
                                   "services")).to_be_visible()
    await phone.get_by_label("Type your full name").fill("Alex Morgen")
    await phone.get_by_role("button", name="Sign", exact=True).click()
    await expect(phone.get_by_role("alert")).to_contain_text(
        "as it appears on the form: Alex Morgan")
    await sign_as(phone, "alex morgan", "consent-sign-phone")
    await expect(phone.get_by_text("Signed by Alex Morgan on")).to_be_visible()
    await expect(phone.get_by_role("button", name="I want to withdraw this consent")
                 ).to_be_visible()
    await shoot(phone, "consent-done-phone")

    # The signed copy the patient downloads verifies: B-LTA, clinician then patient.
    async with phone.expect_download() as download:
        await phone.get_by_role("link", name="Download your signed copy").click()
    path = await (await download.value).path()
    await assert_good(settings, path.read_bytes(), ["clinician", "patient"])

    # Back on the dashboard: signed, with the PDF and the certificate of completion.
    await page.reload()
    await expect(row.get_by_text(re.compile(r"^Signed \w+ \d"))).to_be_visible()
    await expect(row.get_by_text("Consent: on file")).to_be_visible()
    await expect(row.get_by_role("link", name="Signed consent PDF for Alex Morgan")
                 ).to_be_visible()
    await expect(row.get_by_role("link", name="Certificate of completion for Alex Morgan")
                 ).to_be_visible()
    await shoot_both(page, "dashboard-consent-signed")
    (consent,) = (await server.get(f"/api/v1/visits/{created.visit.id}/consents",
                                   token))[1]["consents"]
    assert consent["status"] == "complete"
    pdf = await consent_pdf(server, token, consent["id"])
    await assert_good(settings, pdf, ["clinician", "patient"])
    report = await verified(settings, pdf)
    assert len([s for s in report.signatures if s.kind == "signature"]) == 2
    assert (await consent_pdf(server, token, consent["id"], "certificate")).startswith(b"%PDF")
    async with page.expect_download() as download:
        await row.get_by_role("link", name="Signed consent PDF for Alex Morgan").click()
    assert (await (await download.value).path()).read_bytes() == pdf
    assert errors == [] and phone_errors == []


# ---- a minor's consent, signed by the guardian from the consent link, then withdrawn -------


async def test_guardian_signs_a_minors_consent_and_withdraws_it(
    server: Running, browser: Browser, settings: Settings
) -> None:
    dr, token = await server.clinician()
    created = await server.visit(dr, patient_name="Jamie Morgan", dob=MINOR_DOB,
                                 representative=True)
    consent = await clinician_signed(server, token, created.visit.id)
    assert [f["role"] for f in consent["fields"]] == ["clinician", "legal_representative"]

    page = await (await desktop(browser)).new_page()
    errors = watch_errors(page)
    await page.goto(consent["consent_link"])
    await date_of_birth(page, MINOR_DOB)
    await page.get_by_role("button", name="Continue").click()
    # A representative's link: the API asks for their own name too.
    name = page.get_by_label("Your own full name")
    await expect(name).to_be_visible()
    await expect(name).to_be_focused()
    await expect(page.get_by_role("status").filter(has_text="signing for someone else")
                 ).to_be_visible()
    await shoot(page, "consent-guardian-name-desktop")
    await name.fill("Sam Morgan")
    await page.get_by_role("button", name="Continue").click()
    await read_and_agree(page, "desktop")
    await expect(page.get_by_text(
        "You are signing as: Legal representative (parent) — I consent to telehealth services "
        "on the patient's behalf")).to_be_visible()
    await sign_as(page, "Sam Morgan", "consent-sign-desktop")
    await shoot(page, "consent-done-desktop")
    assert await consent_status(server, token, consent["id"]) == "complete"
    await assert_good(settings, await consent_pdf(server, token, consent["id"]),
                      ["clinician", "legal_representative"])

    # Withdrawing asks first; "Keep my consent" keeps it.
    await page.get_by_role("button", name="I want to withdraw this consent").click()
    confirm = page.get_by_role("region", name="Withdraw your consent?")
    await expect(confirm).to_be_visible()
    await confirm.get_by_role("button", name="Keep my consent").click()
    await expect(confirm).to_be_hidden()
    assert await consent_status(server, token, consent["id"]) == "complete"
    await page.get_by_role("button", name="I want to withdraw this consent").click()
    await confirm.get_by_label("Why are you withdrawing?").fill("We moved to in-person visits")
    await shoot(page, "consent-withdraw-desktop")
    await confirm.get_by_role("button", name="Yes, withdraw my consent").click()
    await expect(page.get_by_role("heading", name="Your consent has been withdrawn")
                 ).to_be_visible()
    await shoot(page, "consent-withdrawn-desktop")
    assert await consent_status(server, token, consent["id"]) == "revoked"

    # The link now says so, in plain words, before any question; so does a broken link.
    response = await page.goto(consent["consent_link"])
    assert response is not None and response.status == 410
    await expect(page.get_by_role("heading", name="This consent was withdrawn")).to_be_visible()
    await expect(page.get_by_text("ask your practice for a new form")).to_be_visible()
    await shoot(page, "consent-revoked-desktop")
    response = await page.goto(consent["consent_link"][:-6] + "AAAAAA")
    assert response is not None and response.status == 401
    await expect(page.get_by_role("heading", name="This link does not work")).to_be_visible()
    assert errors == []


# ---- the visit link's consent gate ------------------------------------------------------------


async def test_visit_consent_gate_in_the_join_page(
    server: Running, browser: Browser, settings: Settings
) -> None:
    dr, token = await server.clinician()
    created = await server.visit(dr)
    page = await (await person(browser, phone=True)).new_page()
    errors = watch_errors(page)
    await page.goto(created.link_for_role("patient"))
    await date_of_birth(page, DOB)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Check your camera and sound")).to_be_visible()
    await page.get_by_role("button", name="Continue", exact=True).click()
    await page.get_by_label("State").select_option("CA")
    await page.get_by_label("Yes, I'm at home").check()
    await page.get_by_role("button", name="Continue").click()

    # No consent issued yet: the page says so and keeps checking.
    await expect(page.get_by_role("heading", name="A consent form is needed first")
                 ).to_be_visible()
    await expect(page.get_by_text("Your clinician will send you the consent form")).to_be_visible()
    await shoot(page, "consent-visit-waiting-phone")

    # Issued but not yet signed by the clinician: readable, not signable; then it is.
    consent = await issue(server, token, created.visit.id)
    await expect(page.get_by_role("heading", name="Please read your consent form")).to_be_visible(
        timeout=15_000)
    await expect(page.get_by_text("hasn't finished preparing this form")).to_be_visible()
    await expect(page.get_by_role("button", name="Continue")).to_be_disabled()
    await shoot(page, "consent-visit-not-ready-phone")
    await sign_as_clinician(server.url, consent["id"], api_token=token)
    await expect(page.get_by_role("button", name="Continue")).to_be_enabled(timeout=15_000)
    await read_and_agree(page)
    await sign_as(page, "Alex Morgan", "consent-visit-sign-phone")
    await expect(page.get_by_role("link", name="Download your signed copy")).to_be_visible()
    await shoot(page, "consent-visit-done-phone")
    assert await consent_status(server, token, consent["id"]) == "complete"
    await assert_good(settings, await consent_pdf(server, token, consent["id"]),
                      ["clinician", "patient"])

    # The gate is open: into the waiting room (the WebSocket hello is accepted).
    await page.get_by_role("button", name="Continue to the waiting room").click()
    await expect(page.get_by_role("heading", name="Your clinician will let you in shortly")
                 ).to_be_visible()
    await expect(page.get_by_text("You're in the waiting room.")).to_be_visible()
    await shoot(page, "consent-visit-waiting-room-phone")
    assert errors == []


# ---- /verify ------------------------------------------------------------------------------------


def tampered(pdf: bytes) -> bytes:
    """One byte changed inside the first revision's page content (signed by everyone)."""
    at = pdf.index(b"stream", pdf.index(b"/Contents")) + 200
    return pdf[:at] + bytes([pdf[at] ^ 0x01]) + pdf[at + 1:]


async def upload(page: Page, name: str, data: bytes) -> None:
    await page.get_by_label("Choose the PDF file").set_input_files(
        files=[{"name": name, "mimeType": "application/pdf", "buffer": data}])
    await page.get_by_role("button", name="Check this file").click()


async def test_verify_page_tells_good_from_tampered(
    server: Running, browser: Browser, settings: Settings
) -> None:
    dr, token = await server.clinician()
    created = await server.visit(dr)
    consent = await clinician_signed(server, token, created.visit.id)
    await sign_link(consent["consent_link"], dob=DOB, name=None)
    pdf = await consent_pdf(server, token, consent["id"])
    bad = tampered(pdf)
    assert (await verified(settings, bad)).bottom_line != "good"

    page = await (await desktop(browser)).new_page()
    errors = watch_errors(page)
    await page.goto(server.url + "/verify")
    await expect(page.get_by_role("heading", name="Check a signed consent form")).to_be_visible()
    await page.get_by_role("button", name="Check this file").click()
    await expect(page.get_by_role("alert")).to_contain_text("choose the PDF file")
    await shoot_both(page, "verify-upload")

    await upload(page, "signed-consent.pdf", pdf)
    verdict = page.locator(".verdict")
    await expect(verdict).to_have_attribute("data-bottom-line", "good", timeout=20_000)
    await expect(verdict.locator(".verdict-word")).to_have_text("✓ Valid")
    await expect(verdict.locator(".bottom-line")).to_have_text("good")
    await expect(verdict).to_contain_text("B-LTA")
    checked = page.get_by_role("region", name="What was checked")
    await expect(checked.get_by_role("heading", name=re.compile(r"Dana Rivera — Clinician"))
                 ).to_be_visible()
    await expect(checked.get_by_role("heading", name=re.compile(r"Alex Morgan — Patient"))
                 ).to_be_visible()
    await expect(checked.get_by_role("heading", name=re.compile("Archive timestamp"))
                 ).to_be_visible()
    await shoot_both(page, "verify-good")

    await upload(page, "tampered.pdf", bad)
    await expect(verdict).not_to_have_attribute("data-bottom-line", "good", timeout=20_000)
    bottom = await verdict.get_attribute("data-bottom-line")
    assert bottom in ("altered", "invalid"), bottom
    await expect(verdict).to_contain_text("Do not rely on this copy")
    await shoot_both(page, "verify-tampered")

    await upload(page, "notes.pdf", b"hello, not a PDF")
    await expect(verdict).to_have_attribute("data-bottom-line", "invalid", timeout=20_000)
    await expect(verdict).to_contain_text("can't be read as a signed PDF")
    assert errors == []
