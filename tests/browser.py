"""Headless Chromium for the browser tests: Debian's chromium driven by Playwright.

Never `playwright install` (it downloads): the browser is /usr/bin/chromium.
A missing browser fails the run under CI instead of skipping the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from needs import require

CHROMIUM = os.environ.get("TELEHEALTH_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Host candidates as real addresses, so an aiortc peer (no mDNS) can reach them.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
FAKE_DEVICES = "--use-fake-device-for-media-stream"  # a camera and a microphone that work
FAKE_UI = "--use-fake-ui-for-media-stream"  # permission prompts answered "Allow"


def require_chromium() -> str:
    return require(CHROMIUM, "apt-get install -y chromium (scripts/test does)")


async def launch(
    *, devices: bool = True, allow: bool = True, extra_args: list[str] | None = None
) -> AsyncIterator[Browser]:
    """Chromium with fake camera and microphone (`devices`) whose prompts say yes (`allow`)."""
    path = require_chromium()
    args = ARGS + ([FAKE_DEVICES] if devices else []) + ([FAKE_UI] if allow else [])
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=args + (extra_args or []))
        try:
            yield browser
        finally:
            await browser.close()


async def person(browser: Browser, *, phone: bool = False, media: bool = True) -> BrowserContext:
    """A browser context: one person with their own cookies, camera and microphone."""
    return await browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        permissions=["camera", "microphone"] if media else [],
        is_mobile=phone, has_touch=phone,
    )


async def shoot(page: Page, name: str) -> None:
    """Save a screenshot under docs/screenshots/ (looked at, and kept with the docs)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def frames_decoded(page: Page, peer_id: str) -> int:
    """Video frames the page has decoded from `peer_id`, from its own getStats."""
    value = await page.get_attribute(f"[data-peer-id='{peer_id}']", "data-frames-decoded")
    return int(value or 0)
