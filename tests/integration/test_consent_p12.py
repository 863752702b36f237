"""A clinician signs a consent with their own key and certificate from an outside CA (a
PKCS#12), through the API (`sign_as_clinician(p12=...)`) and `telehealth sign --p12`;
the patient signs as always; the finished document verifies offline, B-LTA, against the
practice root plus `signer_trust_roots`. Certificates the practice must not accept are
refused before anything is prepared, and the document stays as it was."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from consent.pki import CA_DIR
from consent.verify import verify
from telehealth.config import Settings, load_settings
from telehealth.consents import Requester
from telehealth.sign_cli import Pkcs12Key, SignError, sign_as_clinician, sign_link

from conftest import Running

EMAIL = "dr.rivera@example.org"  # conftest's clinician
NAME = "Dana Rivera"
DOB = "1990-04-27"
PASSWORD = "correct horse p12"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> datetime:
    return datetime.now(UTC)


def _new_key(kind: str) -> PrivateKey:
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class OutsideCA:
    """A CA of another organisation (a root, or an intermediate under one)."""

    name: str
    key: PrivateKey
    cert: x509.Certificate
    revoked: list[int] = field(default_factory=list)

    @classmethod
    def root(cls, name: str, kind: str = "p256") -> OutsideCA:
        key = _new_key(kind)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA")])
        cert = (_ca_builder(subject, subject, key.public_key())
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert)

    def intermediate(self, kind: str = "rsa2048") -> OutsideCA:
        key = _new_key(kind)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} Signing CA")])
        cert = _ca_builder(subject, self.cert.subject, key.public_key()).sign(
            self.key, hashes.SHA256())
        return OutsideCA(self.name, key, cert)

    def issue(self, key: PrivateKey, *, common_name: str, email: str | None,
              days_valid: tuple[int, int] = (-1, 365), key_usage: bool = True) -> x509.Certificate:
        now = _now()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                       x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now + timedelta(days=days_valid[0]))
                   .not_valid_after(now + timedelta(days=days_valid[1]))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                  critical=False))
        if key_usage:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        if email:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def crl(self) -> bytes:
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - timedelta(hours=1)).next_update(now + timedelta(days=7))
                   .add_extension(x509.CRLNumber(1), critical=False))
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(now - timedelta(hours=1)).build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _ca_builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


@dataclass
class Credential:
    """A clinician's PKCS#12 as their CA hands it out, and the CRLs of the chain."""

    key: PrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate]
    crls: list[bytes]
    common_name: str
    root: OutsideCA

    def p12(self) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            b"clinician", self.key, self.cert, self.chain or None,
            serialization.BestAvailableEncryption(PASSWORD.encode()))

    def loaded(self) -> Pkcs12Key:
        """As `telehealth sign --p12` loads it."""
        return Pkcs12Key.from_pkcs12(self.p12(), PASSWORD.encode(), self.crls)


@dataclass
class Pki:
    ec_root: OutsideCA
    rsa_root: OutsideCA
    rsa_signing: OutsideCA
    root_files: tuple[str, ...]

    def credential(self, variant: str) -> Credential:
        """p256: the EC root issues the clinician's P-256 certificate (their e-mail, no key
        usage extension). rsa2048: an RSA root's intermediate issues an RSA-2048 one
        that names them by name only (digital signature, no non-repudiation)."""
        if variant == "p256":
            key = _new_key("p256")
            cert = self.ec_root.issue(key, common_name=f"Dr. {NAME}, LCSW", email=EMAIL,
                                      key_usage=False)
            return Credential(key, cert, [self.ec_root.cert], [self.ec_root.crl()],
                              f"Dr. {NAME}, LCSW", self.ec_root)
        key = _new_key("rsa2048")
        cert = self.rsa_signing.issue(key, common_name=NAME, email=None)
        return Credential(key, cert, [self.rsa_signing.cert],  # the root is left out
                          [self.rsa_signing.crl(), self.rsa_root.crl()], NAME, self.rsa_root)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ec_root = OutsideCA.root("Statewide Health PKI", "p256")
    rsa_root = OutsideCA.root("National Clinician Trust", "rsa2048")
    rsa_signing = rsa_root.intermediate("rsa2048")
    files = []
    for n, ca in enumerate((ec_root, rsa_root)):
        path = tmp_path / f"outside-root-{n}.pem"
        path.write_bytes(ca.pem())
        files.append(str(path))
    return Pki(ec_root, rsa_root, rsa_signing, tuple(files))


@pytest.fixture
def settings(settings: Settings, pki: Pki) -> Settings:
    return replace(settings, signer_trust_roots=pki.root_files)


