"""Consent signing benchmark: our interrupted PAdES signing against plain pyHanko.

    .venv/bin/python -m bench.consent [--consents 10] [--signatures 30] [--no-write]

* whole consent: render (WeasyPrint PDF/A-2b + fields), clinician signs (certification,
  B-T), patient signs (approval + lock, B-T), then B-LTA (DSS + document timestamp);
  consents per second over `--consents` runs. Both signers' keys are made here as a
  browser would (P-256) and their signatures sent as WebCrypto's raw r||s.
* per signature: the clinician's signature on the same rendered PDF, `prepare` + the
  client's ECDSA + `finish` (timestamp from the built-in TSA), against plain pyHanko:
  `SimpleSigner` with an ECDSA P-256 key and certificate from the same CA,
  `PdfSigner.async_sign_pdf` into the same field with pyHanko's `DummyTimeStamper`
  and its default appearance. The two alternate, `--signatures` runs each, median.
* verification: `consent.verify.verify` on a finished consent, per signature (the two
  signatures and the document timestamp).

Target: our median per signature at most half of the plain pyHanko figure. Nothing is
asserted; the figures are printed with PASS or MISS and written to docs/benchmarks.md
under `## consent` (only that section is replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pyhanko.keys import load_private_key_from_pemder_data
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from consent.document import TemplateLibrary, render_consent
from consent.pki import PracticeCA
from consent.signing import ConsentSigner
from consent.verify import verify
from consent.workflow import ClinicianRecord, PatientRecord, SigningPlan, plan_signatures

TARGET = 0.5  # ours / plain pyHanko per signature, at most
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
RUN_DATE = "2026-12-01"
PATIENT = PatientRecord("Bench Patient", date(1990, 4, 27))
CLINICIAN = ClinicianRecord("Bench Clinician", "PhD")


def webcrypto_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class Bench:
    def __init__(self, directory: Path) -> None:
        self.ca = PracticeCA(directory, practice_name="Bench Practice")
        self.signer = ConsentSigner(self.ca)
        self.library = TemplateLibrary()
        self.plan: SigningPlan = plan_signatures(PATIENT, CLINICIAN, date(2026, 12, 1))

    def render(self) -> bytes:
        return render_consent(self.library.template("telehealth-informed-consent"),
                              self.library.disclosure(), practice_name="Bench Practice",
                              patient=PATIENT, clinician=CLINICIAN, plan=self.plan,
                              issued_at=datetime.now(UTC))

    async def ours(self, pdf: bytes, index: int) -> bytes:
        """One signature as the service makes it: cert for a client key, prepare, finish."""
        slot = self.plan.slots[index]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.issue_signer_certificate(spki(key), slot.signer.printed_name,
                                                slot.role.value)
        to_sign, state = await self.signer.prepare(pdf, slot.field_name, cert.asn1,
                                                   slot.signer, slot.certify)
        return await self.signer.finish(state, webcrypto_sign(key, to_sign))

    async def whole_consent(self) -> bytes:
        pdf = self.render()
        for index in range(len(self.plan.slots)):
            pdf = await self.ours(pdf, index)
        return pdf

    def plain_setup(self) -> tuple[signers.SimpleSigner, DummyTimeStamper]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.issue_signer_certificate(spki(key), "Bench Clinician", "clinician",
                                                hours=24 * 30)
        key_info = load_private_key_from_pemder_data(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), passphrase=None)
        registry = SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [self.ca.root_asn1])
        simple = signers.SimpleSigner(cert.asn1, key_info, registry)
        tsa = self.ca.timestamper()
        stock_tsa = DummyTimeStamper(tsa.tsa_cert, tsa.tsa_key,
                                     SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
                                         [self.ca.root_asn1]))
        return simple, stock_tsa

    async def plain(self, pdf: bytes, simple: signers.SimpleSigner,
                    tsa: DummyTimeStamper) -> bytes:
        meta = signers.PdfSignatureMetadata(
            field_name=self.plan.slots[0].field_name, certify=True, md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES)
        out = io.BytesIO()
        await signers.PdfSigner(meta, simple, timestamper=tsa).async_sign_pdf(
            IncrementalPdfFileWriter(io.BytesIO(pdf)), existing_fields_only=True, output=out)
        return out.getvalue()


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def run(consents: int, signatures: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-consent-") as tmp:
        bench = Bench(Path(tmp))
        await bench.whole_consent()  # warm up: imports, font subset, CRL
        start = time.perf_counter()
        for _ in range(consents):
            finished = await bench.whole_consent()
        whole_s = time.perf_counter() - start

        pdf = bench.render()
        simple, stock_tsa = bench.plain_setup()
        await bench.plain(pdf, simple, stock_tsa)
        ours_s: list[float] = []
        plain_s: list[float] = []
        for _ in range(signatures):
            ours_s.append(await timed(lambda: bench.ours(pdf, 0)))
            plain_s.append(await timed(lambda: bench.plain(pdf, simple, stock_tsa)))

        patient_pdf = await bench.ours(pdf, 0)
        patient_s = [await timed(lambda: bench.ours(patient_pdf, 1))
                     for _ in range(max(3, signatures // 3))]

        roots = [bench.ca.root_asn1]
        report = await verify(finished, roots)
        assert report.bottom_line == "good", report.to_dict()
        verify_s = [await timed(lambda: verify(finished, roots)) for _ in range(5)]
        return {
            "consents_per_s": consents / whole_s,
            "ours_ms": statistics.median(ours_s) * 1000,
            "plain_ms": statistics.median(plain_s) * 1000,
            "patient_lta_ms": statistics.median(patient_s) * 1000,
            "verify_ms_per_sig": statistics.median(verify_s) * 1000 / len(report.signatures),
            "consents": consents, "signatures": signatures,
        }


def section(r: dict[str, float]) -> str:
    ratio = r["ours_ms"] / r["plain_ms"]
    verdict = "PASS" if ratio <= TARGET else "MISS"
    rows = [
        ("whole consent (render PDF/A-2b, clinician signs, patient signs, B-LTA)",
         f"{r['consents_per_s']:.2f} consents/s ({r['consents']:.0f} runs)"),
        ("per signature, ours: cert for the client key + `prepare` + client ECDSA + "
         "`finish` (B-T)", f"{r['ours_ms']:.1f} ms median"),
        ("per signature, plain pyHanko `SimpleSigner` + `DummyTimeStamper`, same PDF "
         "and field", f"{r['plain_ms']:.1f} ms median"),
        (f"ratio ours / plain (target at most {TARGET})", f"{ratio:.2f} {verdict}"),
        ("last signature incl. B-LTA (DSS + document timestamp)",
         f"{r['patient_lta_ms']:.1f} ms median"),
        ("verification, offline, per signature (2 signatures + 1 document timestamp)",
         f"{r['verify_ms_per_sig']:.1f} ms"),
    ]
    table = "\n".join(["| measure | figure |", "|---|---|",
                        *(f"| {k} | {v} |" for k, v in rows)])
    return f"""## consent

