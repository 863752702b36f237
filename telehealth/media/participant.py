"""The headless participant: joins a visit exactly as the browser page does.

    link ──POST /api/v1/join──> ticket, ws_url, ice_servers      (JoinRefused on an error body)
      └─ WS {base}{ws_url}: hello ──> welcome ──> waiting ──admitted──> in the room
            in the room: one RTCPeerConnection per other participant
              newcomer offers to everyone `connected` in its `admitted` list;
              the others answer (docs/protocol.md "Who offers")
            socket drops: reconnect with the same ticket, with backoff, for the
              grace period; a `welcome` after a drop starts media afresh (new
              connections, new offers)
      until: `duration_s` is over (then `leave`), `ended`, `denied`, `leave()`

aiortc gathers every candidate inside `setLocalDescription`, so an offer or
answer carries all of ours, followed by an end-of-candidates `ice` (null). A
browser trickles its candidates; those are added as they come. Signaling for
one peer is handled in order by that peer's own task, so a slow
`setLocalDescription` towards one peer does not hold up the others.

Logs name participants by id and errors by code only: never a token, ticket,
name or date of birth.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from telehealth.media.tracks import FrameCounter, MediaFileError, MediaSource
from telehealth.signaling import protocol as p

log = logging.getLogger(__name__)

# Close codes after which coming back with the same ticket cannot help.
_FINAL_CLOSE_CODES = {
    p.CLOSE_PROTOCOL: "rejected", p.CLOSE_TICKET_INVALID: "rejected", p.CLOSE_DENIED: "denied",
    p.CLOSE_REPLACED: "replaced", p.CLOSE_ENDED: "ended", p.CLOSE_CONSENT_REQUIRED: "rejected",
}
_ICE_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


class ParticipantError(Exception):
    """Root of the headless participant's errors."""


class InvalidLink(ParticipantError, ValueError):
    """The link is not of the form ``http(s)://host[:port]/v/<token>``."""


