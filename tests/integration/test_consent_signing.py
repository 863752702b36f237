"""Consent PDFs signed end to end: render, interrupted signing with keys made here as a
browser would (WebCrypto P-256, raw r||s), B-LTA, offline verification, tampering."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields

from consent.document import TemplateLibrary, render_consent
from consent.errors import ConsentError
from consent.pki import PracticeCA
from consent.signing import ConsentSigner
from consent.verify import verify
from consent.workflow import (
    ClinicianRecord,
    LegalRepresentative,
    PatientRecord,
    SignatureSlot,
    SignerRole,
    SigningPlan,
    plan_signatures,
)

TODAY = date(2026, 12, 1)
CLINICIAN = ClinicianRecord("Dana Smith", "PhD, LP")
ADULT = PatientRecord("Alex Doe", date(1990, 4, 27))
GUARDIAN = LegalRepresentative("Robin Roe", "mother", "parent of a minor")
MINOR = PatientRecord("Sam Roe", date(2014, 6, 2), GUARDIAN)
AGENT = LegalRepresentative("Kim Poe", "health care agent", "durable POA for health care")
ADULT_WITH_AGENT = PatientRecord("Lee Poe", date(1950, 1, 9), AGENT)
LIBRARY = TemplateLibrary()


@dataclass
class Practice:
    ca: PracticeCA
    signer: ConsentSigner


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Practice]:
    ca = PracticeCA(tmp_path_factory.mktemp("ca"), practice_name="Test Practice")
    yield Practice(ca, ConsentSigner(ca))


def browser_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, spki


def webcrypto_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """What `crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, ...)` returns: r||s."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def render(plan: SigningPlan, patient: PatientRecord) -> bytes:
    return render_consent(LIBRARY.template("telehealth-informed-consent"), LIBRARY.disclosure(),
                          practice_name="Test Practice", patient=patient, clinician=CLINICIAN,
                          plan=plan, issued_at=datetime(2026, 12, 1, 15, 0, tzinfo=UTC))


async def sign(practice: Practice, pdf: bytes, slot: SignatureSlot) -> bytes:
    key, spki = browser_key()
    cert = practice.ca.issue_signer_certificate(spki, slot.signer.printed_name, slot.role.value)
    to_sign, state = await practice.signer.prepare(pdf, slot.field_name, cert.asn1, slot.signer,
                                                   slot.certify)
    return await practice.signer.finish(state, webcrypto_sign(key, to_sign))


async def sign_all(practice: Practice, patient: PatientRecord) -> tuple[SigningPlan, bytes]:
    plan = plan_signatures(patient, CLINICIAN, TODAY)
    pdf = render(plan, patient)
    for slot in plan.slots:
        pdf = await sign(practice, pdf, slot)
    return plan, pdf


@pytest.fixture(scope="module")
def adult_pdf(practice: Practice) -> bytes:
    # Shared by the tampering tests; made outside their loops, in one of its own.
    return asyncio.run(sign_all(practice, ADULT))[1]


