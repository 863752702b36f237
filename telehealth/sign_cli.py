"""`telehealth sign`: sign a consent over HTTP exactly as the browser does.

A P-256 key is made here and never leaves this process; the server gets its public
key, issues a short-lived certificate for it after the identity check, and sends the
bytes to sign. The signature goes back as WebCrypto would send it (raw r||s).

    signer     a consent link /c/<token> or a visit link /v/<token> (the consent gate),
               with the date of birth (and a representative's own name)
    clinician  a consent id and the clinician's API token
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


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

    def sign_b64(self, to_sign_b64: str) -> str:
        der = self.key.sign(base64.b64decode(to_sign_b64), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()


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
                      key: DeviceKey) -> dict[str, Any]:
    prepared = await client.call("POST", f"{prefix}/prepare",
                                 {"public_key": key.spki_b64, "typed_name": typed_name})
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
                            typed_name: str | None = None) -> dict[str, Any]:
    """Sign a consent as its clinician, with the clinician's API token."""
    async with aiohttp.ClientSession() as http:
        client = _Client(http, server.rstrip("/"), {"Authorization": f"Bearer {api_token}"})
        if typed_name is None:
            me = await client.call("GET", "/api/v1/me")
            typed_name = str(me["clinician"]["name"])
        return await _sign_steps(client, f"/api/v1/consents/{consent_id}", typed_name,
                                 DeviceKey.generate())
