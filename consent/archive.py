"""When a signed consent's archive timestamp must be renewed: read from the PDF alone.

    last_archive_timestamp_expiry(pdf) -> datetime | None
      the not_after of the TSA certificate that signed the last document timestamp
    needs_renewal(pdf, now, margin) -> bool
      True once that expiry is within `margin` of `now`

A B-LTA document stays verifiable offline only while its last document timestamp can
be checked, i.e. until that TSA certificate expires; before then a new one is laid
over it (`ConsentSigner.renew_archive_timestamp`). A document without a document
timestamp (unsigned, or B-T only) has nothing to renew here. An unreadable file gives
None / False, never an exception.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from asn1crypto import cms as asn1_cms  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509

log = logging.getLogger(__name__)

DOC_TIMESTAMP = "/DocTimeStamp"


def _signer_certificate(signed_data: asn1_cms.SignedData, signer_info: asn1_cms.SignerInfo
                        ) -> asn1_x509.Certificate | None:
    """The certificate in `signed_data` that `signer_info` names by its sid."""
    sid = signer_info["sid"]
    certs = [choice.chosen for choice in signed_data["certificates"] or ()
             if choice.name == "certificate"]
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            if (cert.issuer == sid.chosen["issuer"]
                    and cert.serial_number == sid.chosen["serial_number"].native):
                return cert
        elif sid.name == "subject_key_identifier" and cert.key_identifier == sid.chosen.native:
            return cert
    return None


def _last_expiry(pdf: bytes) -> datetime | None:
    from pyhanko.pdf_utils.reader import PdfFileReader

    if pdf.lstrip()[:5] != b"%PDF-":
        return None
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    stamps = [sig for sig in reader.embedded_signatures
              if sig.sig_object_type == DOC_TIMESTAMP]
    if not stamps:
        return None
    last: Any = max(stamps, key=lambda sig: sig.signed_revision)
    cert = _signer_certificate(last.signed_data, last.signer_info)
    if cert is None:
        return None
    not_after: datetime = cert["tbs_certificate"]["validity"]["not_after"].native
    return not_after


def last_archive_timestamp_expiry(pdf: bytes) -> datetime | None:
    """When the TSA certificate of the PDF's last document timestamp expires (UTC);
    None when there is none or the file cannot be read."""
    try:
        return _last_expiry(pdf)
    except Exception as e:  # a hostile or broken file must not take the caller down
        log.info("archive timestamp expiry unreadable: %s", type(e).__name__)
        return None


def needs_renewal(pdf: bytes, now: datetime, margin: timedelta) -> bool:
    """Whether the last archive timestamp's TSA certificate expires within `margin` of
    `now` (naive `now` is UTC); False when the PDF has no document timestamp."""
    expiry = last_archive_timestamp_expiry(pdf)
    if expiry is None:
        return False
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return expiry - margin <= now