async def new_consent(server: Running) -> tuple[dict[str, Any], str]:
    """A consent issued for a new visit of the test clinician; (its summary, API token)."""
    clinician, token = await server.clinician()
    created = await server.visit(clinician)
    status, body = await server.post(f"/api/v1/visits/{created.visit.id}/consents", {}, token)
    assert status == 201, body
    consent: dict[str, Any] = body["consent"]
    return consent, token


def dss_contents(pdf: bytes) -> tuple[set[bytes], set[bytes]]:
    """(SHA-256 of each certificate, DER of each CRL) in the document's DSS."""
    dss = DocumentSecurityStore.read_dss(PdfFileReader(io.BytesIO(pdf)))
    certs = {asn1_x509.Certificate.load(ref.get_object().data).sha256
             for ref in dss.certs.values()}
    return certs, {ref.get_object().data for ref in dss.crls}


async def assert_finished_and_good(server: Running, consent_id: str, cred: Credential) -> None:
    consents = server.services.consents
    doc = await consents.get(consent_id)
    assert doc.status == "complete"
    report = await consents.verify(doc.pdf)
    assert report.bottom_line == "good", report.to_dict()
    assert report.pades_level == "B-LTA"
    regular = [s for s in report.signatures if s.kind == "signature"]
    assert regular[0].signer_name == cred.common_name and regular[0].certification
    assert regular[1].role == "patient"
    assert all(s.trusted and s.timestamped and s.docmdp_ok for s in regular)

    # Offline with the roots alone: the outside CRLs are inside the document.
    roots = [consents.ca.root_asn1, asn1_x509.Certificate.load(
        cred.root.cert.public_bytes(serialization.Encoding.DER))]
    alone = await verify(doc.pdf, roots)
    assert alone.bottom_line == "good" and alone.pades_level == "B-LTA", alone.to_dict()
    certs, crls = dss_contents(doc.pdf)
    for ca_cert in (*cred.chain, cred.root.cert):
        assert asn1_x509.Certificate.load(
            ca_cert.public_bytes(serialization.Encoding.DER)).sha256 in certs
    assert set(cred.crls) <= crls
    # Without the outside root the clinician's signature is not trusted.
    assert (await verify(doc.pdf, [consents.ca.root_asn1])).bottom_line == "not trusted"

    entries = await server.services.store.audit_for(f"consent:{consent_id}")
    sources = [e.detail["certificate_source"] for e in entries
               if e.action == "consent.certificate_issued"]
    assert sources == ["pkcs12", "practice_ca"]
    signed = [e.detail["certificate_source"] for e in entries if e.action == "consent.signed"]
    assert signed == ["pkcs12", "practice_ca"]


@pytest.mark.parametrize("variant", ["p256", "rsa2048"])
async def test_clinician_signs_with_own_pkcs12(server: Running, pki: Pki, variant: str) -> None:
    consent, token = await new_consent(server)
    cred = pki.credential(variant)
    signed = await sign_as_clinician(server.url, consent["id"], api_token=token,
                                     p12=cred.loaded())
    assert signed["consent"]["status"] == "awaiting_patient"

    doc = await server.services.consents.get(consent["id"])
    assert doc.revision == 2 and doc.plan["validation"]["crls"]
    reader = PdfFileReader(io.BytesIO(doc.pdf))
    (sig,) = reader.embedded_signatures
    assert sig.signer_cert.dump() == cred.cert.public_bytes(serialization.Encoding.DER)
    in_cms = {c.chosen.sha256 for c in sig.signed_data["certificates"]}
    for ca_cert in (*cred.chain, cred.root.cert):  # the path, root included
        assert asn1_x509.Certificate.load(
            ca_cert.public_bytes(serialization.Encoding.DER)).sha256 in in_cms
    expected_algo = "sha256_rsa" if variant == "rsa2048" else "sha256_ecdsa"  # v1.5
    assert sig.signer_info["signature_algorithm"]["algorithm"].native == expected_algo

    done = await sign_link(signed["consent"]["consent_link"], dob=DOB, name="Alex Morgan")
    assert done["consent"]["status"] == "complete"
    await assert_finished_and_good(server, consent["id"], cred)

    # A renewed archive timestamp keeps it good.
    consents = server.services.consents
    renewed = await consents.renew_archives(margin=timedelta(days=36500),
                                            requester=Requester("test"))
    assert [r["id"] for r in renewed] == [consent["id"]]
    report = await consents.verify((await consents.get(consent["id"])).pdf)
    assert report.bottom_line == "good" and report.pades_level == "B-LTA", report.to_dict()