async def assert_good(practice: Practice, pdf: bytes, roles: list[str]) -> None:
    report = await verify(pdf, [practice.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    regular = [s for s in report.signatures if s.kind == "signature"]
    assert [s.role for s in regular] == roles
    assert regular[0].certification and not regular[1].certification
    for s in regular:
        assert s.intact and s.valid and s.trusted and s.docmdp_ok and s.timestamped
        assert s.signed_at is not None
    assert report.signatures[-1].kind == "document timestamp"
    assert report.signatures[-1].coverage == "entire file"


async def test_adult_patient_signs_after_clinician(practice: Practice, adult_pdf: bytes) -> None:
    await assert_good(practice, adult_pdf, ["clinician", "patient"])
    report = await verify(adult_pdf, [practice.ca.root_asn1])
    assert [s.signer_name for s in report.signatures[:2]] == ["Dana Smith", "Alex Doe"]
    # The clinician's certification is still valid after the patient's signature:
    # what changed after it was form filling, which it allows.
    assert report.signatures[0].modification_level == "form filling"
    # PDF/A-2 stays PDF 1.7 with only the PAdES extension (no ISO 32002 /Version 2.0).
    assert b"/Version /2.0" not in adult_pdf and b"/ESIC" in adult_pdf


async def test_minor_is_signed_by_guardian(practice: Practice) -> None:
    plan, pdf = await sign_all(practice, MINOR)
    assert plan.field_names == ("clinician_signature", "representative_signature")
    await assert_good(practice, pdf, ["clinician", "legal_representative"])
    names = {name for name, *_ in fields.enumerate_sig_fields(PdfFileReader(io.BytesIO(pdf)))}
    assert "patient_signature" not in names


async def test_adult_with_representative_on_record(practice: Practice) -> None:
    plan, pdf = await sign_all(practice, ADULT_WITH_AGENT)
    assert plan.representative == AGENT
    await assert_good(practice, pdf, ["clinician", "legal_representative"])


async def test_representative_not_on_record_is_refused(practice: Practice) -> None:
    with pytest.raises(ConsentError) as caught:
        plan_signatures(ADULT, CLINICIAN, TODAY, requested=SignerRole.LEGAL_REPRESENTATIVE)
    assert caught.value.code == "no_representative_on_record"
    # The adult's document has no representative field to sign either.
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    pdf = await sign(practice, render(plan, ADULT), plan.slots[0])
    rep_plan = plan_signatures(ADULT_WITH_AGENT, CLINICIAN, TODAY)
    with pytest.raises(ConsentError) as caught:
        await sign(practice, pdf, rep_plan.slots[1])
    assert caught.value.code == "no_such_field"


async def test_out_of_order_signing_is_refused(practice: Practice) -> None:
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    pdf = render(plan, ADULT)
    with pytest.raises(ConsentError) as caught:
        await sign(practice, pdf, plan.slots[1])
    assert caught.value.code == "out_of_order"
    signed = await sign(practice, pdf, plan.slots[0])
    with pytest.raises(ConsentError) as caught:
        await sign(practice, signed, plan.slots[0])
    assert caught.value.code == "field_already_signed"


async def test_signature_over_wrong_bytes_is_refused(practice: Practice) -> None:
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    pdf = render(plan, ADULT)
    slot = plan.slots[0]
    key, spki = browser_key()
    cert = practice.ca.issue_signer_certificate(spki, slot.signer.printed_name, "clinician")
    to_sign, state = await practice.signer.prepare(pdf, slot.field_name, cert.asn1,
                                                   slot.signer, True)
    before = hashlib.sha256(state.pdf).digest()
    other_key, _ = browser_key()
    for bad in (webcrypto_sign(key, to_sign + b"x"), webcrypto_sign(other_key, to_sign),
                b"\x00" * 64, b"not a signature"):
        with pytest.raises(ConsentError) as caught:
            await practice.signer.finish(state, bad)
        assert caught.value.code == "bad_signature"
    assert hashlib.sha256(state.pdf).digest() == before
    assert (await verify(pdf, [practice.ca.root_asn1])).bottom_line == "no signatures"
    # DER is accepted too, and the same prepared state still finishes.
    good = await practice.signer.finish(state, key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    report = await verify(good, [practice.ca.root_asn1], [practice.ca.current_crl_der()])
    assert report.bottom_line == "good" and report.pades_level == "B-T", report.to_dict()


async def test_flipped_byte_in_signed_range_is_caught(practice: Practice,
                                                      adult_pdf: bytes) -> None:
    reader = PdfFileReader(io.BytesIO(adult_pdf))
    byte_range = reader.embedded_signatures[0].sig_object["/ByteRange"]
    start, length = int(byte_range[0]), int(byte_range[1])
    at = adult_pdf.index(b"WeasyPrint", start, start + length)
    tampered = adult_pdf[:at] + b"X" + adult_pdf[at + 1:]
    report = await verify(tampered, [practice.ca.root_asn1])
    assert not report.signatures[0].intact
    assert report.bottom_line == "altered"


async def test_later_page_content_change_is_caught(practice: Practice,
                                                   adult_pdf: bytes) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(adult_pdf))
    page = writer.root["/Pages"]["/Kids"][0]
    extra = writer.add_object(generic.StreamObject(stream_data=b"BT ET 0 0 m 300 300 l S"))
    contents = page.raw_get("/Contents")
    if isinstance(contents, generic.ArrayObject):
        page["/Contents"] = generic.ArrayObject([*contents, extra])
    else:
        page["/Contents"] = generic.ArrayObject([contents, extra])
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    report = await verify(out.getvalue(), [practice.ca.root_asn1])
    assert all(s.intact for s in report.signatures)
    assert report.signatures[0].docmdp_ok is False
    assert report.bottom_line == "altered"


async def test_signature_field_added_afterwards_is_caught(practice: Practice,
                                                          adult_pdf: bytes) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(adult_pdf))
    fields.append_signature_field(writer, fields.SigFieldSpec("extra", box=(20, 20, 200, 80)))
    out = io.BytesIO()
    writer.write(out)
    report = await verify(out.getvalue(), [practice.ca.root_asn1])
    assert report.bottom_line == "altered", report.to_dict()
    assert report.signatures[1].docmdp_ok is False


async def test_archive_timestamp_renewal_keeps_it_good(practice: Practice,
                                                       adult_pdf: bytes) -> None:
    renewed = await practice.signer.renew_archive_timestamp(adult_pdf)
    report = await verify(renewed, [practice.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert [s.kind for s in report.signatures].count("document timestamp") == 2


async def test_verifies_years_later_offline(tmp_path: Path) -> None:
    """Signed three years ago with day-long certificates and a CRL long expired."""
    then = datetime.now(UTC) - timedelta(days=3 * 365)
    ca = PracticeCA(tmp_path, practice_name="Old Practice", now=lambda: then)
    _, pdf = await sign_all(Practice(ca, ConsentSigner(ca)), ADULT)
    report = await verify(pdf, [ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert report.signatures[0].signed_at is not None
    assert report.signatures[0].signed_at.startswith(then.date().isoformat())


async def test_untrusted_root_is_not_trusted(practice: Practice, adult_pdf: bytes,
                                             tmp_path: Path) -> None:
    other = PracticeCA(tmp_path, practice_name="Other")
    report = await verify(adult_pdf, [other.root_asn1])
    assert report.bottom_line == "not trusted"


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"%PDF-1.7\n%%EOF",
                                  b"%PDF-1.7\n1 0 obj <<", b"\x00\xff" * 5000])
async def test_verify_never_raises_on_garbage(practice: Practice, data: bytes) -> None:
    report = await verify(data, [practice.ca.root_asn1])
    assert report.bottom_line in ("invalid", "no signatures")
    assert report.reason


async def test_truncated_and_unsigned(practice: Practice, adult_pdf: bytes) -> None:
    truncated = await verify(adult_pdf[: len(adult_pdf) // 2], [practice.ca.root_asn1])
    assert truncated.bottom_line != "good"
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    unsigned = await verify(render(plan, ADULT), [practice.ca.root_asn1])
    assert unsigned.bottom_line == "no signatures"
    assert unsigned.to_dict()["signatures"] == []


def test_appearance_text_is_not_letter_spaced(adult_pdf: bytes) -> None:
    """The stamp font's /W widths are thousandths of an em, as PDF reads them."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(adult_pdf), strict=False)
    widths: list[int] = []
    for field in reader.root["/AcroForm"]["/Fields"]:
        if "/AP" not in field.get_object():
            continue  # the document timestamp's field has no appearance
        appearance = field.get_object()["/AP"]["/N"].get_object()
        font = appearance["/Resources"]["/Font"]["/F1"].get_object()
        cid_widths = font["/DescendantFonts"][0].get_object()["/W"]
        widths += [int(w) for entry in cid_widths if isinstance(entry, list) for w in entry]
    assert widths and max(widths) <= 1000, max(widths)
    assert min(widths) >= 200  # not shrunk to nothing either
