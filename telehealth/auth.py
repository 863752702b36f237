"""Clinician passwords, session and API tokens, and signed link tokens and tickets.

A *link token* goes into a participant's join link; a *ticket* is what the
join API gives back once the identity check passed, and what the WebSocket
`hello` carries. Both are HS256 JWTs signed with the practice's secret key and
are never stored. Session cookies and API tokens are random; only their
SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class AuthError(Exception):
    """Who is asking could not be established; `code` is stable and client-facing."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_opaque_token() -> tuple[str, str]:
    """A random bearer token and the SHA-256 hex digest under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LinkClaims:
    visit_id: str
    participant_id: str
    role: str
    not_before: datetime
    expires: datetime


@dataclass(frozen=True, slots=True)
class ConsentClaims:
    consent_id: str
    role: str
    not_before: datetime
    expires: datetime

    def as_link(self) -> LinkClaims:
        return LinkClaims(self.consent_id, "", self.role, self.not_before, self.expires)

    @classmethod
    def of(cls, link: LinkClaims) -> ConsentClaims:
        return cls(link.visit_id, link.role, link.not_before, link.expires)


class Signer:
    """Mints and checks link tokens and tickets with the practice's secret key."""

    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < 32:
            raise ValueError("the secret key must be at least 32 characters")
        self._key = secret_key

    def _encode(self, kind: str, claims: LinkClaims) -> str:
        payload = {
            "k": kind,
            "v": claims.visit_id,
            "p": claims.participant_id,
            "r": claims.role,
            "nbf": int(claims.not_before.timestamp()),
            "exp": int(claims.expires.timestamp()),
        }
        return jwt.encode(payload, self._key, algorithm="HS256")

    def _decode(self, kind: str, token: str) -> LinkClaims:
        try:
            payload = jwt.decode(
                token, self._key, algorithms=["HS256"],
                # The validity window is checked by the caller against the injected clock
                # and after the visit's own state, so that a patient is told the real reason.
                options={"verify_exp": False, "verify_nbf": False,
                         "require": ["k", "v", "p", "r", "nbf", "exp"]},
            )
        except jwt.PyJWTError:
            raise AuthError("link_invalid", "This link is not valid.") from None
        if payload["k"] != kind:
            raise AuthError("link_invalid", "This link is not valid.")
        return LinkClaims(
            visit_id=str(payload["v"]), participant_id=str(payload["p"]), role=str(payload["r"]),
            not_before=datetime.fromtimestamp(payload["nbf"], UTC),
            expires=datetime.fromtimestamp(payload["exp"], UTC),
        )

    def link_token(self, claims: LinkClaims) -> str:
        return self._encode("link", claims)

    def read_link(self, token: str) -> LinkClaims:
        """The claims of a genuine link token (signature checked, time window not)."""
        return self._decode("link", token)

    def ticket(self, claims: LinkClaims) -> str:
        return self._encode("ticket", claims)

    def read_ticket(self, token: str) -> LinkClaims:
        return self._decode("ticket", token)

    # Consent links and consent sessions name a consent document (in `visit_id`'s
    # place) and the role that signs through them.

    def consent_link(self, claims: ConsentClaims) -> str:
        return self._encode("consent", claims.as_link())

    def read_consent_link(self, token: str) -> ConsentClaims:
        return ConsentClaims.of(self._decode("consent", token))

    def consent_session(self, claims: ConsentClaims) -> str:
        return self._encode("consent-session", claims.as_link())

    def read_consent_session(self, token: str) -> ConsentClaims:
        return ConsentClaims.of(self._decode("consent-session", token))