async def cli(server: Running, extra_env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The command in a subprocess with the server's settings (as test_consent_cli's)."""
    settings = server.services.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEHEALTH_")}
    env["TELEHEALTH_SECRET_KEY"] = settings.secret_key.value
    env["TELEHEALTH_PUBLIC_URL"] = server.url
    env["TELEHEALTH_SIGNER_TRUST_ROOTS"] = ",".join(settings.signer_trust_roots)
    env.update(extra_env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telehealth.cli", *args, "--data-dir", str(settings.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_sign_with_p12_from_the_command_line(server: Running, pki: Pki,
                                                   tmp_path: Path) -> None:
    consent, token = await new_consent(server)
    cred = pki.credential("rsa2048")
    p12 = tmp_path / "clinician.p12"
    p12.write_bytes(cred.p12())
    crl_args = []
    for n, crl in enumerate(cred.crls):
        path = tmp_path / f"ca-{n}.crl"
        path.write_bytes(crl)
        crl_args += ["--crl", str(path)]
    sign = ["sign", "--consent", consent["id"], "--api-token", token, "--server", server.url,
            "--p12", str(p12), "--p12-password-env", "CLINICIAN_P12_PASSWORD"]

    # A wrong password, a missing variable, no CRLs: refused, nothing signed.
    code, _, err = await cli(server, {"CLINICIAN_P12_PASSWORD": "wrong"}, *sign, *crl_args)
    assert code == 2 and "bad_pkcs12" in err, err
    code, _, err = await cli(server, {}, *sign, *crl_args)
    assert code == 2 and "CLINICIAN_P12_PASSWORD is not set" in err, err
    code, _, err = await cli(server, {"CLINICIAN_P12_PASSWORD": PASSWORD}, *sign)
    assert code == 2 and "revocation_unknown" in err, err
    assert (await server.services.consents.get(consent["id"])).revision == 1

    code, out, err = await cli(server, {"CLINICIAN_P12_PASSWORD": PASSWORD}, *sign, *crl_args,
                               "--json")
    assert code == 0, err
    assert json.loads(out)["consent"]["status"] == "awaiting_patient"
    assert PASSWORD not in out + err

    code, out, err = await cli(server, {}, "sign", consent["consent_link"], "--dob", DOB,
                               "--name", "Alex Morgan", "--json")
    assert code == 0, err
    assert json.loads(out)["consent"]["status"] == "complete"
    await assert_finished_and_good(server, consent["id"], cred)

    pdf = tmp_path / "signed.pdf"
    code, _, err = await cli(server, {}, "consent", "export", consent["id"], "--out", str(pdf))
    assert code == 0, err
    code, out, err = await cli(server, {}, "consent", "verify", str(pdf), "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["bottom_line"] == "good" and report["pades_level"] == "B-LTA"
    assert report["signatures"][0]["signer_name"] == NAME
    # --trust still means that root alone.
    practice_root = server.services.settings.data_dir / CA_DIR / "ca-cert.pem"
    code, out, _ = await cli(server, {}, "consent", "verify", str(pdf), "--json",
                             "--trust", str(practice_root))
    assert code == 1 and json.loads(out)["bottom_line"] == "not trusted"


def _key_for(cred_cert: x509.Certificate, key: PrivateKey, chain: Sequence[x509.Certificate],
             crls: Sequence[bytes]) -> Pkcs12Key:
    return Pkcs12Key(key, cred_cert, tuple(chain), tuple(crls))


async def _refused(server: Running, consent: dict[str, Any], token: str, p12: Pkcs12Key,
                   code: str) -> None:
    with pytest.raises(SignError) as caught:
        await sign_as_clinician(server.url, consent["id"], api_token=token, p12=p12)
    assert caught.value.code == code, caught.value
    assert caught.value.status == 400
    doc = await server.services.consents.get(consent["id"])
    assert doc.revision == 1 and doc.status == "awaiting_clinician"
    assert doc.sha256 == consent["sha256"] and "validation" not in doc.plan


async def test_certificates_that_cannot_sign_are_refused(server: Running, pki: Pki) -> None:
    consent, token = await new_consent(server)
    root = pki.ec_root
    key = _new_key("p256")

    # From a CA the practice does not trust (though it names the clinician and is current).
    stranger = OutsideCA.root("Unknown Issuer Inc")
    cert = stranger.issue(key, common_name=NAME, email=EMAIL)
    await _refused(server, consent, token, _key_for(cert, key, [stranger.cert],
                                                    [stranger.crl()]), "certificate_untrusted")
    # Expired yesterday.
    cert = root.issue(key, common_name=NAME, email=EMAIL, days_valid=(-400, -1))
    await _refused(server, consent, token, _key_for(cert, key, [root.cert], [root.crl()]),
                   "certificate_expired")
    # Someone else's: another e-mail address and another name.
    cert = root.issue(key, common_name="Pat Other", email="pat.other@example.org")
    await _refused(server, consent, token, _key_for(cert, key, [root.cert], [root.crl()]),
                   "certificate_not_yours")
    # Revoked by its CA; and a chain whose CA's CRL was not sent.
    cert = root.issue(key, common_name=NAME, email=EMAIL)
    root.revoked.append(cert.serial_number)
    await _refused(server, consent, token, _key_for(cert, key, [root.cert], [root.crl()]),
                   "certificate_revoked")
    root.revoked.clear()
    await _refused(server, consent, token, _key_for(cert, key, [root.cert], []),
                   "revocation_unknown")
    # A P-384 key: not a key this service signs with.
    big = ec.generate_private_key(ec.SECP384R1())
    cert384 = root.issue(big, common_name=NAME, email=EMAIL)
    await _refused(server, consent, token, _key_for(cert384, big, [root.cert], [root.crl()]),
                   "certificate_key_unsupported")

    # A good certificate, but the signature is by another key: nothing is embedded.
    good = _key_for(cert, key, [root.cert], [root.crl()])
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.url}/api/v1/consents/{consent['id']}"
    async with server.http.post(base + "/prepare", json={
            **good.prepare_body(), "typed_name": NAME}, headers=headers) as resp:
        prepared = await resp.json()
        assert resp.status == 200, prepared
    impostor = _key_for(cert, _new_key("p256"), [root.cert], [root.crl()])
    async with server.http.post(base + "/finish", json={
            "signing_id": prepared["signing_id"],
            "signature": impostor.sign_b64(prepared["to_sign"])}, headers=headers) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_signature"
    doc = await server.services.consents.get(consent["id"])
    assert doc.revision == 1 and doc.sha256 == consent["sha256"]

    # A patient cannot send a certificate (they sign with a device key the practice CA
    # certifies), not even one that names them.
    patient_key = _new_key("p256")
    patient_cert = root.issue(patient_key, common_name="Alex Morgan", email=None)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        token_part = str(consent["consent_link"]).rsplit("/c/", 1)[1]
        async with http.post(server.url + "/api/v1/consent/open",
                             json={"token": token_part, "dob": DOB}) as resp:
            assert resp.status == 200
        async with http.get(server.url + "/api/v1/consent/current") as resp:
            version = (await resp.json())["disclosure"]["version"]
        async with http.post(server.url + "/api/v1/consent/disclosure",
                             json={"accepted": True, "version": version}) as resp:
            assert resp.status == 200
        async with http.post(server.url + "/api/v1/consent/prepare", json={
                **_key_for(patient_cert, patient_key, [root.cert], [root.crl()]).prepare_body(),
                "typed_name": "Alex Morgan"}) as resp:
            body = await resp.json()
            assert resp.status == 403 and body["error"]["code"] == "certificate_not_allowed"
    doc = await server.services.consents.get(consent["id"])
    assert doc.revision == 1 and doc.sha256 == consent["sha256"]
    entries = await server.services.store.audit_for(f"consent:{consent['id']}")
    assert "consent.signed" not in [e.action for e in entries]

    # The clinician's good certificate still signs it afterwards.
    done = await sign_as_clinician(server.url, consent["id"], api_token=token, p12=good)
    assert done["consent"]["status"] == "awaiting_patient"


async def test_rsa_signature_must_match(server: Running, pki: Pki) -> None:
    """finish checks an RSA PKCS#1 v1.5 signature against the certificate's key."""
    consent, token = await new_consent(server)
    cred = pki.credential("rsa2048")
    p12 = cred.loaded()
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.url}/api/v1/consents/{consent['id']}"
    async with server.http.post(base + "/prepare", json={
            **p12.prepare_body(), "typed_name": NAME}, headers=headers) as resp:
        prepared = await resp.json()
        assert resp.status == 200, prepared
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = other.sign(base64.b64decode(prepared["to_sign"]), padding.PKCS1v15(),
                       hashes.SHA256())
    async with server.http.post(base + "/finish", json={
            "signing_id": prepared["signing_id"],
            "signature": base64.b64encode(wrong).decode()}, headers=headers) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_signature"
    async with server.http.post(base + "/finish", json={
            "signing_id": prepared["signing_id"],
            "signature": p12.sign_b64(prepared["to_sign"])}, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["consent"]["status"] == "awaiting_patient", body


def test_signer_trust_roots_setting() -> None:
    assert load_settings({}).signer_trust_roots == ()
    settings = load_settings({"TELEHEALTH_SIGNER_TRUST_ROOTS": "/etc/a.pem, /etc/b.pem,"})
    assert settings.signer_trust_roots == ("/etc/a.pem", "/etc/b.pem")
