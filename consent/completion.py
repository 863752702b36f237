"""A signed consent's certificate of completion: plain records in, a PDF/A-2b out.

    CompletionRecord(document, patient, signers, revisions, events, status, ...)
      -> render_certificate(record, tz) -> PDF bytes (US letter, WeasyPrint)

The certificate sums up what is recorded beside a signed consent: the template and
its hash, the patient's identifiers, the representative and their authority, every
signer with their certificate, the document's SHA-256 before and after each revision,
the audit events (IP and user agent) and whether the consent was revoked. It is not
signed itself: the signed PDF carries the PAdES signatures and verifies offline.

Pure but for WeasyPrint: the caller reads the records; nothing here touches storage.
Times print in `tz` with their zone; naive datetimes are taken as UTC (what SQLite
hands back). Names and dates of birth never appear in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from markupsafe import Markup, escape

from consent.document import BUILTIN_TEMPLATES, _environment, html_to_pdf
from consent.workflow import LegalRepresentative

TEMPLATE_DIR = BUILTIN_TEMPLATES / "completion"
TEMPLATE_NAME = "certificate.html"
MAX_EVENTS = 500
"""Events printed on a certificate; the rest are counted ("and N more")."""
STATUS_LABELS = {"complete": "Complete", "revoked": "Revoked"}
VERIFY_COMMAND = "telehealth consent verify"


@dataclass(frozen=True)
class SignerLine:
    """One signature on the consent."""

    role_label: str
    """"Clinician, PhD, LP" / "Patient" / "Legal representative (mother)"."""
    printed_name: str
    field_name: str
    signed_at: datetime
    certificate_serial: str
    """The signer certificate's serial number, hex."""
    certificate_sha256: str
    """SHA-256 of the signer certificate's DER, hex."""
    timestamp_time: datetime | None = None
    """genTime of the signature's RFC 3161 timestamp, if it has one."""

    def __repr__(self) -> str:  # never put names in logs
        return f"SignerLine(field_name={self.field_name!r}, role_label={self.role_label!r})"


@dataclass(frozen=True)
class RevisionLine:
    """One revision of the PDF: what made it and its hash, with the one before."""

    seq: int
    at: datetime
    what: str
    """"issued", "signed by clinician", "archive timestamp"."""
    sha256: str
    prev_sha256: str | None = None


@dataclass(frozen=True)
class EventLine:
    """One audit event about the consent."""

    at: datetime
    action: str
    """"consent.viewed", "consent.signed", ..."""
    actor: str
    ip: str
    user_agent: str

    def __repr__(self) -> str:  # actor, IP and user agent identify people
        return f"EventLine(at={self.at.isoformat()!r}, action={self.action!r})"


@dataclass(frozen=True)
class CompletionRecord:
    """Everything a certificate of completion shows, read by the caller."""

    practice_name: str
    document_id: str
    template_id: str
    template_version: str
    template_title: str
    template_sha256: str
    patient_name: str
    patient_dob: date
    status: str
    """"complete", "revoked", or another state of the consent, printed as it is."""
    issued_at: datetime
    completed_at: datetime | None
    revoked_at: datetime | None
    revoke_reason: str
    original_sha256: str
    """SHA-256 of the PDF as issued, before any signature."""
    final_sha256: str
    """SHA-256 of the PDF as it is now (after the last signature or archive timestamp)."""
    signers: tuple[SignerLine, ...]
    revisions: tuple[RevisionLine, ...]
    events: tuple[EventLine, ...]
    representative: LegalRepresentative | None
    """The representative who signed for the patient, with their authority."""
    generated_at: datetime

    def __repr__(self) -> str:  # never put names or DOBs in logs
        return f"CompletionRecord(document_id={self.document_id!r}, status={self.status!r})"


def format_time(when: datetime | None, tz: tzinfo = UTC) -> str:
    """"2026-12-01 15:04:05 UTC" in `tz`; naive times are UTC; "" for None."""
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def breakable(text: str) -> Markup:
    """`text` escaped, with a line-break opportunity after each ".", "_", ":" and "/"
    (event names and field names have no spaces to wrap at)."""
    out = str(escape(text))
    for mark in ".:_/":
        out = out.replace(mark, mark + "<wbr>")
    return Markup(out)


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " ").capitalize())


def certificate_context(record: CompletionRecord, tz: tzinfo = UTC) -> dict[str, Any]:
    """The template's variables: every time already formatted, events bounded."""
    def t(when: datetime | None) -> str:
        return format_time(when, tz)

    shown = record.events[:MAX_EVENTS]
    rep = record.representative
    return {
        "practice_name": record.practice_name,
        "document": {
            "id": record.document_id, "template_id": record.template_id,
            "template_version": record.template_version,
            "template_title": record.template_title,
            "template_sha256": record.template_sha256,
            "issued_at": t(record.issued_at), "completed_at": t(record.completed_at),
            "original_sha256": record.original_sha256, "final_sha256": record.final_sha256},
        "patient": {"name": record.patient_name, "dob": record.patient_dob.isoformat()},
        "representative": rep,
        "status": {"code": record.status, "label": status_label(record.status),
                   "revoked": record.status == "revoked",
                   "revoked_at": t(record.revoked_at), "reason": record.revoke_reason},
        "signers": [{"name": s.printed_name, "role": s.role_label,
                     "field": breakable(s.field_name),
                     "signed_at": t(s.signed_at), "timestamp_time": t(s.timestamp_time),
                     "serial": s.certificate_serial, "fingerprint": s.certificate_sha256}
                    for s in record.signers],
        "revisions": [{"seq": r.seq, "at": t(r.at), "what": r.what, "sha256": r.sha256,
                       "prev_sha256": r.prev_sha256 or ""} for r in record.revisions],
        "events": [{"at": t(e.at), "action": breakable(e.action),
                    "actor": breakable(e.actor), "ip": e.ip,
                    "user_agent": e.user_agent} for e in shown],
        "more_events": len(record.events) - len(shown),
        "generated_at": t(record.generated_at),
        "verify_command": VERIFY_COMMAND,
    }


def render_certificate_html(record: CompletionRecord, tz: tzinfo = UTC) -> str:
    template = _environment(TEMPLATE_DIR).get_template(TEMPLATE_NAME)
    return template.render(**certificate_context(record, tz))


def render_certificate(record: CompletionRecord, tz: tzinfo = UTC) -> bytes:
    """The certificate of completion as a PDF/A-2b, times shown in `tz`."""
    return html_to_pdf(render_certificate_html(record, tz))
