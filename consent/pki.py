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
from collections.abc import Callable, Iterable, Sequence
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
from cryptography.exceptions import UnsupportedAlgorithm
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


def load_trust_roots(paths: Iterable[str | Path]) -> list[asn1_x509.Certificate]:
    """Every certificate in the PEM files `paths` (a file may hold several), in order.

    ConsentError("bad_trust_root") names the file that is missing or holds none."""
    roots: list[asn1_x509.Certificate] = []
    for path in paths:
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise ConsentError("bad_trust_root",
                               f"no PEM certificate can be read from {path}") from e
        roots.extend(to_asn1(cert) for cert in certs)
    return roots


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


# ---- a clinician's own certificate from an outside CA ---------------------------------

MAX_CHAIN = 8
"""Most issuer certificates a signer may send with their own certificate."""
MAX_CRLS = 8
"""Most revocation lists a signer may send with their own certificate."""
RSA_BITS = (2048, 8192)
"""RSA key sizes accepted for a signer's own certificate (the placeholder is sized by key)."""
SIGNING_EKUS = frozenset({
    ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"),  # id-kp-documentSigning (RFC 9336)
    x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.12"),  # Microsoft document signing
    x509.ObjectIdentifier("1.2.840.113583.1.1.5"),  # Adobe Authentic Documents Trust
})
"""With an extended key usage extension, a signer's certificate needs one of these (a
person's certificate); a TLS server, code signing or timestamping one is refused."""


@dataclass(frozen=True)
class OutsideCertificate:
    """A signer's own certificate, checked: valid now, theirs, and chained to a trusted
    outside root with current revocation data."""

    certificate: x509.Certificate
    asn1: asn1_x509.Certificate
    path: tuple[bytes, ...]
    """DER of its issuers up to and including the trust root: they go into the CMS and,
    with `crls`, into the document's DSS at B-LTA."""
    crls: tuple[bytes, ...]
    """DER of the given CRLs that a CA on the path issued and signed."""
    matched: str
    """What names the signer: "email" or "name"."""

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """The e-mail addresses a certificate names: SAN rfc822Name and subject emailAddress."""
    emails = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return emails
    return [*san.get_values_for_type(x509.RFC822Name), *emails]


def certificate_common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _load_der_certs(items: Sequence[bytes], what: str) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(item) for item in items]
    except ValueError as e:
        raise ConsentError("bad_certificate", f"{what} is not a DER X.509 certificate") from e