class JoinRefused(ParticipantError):
    """The service answered the join with an error body (docs/protocol.md section 1).

    `details` holds the error's further fields (`attempts_left`, `opens_at`,
    `locked_until`).
    """

    def __init__(self, code: str, message: str, status: int, action: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.action = action
        self.details = details or {}


class ParticipantState(StrEnum):
    JOINING = "joining"
    WAITING = "waiting"
    ADMITTED = "admitted"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    DENIED = "denied"
    LEFT = "left"
    REPLACED = "replaced"
    REJECTED = "rejected"
    """The service refused the ticket or the hello on the socket."""
    DISCONNECTED = "disconnected"
    """The socket dropped and did not come back within the grace period."""


_FINAL_STATES = {ParticipantState.ENDED, ParticipantState.DENIED, ParticipantState.LEFT,
                 ParticipantState.REPLACED, ParticipantState.REJECTED,
                 ParticipantState.DISCONNECTED}


@dataclass(frozen=True, slots=True)
class JoinLink:
    base: str
    """Scheme, host, port and any path prefix before ``/v/``; no trailing slash."""
    token: str

    @classmethod
    def parse(cls, link: str) -> JoinLink:
        parts = urllib.parse.urlsplit(link.strip())
        prefix, sep, token = parts.path.rpartition("/v/")
        token = token.strip("/")
        if parts.scheme not in ("http", "https") or not parts.netloc or not sep or not token \
                or "/" in token:
            # The link holds a secret: never echo it.
            raise InvalidLink("not a visit link (expected http(s)://host[:port]/v/<token>)")
        return cls(f"{parts.scheme}://{parts.netloc}{prefix.rstrip('/')}", token)

    def __repr__(self) -> str:
        return f"JoinLink(base={self.base!r}, token=<hidden>)"


@dataclass(frozen=True, slots=True)
class ParticipantOptions:
    admit_all: bool = False
    """As care team, admit everyone who appears in the waiting room."""
    send_video: bool = True
    send_audio: bool = True
    video_file: str | None = None
    """Send this file (looped, through aiortc's MediaPlayer) instead of the synthetic bar."""
    reconnect_grace_s: float = 60.0
    """How long to keep trying to come back after the socket drops (the service's grace)."""
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 5.0
    heartbeat_s: float = 10.0
    """Client-side WebSocket ping interval: a silent dead server counts as a drop."""
    http_timeout_s: float = 15.0


@dataclass(slots=True)
class PeerResult:
    id: str
    role: str | None = None
    connected: bool = False
    """Media connected with this peer at least once."""
    time_to_connected_s: float | None = None
    video_frames: int = 0
    audio_frames: int = 0
    connections: int = 0
    """Peer connections made with this peer (more than one after a reconnect)."""
    left: str | None = None
    """Why it left (`participant_left` reason), if it did."""

    @property
    def frames(self) -> int:
        return self.video_frames + self.audio_frames


@dataclass(frozen=True, slots=True)
class ChatMessage:
    sender: str
    """The sender's participant id."""
    text: str
    at: str


@dataclass(frozen=True, slots=True)
class ServerError:
    code: str
    message: str
    ref: str | None = None


@dataclass(slots=True)
class ParticipantResult:
    state: str = ParticipantState.JOINING.value
    participant_id: str | None = None
    role: str | None = None
    visit_id: str | None = None
    connected: bool = False
    """Media connected with at least one peer."""
    time_to_connected_s: float | None = None
    """From the start of `run` to the first peer connection reaching "connected"."""
    time_to_first_frame_s: float | None = None
    """From the start of `run` to the first received video frame."""
    video_frames_received: int = 0
    audio_frames_received: int = 0
    peers: dict[str, PeerResult] = field(default_factory=dict)
    chat: list[ChatMessage] = field(default_factory=list)
    errors: list[ServerError] = field(default_factory=list)
    reason: str | None = None
    """Why it is over: the `ended` reason, the `denied` reason, or what closed the socket."""
    reconnects: int = 0
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _PeerLink:
    """One RTCPeerConnection to one remote participant, with its signaling task."""

    def __init__(self, peer_id: str, pc: RTCPeerConnection) -> None:
        self.peer_id = peer_id
        self.pc = pc
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.counters: list[FrameCounter] = []
        self.reported = False
        self.task: asyncio.Task[None] | None = None

    def frames(self, kind: str) -> int:
        return sum(c.frames for c in self.counters if c.kind == kind)


class Participant:
    """A headless participant of one visit. See the module docstring for the flow."""

    def __init__(
        self,
        link: str,
        *,
        dob: str | None = None,
        name: str | None = None,
        options: ParticipantOptions | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = JoinLink.parse(link)
        self.options = options or ParticipantOptions()
        self._dob = dob
        self._name = name
        self._http = session
        self._clock = clock
        self.result = ParticipantResult()
        self._started: float | None = None
        self._ticket: str | None = None
        self._ws_url = ""
        self._ice_servers: list[RTCIceServer] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._links: dict[str, _PeerLink] = {}
        self._retired: dict[str, tuple[int, int]] = {}  # peer -> frames of closed connections
        self._admit_pending: set[str] = set()
        self._source: MediaSource | None = None
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._changed = asyncio.Event()
        self._welcomes = 0  # welcomes received, over all sockets
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "welcome": self._on_welcome, "waiting_room": self._on_waiting_room,
            "admitted": self._on_admitted, "participant_joined": self._on_participant_joined,
            "participant_left": self._on_participant_left,
            "reconnecting": self._on_reconnecting, "rejoined": self._on_rejoined,
            "offer": self._on_offer, "answer": self._on_answer, "ice": self._on_ice,
            "chat": self._on_chat, "media_state": self._on_media_state,
            "ended": self._on_ended, "denied": self._on_denied, "error": self._on_error,
            "pong": self._on_pong,
        }

    def __repr__(self) -> str:
        return f"<Participant {self.result.participant_id or '?'} {self.result.state}>"

    # ---- public ----------------------------------------------------------

    @property
    def state(self) -> ParticipantState:
        return ParticipantState(self.result.state)

    async def run(self, duration_s: float | None = None) -> ParticipantResult:
        """Join, stay until `duration_s` is over (then leave) or the visit is over for us.

        Raises `JoinRefused` when the service refuses the link, `ParticipantError`
        when it cannot be reached. Otherwise returns the result, also on `ended`.
        """
        if self._started is not None:
            raise ParticipantError("a Participant runs once")
        self._started = self._clock()
        try:
            self._source = MediaSource(send_video=self.options.send_video,
                                       send_audio=self.options.send_audio,
                                       video_file=self.options.video_file)
        except MediaFileError as exc:
            raise ParticipantError(str(exc)) from exc
        owns_http = self._http is None
        http = self._http or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.http_timeout_s))
        self._http = http
        try:
            await self._join(http)
            signaling = asyncio.create_task(self._signaling(http), name="participant-signaling")
            try:
                done, _ = await asyncio.wait({signaling}, timeout=duration_s)
                if not done:
                    await self.leave()
                await signaling
            finally:
                if not signaling.done():
                    signaling.cancel()
                    with suppress(asyncio.CancelledError):
                        await signaling
        finally:
            await self._close_all()
            if owns_http:
                await http.close()
            self.result.duration_s = self._clock() - self._started
        return self.snapshot()

    async def leave(self) -> None:
        """Leave the visit (send `leave`, close the socket); `run` then returns."""
        self._stop.set()
        if self.state not in _FINAL_STATES:
            self._set_state(ParticipantState.LEFT)
        ws = self._ws
        if ws is not None and not ws.closed:
            await self._send({"type": "leave"})
            await ws.close()

    async def send_chat(self, text: str) -> None:
        await self._send({"type": "chat", "text": text})

    async def end_visit(self) -> None:
        """As care team, end the visit for everyone."""
        await self._send({"type": "end"})

    async def wait_connected(self) -> None:
        """Until media is connected with a first peer. Bound it with `asyncio.timeout`."""
        await self._connected.wait()

    async def wait_state(self, *states: ParticipantState) -> ParticipantState:
        """Until the state is one of `states`; returns it."""
        while self.state not in states:
            self._changed.clear()
            await self._changed.wait()
        return self.state

    def snapshot(self) -> ParticipantResult:
        """The result so far, with frame counts as of now."""
        video = audio = 0
        for peer_id, peer in self.result.peers.items():
            old_video, old_audio = self._retired.get(peer_id, (0, 0))
            link = self._links.get(peer_id)
            peer.video_frames = old_video + (link.frames("video") if link else 0)
            peer.audio_frames = old_audio + (link.frames("audio") if link else 0)
            video += peer.video_frames
            audio += peer.audio_frames
        self.result.video_frames_received = video
        self.result.audio_frames_received = audio
        return self.result

    # ---- join ------------------------------------------------------------

    async def _join(self, http: aiohttp.ClientSession) -> None:
        body: dict[str, str] = {"token": self.link.token}
        if self._dob is not None:
            body["dob"] = self._dob
        if self._name is not None:
            body["name"] = self._name
        url = f"{self.link.base}/api/v1/join"
        try:
            async with http.post(url, json=body, headers={"Origin": self._origin()}) as resp:
                status = resp.status
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ParticipantError(f"cannot reach {self.link.base}: {type(exc).__name__}") from exc
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ParticipantError(f"join answered HTTP {status} without a JSON object")
        error = answer.get("error")
        if isinstance(error, dict):
            details = {k: v for k, v in error.items() if k not in ("code", "message", "action")}
            refused = JoinRefused(str(error.get("code", "unknown")), str(error.get("message", "")),
                                  status, error.get("action"), details)
            log.info("join refused: HTTP %s %s", status, refused.code)
            raise refused
        if status != 200 or not isinstance(answer.get("ticket"), str):
            raise ParticipantError(f"join answered HTTP {status} without a ticket")
        self._ticket = answer["ticket"]
        self._ws_url = str(answer.get("ws_url") or "/ws")
        self._ice_servers = _ice_servers(answer.get("ice_servers") or [])
        participant = answer.get("participant") or {}
        self.result.participant_id = participant.get("id")
        self.result.role = participant.get("role")
        self.result.visit_id = (answer.get("visit") or {}).get("id")
        log.info("joined visit %s as participant %s (%s)", self.result.visit_id,
                 self.result.participant_id, self.result.role)

    def _origin(self) -> str:
        parts = urllib.parse.urlsplit(self.link.base)
        return f"{parts.scheme}://{parts.netloc}"

    def _socket_url(self) -> str:
        if "://" in self._ws_url:
            return self._ws_url
        return f"{self.link.base}{self._ws_url}"

    # ---- the socket ------------------------------------------------------

    async def _signaling(self, http: aiohttp.ClientSession) -> None:
        """Hold the socket open, coming back after drops, until the visit is over for us."""
        deadline: float | None = None  # while dropped: when to give up
        attempt = 0
        while not self._stop.is_set():
            try:
                ws = await http.ws_connect(self._socket_url(), heartbeat=self.options.heartbeat_s,
                                           origin=self._origin())
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if deadline is None:
                    raise ParticipantError(
                        f"cannot open the signaling socket: {type(exc).__name__}") from exc
                log.info("reconnect attempt %d failed: %s", attempt, type(exc).__name__)
            else:
                if self._stop.is_set():  # left while connecting
                    await ws.close()
                    return
                welcomes = self._welcomes
                code = await self._session(ws)
                if self._welcomes > welcomes:
                    attempt = 0
                    deadline = None
                final = _FINAL_CLOSE_CODES.get(code or 0)
                if self._stop.is_set() or self.state in _FINAL_STATES:
                    return
                if final is not None:
                    self.result.reason = self.result.reason or f"closed {code}"
                    self._set_state(ParticipantState(final))
                    return
                log.info("signaling socket dropped (close code %s)", code)
                self._set_state(ParticipantState.RECONNECTING)
            now = self._clock()
            if deadline is None:
                deadline = now + self.options.reconnect_grace_s
            if now >= deadline:
                self.result.reason = "socket dropped and did not come back"
                self._set_state(ParticipantState.DISCONNECTED)
                return
            delay = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** attempt)
            attempt += 1
            with suppress(TimeoutError):
                async with asyncio.timeout(min(delay, deadline - now)):
                    await self._stop.wait()

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> int | None:
        """One socket from hello to close; returns the close code."""
        self._ws = ws
        try:
            await self._send({"type": "hello", "v": p.VERSION, "ticket": self._ticket})
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    log.warning("ignoring a frame that is not JSON")
                    continue
                if isinstance(frame, dict) and isinstance(frame.get("type"), str):
                    await self._on_frame(frame)
                if self.state in (ParticipantState.ENDED, ParticipantState.DENIED):
                    await ws.close()
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("signaling socket error: %s", type(exc).__name__)
        finally:
            self._ws = None
        return ws.close_code

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one frame, or drop it if the socket is down.

        Never raises: the reader notices a dead socket, and everything sent on
        one socket is rebuilt after coming back on the next.
        """
        ws = self._ws
        if ws is None or ws.closed:
            log.debug("socket down, dropping %s", message.get("type"))
            return
        try:
            async with self._send_lock:
                await ws.send_str(json.dumps(message, separators=(",", ":")))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            log.debug("could not send %s: %s", message.get("type"), type(exc).__name__)

    # ---- server frames ---------------------------------------------------

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            log.debug("ignoring server frame %s", kind)  # additive protocol change
            return
        try:
            await handler(frame)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("malformed %s frame: %s", kind, type(exc).__name__)

    async def _on_welcome(self, frame: dict[str, Any]) -> None:
        resumed = bool(frame.get("resumed"))
        if self._welcomes:
            # Back after a drop: the others drop their connections to us on `rejoined`
            # (or on `participant_left` if our place was lost); start media afresh.
            self.result.reconnects += 1
            for peer_id in list(self._links):
                await self._drop_link(peer_id)
        self._welcomes += 1
        participant = frame.get("participant") or {}
        self.result.participant_id = participant.get("id", self.result.participant_id)
        self.result.role = participant.get("role", self.result.role)
        self.result.visit_id = frame.get("visit_id", self.result.visit_id)
        state = frame.get("state")
        self._set_state(ParticipantState.ADMITTED if state == "admitted"
                        else ParticipantState.WAITING)
        log.info("welcome: participant %s, %s, resumed=%s", self.result.participant_id,
                 state, resumed)

    async def _on_waiting_room(self, frame: dict[str, Any]) -> None:
        waiting = {str(w["id"]) for w in frame["waiting"]}
        self._admit_pending &= waiting
        if not self.options.admit_all or self.result.role not in p.CARE_TEAM:
            return
        for pid in sorted(waiting - self._admit_pending):
            self._admit_pending.add(pid)
            log.info("admitting participant %s", pid)
            await self._send({"type": "admit", "participant_id": pid})

    async def _on_admitted(self, frame: dict[str, Any]) -> None:
        self._set_state(ParticipantState.ADMITTED)
        if not (self.options.send_audio and self.options.send_video):
            await self._send({"type": "media_state", "audio": self.options.send_audio,
                              "video": self.options.send_video})
        for other in frame["participants"]:
            peer = self._peer(str(other["id"]), other.get("role"))
            if other.get("state", "connected") == "connected":
                self._open_link(peer.id).inbox.put_nowait(("make_offer", None))

    async def _on_participant_joined(self, frame: dict[str, Any]) -> None:
        other = frame["participant"]
        peer = self._peer(str(other["id"]), other.get("role"))
        peer.left = None
        await self._drop_link(peer.id)  # it offers to us

    async def _on_participant_left(self, frame: dict[str, Any]) -> None:
        peer_id = str(frame["participant_id"])
        self._peer(peer_id).left = str(frame.get("reason") or "left")
        await self._drop_link(peer_id)

    async def _on_reconnecting(self, frame: dict[str, Any]) -> None:
        log.info("participant %s is reconnecting", frame["participant_id"])

    async def _on_rejoined(self, frame: dict[str, Any]) -> None:
        await self._drop_link(str(frame["participant_id"]))  # a fresh offer follows

    async def _on_offer(self, frame: dict[str, Any]) -> None:
        peer_id, sdp = str(frame["from"]), str(frame["sdp"])
        link = self._links.get(peer_id)
        if link is not None and not _same_ice_session(link.pc, sdp):
            await self._drop_link(peer_id)
            link = None
        if link is None:
            self._peer(peer_id)
            link = self._open_link(peer_id)
        link.inbox.put_nowait(("offer", sdp))

    async def _on_answer(self, frame: dict[str, Any]) -> None:
        link = self._links.get(str(frame["from"]))
        if link is None:
            log.info("answer from %s without an offer of ours", frame["from"])
            return
        link.inbox.put_nowait(("answer", str(frame["sdp"])))

    async def _on_ice(self, frame: dict[str, Any]) -> None:
        link = self._links.get(str(frame["from"]))
        if link is not None:
            link.inbox.put_nowait(("ice", frame.get("candidate")))

    async def _on_chat(self, frame: dict[str, Any]) -> None:
        self.result.chat.append(ChatMessage(str(frame["from"]), str(frame["text"]),
                                            str(frame.get("at", ""))))

    async def _on_media_state(self, frame: dict[str, Any]) -> None:
        log.debug("participant %s media audio=%s video=%s", frame["participant_id"],
                  frame.get("audio"), frame.get("video"))

    async def _on_ended(self, frame: dict[str, Any]) -> None:
        self.result.reason = str(frame.get("reason") or "ended")
        self._set_state(ParticipantState.ENDED)
        log.info("visit ended (%s)", self.result.reason)

    async def _on_denied(self, frame: dict[str, Any]) -> None:
        self.result.reason = str(frame.get("reason") or "")
        self._set_state(ParticipantState.DENIED)
        log.info("admission denied")

    async def _on_error(self, frame: dict[str, Any]) -> None:
        error = ServerError(str(frame.get("code", "")), str(frame.get("message", "")),
                            frame.get("ref"))
        self.result.errors.append(error)
        log.info("server error %s (ref %s)", error.code, error.ref)

    async def _on_pong(self, frame: dict[str, Any]) -> None:
        pass

    # ---- peers -----------------------------------------------------------

    def _peer(self, peer_id: str, role: str | None = None) -> PeerResult:
        peer = self.result.peers.setdefault(peer_id, PeerResult(peer_id))
        if role is not None:
            peer.role = str(role)
        return peer

    def _open_link(self, peer_id: str) -> _PeerLink:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self._ice_servers)))
        link = _PeerLink(peer_id, pc)
        self._links[peer_id] = link
        self.result.peers[peer_id].connections += 1

        def on_track(track: MediaStreamTrack) -> None:
            first = self._on_first_video_frame if track.kind == "video" else None
            link.counters.append(FrameCounter(track, self._clock, first).start())

        def on_state() -> None:
            state = pc.connectionState
            log.info("peer %s connection %s", peer_id, state)
            if state == "connected" and not link.reported:
                link.reported = True
                self._note_media_connected(peer_id)
                self._spawn(self._send({
                    "type": "media_connected", "peer": peer_id,
                    "audio": self.options.send_audio, "video": self.options.send_video}))

        pc.on("track", on_track)
        pc.on("connectionstatechange", on_state)
        link.task = asyncio.create_task(self._peer_signaling(link), name=f"peer-{peer_id}")
        return link

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _note_media_connected(self, peer_id: str) -> None:
        assert self._started is not None
        elapsed = self._clock() - self._started
        peer = self.result.peers[peer_id]
        if not peer.connected:
            peer.connected = True
            peer.time_to_connected_s = elapsed
        if not self.result.connected:
            self.result.connected = True
            self.result.time_to_connected_s = elapsed
            self._connected.set()
        self._changed.set()

    def _on_first_video_frame(self, at: float) -> None:
        if self.result.time_to_first_frame_s is None and self._started is not None:
            self.result.time_to_first_frame_s = at - self._started

    async def _drop_link(self, peer_id: str) -> None:
        link = self._links.pop(peer_id, None)
        if link is None:
            return
        old_video, old_audio = self._retired.get(peer_id, (0, 0))
        if link.task is not None:
            link.task.cancel()
            with suppress(asyncio.CancelledError):
                await link.task
        for sender in link.pc.getSenders():
            if sender.track is not None:
                sender.track.stop()  # aiortc leaves a closed connection's tracks live
        await link.pc.close()
        for counter in link.counters:
            await counter.stop()
        self._retired[peer_id] = (old_video + link.frames("video"),
                                  old_audio + link.frames("audio"))

    async def _close_all(self) -> None:
        for peer_id in list(self._links):
            await self._drop_link(peer_id)
        for task in list(self._tasks):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if self._source is not None:
            self._source.close()
        self.snapshot()

    async def _peer_signaling(self, link: _PeerLink) -> None:
        """Carry out one peer's offers, answers and candidates, in the order they came."""
        while True:
            kind, payload = await link.inbox.get()
            try:
                if kind == "make_offer":
                    self._add_local_tracks(link.pc)
                    await link.pc.setLocalDescription(await link.pc.createOffer())
                    await self._send_description(link, "offer")
                elif kind == "offer":
                    await link.pc.setRemoteDescription(RTCSessionDescription(payload, "offer"))
                    self._add_local_tracks(link.pc)
                    await link.pc.setLocalDescription(await link.pc.createAnswer())
                    await self._send_description(link, "answer")
                elif kind == "answer":
                    if link.pc.signalingState != "have-local-offer":
                        log.info("answer from %s in state %s ignored", link.peer_id,
                                 link.pc.signalingState)
                        continue
                    await link.pc.setRemoteDescription(RTCSessionDescription(payload, "answer"))
                elif kind == "ice":
                    if link.pc.remoteDescription is None:
                        log.info("candidate from %s before its description", link.peer_id)
                        continue
                    await link.pc.addIceCandidate(
                        None if payload is None else candidate_from_wire(payload))
            except Exception as exc:
                # Bad SDP, a wrong state, a socket gone: one peer must not stop the others.
                log.warning("peer %s: %s failed: %s", link.peer_id, kind, type(exc).__name__)

    def _add_local_tracks(self, pc: RTCPeerConnection) -> None:
        """Our tracks, once per connection; a kind we do not send is still received."""
        assert self._source is not None
        sending = {t.sender.track.kind for t in pc.getTransceivers() if t.sender.track}
        for kind, make in (("audio", self._source.audio_track),
                           ("video", self._source.video_track)):
            if kind in sending:
                continue
            track = make()
            if track is not None:
                pc.addTrack(track)
            elif not any(t.kind == kind for t in pc.getTransceivers()):
                pc.addTransceiver(kind, direction="recvonly")

    async def _send_description(self, link: _PeerLink, kind: str) -> None:
        description = link.pc.localDescription
        assert description is not None
        await self._send({"type": kind, "to": link.peer_id, "sdp": description.sdp})
        # Every candidate is in the SDP already (aiortc gathers them all first).
        await self._send({"type": "ice", "to": link.peer_id, "candidate": None})

    def _set_state(self, state: ParticipantState) -> None:
        if self.result.state != state.value:
            self.result.state = state.value
            self._changed.set()


def candidate_from_wire(obj: dict[str, Any]) -> RTCIceCandidate:
    """A browser-style ICE candidate object to aiortc's `RTCIceCandidate`."""
    text = str(obj["candidate"])
    if text.startswith("candidate:"):
        text = text[len("candidate:"):]
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = obj.get("sdpMid")
    candidate.sdpMLineIndex = obj.get("sdpMLineIndex")
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0  # the bundle's first m-line
    return candidate


def _ice_servers(entries: list[Any]) -> list[RTCIceServer]:
    """The join answer's `ice_servers` as aiortc objects; an empty list means no STUN."""
    servers = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("urls"):
            servers.append(RTCIceServer(urls=entry["urls"], username=entry.get("username"),
                                        credential=entry.get("credential")))
    return servers


def _same_ice_session(pc: RTCPeerConnection, sdp: str) -> bool:
    """Whether an offer renegotiates `pc` (same ICE credentials) rather than starting anew."""
    current = pc.remoteDescription
    if current is None:
        return pc.signalingState == "stable" and pc.localDescription is None
    old, new = _ICE_UFRAG.findall(current.sdp), _ICE_UFRAG.findall(sdp)
    return bool(old) and old[:1] == new[:1]