`.venv/bin/python -m bench.consent` ({RUN_DATE}, {os.cpu_count()} cores; both sides in one
process, alternating; ECDSA P-256 signer keys, RSA-2048 in-process TSA on both sides).

{table}

What makes the difference: `bytes_reserved` fixed (no dry-run signature), the TSA key
parsed once, the appearance font subset once to Latin without layout tables (pyHanko
otherwise decompiles DejaVu Sans' GPOS/GSUB for every signature, ~0.4 s). Since
2026-12-01 (0.47-0.54 before, here 33-45 ms against 71-90 ms):

* the appearance font is parsed once per process and shared by every signature's glyph
  accumulator; what gets embedded is a subset with printable ASCII plus the other
  glyphs the text uses, made once per such set and kept (pyHanko parsed the font, then
  subset and wrote it with fontTools for every signature: ~10 ms; the embedded font
  is ~6 KB deflated instead of ~2.5 KB);
* the signed attributes the client signs and the built-in TSA's tokens are put
  together from DER pieces (byte for byte what pyHanko makes, checked in
  `tests/integration/test_consent_tsa.py`): asn1crypto took ~6 ms to build the
  nested signing-certificate(-v2) attributes, ~5 ms per token; one RSA-2048
  signature is ~0.5 ms, so the TSA stays RSA, as pyHanko's `DummyTimeStamper` needs;
* `prepare` parses the document once (the incremental writer's reader answers which
  fields exist and are signed) and counts the signed fields instead of reading
  `embedded_signatures`, which parses every /Contents placeholder in pure Python
  (~10 ms a signature: that is most of what the B-LTA step still costs, in `make_lta`).
"""


def write_section(text: str) -> None:
    """Replace (or append) only the `## consent` section of docs/benchmarks.md."""
    current = DOC.read_text() if DOC.exists() else ""
    lines = current.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == "## consent"), None)
    if start is None:
        joined = current + ("\n" if current and not current.endswith("\n\n") else "") + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        joined = "".join(lines[:start]) + text + ("\n" if end < len(lines) else "") + "".join(
            lines[end:])
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(joined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consents", type=int, default=10)
    parser.add_argument("--signatures", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    logging.getLogger("pyhanko").setLevel(logging.ERROR)
    results = asyncio.run(run(args.consents, args.signatures))
    text = section(results)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
