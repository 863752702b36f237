"""Verify a signed consent offline against the practice's trust root: a report, never a raise.

    verify(pdf, trust_roots, crls) -> Report
      every signature: signer, role, time from its timestamp, intact, valid, trusted,
        coverage, what changed after it and whether that was allowed (DocMDP/FieldMDP)
      every document timestamp: intact, valid, trusted, time
      the PAdES level reached (B-B, B-T, B-LT, B-LTA) and one bottom line:
        good | not trusted | altered | invalid | no signatures

Each signature is validated at the time its RFC 3161 timestamp proves, with the
certificates and CRLs in the document's DSS plus the ones given, and no network.
That is what lets a day-long signer certificate verify years later; the archive
timestamps' own chain is checked as timestamps (renew them before the TSA expires).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from asn1crypto import cms as asn1_cms  # type: ignore[import-untyped]
from asn1crypto import crl as asn1_crl
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509

log = logging.getLogger(__name__)

GOOD, NOT_TRUSTED, ALTERED, INVALID, NO_SIGNATURES = (
    "good", "not trusted", "altered", "invalid", "no signatures")


@dataclass
class SignatureReport:
    field_name: str
    kind: str
    """"signature" (certification or approval) or "document timestamp"."""
    certification: bool = False
    signer_name: str | None = None
    role: str | None = None
    signed_at: str | None = None
    """From the signature's (or the document timestamp's) RFC 3161 token, ISO 8601."""
    timestamped: bool = False
    intact: bool = False
    valid: bool = False
    trusted: bool = False
    coverage: str | None = None
    """entire file / entire revision (later revisions follow) / partial."""
    modification_level: str | None = None
    """What changed after it: none, LTA updates, form filling, annotations, other."""
    docmdp_ok: bool | None = None
    """Whether the changes after it were allowed by the certification and locks."""
    problem: str | None = None

    @property
    def good(self) -> bool:
        return (self.intact and self.valid and self.trusted and self.docmdp_ok is not False
                and (self.kind != "signature" or self.timestamped))


@dataclass
class Report:
    bottom_line: str
    reason: str = ""
    pades_level: str | None = None
    signatures: list[SignatureReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name_attr(cert: asn1_x509.Certificate, attr: str) -> str | None:
    value = cert.subject.native.get(attr)
    if isinstance(value, list):
        value = value[-1]
    return None if value is None else str(value)


def _timestamp_time(signer_info: asn1_cms.SignerInfo) -> datetime | None:
    """genTime of the signature timestamp token in the unsigned attributes, if any."""
    for attr in signer_info["unsigned_attrs"] or ():
        if attr["type"].native == "signature_time_stamp_token":
            token = attr["values"][0]
            tst_info = token["content"]["encap_content_info"]["content"].parsed
            if isinstance(tst_info, asn1_tsp.TSTInfo):
                gen_time: datetime = tst_info["gen_time"].native
                return gen_time
    return None


def timestamp_times(pdf_bytes: bytes) -> dict[str, datetime]:
    """Each signed field's signature timestamp time (empty for an unreadable file)."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        reader = PdfFileReader(io.BytesIO(pdf_bytes), strict=False)
        times = {}
        for sig in reader.embedded_signatures:
            when = _timestamp_time(sig.signer_info)
            if when is not None:
                times[sig.field_name] = when
        return times
    except Exception:  # a report, never a crash
        return {}


def _level_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "name", value)).lower().replace("_", " ")


async def verify(pdf_bytes: bytes, trust_roots: Sequence[asn1_x509.Certificate],
                 crls: Iterable[bytes | asn1_crl.CertificateList] = ()) -> Report:
    """The report on `pdf_bytes`; any failure to read it is a report, not an exception."""
    try:
        return await _verify(pdf_bytes, list(trust_roots), list(crls))
    except Exception as e:  # a hostile file must not take the caller down
        log.info("consent verification failed on an unreadable document: %s", type(e).__name__)
        return Report(INVALID, f"the file cannot be read as a signed PDF ({type(e).__name__})")


