"""Typed wire messages of the signaling protocol (docs/protocol.md), version 1.

Pure code: parsing a frame gives either a typed client message or a
`ProtocolError` with a stable code; nothing here touches sockets.
Server messages are built as plain dicts by the functions at the bottom so the
room state machine never formats JSON itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

VERSION = 1
MAX_SDP_CHARS = 60_000
MAX_CHAT_CHARS = 2_000
MAX_REASON_CHARS = 200
MAX_ID_CHARS = 64


class ProtocolError(Exception):
    """A client frame that cannot be accepted; the connection lives."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self) -> dict[str, Any]:
        return error(self.code, self.message, self.ref)


# Close codes (docs/protocol.md "Close codes").
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 4400
CLOSE_TICKET_INVALID = 4401
CLOSE_DENIED = 4403
CLOSE_REPLACED = 4409
CLOSE_ENDED = 4410
CLOSE_CONSENT_REQUIRED = 4412
CLOSE_UNAVAILABLE = 4503

CARE_TEAM = frozenset({"clinician", "co_clinician"})
GUESTS = frozenset({"patient", "legal_representative", "interpreter", "family_member"})
ROLES = CARE_TEAM | GUESTS


@dataclass(frozen=True, slots=True)
class Field:
    kind: type
    required: bool = True
    max_chars: int | None = None
    nullable: bool = False
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One message a client may send. Subclasses declare their fields."""

    TYPE: ClassVar[str] = ""
    FIELDS: ClassVar[dict[str, Field]] = {}
    CARE_TEAM_ONLY: ClassVar[bool] = False
    NEEDS_ADMISSION: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Hello(ClientMessage):
    TYPE = "hello"
    FIELDS = {"v": Field(int), "ticket": Field(str, max_chars=4096)}
    v: int
    ticket: str


@dataclass(frozen=True, slots=True)
class Admit(ClientMessage):
    TYPE = "admit"
    FIELDS = {"participant_id": Field(str, max_chars=MAX_ID_CHARS)}
    CARE_TEAM_ONLY = True
    participant_id: str


@dataclass(frozen=True, slots=True)
class Deny(ClientMessage):
    TYPE = "deny"
    FIELDS = {
        "participant_id": Field(str, max_chars=MAX_ID_CHARS),
        "reason": Field(str, required=False, max_chars=MAX_REASON_CHARS),
    }
    CARE_TEAM_ONLY = True
    participant_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Offer(ClientMessage):
    TYPE = "offer"
    FIELDS = {"to": Field(str, max_chars=MAX_ID_CHARS), "sdp": Field(str, max_chars=MAX_SDP_CHARS)}
    NEEDS_ADMISSION = True
    to: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Answer(ClientMessage):
    TYPE = "answer"
    FIELDS = Offer.FIELDS
    NEEDS_ADMISSION = True
    to: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Ice(ClientMessage):
    TYPE = "ice"
    FIELDS = {"to": Field(str, max_chars=MAX_ID_CHARS), "candidate": Field(dict, nullable=True)}
    NEEDS_ADMISSION = True
    to: str
    candidate: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Chat(ClientMessage):
    TYPE = "chat"
    FIELDS = {"text": Field(str, max_chars=MAX_CHAT_CHARS)}
    NEEDS_ADMISSION = True
    text: str


@dataclass(frozen=True, slots=True)
class LobbyChat(ClientMessage):
    """Chat between a waiting guest and the care team, apart from the room's chat."""

    TYPE = "lobby_chat"
    FIELDS = {"text": Field(str, max_chars=MAX_CHAT_CHARS),
              "to": Field(str, required=False, max_chars=MAX_ID_CHARS)}
    text: str
    to: str | None = None


@dataclass(frozen=True, slots=True)
class MediaState(ClientMessage):
    TYPE = "media_state"
    FIELDS = {"audio": Field(bool), "video": Field(bool), "screen": Field(bool, required=False)}
    NEEDS_ADMISSION = True
    audio: bool
    video: bool
    screen: bool | None = None


