"""The progress-note editor in real Chromium, driven by roles and labels as a clinician would:
the draft waiting after a held visit (minutes and code in the header), autosave that
survives a reload, the 90785 add-on, signing with a WebCrypto key made in the page, the
signed PDF checked offline against the practice CA, an addendum, "start from my last note"
with its review marks, and the private psychotherapy note that a co-clinician of the same
visit never sees. Screenshots (desktop 1280x800, phone 390x844) go to docs/screenshots/,
with page 1 of the signed PDF as docs/screenshots/note-signed-pdf.png."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from consent.verify import verify
from telehealth.auth import hash_password
from telehealth.sign_cli import DeviceKey

from browser import DESKTOP, PHONE, SCREENSHOTS, shoot
from conftest import Running

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
ZONE = "America/New_York"
SECTIONS = {"Subjective": "Reports better sleep since starting the wind-down routine.",
            "Objective": "Calm, engaged, good eye contact. PHQ-9 of 8.",
            "Assessment": "Improving; no safety concerns today.",
            "Plan": "Continue CBT weekly; keep the sleep diary."}
SECRET = "PRIVATE: my own thoughts on the transference this week"


# ---- helpers ---------------------------------------------------------------------------


def watch_errors(page: Page) -> list[str]:
    """Uncaught script errors and anything the browser refused (CSP) on the page."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and (
        "Refused" in m.text or "Content Security Policy" in m.text) else None)
    return errors


