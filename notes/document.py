"""The signed progress note's PDF: header, sections, signature fields (WeasyPrint).

The note is rendered once, when signing begins, with every signature field in it (the
author's, and the supervisor's when a co-signature is needed); pyHanko then signs it
with the same interrupted signing as consents (`consent.signing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import jinja2

from consent.document import add_signature_fields, html_to_pdf
from consent.workflow import SigningPlan
from notes.formats import BUILTIN, NoteFormat

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(BUILTIN)), autoescape=True,
                          undefined=jinja2.StrictUndefined)


def _clock(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%H:%M:%S %Z").strip() if iso else "-"


def printable_header(header: Mapping[str, Any]) -> dict[str, Any]:
    """The header with the texts the PDF and the editor print."""
    location = header.get("patient_location")
    modality = "Synchronous audio-video" if header["modality"] == "audio-video" else (
        "Audio-only" + (f" ({header['modality_reason']})" if header.get("modality_reason")
                        else ""))
    return {**header, "start_text": _clock(header.get("start")),
            "stop_text": _clock(header.get("stop")), "modality_text": modality,
            "location_text": "not given" if not location else
            f"{location['state']}, {'at home' if location['at_home'] else 'not at home'}"
            + (f" ({location['place']})" if location.get("place") else "")}


def render_note_pdf(*, note_id: str, practice_name: str, patient_name: str, patient_dob: date,
                    fmt: NoteFormat, header: Mapping[str, Any], sections: Mapping[str, str],
                    clinician_location: str, chosen_add_ons: Sequence[str],
                    plan: SigningPlan) -> bytes:
    html = _ENV.get_template("note.html").render(
        note_id=note_id, practice_name=practice_name, patient_name=patient_name,
        patient_dob=patient_dob.isoformat(), format_title=fmt.title,
        header=printable_header(header),
        sections=[{"title": s.title, "text": sections.get(s.key, "")} for s in fmt.sections],
        clinician_location=clinician_location, chosen_add_ons=list(chosen_add_ons),
        signature_blocks=[{"printed_name": s.signer.printed_name,
                           "role_label": s.signer.role_label, "meaning": s.signer.meaning}
                          for s in plan.slots])
    return add_signature_fields(html_to_pdf(html), plan)
