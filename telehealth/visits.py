"""Visit lifecycle rules: who may join, when, and after which identity check (pure).

Every refusal is a `VisitError` with a stable code, a plain-words message and
what to do about it, so a patient is never left guessing.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

VISIT_TYPES = ("intake", "psychotherapy", "family", "crisis")
ADDABLE_ROLES = ("legal_representative", "interpreter", "family_member", "co_clinician")
STATUSES = ("scheduled", "in_progress", "ended", "cancelled")
REPRESENTATIVE_RELATIONSHIPS = (
    "parent", "guardian", "conservator", "health_care_agent", "spouse", "other",
)


class VisitError(Exception):
    """A visit request that cannot be granted; `code` is stable and client-facing."""

    def __init__(self, code: str, message: str, action: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.action = action
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "action": self.action,
                          **self.extra}}


@dataclass(frozen=True, slots=True)
class Representative:
    name: str
    relationship: str
    authority: str


@dataclass(frozen=True, slots=True)
class VisitRequest:
    """What a clinician asks for when creating a visit (validated by `validate_request`)."""

    patient_name: str
    patient_dob: date
    scheduled_start: datetime
    visit_type: str = "psychotherapy"
    patient_contact: str = ""
    representative: Representative | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def validate_request(req: VisitRequest, now: datetime) -> None:
    if not req.patient_name.strip():
        raise VisitError("invalid_field", "The patient's name is required.")
    if req.visit_type not in VISIT_TYPES:
        raise VisitError("invalid_field",
                         f"Visit type must be one of {', '.join(VISIT_TYPES)}.")
    if req.patient_dob > now.date():
        raise VisitError("invalid_field", "The date of birth is in the future.")
    if req.scheduled_start.tzinfo is None:
        raise VisitError("invalid_field", "The scheduled start needs a time zone.")
    if req.representative is not None:
        rep = req.representative
        if not (rep.name.strip() and rep.relationship.strip() and rep.authority.strip()):
            raise VisitError("invalid_field",
                             "A legal representative needs a name, relationship and authority.")


def link_window(
    scheduled_start: datetime, before_s: int, after_s: int
) -> tuple[datetime, datetime]:
    return (scheduled_start - timedelta(seconds=before_s),
            scheduled_start + timedelta(seconds=after_s))


def check_joinable(
    *, status: str, removed: bool, not_before: datetime, expires: datetime, now: datetime
) -> None:
    """Refuse a link (or ticket) whose visit is over, or outside its window."""
    if status == "cancelled":
        raise VisitError("visit_cancelled", "This visit was cancelled.",
                         "Contact your practice to book a new time.")
    if status == "ended":
        raise VisitError("visit_ended", "This visit has ended.",
                         "If you need to talk with your clinician again, contact your practice.")
    if removed:
        raise VisitError("participant_removed", "This link was withdrawn by the practice.",
                         "Contact your practice if you think this is a mistake.")
    if now >= expires:
        raise VisitError("link_expired", "This link has expired.",
                         "Ask your practice to send you a new link.")
    if now < not_before:
        raise VisitError("link_not_yet_valid", "This visit is not open yet.",
                         "Come back a little before your appointment time.",
                         opens_at=not_before.isoformat())


def identity_check_for(role: str) -> tuple[bool, bool]:
    """(needs the patient's date of birth, needs the person's own name) for a role."""
    return (role in ("patient", "legal_representative", "family_member"),
            role == "legal_representative")


def same_name(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", s).casefold().split())
    return norm(a) == norm(b)


def check_lock(locked_until: datetime | None, now: datetime) -> None:
    if locked_until is not None and now < locked_until:
        raise VisitError("link_locked", "This link is locked after too many attempts.",
                         "Wait 15 minutes and try again, or call your practice.",
                         locked_until=locked_until.isoformat())


def check_identity(
    *, role: str, record_dob: date, record_name: str, dob: str | None, name: str | None
) -> bool:
    """Whether the answers match the record; `VisitError` when an answer is missing."""
    needs_dob, needs_name = identity_check_for(role)
    if needs_dob and not dob:
        raise VisitError("dob_required", "Please enter the patient's date of birth.")
    if needs_name and not (name and name.strip()):
        raise VisitError("name_required", "Please enter your full name.")
    if needs_dob:
        try:
            given = date.fromisoformat(dob or "")
        except ValueError:
            raise VisitError("bad_request", "Enter the date of birth like 1990-04-27.") from None
        if given != record_dob:
            return False
    return not (needs_name and not same_name(name or "", record_name))


@dataclass(frozen=True, slots=True)
class FailedCheck:
    failed_checks: int
    locked_until: datetime | None
    attempts_left: int


def refusal_after(state: FailedCheck) -> VisitError:
    """What a person is told after a wrong identity answer."""
    if state.locked_until is not None:
        return VisitError("link_locked", "This link is locked after too many attempts.",
                          "Wait 15 minutes and try again, or call your practice.",
                          locked_until=state.locked_until.isoformat())
    return VisitError("identity_mismatch", "That does not match our records.",
                      "Check what you typed and try again.", attempts_left=state.attempts_left)