async def _verify(pdf_bytes: bytes, trust_roots: list[asn1_x509.Certificate],
                  crls: list[bytes | asn1_crl.CertificateList]) -> Report:
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import (
        async_validate_pdf_signature,
        async_validate_pdf_timestamp,
        read_certification_data,
    )
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko_certvalidator import ValidationContext

    if pdf_bytes.lstrip()[:5] != b"%PDF-":
        return Report(INVALID, "not a PDF file")
    reader = PdfFileReader(io.BytesIO(pdf_bytes), strict=False)
    embedded = reader.embedded_signatures
    if not embedded:
        return Report(NO_SIGNATURES, "the document carries no signatures")

    vc_kwargs: dict[str, Any] = {
        "trust_roots": trust_roots, "crls": crls, "allow_fetching": False,
        "revocation_mode": "require", "retroactive_revinfo": True}
    dss_present = "/DSS" in reader.root
    dss = DocumentSecurityStore.read_dss(reader) if dss_present else None
    dss_crls = len(dss.crls) if dss is not None else 0

    def context(moment: datetime | None) -> ValidationContext:
        kwargs = dict(vc_kwargs, moment=moment)
        return dss.as_validation_context(kwargs) if dss is not None else ValidationContext(
            **kwargs)

    certification = read_certification_data(reader)
    reports: list[SignatureReport] = []
    for sig in embedded:
        is_timestamp = sig.sig_object_type == "/DocTimeStamp"
        report = SignatureReport(field_name=str(sig.field_name),
                                 kind="document timestamp" if is_timestamp else "signature")
        try:
            if is_timestamp:
                ts_status = await async_validate_pdf_timestamp(
                    sig, validation_context=context(None))
                # An archive timestamp is checked at the time it proves, too.
                if not ts_status.trusted and ts_status.timestamp is not None:
                    ts_status = await async_validate_pdf_timestamp(
                        sig, validation_context=context(ts_status.timestamp))
                report.signed_at = ts_status.timestamp.isoformat()
                report.timestamped = True
                status: Any = ts_status
            else:
                report.certification = (
                    certification is not None
                    and certification.author_sig.get("/Contents") == sig.sig_object.get(
                        "/Contents"))
                cert = sig.signer_cert
                report.signer_name = _name_attr(cert, "common_name")
                report.role = _name_attr(cert, "title")
                ts_time = _timestamp_time(sig.signer_info)
                report.timestamped = ts_time is not None
                report.signed_at = ts_time.isoformat() if ts_time else None
                status = await async_validate_pdf_signature(
                    sig, signer_validation_context=context(ts_time),
                    ts_validation_context=context(ts_time),
                    key_usage_settings=KeyUsageConstraints(key_usage=set()))
            report.intact = bool(status.intact)
            report.valid = bool(status.valid)
            # The key usage is checked here: pyHanko's check refuses a certificate
            # without the extension, which RFC 5280 leaves unrestricted.
            report.trusted = bool(status.trusted) and (
                is_timestamp or _may_sign(sig.signer_cert))
            report.coverage = _level_name(status.coverage)
            report.modification_level = _level_name(status.modification_level)
            report.docmdp_ok = status.docmdp_ok
            if not report.good:
                report.problem = _problem(report, status)
        except Exception as e:
            report.problem = f"could not be validated ({type(e).__name__}: {e})"[:300]
        reports.append(report)

    regular = [r for r in reports if r.kind == "signature"]
    timestamps = [r for r in reports if r.kind != "signature"]
    level = None
    if regular and all(r.valid for r in regular):
        level = "B-B"
        if all(r.timestamped for r in regular):
            level = "B-T"
            if dss_crls and all(r.trusted for r in regular):
                level = "B-LT"
                last_regular = max(i for i, r in enumerate(reports) if r.kind == "signature")
                if any(r.good for r in reports[last_regular + 1:] if r in timestamps):
                    level = "B-LTA"
    return Report(*_bottom_line(reports), pades_level=level, signatures=reports)


SIGNING_KEY_USAGES = frozenset({"digital_signature", "non_repudiation"})


def _may_sign(cert: asn1_x509.Certificate) -> bool:
    """Whether a signer's certificate is for signatures: digital signature or
    non-repudiation in its key usage, or no key usage extension (unrestricted, RFC 5280),
    as `consent.pki.check_outside_certificate` accepts it at signing."""
    usage = cert.key_usage_value
    return usage is None or bool(SIGNING_KEY_USAGES & set(usage.native))


def _problem(report: SignatureReport, status: Any) -> str:
    if not report.intact:
        return "the signed bytes were changed after signing"
    if not report.valid:
        return "the signature value does not verify"
    if report.docmdp_ok is False:
        return f"changes after this signature were not allowed ({report.modification_level})"
    if not report.trusted:
        if status.trusted:
            return "the signer's certificate is not for signatures (its key usage)"
        indic = getattr(status, "trust_problem_indic", None)
        return f"the signer's certificate is not trusted ({_level_name(indic)})"
    if report.kind == "signature" and not report.timestamped:
        return "the signature carries no timestamp"
    return "not valid"


def _bottom_line(reports: list[SignatureReport]) -> tuple[str, str]:
    regular = [r for r in reports if r.kind == "signature"]
    if not regular:
        return NO_SIGNATURES, "the document carries only document timestamps"
    for r in reports:
        if not r.intact or r.docmdp_ok is False:
            return ALTERED, f"{r.field_name}: {r.problem}"
    for r in reports:
        if not r.valid:
            return INVALID, f"{r.field_name}: {r.problem}"
    for r in reports:
        if not r.good:
            return NOT_TRUSTED, f"{r.field_name}: {r.problem}"
    return GOOD, "every signature is intact, trusted and timestamped; nothing changed " \
                 "after them that they did not allow"
