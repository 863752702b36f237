"""The practice's own CA and timestamp authority, kept in one directory.

    <directory>/ca-key.pem   ECDSA P-256, mode 0600   self-signed root, 25 years
    <directory>/tsa-key.pem  RSA-2048,   mode 0600   issued by the root, EKU timeStamping
    <directory>/crl.der      the CA's current revocation list (re-issued when stale)
    <directory>/revoked.json serials the CA has revoked

Created on first use, loaded (never regenerated) afterwards. Signers get short-lived
certificates for a public key their own device made; the private key never comes here.
The TSA is RSA because pyHanko's in-process timestamper signs with RSA only; its parsed
key is kept and its tokens are put together from DER made once, so a token costs one
RSA signature (~0.5 ms) and little more. `make_timestamper` picks it or an outside
RFC 3161 TSA by URL.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import algos as asn1_algos  # type: ignore[import-untyped]
from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from consent.errors import ConsentError

Clock = Callable[[], datetime]

CA_YEARS = 25
TSA_YEARS = 10
CRL_VALID_FOR = timedelta(days=7)
CRL_REFRESH_BEFORE = timedelta(days=1)
"""A CRL this close to its next update counts as stale and is re-issued."""
ROLE_OU = {"clinician": "Clinician", "patient": "Patient",
           "legal_representative": "Legal representative"}


CA_DIR = "consent-ca"
"""The practice CA's folder inside the service's data directory."""


def load_trust_root(cert_pem_path: Path) -> asn1_x509.Certificate:
    """A trust root from a PEM file (the practice's `ca-cert.pem`, or another CA's)."""
    return to_asn1(x509.load_pem_x509_certificate(Path(cert_pem_path).read_bytes()))


def name_value(text: str, limit: int = 64) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (X.509's upper bound for O, OU, CN),
    between characters."""
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def utc_now() -> datetime:
    return datetime.now(UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the start, atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SPKI DER (what WebCrypto exports) or PEM."""
    try:
        key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----")
               else serialization.load_der_public_key(data))
    except (ValueError, TypeError) as e:
        raise ConsentError("bad_public_key", "not a readable public key") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConsentError("bad_public_key", "the signing key must be ECDSA P-256")
    return key


def der_tlv(tag: int, *parts: bytes) -> bytes:
    """One DER element: `tag`, the definite length, the concatenated `parts`."""
    body = b"".join(parts)
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def der_set_of(*elements: bytes) -> bytes:
    """A DER SET OF: its elements' encodings sorted (as asn1crypto's SetOf writes it)."""
    return der_tlv(0x31, *sorted(elements))


class PracticeTimeStamper(DummyTimeStamper):
    """RFC 3161 tokens from the practice TSA, with the injected clock and a parsed key.

    The token is the one pyHanko's `DummyTimeStamper` makes, byte for byte, but put
    together from DER pieces made once (certificates, signer identifier, the
    signing-certificate attribute): building the nested structures with asn1crypto
    cost ~5 ms a token, one RSA-2048 signature costs ~0.5 ms.
    """

    def __init__(self, tsa_cert: asn1_x509.Certificate, tsa_key: rsa.RSAPrivateKey,
                 ca_cert: asn1_x509.Certificate, now: Clock) -> None:
        key_info = asn1_keys.PrivateKeyInfo.load(tsa_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        super().__init__(tsa_cert, key_info, SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [ca_cert]))
        self._key = tsa_key
        self._now = now
        from pyhanko.sign.general import as_signing_certificate, simple_cms_attribute

        tbs = tsa_cert["tbs_certificate"]
        self._sid_der = der_tlv(0x30, tbs["issuer"].dump(), tbs["serial_number"].dump())
        certs = {c.dump() for c in self.certs_to_embed} | {tsa_cert.dump()}
        self._certs_der = der_tlv(0xA0, *sorted(certs))  # [0] IMPLICIT CertificateSet
        self._constant_attrs = (
            simple_cms_attribute("content_type", "tst_info").dump(),  # type: ignore[no-untyped-call]
            simple_cms_attribute(  # type: ignore[no-untyped-call]
                "signing_certificate", as_signing_certificate(tsa_cert)).dump())
        self._rsa_algorithm_der = asn1_algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15"}).dump()
        self._tst_info_type_der = asn1_cms.ContentType("tst_info").dump()
        self._signed_data_type_der = asn1_cms.ContentType("signed_data").dump()
        self._granted_der = asn1_tsp.PKIStatusInfo({"status": "granted"}).dump()

    def _signed_attrs_der(self, tst_info_data: bytes, md_algorithm: str, dt: datetime) -> bytes:
        digest = hashes.Hash(_hash(md_algorithm))
        digest.update(tst_info_data)
        return der_set_of(
            *self._constant_attrs,
            asn1_cms.CMSAttribute({"type": "signing_time",
                                   "values": [asn1_cms.Time({"utc_time": dt})]}).dump(),
            asn1_cms.CMSAttribute({"type": "message_digest",
                                   "values": [digest.finalize()]}).dump())

    def _sign_tst_info(self, tst_info_data: bytes, md_algorithm: str,
                       dt: datetime) -> tuple[bytes, asn1_cms.CMSAttributes]:
        # The base class re-parses the key for every token (~50 ms): sign with ours.
        signed_attrs = self._signed_attrs_der(tst_info_data, md_algorithm, dt)
        signature = self._key.sign(signed_attrs, padding.PKCS1v15(), _hash(md_algorithm))
        return signature, asn1_cms.CMSAttributes.load(signed_attrs)

    def request_tsa_response(self, req: asn1_tsp.TimeStampReq) -> asn1_tsp.TimeStampResp:
        self.fixed_dt = dt = self._now()
        message_imprint = req["message_imprint"]
        md_algorithm = self.override_md or message_imprint["hash_algorithm"]["algorithm"].native
        tst_info_data = self._build_tst_info(message_imprint, dt, req).dump()
        signed_attrs = self._signed_attrs_der(tst_info_data, md_algorithm, dt)
        signature = self._key.sign(signed_attrs, padding.PKCS1v15(), _hash(md_algorithm))
        digest_algorithm = asn1_algos.DigestAlgorithm({"algorithm": md_algorithm}).dump()
        signer_info = der_tlv(
            0x30, der_tlv(0x02, b"\x01"), self._sid_der, digest_algorithm,
            b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT SET OF: the SET retagged
            self._rsa_algorithm_der, der_tlv(0x04, signature))
        signed_data = der_tlv(
            0x30, der_tlv(0x02, b"\x03"), der_set_of(digest_algorithm),
            der_tlv(0x30, self._tst_info_type_der, der_tlv(0xA0, der_tlv(0x04, tst_info_data))),
            self._certs_der, der_set_of(signer_info))
        token = der_tlv(0x30, self._signed_data_type_der, der_tlv(0xA0, signed_data))
        return asn1_tsp.TimeStampResp.load(der_tlv(0x30, self._granted_der, token))


def _hash(md_algorithm: str) -> hashes.HashAlgorithm:
    algorithms: dict[str, hashes.HashAlgorithm] = {
        "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    return algorithms[md_algorithm.lower()]


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    asn1: asn1_x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


class PracticeCA:
    """The practice CA in `directory`: signer certificates, CRLs and a TSA."""

    def __init__(self, directory: Path, *, practice_name: str = "Our practice",
                 now: Clock = utc_now, crl_url: str | None = None) -> None:
        self.directory = Path(directory)
        self.practice_name = practice_name
        self.now = now
        self.crl_url = crl_url
        """Put into signer certificates as a CRL distribution point when given."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key, self.root = self._load_or_create_root()
        self.root_asn1 = to_asn1(self.root)
        self._tsa_key, self.tsa_cert = self._load_or_create_tsa()
        self.tsa_cert_asn1 = to_asn1(self.tsa_cert)
        self._crl: x509.CertificateRevocationList | None = None
        self._timestamper: PracticeTimeStamper | None = None

    # ---- root and TSA ---------------------------------------------------------

    def _name(self, common_name: str, unit: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, name_value(self.practice_name)),
                 x509.NameAttribute(NameOID.COMMON_NAME, name_value(common_name))]
        if unit:
            attrs.insert(1, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
        return x509.Name(attrs)

    def _load_or_create_root(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_path, cert_path = self.directory / "ca-key.pem", self.directory / "ca-cert.pem"
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = self.now()
        name = self._name(f"{self.practice_name} consent CA")
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=365 * CA_YEARS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def _issue(self, builder: x509.CertificateBuilder, public_key: Any) -> x509.Certificate:
        root_ski = self.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (builder.issuer_name(self.root.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier
                                  .from_issuer_subject_key_identifier(root_ski.value),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                                  critical=False))
        if self.crl_url:
            builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(self.crl_url)], relative_name=None,
                reasons=None, crl_issuer=None)]), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def _load_or_create_tsa(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key_path, cert_path = self.directory / "tsa-key.pem", self.directory / "tsa-cert.pem"
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = self.now()
        builder = (x509.CertificateBuilder()
                   .subject_name(self._name(f"{self.practice_name} timestamp authority"))
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=365 * TSA_YEARS))
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=True, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False,
                       crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                                  critical=True))
        cert = self._issue(builder, key.public_key())
        _write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def timestamper(self) -> PracticeTimeStamper:
        """The built-in TSA (one instance, its key parsed once)."""
        if self._timestamper is None:
            self._timestamper = PracticeTimeStamper(
                self.tsa_cert_asn1, self._tsa_key, self.root_asn1, self.now)
        return self._timestamper

    # ---- signers ------------------------------------------------------------------

    def issue_signer_certificate(self, public_key_der_or_pem: bytes, name: str, role: str,
                                 email: str | None = None, hours: float = 24
                                 ) -> IssuedCertificate:
        """A short-lived certificate for a key the signer's device made, naming them and role.

        Call this only after the signer's identity was checked (DOB via link, login).
        """
        if role not in ROLE_OU:
            raise ConsentError("bad_role", f"unknown signer role {role!r}")
        public_key = load_public_key(public_key_der_or_pem)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, name_value(self.practice_name)),
                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU[role]),
                 x509.NameAttribute(NameOID.TITLE, role),
                 x509.NameAttribute(NameOID.COMMON_NAME, name_value(name))]
        if email:
            attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
        now = self.now()
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(hours=hours))
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=True, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False,
                       crl_sign=False, encipher_only=False, decipher_only=False), critical=True))
        if email:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        cert = self._issue(builder, public_key)
        return IssuedCertificate(cert, to_asn1(cert))

    # ---- revocation ------------------------------------------------------------------

    def _revoked(self) -> dict[str, str]:
        path = self.directory / "revoked.json"
        if not path.exists():
            return {}
        data: dict[str, str] = json.loads(path.read_text())
        return data

    def revoke(self, serial_number: int) -> None:
        """Revoke a certificate; the next CRL lists it (one is issued now)."""
        revoked = self._revoked()
        revoked[str(serial_number)] = self.now().isoformat()
        _write_private(self.directory / "revoked.json", json.dumps(revoked).encode())
        self._crl = self._issue_crl()

    def _issue_crl(self) -> x509.CertificateRevocationList:
        now = self.now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.root.subject)
                   .last_update(now - timedelta(minutes=5)).next_update(now + CRL_VALID_FOR)
                   .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False))
        for serial, when in self._revoked().items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(serial))
                .revocation_date(datetime.fromisoformat(when)).build())
        crl = builder.sign(self._key, hashes.SHA256())
        _write_private(self.directory / "crl.der", crl.public_bytes(serialization.Encoding.DER))
        return crl

    def current_crl(self) -> x509.CertificateRevocationList:
        """The CA's CRL, re-issued when it is within a day of its next update."""
        crl = self._crl
        if crl is None and (self.directory / "crl.der").exists():
            crl = x509.load_der_x509_crl((self.directory / "crl.der").read_bytes())
        if crl is None or crl.next_update_utc is None or (
                crl.next_update_utc - CRL_REFRESH_BEFORE <= self.now()):
            crl = self._issue_crl()
        self._crl = crl
        return crl

    def current_crl_der(self) -> bytes:
        return self.current_crl().public_bytes(serialization.Encoding.DER)


def make_timestamper(ca: PracticeCA, tsa_url: str = "") -> TimeStamper:
    """The TSA signatures are timestamped by: the practice's built-in one when `tsa_url`
    is empty, else the RFC 3161 service at `tsa_url` (HTTP POST of
    application/timestamp-query; pyHanko's aiohttp client, so use it from async code).

    An outside TSA's certificates travel in its tokens and go into the DSS with B-LTA;
    verifying offline needs its root among the trust roots and its revocation data.
    """
    if not tsa_url:
        return ca.timestamper()
    from pyhanko.sign.timestamps import HTTPTimeStamper

    return HTTPTimeStamper(tsa_url)