def watch_urls(page: Page) -> list[str]:
    """Every URL the page asked for (note text must never be in one)."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    return urls


async def shoot_both(page: Page, name: str) -> None:
    """`docs/screenshots/<name>-desktop.png` and `-phone.png`, the whole page."""
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(viewport)
        await page.evaluate("window.scrollTo(0, 0)")
        await page.wait_for_timeout(300)  # layout and fonts settle
        await shoot(page, f"{name}-{size}")
    await page.set_viewport_size(DESKTOP)


async def desktop(browser: Browser) -> BrowserContext:
    return await browser.new_context(viewport=DESKTOP, timezone_id=ZONE, locale="en-US")


async def log_in(page: Page, server: Running, email: str, path: str) -> None:
    """Open `path`, be sent to log in, and come back to it."""
    await page.goto(server.url + path)
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(server.url + path)


async def saved(page: Page) -> None:
    await expect(page.locator("#save-status")).to_have_text(re.compile(r"^Saved \d"),
                                                            timeout=10_000)


async def get_note(server: Running, token: str, visit_id: str) -> dict[str, object]:
    status, note = await server.get(f"/api/v1/visits/{visit_id}/note", token)
    assert status == 200, note
    return dict(note)


async def sign_by_api(server: Running, token: str, visit_id: str) -> None:
    """Sign a note the way telehealth/sign_cli.py does (a key of the test's own)."""
    key = DeviceKey.generate()
    base = f"{server.url}/api/v1/visits/{visit_id}/note"
    auth = {"Authorization": f"Bearer {token}"}
    async with server.http.post(base + "/prepare", headers=auth, json={
            "public_key": key.spki_b64, "typed_name": "Dana Rivera"}) as resp:
        prepared = await resp.json()
        assert resp.status == 200, prepared
    async with server.http.post(base + "/finish", headers=auth, json={
            "signing_id": prepared["signing_id"],
            "signature": key.sign_b64(prepared["to_sign"])}) as resp:
        assert resp.status == 200, await resp.text()


def pdf_to_png(pdf: bytes, out: Path, tmp: Path) -> None:
    """Page 1 of `pdf` as `out` (PNG, 80 dpi), with poppler's pdftoppm."""
    tool = shutil.which("pdftoppm")
    if tool is None:  # (installed here; without it only this picture is missing)
        return
    src = tmp / "note.pdf"
    src.write_bytes(pdf)
    subprocess.run([tool, "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(src),
                    str(out.with_suffix(""))], check=True, timeout=60)
    assert out.stat().st_size > 10_000


# ---- the clinician's note ------------------------------------------------------------------


async def test_write_sign_and_amend_a_note(server: Running, browser: Browser,
                                           tmp_path: Path) -> None:
    dr, token = await server.clinician()
    created = await server.held_visit(dr, minutes=40)
    visit_id = created.visit.id
    path = f"/visits/{visit_id}/note"

    context = await desktop(browser)
    page = await context.new_page()
    errors = watch_errors(page)
    urls = watch_urls(page)
    await log_in(page, server, "dr.rivera@example.org", path)

    # The header, filled from the visit, read-only.
    await expect(page.get_by_role("heading", name="Alex Morgan")).to_be_visible()
    facts = page.get_by_role("region", name="From the visit")
    await expect(facts.get_by_text("40 minutes", exact=True)).to_be_visible()
    await expect(facts.get_by_text("Synchronous audio-video", exact=True)).to_be_visible()
    await expect(facts.get_by_text("MN, at home", exact=True)).to_be_visible()
    await expect(facts.get_by_text("Not on file", exact=True)).to_be_visible()
    await expect(facts.get_by_text("10 · patient at home", exact=True)).to_be_visible()
    await expect(page.locator("#billing-code")).to_have_text(re.compile(r"^90834"))
    await expect(facts.get_by_text("Dana Rivera", exact=True)).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="All changes saved")).to_be_visible()

    # Nothing to carry forward yet: said plainly.
    await page.get_by_role("button", name="Start from my last note").click()
    await expect(page.locator("#note-notice")).to_contain_text("no earlier signed SOAP note")

    # Typing autosaves; the text survives a reload.
    await page.get_by_label("Your location during the visit").fill("Office, Minneapolis, MN")
    for title in ("Subjective", "Objective", "Assessment"):
        await page.get_by_label(title, exact=True).fill(SECTIONS[title])
    await saved(page)
    await page.reload()
    for title in ("Subjective", "Objective", "Assessment"):
        await expect(page.get_by_label(title, exact=True)).to_have_value(SECTIONS[title])
    await expect(page.get_by_label("Your location during the visit")).to_have_value(
        "Office, Minneapolis, MN")

    # The 90785 add-on: a choice, saved at once.
    await page.get_by_label("Add 90785, interactive complexity").check()
    await saved(page)
    assert (await get_note(server, token, visit_id))["add_ons"] == ["90785"]

    # Signing with a section empty: said next to the section.
    await page.get_by_label("Type your full name to sign").fill("Dana Rivera")
    await page.get_by_role("button", name="Sign note").click()
    plan_error = page.locator("#sec-plan-error")
    await expect(plan_error).to_have_text("Write this section before signing.")
    await expect(page.locator("#sign-error")).to_contain_text("still empty")
    await page.get_by_role("button", name="Go to Plan").click()
    await expect(page.get_by_label("Plan", exact=True)).to_be_focused()
    await page.get_by_label("Plan", exact=True).fill(SECTIONS["Plan"])
    await expect(plan_error).to_be_hidden()
    await saved(page)
    await shoot_both(page, "note-editor")

    # Sign: a key made in this browser, the note's prepare and finish.
    await page.get_by_label("Type your full name to sign").fill("Dana Rivera")
    await page.get_by_role("button", name="Sign note").click()
    signed = page.get_by_role("region", name="Signed note")
    await expect(signed).to_be_visible(timeout=20_000)
    await expect(page.locator("#note-state")).to_have_text("Signed")
    await expect(signed.get_by_text("Dana Rivera", exact=True)).to_be_visible()
    await expect(signed.get_by_text(SECTIONS["Plan"])).to_be_visible()
    await expect(page.get_by_label("Plan", exact=True)).to_have_count(0)  # read-only now
    note = await get_note(server, token, visit_id)
    assert note["status"] == "signed"

    # The signed PDF, from the page's link and from the API: the same bytes, and good.
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download signed PDF").click()
    download = await download_info.value
    from_page = await asyncio.to_thread(Path(await download.path()).read_bytes)
    async with server.http.get(f"{server.url}/api/v1/visits/{visit_id}/note/pdf",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/pdf"
        pdf = await resp.read()
    assert from_page == pdf
    report = await verify(pdf, [server.services.consents.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert [s.signer_name for s in report.signatures if s.kind == "signature"] == [
        "Dana Rivera"]
    await asyncio.to_thread(pdf_to_png, pdf, SCREENSHOTS / "note-signed-pdf.png", tmp_path)
    async with page.expect_download() as fhir_info:
        await page.get_by_role("link", name="Export FHIR").click()
    fhir_path = Path(await (await fhir_info.value).path())
    assert b'"Bundle"' in await asyncio.to_thread(fhir_path.read_bytes)

    # An addendum, listed under the original (which stays as it was).
    await page.get_by_role("button", name="Add addendum").click()
    await page.get_by_label("Reason").fill("Late entry")
    await page.get_by_label("Addendum", exact=True).fill("Patient called after the visit "
                                                         "to confirm the next appointment.")
    await page.get_by_role("button", name="Add addendum").last.click()
    addenda = page.get_by_role("region", name="Addenda")
    await expect(addenda.get_by_role("listitem")).to_have_count(1)
    await expect(addenda).to_contain_text("Reason: Late entry")
    await expect(addenda).to_contain_text("Dana Rivera, LCSW")
    await expect(signed.get_by_text(SECTIONS["Plan"])).to_be_visible()

    # The private psychotherapy note: its own panel, its own autosave.
    panel = page.locator("#private-note")
    await expect(panel).not_to_have_attribute("open", "")
    await page.get_by_text("Private psychotherapy note").click()
    private = page.get_by_label("Your private note")
    await expect(private).to_be_enabled()
    await private.fill(SECRET)
    await expect(page.locator("#private-status")).to_have_text(re.compile(r"^Saved \d"))
    await shoot_both(page, "note-signed")
    await page.reload()
    await page.get_by_text("Private psychotherapy note").click()
    await expect(page.get_by_label("Your private note")).to_have_value(SECRET)
    assert not any("sleep" in u.lower() or "transference" in u.lower() for u in urls)
    assert errors == []
    await context.close()

    # A co-clinician of the visit reads the note, but never the author's private note.
    colleague, _ = await server.clinician(email="co@example.org", name="Co Clinician")
    await server.services.add_participant(created.visit, role="co_clinician", name="",
                                          clinician=colleague)
    other = await (await desktop(browser)).new_page()
    other_errors = watch_errors(other)
    await log_in(other, server, "co@example.org", path)
    await expect(other.get_by_role("region", name="Signed note")).to_contain_text(
        SECTIONS["Plan"])
    await other.get_by_text("Private psychotherapy note").click()
    await expect(other.get_by_label("Your private note")).to_be_enabled()
    await expect(other.get_by_label("Your private note")).to_have_value("")
    assert SECRET not in await other.content()
    assert other_errors == []
    await other.context.close()


async def test_start_from_the_last_note(server: Running, browser: Browser) -> None:
    dr, token = await server.clinician()
    first = await server.held_visit(dr, minutes=20)
    base = f"/api/v1/visits/{first.visit.id}/note"
    note = await get_note(server, token, first.visit.id)
    keys = {"Subjective": "subjective", "Objective": "objective",
            "Assessment": "assessment", "Plan": "plan"}
    async with server.http.put(server.url + base, json={
            "version": note["version"], "sections": {keys[t]: v for t, v in SECTIONS.items()}},
            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
    await sign_by_api(server, token, first.visit.id)

    second = await server.held_visit(dr, minutes=55)
    path = f"/visits/{second.visit.id}/note"
    context = await desktop(browser)
    page = await context.new_page()
    errors = watch_errors(page)
    await log_in(page, server, "dr.rivera@example.org", path)
    await expect(page.locator("#billing-code")).to_have_text(re.compile(r"^90837"))
    await page.get_by_role("button", name="Start from my last note").click()
    marks = page.get_by_text("Carried over from your last note — review it").filter(visible=True)
    await expect(marks).to_have_count(4)
    await expect(page.get_by_label("Plan", exact=True)).to_have_value(SECTIONS["Plan"])
    await expect(page.get_by_role("button", name="Start from my last note")).to_be_hidden()
    await shoot_both(page, "note-carried")

    # Unreviewed carried text cannot be signed; the sections say so.
    await page.get_by_label("Type your full name to sign").fill("Dana Rivera")
    await page.get_by_role("button", name="Sign note").click()
    await expect(page.locator("#sec-plan-error")).to_contain_text("Review this carried-over")

    # Reviewed (the button) or edited: the mark goes, and stays gone after a reload.
    for title in ("Subjective", "Objective", "Assessment"):
        await page.get_by_role("button", name=f"Mark {title} reviewed").click()
    await page.get_by_label("Plan", exact=True).fill("Continue CBT weekly; add exposure work.")
    await expect(marks).to_have_count(0)
    await saved(page)
    await page.reload()
    await expect(page.get_by_label("Plan", exact=True)).to_have_value(
        "Continue CBT weekly; add exposure work.")
    await expect(marks).to_have_count(0)
    assert (await get_note(server, token, second.visit.id))["carried"] == []
    await page.get_by_label("Type your full name to sign").fill("Dana Rivera")
    await page.get_by_role("button", name="Sign note").click()
    await expect(page.get_by_role("region", name="Signed note")).to_be_visible(timeout=20_000)
    assert errors == []
    await context.close()


async def test_a_change_from_another_window_loses_nothing(server: Running,
                                                          browser: Browser) -> None:
    dr, token = await server.clinician()
    created = await server.held_visit(dr, minutes=30)
    path = f"/visits/{created.visit.id}/note"
    context = await desktop(browser)
    page = await context.new_page()
    errors = watch_errors(page)
    # The way there: the dashboard's "Note" for an ended visit, the summary's button.
    await log_in(page, server, "dr.rivera@example.org", "/dashboard")
    await page.get_by_role("link", name="Progress note for the visit with Alex Morgan").click()
    await expect(page).to_have_url(server.url + path)
    await page.get_by_role("link", name="Summary", exact=True).click()
    await page.get_by_role("link", name="Open progress note").click()
    await expect(page).to_have_url(server.url + path)
    subjective = page.get_by_label("Subjective", exact=True)
    await subjective.fill("Typed in the first window.")
    await saved(page)

    # Another window saves first; this one's next save is refused, its text kept.
    note = await get_note(server, token, created.visit.id)
    async with server.http.put(f"{server.url}/api/v1/visits/{created.visit.id}/note",
                               headers={"Authorization": f"Bearer {token}"}, json={
            "version": note["version"],
            "sections": {"subjective": "Typed in the other window."}}) as resp:
        assert resp.status == 200, await resp.text()
    await subjective.fill("Typed in the first window, and more.")
    conflict = page.get_by_role("alert").filter(has_text="changed in another window")
    await expect(conflict).to_be_visible(timeout=10_000)
    await expect(subjective).to_have_value("Typed in the first window, and more.")
    await page.get_by_role("button", name="Load the latest version").click()
    await expect(subjective).to_have_value("Typed in the other window.")
    await expect(page.get_by_label("Your unsaved text for Subjective")).to_have_value(
        "Typed in the first window, and more.")
    await page.get_by_role("button", name="Use my text").click()
    await saved(page)
    await expect(subjective).to_have_value("Typed in the first window, and more.")
    note = await get_note(server, token, created.visit.id)
    assert note["sections"]["subjective"] == "Typed in the first window, and more."  # type: ignore[index]

    # Switching the format keeps text whose section the new format lacks: moved, asked first.
    await page.get_by_label("Note format").select_option("dap")
    dialog = page.get_by_role("dialog", name="Switch this note to DAP?")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Switch to DAP").click()
    data = page.get_by_label("Data", exact=True)
    await expect(data).to_have_value("Subjective:\nTyped in the first window, and more.")
    await expect(page.get_by_label("Subjective", exact=True)).to_have_count(0)
    await saved(page)
    note = await get_note(server, token, created.visit.id)
    assert note["sections"] == {  # type: ignore[comparison-overlap]
        "data": "Subjective:\nTyped in the first window, and more.", "assessment": "",
        "plan": ""}
    assert errors == []
    await context.close()


async def test_supervisor_co_signs_in_the_browser(server: Running, browser: Browser) -> None:
    svc = server.services
    supervisor, _ = await server.clinician(email="sup@example.org", name="Sam Supervisor")
    trainee = await svc.store.create_clinician(
        email="trainee@example.org", name="Tara Trainee", credentials="MSW",
        password_hash=hash_password(PASSWORD), now=svc.clock())
    await svc.store.set_supervisor(trainee.id, supervisor.id)
    trainee = await svc.store.clinician(trainee.id)  # type: ignore[assignment]
    assert trainee is not None
    created = await server.held_visit(trainee, minutes=45)
    path = f"/visits/{created.visit.id}/note"

    context = await desktop(browser)
    page = await context.new_page()
    errors = watch_errors(page)
    await log_in(page, server, "trainee@example.org", path)
    for title, text in SECTIONS.items():
        await page.get_by_label(title, exact=True).fill(text)
    await saved(page)
    await page.get_by_label("Type your full name to sign").fill("Tara Trainee")
    await page.get_by_role("button", name="Sign note").click()
    await expect(page.get_by_text("Waiting for your supervisor's co-signature.")).to_be_visible(
        timeout=20_000)
    await expect(page.get_by_role("button", name="Co-sign")).to_have_count(0)
    assert errors == []
    await context.close()

    context = await desktop(browser)
    page = await context.new_page()
    errors = watch_errors(page)
    await log_in(page, server, "sup@example.org", path)
    await expect(page.locator("#note-state")).to_have_text("Waiting for co-signature")
    await expect(page.get_by_role("heading", name="Co-sign the note")).to_be_visible()
    await page.get_by_label("Type your full name to sign").fill("Sam Supervisor")
    await page.get_by_role("button", name="Co-sign").click()
    await expect(page.locator("#note-state")).to_have_text("Signed", timeout=20_000)
    signatures = page.locator("#signatures")
    await expect(signatures).to_contain_text("Tara Trainee")
    await expect(signatures).to_contain_text("Sam Supervisor")
    assert errors == []
    await context.close()

    # Anyone else: as if there were no such visit.
    await server.clinician(email="x@example.org", name="Stranger")
    context = await desktop(browser)
    page = await context.new_page()
    await log_in(page, server, "x@example.org", path)
    await expect(page.get_by_role("heading", name="No such visit")).to_be_visible()
    await context.close()
