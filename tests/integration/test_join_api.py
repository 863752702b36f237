"""The join API through a real server: identity checks, lockout, and every refusal."""

from __future__ import annotations

from datetime import timedelta

from telehealth.db.engine import make_engine
from telehealth.db.store import Store

from conftest import Clock, Running


def token_of(link: str) -> str:
    return link.rsplit("/v/", 1)[1]


async def test_patient_joins_with_the_right_date_of_birth(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    status, body = await server.post("/api/v1/join", {
        "token": token_of(created.link_for_role("patient")), "dob": "1990-04-27"})
    assert status == 200, body
    assert body["participant"]["role"] == "patient"
    assert body["visit"]["clinician_name"] == "Dana Rivera"
    assert body["ws_url"] == "/ws"
    assert body["ice_servers"] == []
    assert body["ticket"] != token_of(created.link_for_role("patient"))


async def test_clinician_link_needs_no_date_of_birth(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    status, body = await server.post("/api/v1/join", {
        "token": token_of(created.link_for_role("clinician"))})
    assert status == 200, body
    assert body["participant"]["role"] == "clinician"


async def test_missing_and_wrong_date_of_birth(server: Running) -> None:
    clinician, _ = await server.clinician()
    token = token_of((await server.visit(clinician)).link_for_role("patient"))
    status, body = await server.post("/api/v1/join", {"token": token})
    assert (status, body["error"]["code"]) == (401, "dob_required")
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "27/04/1990"})
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "1990-04-28"})
    assert (status, body["error"]["code"]) == (401, "identity_mismatch")
    assert body["error"]["attempts_left"] == 4
    assert body["error"]["action"]


async def test_five_wrong_answers_lock_the_link_for_fifteen_minutes(
    server: Running, clock: Clock
) -> None:
    clinician, _ = await server.clinician()
    token = token_of((await server.visit(clinician)).link_for_role("patient"))
    for left in (4, 3, 2, 1):
        status, body = await server.post("/api/v1/join", {"token": token, "dob": "2000-01-01"})
        assert body["error"]["attempts_left"] == left
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "2000-01-01"})
    assert (status, body["error"]["code"]) == (423, "link_locked")
    # Locked: even the right answer is refused until the lock runs out.
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "1990-04-27"})
    assert (status, body["error"]["code"]) == (423, "link_locked")
    assert body["error"]["locked_until"]
    clock.advance(minutes=14, seconds=59)
    status, _ = await server.post("/api/v1/join", {"token": token, "dob": "1990-04-27"})
    assert status == 423
    clock.advance(seconds=1)
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "1990-04-27"})
    assert status == 200, body
    # Success resets the count: one wrong answer leaves four again.
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "2000-01-01"})
    assert body["error"]["attempts_left"] == 4


async def test_legal_representative_confirms_dob_and_own_name(server: Running) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician, representative=True)
    person, link = await server.services.add_participant(
        created.visit, role="legal_representative", name="")
    assert person.name == "Sam Morgan"
    token = token_of(link)
    status, body = await server.post("/api/v1/join", {"token": token, "dob": "1990-04-27"})
    assert body["error"]["code"] == "name_required"
    status, body = await server.post("/api/v1/join", {
        "token": token, "dob": "1990-04-27", "name": "Someone Else"})
    assert body["error"]["code"] == "identity_mismatch"
    status, body = await server.post("/api/v1/join", {
        "token": token, "dob": "1990-04-27", "name": "  sam   MORGAN "})
    assert status == 200, body
    assert body["participant"]["role"] == "legal_representative"


async def test_refusals_are_distinct(server: Running, clock: Clock) -> None:
    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    token = token_of(created.link_for_role("patient"))
    good = {"dob": "1990-04-27"}

    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    status, body = await server.post("/api/v1/join", {"token": tampered, **good})
    assert (status, body["error"]["code"]) == (401, "link_invalid")

    clock.advance(hours=3, seconds=1)
    status, body = await server.post("/api/v1/join", {"token": token, **good})
    assert (status, body["error"]["code"]) == (410, "link_expired")

    later = await server.visit(clinician, scheduled_start=clock() + timedelta(hours=2))
    status, body = await server.post("/api/v1/join", {
        "token": token_of(later.link_for_role("patient")), **good})
    assert (status, body["error"]["code"]) == (403, "link_not_yet_valid")
    assert body["error"]["opens_at"]

    await server.services.finish_visit(later.visit, "cancelled")
    status, body = await server.post("/api/v1/join", {
        "token": token_of(later.link_for_role("patient")), **good})
    assert (status, body["error"]["code"]) == (410, "visit_cancelled")

    now_visit = await server.visit(clinician)
    await server.services.finish_visit(now_visit.visit, "ended")
    status, body = await server.post("/api/v1/join", {
        "token": token_of(now_visit.link_for_role("patient")), **good})
    assert (status, body["error"]["code"]) == (410, "visit_ended")


async def test_no_representative_on_record_cannot_be_added(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    status, body = await server.post(
        f"/api/v1/visits/{created.visit.id}/participants",
        {"role": "legal_representative"}, token)
    assert (status, body["error"]["code"]) == (409, "no_representative_on_record")


async def test_timeline_records_the_identity_check(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    link = token_of(created.link_for_role("patient"))
    await server.post("/api/v1/join", {"token": link, "dob": "1999-09-09"})
    await server.post("/api/v1/join", {"token": link, "dob": "1990-04-27"})
    status, body = await server.get(f"/api/v1/visits/{created.visit.id}/timeline", token)
    assert status == 200
    kinds = [e["kind"] for e in body["events"]]
    assert kinds == ["link_opened", "identity_failed", "link_opened", "identity_verified"]


async def test_logins_are_throttled_after_ten_failures(server: Running) -> None:
    await server.clinician(email="dr.lee@example.org")
    for _ in range(10):
        status, body = await server.post("/api/v1/session", {
            "email": "dr.lee@example.org", "password": "wrong password!"})
        assert (status, body["error"]["code"]) == (401, "bad_credentials")
    status, body = await server.post("/api/v1/session", {
        "email": "DR.LEE@example.org", "password": "correct horse battery"})
    assert (status, body["error"]["code"]) == (429, "throttled")


async def test_health_check(server: Running) -> None:
    status, body = await server.get("/healthz")
    assert status == 200 and body == {"ok": True, "database": "ok", "broker": "ok"}
    svc = server.services
    kept = svc.store
    svc.store = Store(make_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none"))
    try:
        status, body = await server.get("/healthz")
        assert status == 503 and body == {"ok": False, "database": "down", "broker": "ok"}
    finally:
        await svc.store.engine.dispose()
        svc.store = kept
