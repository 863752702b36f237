"""`telehealth sign`: sign a consent over HTTP exactly as the browser does.

A P-256 key is made here and never leaves this process; the server gets its public
key, issues a short-lived certificate for it after the identity check, and sends the
bytes to sign. The signature goes back as WebCrypto would send it (raw r||s).

    signer     a consent link /c/<token> or a visit link /v/<token> (the consent gate),
               with the date of birth (and a representative's own name)
    clinician  a consent id and the clinician's API token; instead of a key made here,
               optionally their own key and certificate from an outside CA (a PKCS#12,
               `Pkcs12Key`): the server gets the certificate, its chain and CRLs, and
               the signature, never the key
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import pkcs12


class SignError(Exception):
    """The server refused a step; `code` is its stable error code."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class DeviceKey:
    """The signer's own key, as a browser's non-extractable WebCrypto key would be."""

    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def spki_b64(self) -> str:
        spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(spki).decode()

    def prepare_body(self) -> dict[str, Any]:
        return {"public_key": self.spki_b64}

    def sign_b64(self, to_sign_b64: str) -> str:
        return _raw_ecdsa_b64(self.key, to_sign_b64)


def _raw_ecdsa_b64(key: ec.EllipticCurvePrivateKey, to_sign_b64: str) -> str:
    """ECDSA P-256 / SHA-256 as WebCrypto returns it: raw r||s, base64."""
    der = key.sign(base64.b64decode(to_sign_b64), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()


def _der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@dataclass(frozen=True)
class Pkcs12Key:
    """A clinician's own key and certificate from an outside CA (a PKCS#12), with the
    CA's revocation lists: the key signs here and is never sent anywhere."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    crls: tuple[bytes, ...] = ()
    """DER of the CRLs of the CAs on the chain (the server refuses a chain without)."""

    @classmethod
    def from_pkcs12(cls, data: bytes, password: bytes | None,
                    crls: Iterable[bytes] = ()) -> Pkcs12Key:
        """From PKCS#12 bytes; CRLs as DER or PEM. SignError when it cannot be used."""
        try:
            key, cert, chain = pkcs12.load_key_and_certificates(data, password)
        except ValueError as e:  # a wrong or missing password, or not a PKCS#12
            raise SignError("bad_pkcs12", "the PKCS#12 cannot be opened (is the password "
                                          "right?)") from e
        if key is None or cert is None:
            raise SignError("bad_pkcs12", "the PKCS#12 holds no key with its certificate")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name != "secp256r1":
                raise SignError("unsupported_key", "ECDSA keys must be P-256")
        elif not isinstance(key, rsa.RSAPrivateKey):
            raise SignError("unsupported_key", "the key is neither ECDSA P-256 nor RSA")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
                != cert.public_key().public_bytes(serialization.Encoding.DER, spki)):
            raise SignError("bad_pkcs12", "the PKCS#12's key is not its certificate's")
        return cls(key, cert, tuple(chain), tuple(_crl_der(c) for c in crls))

    @classmethod
    def load(cls, path: str | Path, password: bytes | None,
             crl_paths: Iterable[str | Path] = ()) -> Pkcs12Key:
        """From a .p12/.pfx file and CRL files (DER or PEM)."""
        try:
            data = Path(path).read_bytes()
            crls = [Path(c).read_bytes() for c in crl_paths]
        except OSError as e:
            raise SignError("unreadable", f"cannot read {e.filename}: {e.strerror}") from None
        return cls.from_pkcs12(data, password, crls)

    def prepare_body(self) -> dict[str, Any]:
        return {"certificate": _der_b64(self.certificate),
                "chain": [_der_b64(c) for c in self.chain],
                "crls": [base64.b64encode(c).decode() for c in self.crls]}

    def sign_b64(self, to_sign_b64: str) -> str:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return _raw_ecdsa_b64(self.key, to_sign_b64)
        signature = self.key.sign(base64.b64decode(to_sign_b64), padding.PKCS1v15(),
                                  hashes.SHA256())
        return base64.b64encode(signature).decode()


def _crl_der(data: bytes) -> bytes:
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
    except ValueError as e:
        raise SignError("bad_crl", "a revocation list is neither a DER nor a PEM CRL") from e
    return crl.public_bytes(serialization.Encoding.DER)