@dataclass(frozen=True, slots=True)
class MediaConnected(ClientMessage):
    TYPE = "media_connected"
    FIELDS = {
        "peer": Field(str, max_chars=MAX_ID_CHARS),
        "audio": Field(bool),
        "video": Field(bool),
    }
    NEEDS_ADMISSION = True
    peer: str
    audio: bool
    video: bool


@dataclass(frozen=True, slots=True)
class Leave(ClientMessage):
    TYPE = "leave"


@dataclass(frozen=True, slots=True)
class End(ClientMessage):
    TYPE = "end"
    CARE_TEAM_ONLY = True


@dataclass(frozen=True, slots=True)
class Ping(ClientMessage):
    TYPE = "ping"
    FIELDS = {"id": Field(int, required=False)}
    id: int | None = None


MESSAGES: dict[str, type[ClientMessage]] = {
    cls.TYPE: cls
    for cls in (Hello, Admit, Deny, Offer, Answer, Ice, Chat, LobbyChat, MediaState,
                MediaConnected, Leave, End, Ping)
}

_CANDIDATE_FIELDS: dict[str, Field] = {
    # "" marks the end of candidates (what browsers' toJSON() gives for it).
    "candidate": Field(str, max_chars=4096, allow_empty=True),
    "sdpMid": Field(str, required=False, nullable=True, max_chars=64),
    "sdpMLineIndex": Field(int, required=False, nullable=True),
    "usernameFragment": Field(str, required=False, nullable=True, max_chars=256),
}


def _check_fields(
    obj: dict[str, Any], fields: dict[str, Field], ref: str, *, top: bool = True
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    unknown = obj.keys() - fields.keys()
    if top:
        unknown.discard("type")
    if unknown:
        name = min(unknown)
        raise ProtocolError("unknown_field", f"'{ref}' has no field '{name}'", ref)
    for name, spec in fields.items():
        if name not in obj:
            if spec.required:
                raise ProtocolError("missing_field", f"'{ref}' needs field '{name}'", ref)
            continue
        value = obj[name]
        if value is None and spec.nullable:
            values[name] = None
            continue
        # bool is an int subclass in Python: keep them apart on the wire.
        wrong_kind = not isinstance(value, spec.kind) or (
            spec.kind is int and isinstance(value, bool)
        )
        if wrong_kind:
            raise ProtocolError(
                "invalid_field", f"'{ref}.{name}' must be {spec.kind.__name__}", ref
            )
        if spec.max_chars is not None and isinstance(value, str):
            if len(value) > spec.max_chars:
                raise ProtocolError(
                    "invalid_field", f"'{ref}.{name}' is longer than {spec.max_chars}", ref
                )
            if not value.strip() and spec.required and not spec.allow_empty:
                raise ProtocolError("invalid_field", f"'{ref}.{name}' is empty", ref)
        values[name] = value
    return values


def parse(frame: str | bytes, max_bytes: int) -> ClientMessage:
    """One client frame to a typed message, or `ProtocolError`."""
    # A str of n chars is n..4n bytes of UTF-8: encode only when it matters.
    size = len(frame)
    if isinstance(frame, str) and max_bytes < 4 * size <= 4 * max_bytes:
        size = len(frame.encode("utf-8", "replace"))
    if size > max_bytes:
        raise ProtocolError("too_large", f"frame of {size} bytes is over {max_bytes}")
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting ~1000 deep (2 KB of brackets) overflows the decoder.
        raise ProtocolError("invalid_json", "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_an_object", "frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in MESSAGES:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else None
        raise ProtocolError("unknown_type", f"unknown message type {shown!r}", shown)
    cls = MESSAGES[kind]
    values = _check_fields(obj, cls.FIELDS, kind)
    if cls is Ice and values.get("candidate") is not None:
        values["candidate"] = _check_fields(
            values["candidate"], _CANDIDATE_FIELDS, "ice.candidate", top=False)
    return cls(**values)


# ---- server messages -------------------------------------------------------


def error(code: str, message: str, ref: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return frame


# One encoder, built once (json.dumps with arguments builds one per call). ASCII out: a
# lone surrogate that came in as a JSON \udXXX escape has no UTF-8 form and would kill
# the socket writer; escaped it travels as it came, and clients decode it as before.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def encode(message: dict[str, Any]) -> str:
    return _ENCODER.encode(message)
