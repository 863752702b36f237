"""Consents through the running service: issue, clinician signs, patient or
representative signs over HTTP with their own keys, the gate opens, the audit trail."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import replace

import aiohttp
import pytest

from consent.verify import verify
from telehealth.audit import verify_chain
from telehealth.config import Settings
from telehealth.consents import Requester
from telehealth.sign_cli import DeviceKey, SignError, sign_as_clinician, sign_link

from conftest import Running


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, require_telehealth_consent=True)


async def issue(server: Running, token: str, visit_id: str) -> dict[str, object]:
    status, body = await server.post(f"/api/v1/visits/{visit_id}/consents", {}, token)
    assert status in (200, 201), body
    consent: dict[str, object] = body["consent"]
    return consent


async def test_adult_patient_consent_end_to_end(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    consent = await issue(server, token, created.visit.id)
    assert consent["status"] == "awaiting_clinician"
    assert [f["role"] for f in consent["fields"]] == ["clinician", "patient"]  # type: ignore[index]
    link = str(consent["consent_link"])

    # The patient may read it but not sign before the clinician.
    with pytest.raises(SignError) as caught:
        await sign_link(link, dob="1990-04-27", name="Alex Morgan")
    assert caught.value.code == "not_ready"

    # Issuing again gives the same open consent back.
    assert (await issue(server, token, created.visit.id))["id"] == consent["id"]

    signed = await sign_as_clinician(server.url, str(consent["id"]), api_token=token)
    assert signed["consent"]["status"] == "awaiting_patient"

    # A wrong date of birth is refused and counted; a wrong typed name too.
    with pytest.raises(SignError) as caught:
        await sign_link(link, dob="1990-04-28", name="Alex Morgan")
    assert caught.value.code == "identity_mismatch"
    with pytest.raises(SignError) as caught:
        await sign_link(link, dob="1990-04-27", name="Alex", typed_name="Someone Else")
    assert caught.value.code == "name_mismatch"

    done = await sign_link(link, dob="1990-04-27", name="alex  morgan")
    assert done["consent"]["status"] == "complete" and done["role"] == "patient"

    # The stored PDF verifies offline with only the practice root.
    consents = server.services.consents
    doc = await consents.get(str(consent["id"]))
    assert hashlib.sha256(doc.pdf).hexdigest() == doc.sha256
    report = await verify(doc.pdf, [consents.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    assert [s.role for s in report.signatures if s.kind == "signature"] == [
        "clinician", "patient"]

    # The visit's consent gate is open now: the patient's join says so and the room lets
    # them wait.
    status, grant = await server.post("/api/v1/join", {
        "token": created.link_for_role("patient").rsplit("/v/", 1)[1], "dob": "1990-04-27"})
    assert grant["consent"]["on_file"] is True
    async with server.http.ws_connect(server.url + "/ws") as ws:
        await ws.send_json({"type": "hello", "v": 1, "ticket": grant["ticket"]})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"

    # Every step is in the hash-chained audit log, with IP and user agent.
    entries = await server.services.store.audit_for(f"consent:{consent['id']}")
    actions = [e.action for e in entries]
    for expected in ("consent.issued", "consent.certificate_issued", "consent.signed",
                     "consent.identity_failed", "consent.identity_verified",
                     "consent.disclosure_accepted", "consent.downloaded"):
        assert expected in actions, actions
    assert actions.count("consent.signed") == 2
    signed_entries = [e for e in entries if e.action == "consent.signed"]
    assert signed_entries[-1].detail["sha256_after"] == doc.sha256
    assert signed_entries[0].detail["sha256_after"] == signed_entries[1].detail["sha256_before"]
    assert all(e.detail["ip"] == "127.0.0.1" for e in entries)
    assert verify_chain(await server.services.store.audit_entries()).ok

    # Clinician views: summary with events, the PDF, the certificate of completion.
    status, detail = await server.get(f"/api/v1/consents/{consent['id']}", token)
    assert status == 200 and detail["consent"]["status"] == "complete"
    headers = {"Authorization": f"Bearer {token}"}
    async with server.http.get(f"{server.url}/api/v1/consents/{consent['id']}/certificate",
                               headers=headers) as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b"%PDF")


async def test_minor_signed_by_guardian_and_revoked(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician, dob="2014-06-02", representative=True)
    consent = await issue(server, token, created.visit.id)
    assert [f["role"] for f in consent["fields"]] == [  # type: ignore[index]
        "clinician", "legal_representative"]
    await sign_as_clinician(server.url, str(consent["id"]), api_token=token)
    link = str(consent["consent_link"])
    with pytest.raises(SignError) as caught:  # the representative names themself
        await sign_link(link, dob="2014-06-02", name=None)
    assert caught.value.code == "name_required"
    done = await sign_link(link, dob="2014-06-02", name="Sam Morgan")
    assert done["consent"]["status"] == "complete" and done["role"] == "legal_representative"

    # The minor's own visit link opens once the guardian has signed.
    _, grant = await server.post("/api/v1/join", {
        "token": created.link_for_role("patient").rsplit("/v/", 1)[1], "dob": "2014-06-02"})
    assert grant["consent"]["on_file"] is True

    # Revoking keeps the document and closes the gate again.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(server.url + "/api/v1/consent/open", json={
                "token": link.rsplit("/c/", 1)[1], "dob": "2014-06-02",
                "name": "Sam Morgan"}) as resp:
            assert resp.status == 200
        async with http.post(server.url + "/api/v1/consent/revoke",
                             json={"reason": "changed my mind"}) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["consent"]["status"] == "revoked"
    doc = await server.services.consents.get(str(consent["id"]))
    assert doc.pdf and doc.revoke_reason == "changed my mind"
    _status, grant = await server.post("/api/v1/join", {
        "token": created.link_for_role("patient").rsplit("/v/", 1)[1], "dob": "2014-06-02"})
    assert grant["consent"]["on_file"] is False


async def test_minor_without_representative_cannot_be_issued(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician, dob="2014-06-02")
    status, body = await server.post(f"/api/v1/visits/{created.visit.id}/consents", {}, token)
    assert status == 409 and body["error"]["code"] == "no_representative_on_record"


async def test_signing_from_the_visit_link(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    link = created.link_for_role("patient")
    # Nothing issued yet: the gate says so, and nothing can be signed.
    with pytest.raises(SignError) as caught:
        await sign_link(link, dob="1990-04-27", name="Alex Morgan")
    assert caught.value.code == "nothing_to_sign"
    consent = await issue(server, token, created.visit.id)
    await sign_as_clinician(server.url, str(consent["id"]), api_token=token)
    done = await sign_link(link, dob="1990-04-27", name="Alex Morgan")
    assert done["consent"]["status"] == "complete"
    again = await sign_link(link, dob="1990-04-27", name="Alex Morgan")
    assert again == {"already_on_file": True, "consent_id": consent["id"]}


async def test_the_consent_is_per_patient_across_visits(server: Running) -> None:
    clinician, token = await server.clinician()
    first = await server.visit(clinician)
    consent = await issue(server, token, first.visit.id)
    await sign_as_clinician(server.url, str(consent["id"]), api_token=token)
    await sign_link(str(consent["consent_link"]), dob="1990-04-27", name="Alex Morgan")
    second = await server.visit(clinician, patient_name="ALEX  MORGAN")
    assert second.visit.patient_id == first.visit.patient_id
    _status, grant = await server.post("/api/v1/join", {
        "token": second.link_for_role("patient").rsplit("/v/", 1)[1], "dob": "1990-04-27"})
    assert grant["consent"]["on_file"] is True
    other = await server.visit(clinician, patient_name="Alex Morgan", dob="1991-04-27")
    assert other.visit.patient_id != first.visit.patient_id


async def test_two_signers_racing_for_one_field(server: Running) -> None:
    await race_for_one_field(server)


async def test_two_signers_racing_for_one_field_on_postgresql(pg_server: Running) -> None:
    await race_for_one_field(pg_server)


async def race_for_one_field(server: Running) -> None:
    """Two devices prepare the same field; exactly one signature is stored."""
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    consent = await issue(server, token, created.visit.id)
    base = f"/api/v1/consents/{consent['id']}"
    keys = [DeviceKey.generate(), DeviceKey.generate()]
    prepared = []
    for key in keys:
        status, body = await server.post(base + "/prepare", {
            "public_key": key.spki_b64, "typed_name": "Dana Rivera"}, token)
        assert status == 200, body
        prepared.append(body)
    results = await asyncio.gather(*(
        server.post(base + "/finish", {"signing_id": p["signing_id"],
                                       "signature": k.sign_b64(p["to_sign"])}, token)
        for k, p in zip(keys, prepared, strict=True)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409], results
    loser = next(body for status, body in results if status == 409)
    assert loser["error"]["code"] == "signing_conflict"
    revisions = await server.services.consents.store.revisions(str(consent["id"]))
    assert [r.what for r in revisions] == ["issued", "signed by clinician"]
    entries = await server.services.store.audit_for(f"consent:{consent['id']}")
    assert [e.action for e in entries].count("consent.signed") == 1


async def test_a_bad_signature_leaves_the_document_as_it_was(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    consent = await issue(server, token, created.visit.id)
    base = f"/api/v1/consents/{consent['id']}"
    key = DeviceKey.generate()
    status, prepared = await server.post(base + "/prepare", {
        "public_key": key.spki_b64, "typed_name": "Dana Rivera"}, token)
    bad = base64.b64encode(b"\x01" * 64).decode()
    status, body = await server.post(base + "/finish", {
        "signing_id": prepared["signing_id"], "signature": bad}, token)
    assert status == 400 and body["error"]["code"] == "bad_signature"
    doc = await server.services.consents.get(str(consent["id"]))
    assert doc.revision == 1 and doc.status == "awaiting_clinician"
    # The same prepared step still finishes with the right signature.
    status, body = await server.post(base + "/finish", {
        "signing_id": prepared["signing_id"], "signature": key.sign_b64(prepared["to_sign"])},
        token)
    assert status == 200 and body["consent"]["status"] == "awaiting_patient"


async def test_other_clinicians_and_strangers_are_refused(server: Running) -> None:
    clinician, token = await server.clinician()
    _, other_token = await server.clinician(email="other@example.org", name="Other Person")
    created = await server.visit(clinician)
    consent = await issue(server, token, created.visit.id)
    for path in (f"/api/v1/consents/{consent['id']}",
                 f"/api/v1/visits/{created.visit.id}/consents"):
        status, body = await server.get(path, other_token)
        assert status == 404, body
        status, body = await server.get(path)
        assert status == 401, body
    status, body = await server.get("/api/v1/consent/current")
    assert status == 401 and body["error"]["code"] == "no_consent_session"
    status, body = await server.post("/api/v1/consent/open", {"token": "nope", "dob": "x"})
    assert status == 401 and body["error"]["code"] == "link_invalid"


async def test_verify_upload(server: Running) -> None:
    async with server.http.post(server.url + "/api/v1/consent/verify", data=b"not a pdf",
                                headers={"Content-Type": "application/pdf"}) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["bottom_line"] != "good"


async def test_the_audit_names_the_client_behind_a_trusted_proxy(server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    forwarded = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "203.0.113.9"}
    path = f"{server.url}/api/v1/visits/{created.visit.id}/consents"
    async with server.http.post(path, json={}, headers=forwarded) as resp:
        first = (await resp.json())["consent"]["id"]
    # Not behind a trusted proxy: the header is the client's say-so and is ignored.
    entries = await server.services.store.audit_for(f"consent:{first}")
    assert entries[-1].detail["ip"] == "127.0.0.1"
    svc = server.services
    svc.settings = replace(svc.settings, trusted_proxies=("127.0.0.1",))
    async with server.http.get(f"{server.url}/api/v1/consents/{first}/pdf",
                               headers=forwarded) as resp:
        assert resp.status == 200
    entries = await svc.store.audit_for(f"consent:{first}")
    assert entries[-1].action == "consent.downloaded"
    assert entries[-1].detail["ip"] == "203.0.113.9"


async def test_patient_records_are_never_matched_across_clinicians(server: Running) -> None:
    mine, token = await server.clinician()
    other, other_token = await server.clinician(email="other@example.org", name="Other One")
    first = await server.visit(mine)
    consent = await issue(server, token, first.visit.id)
    theirs = await server.visit(other, representative=True)  # same name and DOB
    assert theirs.visit.patient_id != first.visit.patient_id
    status, body = await server.get(f"/api/v1/visits/{theirs.visit.id}/consents", other_token)
    assert status == 200 and consent["id"] not in [c["id"] for c in body["consents"]]
    # Their representative did not become the signer for my adult patient.
    mine_again = await issue(server, token, first.visit.id)
    assert [f["role"] for f in mine_again["fields"]] == [  # type: ignore[index]
        "clinician", "patient"]


async def test_a_withdrawal_wins_over_a_signature_in_flight_and_older_consents(
        server: Running) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    older = await issue(server, token, created.visit.id)
    await sign_as_clinician(server.url, str(older["id"]), api_token=token)
    await sign_link(str(older["consent_link"]), dob="1990-04-27", name="Alex Morgan")
    # A second telehealth consent (a new version, say) is signed up to the patient...
    consents = server.services.consents
    server.services.clock.advance(minutes=1)  # type: ignore[attr-defined]
    newer_doc, _ = await consents.issue(created.visit, clinician, Requester("test"))
    newer = consents.summary(newer_doc, with_link=True)
    await sign_as_clinician(server.url, newer["id"], api_token=token)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        base = server.url + "/api/v1/consent"
        async with http.post(base + "/open", json={
                "token": newer["consent_link"].rsplit("/c/", 1)[1], "dob": "1990-04-27"}):
            pass
        async with http.post(base + "/disclosure", json={"accepted": True, "version": "1"}):
            pass
        key = DeviceKey.generate()
        async with http.post(base + "/prepare", json={
                "public_key": key.spki_b64, "typed_name": "Alex Morgan"}) as resp:
            prepared = await resp.json()
        # ...who withdraws it in another window before the signature is finished.
        async with http.post(base + "/revoke", json={"reason": "no"}) as resp:
            assert resp.status == 200
        async with http.post(base + "/finish", json={
                "signing_id": prepared["signing_id"],
                "signature": key.sign_b64(prepared["to_sign"])}) as resp:
            body = await resp.json()
            assert resp.status in (409, 410), body
    assert (await consents.get(newer["id"])).status == "revoked"
    # The withdrawal is the patient's last word: the older consent does not count.
    assert await consents.on_file(created.visit.patient_id) is None