def _check_signing_key(cert: x509.Certificate) -> None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConsentError("certificate_key_unsupported",
                           "the certificate's key is neither ECDSA P-256 nor RSA") from e
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ConsentError("certificate_key_unsupported",
                               f"ECDSA keys must be P-256, not {key.curve.name}")
    elif isinstance(key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            raise ConsentError("certificate_key_unsupported",
                               f"RSA keys must have {RSA_BITS[0]} to {RSA_BITS[1]} bits, "
                               f"not {key.key_size}")
    else:
        raise ConsentError("certificate_key_unsupported",
                           "the certificate's key is neither ECDSA P-256 nor RSA")


def _check_usage(cert: x509.Certificate) -> None:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is not None and basic.ca:
        raise ConsentError("certificate_usage", "a CA certificate cannot sign a consent")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise ConsentError("certificate_usage", "the certificate's key usage allows neither "
                           "digital signatures nor non-repudiation")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not SIGNING_EKUS & set(eku):
        raise ConsentError("certificate_usage", "the certificate is not for a person's "
                           "signatures (its extended key usage)")


async def check_outside_certificate(
        cert_der: bytes, chain_der: Sequence[bytes], crls_der: Sequence[bytes],
        trust_roots: Sequence[asn1_x509.Certificate], *, now: datetime, email: str | None,
        name: str, same_name: Callable[[str, str], bool]) -> OutsideCertificate:
    """Check a signer's own certificate (from a PKCS#12) before it may sign, offline.

    It must: parse; not be a CA; name the signer (`email` in SAN rfc822Name or subject
    emailAddress, or a common name `same_name` as `name`); be valid at `now`; carry an
    ECDSA P-256 or RSA 2048-8192 key; allow digital signature or non-repudiation when
    it has a key usage extension (and a person's purpose when it has an extended one);
    chain through `chain_der` to one of `trust_roots`, every signature on the path
    checked (pyhanko-certvalidator, no fetching); and not be revoked according to
    `crls_der`, which must cover every certificate on the path below the root (the
    document is to verify offline for years: what it cannot carry is refused now).
    ConsentError with a stable code otherwise.
    """
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import (
        DisallowedAlgorithmError,
        ExpiredError,
        InsufficientRevinfoError,
        NotYetValidError,
        PathBuildingError,
        PathValidationError,
        RevokedError,
        ValidationError,
    )

    if len(chain_der) > MAX_CHAIN or len(crls_der) > MAX_CRLS:
        raise ConsentError("bad_certificate", f"send at most {MAX_CHAIN} chain certificates "
                           f"and {MAX_CRLS} revocation lists")
    (cert,) = _load_der_certs([cert_der], "the certificate")
    chain = _load_der_certs(chain_der, "a chain certificate")
    try:
        crls = [x509.load_der_x509_crl(item) for item in crls_der]
    except ValueError as e:
        raise ConsentError("bad_crl", "a revocation list is not a DER X.509 CRL") from e
    try:
        _check_usage(cert)
        emails = certificate_emails(cert)
        names = certificate_common_names(cert)
    except ValueError as e:  # a malformed extension
        raise ConsentError("bad_certificate", "the certificate cannot be read") from e
    wanted = (email or "").strip().casefold()
    if wanted and any(e.strip().casefold() == wanted for e in emails):
        matched = "email"
    elif any(same_name(cn, name) for cn in names):
        matched = "name"
    else:
        raise ConsentError("certificate_not_yours",
                           "the certificate names neither your account's e-mail address "
                           "nor your name")
    if now < cert.not_valid_before_utc:
        raise ConsentError("certificate_not_yet_valid", "the certificate is not valid yet")
    if now >= cert.not_valid_after_utc:
        raise ConsentError("certificate_expired", "the certificate has expired")
    _check_signing_key(cert)
    if not trust_roots:
        raise ConsentError("certificate_untrusted",
                           "this practice trusts no outside CA (signer_trust_roots)")

    try:
        leaf = to_asn1(cert)
        context = ValidationContext(
            trust_roots=list(trust_roots), other_certs=[to_asn1(c) for c in chain],
            crls=list(crls_der), allow_fetching=False, revocation_mode="require", moment=now)
        path = await CertificateValidator(
            leaf, intermediate_certs=[to_asn1(c) for c in chain],
            validation_context=context).async_validate_path()
    except RevokedError as e:
        raise ConsentError("certificate_revoked", "the certificate (or one of its issuers) "
                           "has been revoked") from e
    except InsufficientRevinfoError as e:
        raise ConsentError("revocation_unknown", "send the current revocation list (CRL) of "
                           "every CA on the certificate's chain") from e
    except (ExpiredError, NotYetValidError) as e:
        raise ConsentError("certificate_expired",
                           "a certificate on the chain is not valid now") from e
    except DisallowedAlgorithmError as e:
        raise ConsentError("certificate_untrusted",
                           "the chain uses an algorithm too weak to trust") from e
    except (PathBuildingError, PathValidationError, ValidationError) as e:
        raise ConsentError("certificate_untrusted", "the certificate does not chain to a CA "
                           "this practice trusts") from e
    except (ValueError, TypeError, KeyError) as e:
        raise ConsentError("bad_certificate", "the certificate chain cannot be read") from e

    issuers = [c.dump() for c in path.iter_certs(include_root=True)][:-1]
    issuer_certs = [x509.load_der_x509_certificate(der) for der in issuers]
    kept: dict[bytes, None] = {}
    for crl in crls:
        for issuer in issuer_certs:
            if crl.issuer == issuer.subject and _crl_signed_by(crl, issuer):
                kept[crl.public_bytes(serialization.Encoding.DER)] = None
    return OutsideCertificate(cert, leaf, tuple(issuers), tuple(kept), matched)


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return False
    return crl.is_signature_valid(key)


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
