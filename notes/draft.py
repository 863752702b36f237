"""The read-only header of a draft progress note, from what the service knows (pure).

    draft_header(facts, suggestion, consent, ...)  -> a JSON-ready dict the editor shows
                                                      and the signed PDF prints

Everything here is taken from the visit itself (its timeline), never from the schedule:
actual start and stop, minutes of synchronous contact, modality, who was present,
interruptions, the patient's location, the consent on file, place of service, modifier
and the suggested code with its 90785 add-on offered as a choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from notes.billing import CodeSuggestion
from notes.contact import VisitFacts

ROLE_LABELS = {
    "clinician": "Clinician", "co_clinician": "Co-clinician", "patient": "Patient",
    "legal_representative": "Legal representative", "interpreter": "Interpreter",
    "family_member": "Family member",
}


@dataclass(frozen=True)
class ConsentOnFile:
    id: str
    sha256: str
    signed_at: datetime | None


def _time(when: datetime | None, tz: tzinfo) -> str | None:
    return when.astimezone(tz).isoformat(timespec="seconds") if when else None


def draft_header(facts: VisitFacts, suggestion: CodeSuggestion, consent: ConsentOnFile | None,
                 *, visit_id: str, scheduled_start: datetime, clinician_name: str,
                 clinician_credentials: str, tz: tzinfo) -> dict[str, Any]:
    day = (facts.started or scheduled_start).astimezone(tz).date()
    location = facts.location
    return {
        "visit_id": visit_id,
        "date": day.isoformat(),
        "visit_type": facts.visit_type,
        "start": _time(facts.started, tz),
        "stop": _time(facts.stopped, tz),
        "minutes": facts.minutes,
        "modality": facts.modality.kind,
        "modality_reason": facts.modality.reason or "",
        "present": [{"name": p.name, "role": p.role,
                     "role_label": ROLE_LABELS.get(p.role, p.role),
                     "minutes": int(p.seconds // 60)} for p in facts.present],
        "patient_present": facts.patient_present,
        "patient_location": None if location is None else {
            "state": location.state, "at_home": location.at_home, "place": location.place,
            "reported_by_role": location.reported_role},
        "consent": None if consent is None else {
            "id": consent.id, "sha256": consent.sha256,
            "signed_at": _time(consent.signed_at, tz)},
        "interruptions": [{"role": i.role, "started": _time(i.started, tz),
                           "seconds": int(i.seconds), "outcome": i.outcome}
                          for i in facts.interruptions],
        "place_of_service": suggestion.place_of_service,
        "modifier": suggestion.modifier,
        "code": suggestion.code,
        "code_reason": suggestion.reason,
        "billable": suggestion.billable,
        "add_ons": [{"code": a.code, "units": a.units} for a in suggestion.add_ons],
        "optional_add_ons": list(suggestion.optional_add_ons),
        "warnings": list(suggestion.warnings),
        "clinician": {"name": clinician_name, "credentials": clinician_credentials},
    }