class SigningKey(Protocol):
    """What signs: a key made here (`DeviceKey`) or a clinician's own (`Pkcs12Key`)."""

    def prepare_body(self) -> dict[str, Any]: ...

    def sign_b64(self, to_sign_b64: str) -> str: ...


class _Client:
    def __init__(self, http: aiohttp.ClientSession, base: str,
                 headers: dict[str, str] | None = None) -> None:
        self.http, self.base, self.headers = http, base, headers or {}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.base + path, json=body,
                                     headers=self.headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                error = (data or {}).get("error", {})
                raise SignError(error.get("code", "http_error"), error.get("message", ""),
                                resp.status)
            return data


def _split(link: str) -> tuple[str, str, str]:
    """(base URL, "c" or "v", token) of a consent or visit link."""
    parts = urlsplit(link)
    segments = parts.path.strip("/").split("/")
    if len(segments) < 2 or segments[-2] not in ("c", "v") or not parts.netloc:
        raise SignError("link_invalid", "give a consent link (/c/...) or a visit link (/v/...)")
    prefix = "/".join(segments[:-2])
    base = f"{parts.scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    return base, segments[-2], segments[-1]


async def _sign_steps(client: _Client, prefix: str, typed_name: str,
                      key: SigningKey) -> dict[str, Any]:
    prepared = await client.call("POST", f"{prefix}/prepare",
                                 {**key.prepare_body(), "typed_name": typed_name})
    done: dict[str, Any] = await client.call(
        "POST", f"{prefix}/finish",
        {"signing_id": prepared["signing_id"], "signature": key.sign_b64(prepared["to_sign"])})
    return done


async def sign_link(link: str, *, dob: str | None, name: str | None,
                    typed_name: str | None = None) -> dict[str, Any]:
    """Sign as the patient or representative a link names; the signed consent's summary
    and its PDF's size. `name` is a representative's own name (the identity check);
    `typed_name` defaults to the signer's printed name on the form check: `name`."""
    base, kind, token = _split(link)
    jar = aiohttp.CookieJar(unsafe=True)  # the consent session cookie, on any host
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        client = _Client(http, base)
        if kind == "c":
            await client.call("POST", "/api/v1/consent/open",
                              {"token": token, "dob": dob, "name": name})
        else:
            grant = await client.call("POST", "/api/v1/join",
                                      {"token": token, "dob": dob, "name": name})
            gate = grant["consent"]
            if gate["on_file"]:
                return {"already_on_file": True, "consent_id": gate["consent_id"]}
            if not gate["signable"]:
                raise SignError("nothing_to_sign", "there is no consent for this link to sign")
        view = await client.call("GET", "/api/v1/consent/current")
        if not view["ready"]:
            raise SignError("not_ready", "the clinician has not signed this consent yet")
        if not view["disclosure"]["accepted"]:
            await client.call("POST", "/api/v1/consent/disclosure",
                              {"accepted": True, "version": view["disclosure"]["version"]})
        key = DeviceKey.generate()
        done = await _sign_steps(client, "/api/v1/consent",
                                 typed_name or name or view["signer"]["printed_name"], key)
        async with http.get(base + "/api/v1/consent/pdf") as resp:
            pdf = await resp.read()
        return {**done, "role": view["signer"]["role"], "pdf_bytes": len(pdf)}


async def sign_as_clinician(server: str, consent_id: str, *, api_token: str,
                            typed_name: str | None = None,
                            p12: Pkcs12Key | None = None) -> dict[str, Any]:
    """Sign a consent as its clinician, with the clinician's API token: with a key made
    here that the practice CA certifies, or with `p12`, their own from an outside CA."""
    async with aiohttp.ClientSession() as http:
        client = _Client(http, server.rstrip("/"), {"Authorization": f"Bearer {api_token}"})
        if typed_name is None:
            me = await client.call("GET", "/api/v1/me")
            typed_name = str(me["clinician"]["name"])
        key: SigningKey = p12 if p12 is not None else DeviceKey.generate()
        return await _sign_steps(client, f"/api/v1/consents/{consent_id}", typed_name, key)
