"""A practice adds its own consent template and note format without code: files in
<data_dir>/templates/consent and <data_dir>/templates/notes, each with an index.json."""

from __future__ import annotations

import json

import pytest

from consent.document import BUILTIN_TEMPLATES
from telehealth.config import Settings

from conftest import Running


@pytest.fixture
def settings(settings: Settings) -> Settings:
    consent_dir = settings.data_dir / "templates" / "consent"
    consent_dir.mkdir(parents=True)
    # The practice's recording consent: the built-in text's structure, its own title.
    source = (BUILTIN_TEMPLATES / "telehealth-informed-consent" / "v1.html").read_text()
    (consent_dir / "recording-v1.html").write_text(source.replace(
        "{{ template.title }}</h1>", "{{ template.title }}</h1><p>Sessions may be recorded "
        "only with this consent.</p>"))
    (consent_dir / "index.json").write_text(json.dumps({"templates": [
        {"id": "session-recording", "version": "1", "kind": "recording",
         "title": "Consent to record sessions", "path": "recording-v1.html"}]}))
    notes_dir = settings.data_dir / "templates" / "notes"
    notes_dir.mkdir(parents=True)
    (notes_dir / "index.json").write_text(json.dumps({"formats": [
        {"id": "pirp", "title": "PIRP", "sections": [
            {"key": "problem", "title": "Problem", "prompt": "The presenting problem."},
            {"key": "intervention", "title": "Intervention", "prompt": ""},
            {"key": "response", "title": "Response", "prompt": ""},
            {"key": "plan", "title": "Plan", "prompt": ""}]}]}))
    return settings


async def test_practice_templates_are_offered_and_used(server: Running) -> None:
    clinician, token = await server.clinician()
    status, body = await server.get("/api/v1/consent/templates", token)
    assert status == 200
    ids = {t["id"] for t in body["templates"]}
    assert {"telehealth-informed-consent", "session-recording"} <= ids
    created = await server.visit(clinician)
    status, body = await server.post(f"/api/v1/visits/{created.visit.id}/consents",
                                     {"template_id": "session-recording"}, token)
    assert status == 201, body
    assert body["consent"]["template"]["kind"] == "recording"
    doc = await server.services.consents.get(body["consent"]["id"])
    assert "Sessions may be recorded only with this consent." in doc.html
    assert server.services.notes.formats.get("pirp").keys == (
        "problem", "intervention", "response", "plan")
