"""The certificate of completion: rendered from plain records, read back as text."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pypdf
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from consent.completion import (
    MAX_EVENTS,
    CompletionRecord,
    EventLine,
    RevisionLine,
    SignerLine,
    breakable,
    format_time,
    render_certificate,
    render_certificate_html,
)
from consent.workflow import LegalRepresentative

T0 = datetime(2026, 12, 1, 15, 4, 5, tzinfo=UTC)
LONG_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro Build/UQ1A.240205.004; wv) "
           "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/121.0.6167.178 "
           "Mobile Safari/537.36 " + "[FBAN/EMA;FBLC/en_US;FBAV/" + "9" * 180 + ";]")
PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
ACTIONS = ("consent.issued", "consent.link_sent", "consent.viewed",
           "consent.identity_verified", "consent.disclosure_accepted", "consent.signed",
           "consent.viewed", "consent.signed", "consent.certificate_issued",
           "consent.downloaded")


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


SIGNERS = (
    SignerLine("Clinician, PhD, LP", "Dana Smith", "clinician_signature",
               T0 + timedelta(minutes=1), "5f3a9c0e1b2d4a6f8e7c9b0a1d2e3f4a5b6c7d8e",
               sha("cert-clinician"), T0 + timedelta(minutes=1)),
    SignerLine("Legal representative (mother)", "Robin Roe", "representative_signature",
               T0 + timedelta(minutes=9), "7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d",
               sha("cert-representative"), None),
)
REVISIONS = (
    RevisionLine(1, T0, "issued", sha("rev1"), None),
    RevisionLine(2, T0 + timedelta(minutes=1), "signed by clinician", sha("rev2"), sha("rev1")),
    RevisionLine(3, T0 + timedelta(minutes=9), "signed by legal representative",
                 sha("rev3"), sha("rev2")),
)
EVENTS = tuple(
    EventLine(T0 + timedelta(minutes=i), action,
              "clinician:7" if i % 3 == 0 else "representative:Robin Roe",
              "2001:db8:85a3::8a2e:370:7334" if i == 4 else f"203.0.113.{i}",
              LONG_UA if i == 3 else PHONE_UA)
    for i, action in enumerate(ACTIONS))
RECORD = CompletionRecord(
    practice_name="Lakeside Counseling Group",
    document_id="c0a8f3e2-6b1d-4e5f-9a7b-3c2d1e0f9a8b",
    template_id="telehealth-informed-consent", template_version="1",
    template_title="Informed consent to telehealth services", template_sha256=sha("template"),
    patient_name="Sam Roe", patient_dob=date(2014, 6, 2), status="complete",
    issued_at=T0, completed_at=T0 + timedelta(minutes=9), revoked_at=None, revoke_reason="",
    original_sha256=sha("rev1"), final_sha256=sha("rev3"), signers=SIGNERS,
    revisions=REVISIONS, events=EVENTS,
    representative=LegalRepresentative("Robin Roe", "mother", "parent of a minor"),
    generated_at=T0 + timedelta(days=1))
REVOKED = replace(RECORD, status="revoked", revoked_at=T0 + timedelta(days=3),
                  revoke_reason="Patient withdrew consent by phone")


def pdf_text(pdf: bytes) -> str:
    """The PDF's text in content order."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def spaced(text: str) -> str:
    """Every run of whitespace as one space: table cells wrap."""
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """Without whitespace: hashes and user agents wrap across lines."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def complete_pdf() -> bytes:
    return render_certificate(RECORD)


@pytest.fixture(scope="module")
def revoked_pdf() -> bytes:
    return render_certificate(REVOKED, ZoneInfo("America/Los_Angeles"))


def test_is_a_us_letter_pdf(complete_pdf: bytes) -> None:
    assert complete_pdf.startswith(b"%PDF-")
    reader = PdfFileReader(io.BytesIO(complete_pdf), strict=False)
    page = reader.root["/Pages"]["/Kids"][0].get_object()
    assert [float(v) for v in page["/MediaBox"]] == [0, 0, 612, 792]
    metadata = reader.root["/Metadata"].get_object().data
    assert b"pdfaid:part" in metadata  # PDF/A-2b, like the consent itself


def test_text_has_names_hashes_and_events(complete_pdf: bytes) -> None:
    text = pdf_text(complete_pdf)
    flat = squeezed(text)
    assert "Certificate of completion" in text
    for expected in ("Lakeside Counseling Group", "Sam Roe", "2014-06-02", "Dana Smith",
                     "Robin Roe", "Clinician, PhD, LP", "Legal representative (mother)",
                     "parent of a minor", "telehealth-informed-consent",
                     "Informed consent to telehealth services", RECORD.document_id):
        assert squeezed(expected) in flat, expected
    hashes = [RECORD.template_sha256, RECORD.original_sha256, RECORD.final_sha256,
              *(s.certificate_sha256 for s in SIGNERS), *(s.certificate_serial for s in SIGNERS),
              *(r.sha256 for r in REVISIONS)]
    for value in hashes:
        assert value in flat, value
    for action in set(ACTIONS):
        assert action in flat, action
    assert squeezed(LONG_UA) in flat
    assert "2001:db8:85a3::8a2e:370:7334" in flat
    assert "2026-12-01 15:05:05 UTC" in spaced(text)  # the clinician's signing time
    assert "telehealth consent verify" in spaced(text)
    assert "Complete: every signature" in spaced(text) and "Revoked" not in text


def test_revoked_shows_when_and_why_in_the_zone_given(revoked_pdf: bytes) -> None:
    text = spaced(pdf_text(revoked_pdf))
    assert "Revoked at 2026-12-04 07:04:05 PST" in text
    assert "Reason: Patient withdrew consent by phone" in text
    assert "2026-12-01 07:05:05 PST" in text  # the clinician's signing time
    assert "Complete:" not in text  # the banner says revoked; the Completed row stays


def test_events_are_bounded() -> None:
    many = tuple(EventLine(T0 + timedelta(seconds=i), f"consent.viewed.{i}", "clinician:7",
                           "203.0.113.9", PHONE_UA) for i in range(MAX_EVENTS + 23))
    html = render_certificate_html(replace(RECORD, events=many))
    assert html.count("<td class=\"ua\">") == MAX_EVENTS
    assert f"{MAX_EVENTS - 1}</td>" in html and f"{MAX_EVENTS}</td>" not in html
    assert "and 23 more" in html
    assert "more (see" not in render_certificate_html(RECORD)


def test_values_are_escaped() -> None:
    hostile = EventLine(T0, "consent.viewed", "<script>alert(1)</script>", "1.2.3.4",
                        '"><img src=x onerror=alert(1)>')
    html = render_certificate_html(replace(RECORD, events=(hostile,),
                                           patient_name="<b>Eve</b>"))
    assert "<script>" not in html and "<img" not in html and "<b>Eve" not in html
    assert "&lt;script&gt;" in html
    assert str(breakable("a.b_c:<d>")) == "a.<wbr>b_<wbr>c:<wbr>&lt;d&gt;"


def test_representative_and_authority_are_shown() -> None:
    html = render_certificate_html(replace(RECORD, representative=LegalRepresentative(
        "Kim Poe", "health care agent", "durable POA for health care")))
    assert "Kim Poe (health care agent)" in html and "durable POA for health care" in html
    assert "Legal representative" not in render_certificate_html(
        replace(RECORD, representative=None)).split("<h2>Signers</h2>")[0]


def test_times_carry_their_zone() -> None:
    assert format_time(T0) == "2026-12-01 15:04:05 UTC"
    assert format_time(T0.replace(tzinfo=None)) == "2026-12-01 15:04:05 UTC"  # naive is UTC
    assert format_time(T0, ZoneInfo("America/New_York")) == "2026-12-01 10:04:05 EST"
    assert format_time(None) == ""


def test_reprs_hide_names_and_birth_dates() -> None:
    for value in (RECORD, *SIGNERS, *EVENTS):
        text = repr(value)
        for secret in ("Sam Roe", "2014", "Robin", "Dana", "203.0.113", "Mozilla"):
            assert secret not in text, (text, secret)
    assert RECORD.document_id in repr(RECORD)
