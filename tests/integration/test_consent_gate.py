"""The consent gate: with a telehealth consent required, a patient cannot wait without one."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest

from telehealth.config import Settings

from conftest import Running


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, require_telehealth_consent=True)


async def test_patient_without_consent_is_kept_out_of_the_waiting_room(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    status, grant = await server.post("/api/v1/join", {
        "token": created.link_for_role("patient").rsplit("/v/", 1)[1], "dob": "1990-04-27"})
    assert status == 200
    assert grant["consent"] == {"required": True, "on_file": False, "consent_id": None,
                                "signable": False}
    async with server.http.ws_connect(server.url + "/ws") as ws:
        await ws.send_json({"type": "hello", "v": 1, "ticket": grant["ticket"]})
        frame = await ws.receive_json(timeout=5)
        assert frame["code"] == "consent_required" and frame["ref"] == "hello"
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4412

    # The clinician is not gated.
    status, dr = await server.post("/api/v1/join", {
        "token": created.link_for_role("clinician").rsplit("/v/", 1)[1]})
    assert dr["consent"] == {"required": False, "on_file": False, "consent_id": None,
                             "signable": False}
    async with server.http.ws_connect(server.url + "/ws") as ws:
        await ws.send_json({"type": "hello", "v": 1, "ticket": dr["ticket"]})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
