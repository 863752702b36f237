"""Timestamps from an RFC 3161 service over HTTP (`make_timestamper` with a URL), and the
built-in TSA and signed attributes made from DER pieces equal to what pyHanko makes."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from asn1crypto import tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko_certvalidator.registry import SimpleCertificateStore

from consent.pki import PracticeCA, PracticeTimeStamper, make_timestamper
from consent.signing import ConsentSigner, pades_signed_attrs
from consent.verify import verify
from consent.workflow import PatientRecord

from test_consent_signing import ADULT, Practice, browser_key, sign_all


@dataclass
class HttpTsa:
    url: str
    requests: list[tsp.TimeStampReq] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serve_tsa(timestamper: PracticeTimeStamper) -> AsyncIterator[HttpTsa]:
    """An RFC 3161 service on 127.0.0.1 (a free port) answering with `timestamper`."""
    tsa = HttpTsa(url="")

    async def handle(request: web.Request) -> web.Response:
        if request.content_type != "application/timestamp-query":
            return web.Response(status=415)
        req = tsp.TimeStampReq.load(await request.read())
        tsa.requests.append(req)
        resp = timestamper.request_tsa_response(req)
        return web.Response(body=resp.dump(), content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    tsa.url = f"http://{host}:{port}/tsa"
    try:
        yield tsa
    finally:
        await runner.cleanup()


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    ca = PracticeCA(tmp_path / "ca", practice_name="Test Practice")
    return Practice(ca, ConsentSigner(ca))


def dss_cert_hashes(pdf: bytes) -> set[bytes]:
    dss = DocumentSecurityStore.read_dss(PdfFileReader(io.BytesIO(pdf)))
    return {asn1_x509.Certificate.load(ref.get_object().data).sha256
            for ref in dss.certs.values()}


def test_factory_picks_the_built_in_or_an_http_tsa(practice: Practice) -> None:
    assert make_timestamper(practice.ca) is practice.ca.timestamper()
    assert make_timestamper(practice.ca, "") is practice.ca.timestamper()
    http = make_timestamper(practice.ca, "http://127.0.0.1:9/tsa")
    assert isinstance(http, HTTPTimeStamper) and http.url == "http://127.0.0.1:9/tsa"


async def test_consent_timestamped_over_http_verifies(practice: Practice) -> None:
    """The practice's own TSA behind HTTP: every token comes over the wire."""
    async with serve_tsa(practice.ca.timestamper()) as tsa:
        signer = ConsentSigner(practice.ca, timestamper=make_timestamper(practice.ca, tsa.url))
        _, pdf = await sign_all(Practice(practice.ca, signer), ADULT)
        # two signature timestamps, the document timestamp of B-LTA, and the one that
        # pyHanko asks a new timestamper for once to size a document timestamp
        assert len(tsa.requests) == 4
    report = await verify(pdf, [practice.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    assert all(s.timestamped for s in report.signatures)


async def test_outside_tsa_certificates_go_into_the_dss(practice: Practice,
                                                        tmp_path: Path) -> None:
    """Another organisation's TSA: its certificate and root are in the DSS after B-LTA."""
    outside = PracticeCA(tmp_path / "outside", practice_name="Outside Timestamps Ltd")
    async with serve_tsa(outside.timestamper()) as tsa:
        signer = ConsentSigner(practice.ca, timestamper=make_timestamper(practice.ca, tsa.url))
        _, pdf = await sign_all(Practice(practice.ca, signer), ADULT)
        assert len(tsa.requests) == 4
    in_dss = dss_cert_hashes(pdf)
    assert outside.tsa_cert_asn1.sha256 in in_dss and outside.root_asn1.sha256 in in_dss
    assert practice.ca.root_asn1.sha256 in in_dss

    roots = [practice.ca.root_asn1, outside.root_asn1]
    report = await verify(pdf, roots, [outside.current_crl_der()])
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    # Without the outside TSA's root its timestamps are not trusted.
    assert (await verify(pdf, [practice.ca.root_asn1],
                         [outside.current_crl_der()])).bottom_line == "not trusted"


async def test_signed_attrs_equal_pyhankos(practice: Practice) -> None:
    registry = SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
        [practice.ca.root_asn1])
    for name in ("Alex Doe", "Zoë Łukasiewicz-Núñez " * 3):
        _, spki = browser_key()
        cert = practice.ca.issue_signer_certificate(spki, name, "patient",
                                                    email="a@example.org").asn1
        digest = bytes(range(32))
        external = signers.ExternalSigner(cert, registry, signature_value=72)
        theirs = await external.signed_attrs(
            digest, "sha256", attr_settings=PdfCMSSignedAttributes(
                signing_time=datetime.now(UTC)), use_pades=True)
        assert pades_signed_attrs(digest, cert) == theirs.dump()


def test_built_in_tokens_equal_dummy_timestampers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same request, time and serial: the same token, byte for byte."""
    import pyhanko.sign.timestamps.dummy_client as dummy_client

    monkeypatch.setattr(dummy_client, "get_nonce", lambda: 0x1234_5678_9ABC)
    when = datetime(2026, 12, 1, 15, 0, 5, 250_000, tzinfo=UTC)
    clock: Callable[[], datetime] = lambda: when  # noqa: E731
    ca = PracticeCA(tmp_path, now=clock)
    ours = ca.timestamper()
    roots = SimpleCertificateStore.from_certs([ca.root_asn1])  # type: ignore[no-untyped-call]
    stock = DummyTimeStamper(ours.tsa_cert, ours.tsa_key, roots, fixed_dt=when)
    for md, size in (("sha256", 32), ("sha384", 48), ("sha512", 64)):
        _, req = ours.request_cms(b"\x07" * size, md)  # type: ignore[no-untyped-call]
        assert ours.request_tsa_response(req).dump() == stock.request_tsa_response(req).dump()


async def test_non_ascii_names_get_their_glyphs(practice: Practice) -> None:
    """The appearance font is shared and its programs cached: a later signature with
    other letters still embeds outlines for them."""
    _, ascii_pdf = await sign_all(practice, ADULT)
    name = "Zoë Łukasiewicz"
    _, pdf = await sign_all(practice, PatientRecord(name, ADULT.dob))
    report = await verify(pdf, [practice.ca.root_asn1])
    assert report.bottom_line == "good", report.to_dict()
    reader = PdfFileReader(io.BytesIO(pdf))
    sig = next(s for s in reader.embedded_signatures if s.field_name == "patient_signature")
    programs = []
    for font in sig.sig_field["/AP"]["/N"]["/Resources"]["/Font"].values():
        descendant = font.get_object()["/DescendantFonts"][0].get_object()
        programs.append(descendant["/FontDescriptor"]["/FontFile2"].get_object().data)
    assert programs
    for program in programs:
        tt = TTFont(io.BytesIO(program))
        cmap, glyf = tt.getBestCmap(), tt["glyf"]
        for char in {c for c in name if not c.isspace()}:
            assert glyf[cmap[ord(char)]].numberOfContours != 0, char
    assert ascii_pdf != pdf
