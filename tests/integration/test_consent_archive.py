"""When an archive timestamp needs renewing, read from real B-LTA consents signed here
with keys made as a browser would (WebCrypto P-256, raw r||s)."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from consent.archive import last_archive_timestamp_expiry, needs_renewal
from consent.pki import PracticeCA, utc_now
from consent.signing import ConsentSigner
from consent.workflow import plan_signatures

from test_consent_signing import ADULT, CLINICIAN, TODAY, Practice, render, sign

DAY = timedelta(days=1)
CENTURY = timedelta(days=100 * 365)


@dataclass
class Signed:
    unsigned: bytes
    clinician_only: bytes
    """B-T: a signature with its timestamp, no document timestamp yet."""
    complete: bytes
    """B-LTA: both signatures, the DSS, one document timestamp."""


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Practice:
    ca = PracticeCA(tmp_path_factory.mktemp("ca"), practice_name="Test Practice")
    return Practice(ca, ConsentSigner(ca))


async def sign_all(practice: Practice) -> Signed:
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    unsigned = render(plan, ADULT)
    clinician_only = await sign(practice, unsigned, plan.slots[0])
    complete = await sign(practice, clinician_only, plan.slots[1])
    return Signed(unsigned, clinician_only, complete)


@pytest.fixture(scope="module")
def signed(practice: Practice) -> Signed:
    # Made outside the tests' loops, in one of its own.
    return asyncio.run(sign_all(practice))


def tsa_not_after(ca: PracticeCA) -> datetime:
    not_after: datetime = ca.tsa_cert_asn1["tbs_certificate"]["validity"]["not_after"].native
    return not_after


def doc_timestamps(pdf: bytes) -> int:
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    return sum(sig.sig_object_type == "/DocTimeStamp" for sig in reader.embedded_signatures)


def test_expiry_is_the_tsa_certificates_not_after(practice: Practice, signed: Signed) -> None:
    expiry = last_archive_timestamp_expiry(signed.complete)
    assert expiry is not None and expiry.tzinfo is not None
    assert expiry == tsa_not_after(practice.ca)
    assert expiry == practice.ca.tsa_cert.not_valid_after_utc
    assert doc_timestamps(signed.complete) == 1


def test_needs_renewal_only_within_the_margin(signed: Signed) -> None:
    now = utc_now()
    assert needs_renewal(signed.complete, now, DAY) is False
    assert needs_renewal(signed.complete, now, CENTURY) is True
    expiry = last_archive_timestamp_expiry(signed.complete)
    assert expiry is not None
    assert needs_renewal(signed.complete, expiry - 2 * DAY, DAY) is False
    assert needs_renewal(signed.complete, expiry - DAY, DAY) is True
    assert needs_renewal(signed.complete, expiry + DAY, timedelta(0)) is True
    # A naive `now` is taken as UTC.
    assert needs_renewal(signed.complete, now.replace(tzinfo=None), DAY) is False


def test_no_document_timestamp_gives_none(signed: Signed) -> None:
    for pdf in (signed.unsigned, signed.clinician_only):
        assert doc_timestamps(pdf) == 0
        assert last_archive_timestamp_expiry(pdf) is None
        assert needs_renewal(pdf, utc_now(), CENTURY) is False


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"%PDF-1.7\n%%EOF",
                                  b"%PDF-1.7\n1 0 obj <<", b"\x00\xff" * 5000])
def test_garbage_never_raises(data: bytes) -> None:
    assert last_archive_timestamp_expiry(data) is None
    assert needs_renewal(data, utc_now(), CENTURY) is False


def test_truncated_document_never_raises(signed: Signed) -> None:
    half = signed.complete[: len(signed.complete) // 2]
    assert last_archive_timestamp_expiry(half) is None
    assert needs_renewal(half, utc_now(), CENTURY) is False


async def test_renewal_adds_a_document_timestamp(practice: Practice, signed: Signed) -> None:
    renewed = await practice.signer.renew_archive_timestamp(signed.complete)
    assert doc_timestamps(renewed) == doc_timestamps(signed.complete) + 1 == 2
    assert last_archive_timestamp_expiry(renewed) == tsa_not_after(practice.ca)
    assert needs_renewal(renewed, utc_now(), DAY) is False


async def test_the_last_timestamp_is_the_one_read(practice: Practice, signed: Signed,
                                                  tmp_path: Path) -> None:
    """Renewed by a second TSA of the same CA whose certificate ends on another day."""
    for name in ("ca-key.pem", "ca-cert.pem"):  # the same root, a TSA of its own
        (tmp_path / name).write_bytes((practice.ca.directory / name).read_bytes())
    second = PracticeCA(tmp_path, practice_name="Test Practice",
                        now=lambda: utc_now() - timedelta(days=40))
    second.now = utc_now  # its TSA certificate was made 40 days ago; its tokens say now
    renewer = ConsentSigner(practice.ca, timestamper=second.timestamper())
    renewed = await renewer.renew_archive_timestamp(signed.complete)
    assert doc_timestamps(renewed) == 2
    assert tsa_not_after(second) != tsa_not_after(practice.ca)
    assert last_archive_timestamp_expiry(renewed) == tsa_not_after(second)
    assert last_archive_timestamp_expiry(signed.complete) == tsa_not_after(practice.ca)
