"""parse(): every client message type, and every way a frame is refused (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telehealth.signaling import protocol as p

LIMIT = 64 * 1024

ERROR_CODES = {
    "too_large", "invalid_json", "not_an_object", "unknown_type",
    "unknown_field", "missing_field", "invalid_field",
}


def raw(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields})


def refused(frame: str | bytes, max_bytes: int = LIMIT) -> p.ProtocolError:
    """The ProtocolError that parse() raises for `frame` (fails the test if it parses)."""
    with pytest.raises(p.ProtocolError) as info:
        p.parse(frame, max_bytes)
    return info.value


CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


# ---- valid messages ---------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (raw("hello", v=1, ticket="tkt"), p.Hello(v=1, ticket="tkt")),
        (raw("admit", participant_id="p1"), p.Admit(participant_id="p1")),
        (raw("deny", participant_id="p1"), p.Deny(participant_id="p1", reason=None)),
        (raw("deny", participant_id="p1", reason="wrong visit"),
         p.Deny(participant_id="p1", reason="wrong visit")),
        (raw("deny", participant_id="p1", reason=""), p.Deny(participant_id="p1", reason="")),
        (raw("offer", to="p1", sdp="v=0\r\n"), p.Offer(to="p1", sdp="v=0\r\n")),
        (raw("answer", to="c1", sdp="v=0\r\n"), p.Answer(to="c1", sdp="v=0\r\n")),
        (raw("ice", to="p1", candidate=CANDIDATE), p.Ice(to="p1", candidate=CANDIDATE)),
        (raw("ice", to="p1", candidate=None), p.Ice(to="p1", candidate=None)),
        (raw("chat", text="Hello, doctor"), p.Chat(text="Hello, doctor")),
        (raw("lobby_chat", text="Running late"), p.LobbyChat(text="Running late")),
        (raw("lobby_chat", text="Coming", to="p1"), p.LobbyChat(text="Coming", to="p1")),
        (raw("media_state", audio=False, video=True),
         p.MediaState(audio=False, video=True, screen=None)),
        (raw("media_state", audio=True, video=False, screen=True),
         p.MediaState(audio=True, video=False, screen=True)),
        (raw("media_connected", peer="p1", audio=True, video=False),
         p.MediaConnected(peer="p1", audio=True, video=False)),
        (raw("leave"), p.Leave()),
        (raw("end"), p.End()),
        (raw("ping"), p.Ping(id=None)),
        (raw("ping", id=7), p.Ping(id=7)),
        (raw("ping", id=0), p.Ping(id=0)),
    ],
)
def test_parses_every_message_type(frame: str, expected: p.ClientMessage) -> None:
    message = p.parse(frame, LIMIT)
    assert type(message) is type(expected)
    assert message == expected


def test_every_registered_type_is_covered_above() -> None:
    assert set(p.MESSAGES) == {
        "hello", "admit", "deny", "offer", "answer", "ice", "chat", "lobby_chat",
        "media_state", "media_connected", "leave", "end", "ping",
    }


def test_parses_bytes_frames_too() -> None:
    assert p.parse(raw("chat", text="grüß dich").encode(), LIMIT) == p.Chat(text="grüß dich")


def test_a_hello_with_another_version_still_parses() -> None:
    # Refusing the version is the hub's job (version_unsupported + close 4400).
    assert p.parse(raw("hello", v=2, ticket="t"), LIMIT) == p.Hello(v=2, ticket="t")


def test_ice_candidate_keeps_optional_fields_and_nulls() -> None:
    candidate = {"candidate": "candidate:x", "sdpMid": None, "sdpMLineIndex": None,
                 "usernameFragment": "abcd"}
    message = p.parse(raw("ice", to="p1", candidate=candidate), LIMIT)
    assert isinstance(message, p.Ice)
    assert message.candidate == candidate


def test_ice_candidate_needs_only_the_candidate_string() -> None:
    message = p.parse(raw("ice", to="p1", candidate={"candidate": "candidate:x"}), LIMIT)
    assert isinstance(message, p.Ice)
    assert message.candidate == {"candidate": "candidate:x"}


def test_empty_candidate_string_marks_the_end_of_candidates() -> None:
    # What a browser's RTCIceCandidate.toJSON() gives for the end of gathering.
    message = p.parse(raw("ice", to="p1", candidate={"candidate": "", "sdpMid": "0"}), LIMIT)
    assert isinstance(message, p.Ice)
    assert message.candidate == {"candidate": "", "sdpMid": "0"}


def test_type_is_only_exempt_at_the_top_level() -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.parse(raw("ice", to="p1", candidate={"candidate": "c", "type": "x"}), LIMIT)
    assert err.value.code == "unknown_field"


def test_fields_at_their_maximum_length_are_accepted() -> None:
    assert p.parse(raw("chat", text="x" * p.MAX_CHAT_CHARS), LIMIT) == p.Chat(
        text="x" * p.MAX_CHAT_CHARS)
    pid = "p" * p.MAX_ID_CHARS
    reason = "r" * p.MAX_REASON_CHARS
    assert p.parse(raw("deny", participant_id=pid, reason=reason), LIMIT) == p.Deny(
        participant_id=pid, reason=reason)


def test_chat_length_counts_characters_not_bytes() -> None:
    text = "ü" * p.MAX_CHAT_CHARS
    assert p.parse(raw("chat", text=text), LIMIT) == p.Chat(text=text)


# ---- too_large ------------------------------------------------------------


def padded(total_chars: int, pad_char: str = "a") -> str:
    """A valid chat frame of exactly `total_chars` characters."""
    head = '{"type":"chat","text":"'
    tail = '"}'
    return head + pad_char * (total_chars - len(head) - len(tail)) + tail


def test_frame_at_the_limit_is_accepted_one_byte_over_is_too_large() -> None:
    limit = 200
    assert isinstance(p.parse(padded(limit), limit), p.Chat)
    error = refused(padded(limit + 1), limit)
    assert error.code == "too_large"
    assert error.ref is None


def test_the_64_kib_limit_on_text_and_bytes() -> None:
    at_limit = '{"type":"ping"}' + " " * (LIMIT - len('{"type":"ping"}'))
    assert len(at_limit) == LIMIT
    assert p.parse(at_limit, LIMIT) == p.Ping()
    assert p.parse(at_limit.encode(), LIMIT) == p.Ping()
    assert refused(at_limit + " ").code == "too_large"
    assert refused((at_limit + " ").encode()).code == "too_large"


def offer_frame(sdp: str) -> str:
    return '{"type":"offer","to":"p1","sdp":"' + sdp + '"}'


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_text_is_measured_in_utf8_bytes(char: str) -> None:
    width = len(char.encode())
    frame = offer_frame(char * ((LIMIT - len(offer_frame(""))) // width + 1))
    # Under the limit in characters, over it in bytes.
    assert len(frame) <= LIMIT < len(frame.encode())
    error = refused(frame)
    assert error.code == "too_large"
    assert str(len(frame.encode())) in error.message


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_text_exactly_at_the_limit_is_accepted(char: str) -> None:
    width = len(char.encode())
    room = LIMIT - len(offer_frame(""))
    sdp = char * (room // width) + "a" * (room % width)
    assert len(offer_frame(sdp).encode()) == LIMIT
    assert p.parse(offer_frame(sdp), LIMIT) == p.Offer(to="p1", sdp=sdp)
    assert refused(offer_frame(sdp + "a")).code == "too_large"


def test_too_large_is_checked_before_json() -> None:
    assert refused("x" * (LIMIT + 1)).code == "too_large"


# ---- invalid_json, not_an_object, unknown_type ----------------------------


@pytest.mark.parametrize(
    "frame",
    ["", "   ", "{", '{"type": "ping",}', "{'type': 'ping'}", "ping", '{"type": "ping"} x',
     b"\xff\xfe\x00", b"\xc3\x28", "\ufeff{}"],
)
def test_invalid_json(frame: str | bytes) -> None:
    error = refused(frame)
    assert error.code == "invalid_json"
    assert error.ref is None


def test_deeply_nested_json_is_invalid_json_not_a_crash() -> None:
    # 2 KB of brackets: far below the size limit, past the decoder's recursion limit.
    assert refused("[" * 1000 + "]" * 1000).code == "invalid_json"
    assert refused('{"type":"chat","text":' + "[" * 30_000).code == "invalid_json"


def test_huge_integer_literal_is_invalid_json() -> None:
    # Python refuses int literals over 4300 digits; that must not escape as ValueError.
    error = refused('{"type":"ping","id":' + "9" * 5000 + "}")
    assert error.code == "invalid_json"


@pytest.mark.parametrize("frame", ["[]", '[{"type":"ping"}]', "1", '"ping"', "null", "true"])
def test_not_an_object(frame: str) -> None:
    assert refused(frame).code == "not_an_object"


@pytest.mark.parametrize(
    ("frame", "ref"),
    [
        ('{"type": "shout"}', "shout"),
        ('{"type": "Hello", "v": 1, "ticket": "t"}', "Hello"),
        ('{"type": ""}', ""),
        ("{}", None),
        ('{"v": 1}', None),
        ('{"type": null}', None),
        ('{"type": 3}', None),
        ('{"type": ["ping"]}', None),
        ('{"type": "welcome"}', "welcome"),  # a server type is not a client type
        ('{"type": "' + "z" * 41 + '"}', None),  # too long to echo back
    ],
)
def test_unknown_type(frame: str, ref: str | None) -> None:
    error = refused(frame)
    assert error.code == "unknown_type"
    assert error.ref == ref


# ---- fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "ref"),
    [
        (raw("leave", reason="bye"), "leave"),
        (raw("ping", id=1, extra=True), "ping"),
        (raw("hello", v=1, ticket="t", token="t"), "hello"),
        (raw("chat", text="hi", to="p1"), "chat"),
        (raw("offer", to="p1", sdp="v=0", From="c1"), "offer"),
        (raw("ice", to="p1", candidate={"candidate": "c", "port": 9}), "ice.candidate"),
    ],
)
def test_unknown_field(frame: str, ref: str) -> None:
    error = refused(frame)
    assert (error.code, error.ref) == ("unknown_field", ref)


def test_unknown_field_in_candidate_names_the_candidate() -> None:
    error = refused(raw("ice", to="p1", candidate={"candidate": "c", "port": 9}))
    assert (error.code, error.ref) == ("unknown_field", "ice.candidate")
    assert "port" in error.message


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (raw("hello", v=1), "ticket"),
        (raw("hello", ticket="t"), "v"),
        (raw("admit"), "participant_id"),
        (raw("deny", reason="no"), "participant_id"),
        (raw("offer", to="p1"), "sdp"),
        (raw("answer", sdp="v=0"), "to"),
        (raw("ice", to="p1"), "candidate"),
        (raw("chat"), "text"),
        (raw("media_state", audio=True), "video"),
        (raw("media_connected", audio=True, video=True), "peer"),
        (raw("ice", to="p1", candidate={"sdpMid": "0"}), "candidate"),
    ],
)
def test_missing_field(frame: str, field: str) -> None:
    error = refused(frame)
    assert error.code == "missing_field"
    assert f"'{field}'" in error.message


@pytest.mark.parametrize(
    "frame",
    [
        # wrong type
        raw("hello", v="1", ticket="t"),
        raw("hello", v=1.0, ticket="t"),
        raw("hello", v=1, ticket=None),
        raw("admit", participant_id=5),
        raw("offer", to="p1", sdp=["v=0"]),
        raw("ice", to="p1", candidate="candidate:x"),
        raw("ice", to="p1", candidate=["candidate:x"]),
        raw("chat", text=None),
        raw("media_state", audio=1, video=True),
        raw("media_state", audio="true", video=True),
        raw("media_state", audio=True, video=True, screen=None),
        raw("media_connected", peer="p1", audio=True, video=0),
        raw("ping", id="7"),
        raw("ping", id=7.5),
        raw("ping", id=None),
        # bool is not an int on the wire
        raw("hello", v=True, ticket="t"),
        raw("ping", id=False),
        # too long
        raw("admit", participant_id="p" * (p.MAX_ID_CHARS + 1)),
        raw("deny", participant_id="p1", reason="r" * (p.MAX_REASON_CHARS + 1)),
        raw("offer", to="p1", sdp="s" * (p.MAX_SDP_CHARS + 1)),
        raw("chat", text="x" * (p.MAX_CHAT_CHARS + 1)),
        raw("hello", v=1, ticket="t" * 4097),
        # empty (or blank) required strings
        raw("chat", text=""),
        raw("chat", text="  \n\t"),
        raw("hello", v=1, ticket=""),
        raw("admit", participant_id=""),
        raw("offer", to="", sdp="v=0"),
        raw("offer", to="p1", sdp=""),
    ],
)
def test_invalid_field(frame: str) -> None:
    error = refused(frame)
    assert error.code == "invalid_field"
    assert error.ref == json.loads(frame)["type"]


@pytest.mark.parametrize(
    "candidate",
    [
        {"candidate": 1},
        {"candidate": None},
        {"candidate": "c" * 4097},
        {"candidate": "c", "sdpMid": 0},
        {"candidate": "c", "sdpMLineIndex": "0"},
        {"candidate": "c", "sdpMLineIndex": True},
        {"candidate": "c", "sdpMLineIndex": 0.5},
        {"candidate": "c", "usernameFragment": 5},
    ],
)
def test_ice_candidate_object_is_validated(candidate: dict[str, Any]) -> None:
    error = refused(raw("ice", to="p1", candidate=candidate))
    assert (error.code, error.ref) == ("invalid_field", "ice.candidate")


def test_error_frame_carries_code_message_and_ref() -> None:
    error = refused(raw("chat", text=""))
    assert error.frame() == {"type": "error", "code": "invalid_field",
                             "message": error.message, "ref": "chat"}
    assert refused("[]").frame() == {"type": "error", "code": "not_an_object",
                                     "message": "frame must be a JSON object"}


# ---- property: nothing but ProtocolError ever escapes ----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)

field_names = st.sampled_from(
    sorted({name for cls in p.MESSAGES.values() for name in cls.FIELDS}
           | {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment", "type", "from"})
) | st.text(max_size=10)

message_like = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(sorted(p.MESSAGES)) | st.text(max_size=10),
    st.dictionaries(field_names, json_values, max_size=5),
)

frames = (
    st.text(max_size=300)
    | st.binary(max_size=300)
    | json_values.map(json.dumps)
    | message_like.map(json.dumps)
    | message_like.map(lambda m: json.dumps(m).encode())
    | message_like.map(lambda m: json.dumps(m)[: len(json.dumps(m)) // 2])
)


@settings(database=None, deadline=None, max_examples=400)
@given(frames, st.integers(min_value=0, max_value=400))
def test_any_frame_parses_or_raises_a_protocol_error(frame: str | bytes, limit: int) -> None:
    try:
        message = p.parse(frame, limit)
    except p.ProtocolError as error:
        assert error.code in ERROR_CODES
        assert isinstance(error.frame()["message"], str)
    else:
        assert isinstance(message, p.ClientMessage)
        assert json.loads(frame)["type"] == message.TYPE


@settings(database=None, deadline=None, max_examples=200)
@given(message_like)
def test_a_parsed_message_holds_exactly_the_fields_sent(obj: dict[str, Any]) -> None:
    try:
        message = p.parse(json.dumps(obj), LIMIT)
    except p.ProtocolError:
        return
    for name in type(message).FIELDS:
        value = getattr(message, name)
        if name == "candidate" and isinstance(value, dict):
            # Every candidate field kept is one that was sent, unchanged.
            assert value.items() <= obj[name].items()
        else:
            assert value == obj.get(name)
