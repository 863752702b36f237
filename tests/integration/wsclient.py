"""A small signaling client for integration tests: join, hello, and read frames by type.

    peer = await connect(server, link, dob="1990-04-27")   # POST /api/v1/join, /ws, hello
    await peer.send({"type": "ping", "id": 1})
    assert (await peer.next("pong"))["id"] == 1           # other frames stay buffered

A background task reads the socket (so WebSocket pings are answered) into a
queue; `next` takes the first frame of a type, keeping the others in order.
Every peer is remembered until `close_all()`, which the test modules call on
teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

import aiohttp

Frame = dict[str, Any]
_END = object()
_open: list[Peer] = []


class HasUrl(Protocol):
    """What `connect` needs of conftest's `Running`."""

    @property
    def url(self) -> str: ...

    async def post(self, path: str, body: Any, token: str | None = None) -> tuple[int, Any]: ...


def token_of(link: str) -> str:
    return link.rsplit("/v/", 1)[1]


class SocketClosed(AssertionError):
    """The socket closed while a frame was still expected."""


class Peer:
    """One WebSocket to the service, with its own HTTP session (so it can be cut off)."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.grant: Frame = {}
        self.welcome: Frame = {}
        self.participant_id = ""
        self.close_code: int | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._held: list[Frame] = []
        self._ended = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    # ---- sending -----------------------------------------------------------

    async def send(self, message: Frame) -> None:
        await self.ws.send_str(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def hello(self, ticket: str, v: int = 1) -> None:
        await self.send({"type": "hello", "v": v, "ticket": ticket})

    # ---- receiving ---------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    assert isinstance(frame, dict), f"server sent a non-object: {msg.data!r}"
                    self._queue.put_nowait(frame)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    raise AssertionError(f"server sent a binary frame: {msg.data!r}")
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        finally:
            self.close_code = self.ws.close_code
            self._queue.put_nowait(_END)

    def _take_queued(self) -> None:
        """Move whatever has arrived into the held list (no waiting)."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:
                self._ended = True
            else:
                self._held.append(item)

    async def _pull(self, timeout: float) -> bool:
        """Wait up to `timeout` for one more frame into the held list; False on quiet/closed."""
        if self._ended:
            return False
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return False
        if item is _END:
            self._ended = True
            return False
        self._held.append(item)
        return True

    async def next(self, type: str, timeout: float = 5.0) -> Frame:
        """The next frame of `type`; frames of other types stay buffered, in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._take_queued()
        seen = 0
        while True:
            for i in range(seen, len(self._held)):
                if self._held[i].get("type") == type:
                    return self._held.pop(i)
            seen = len(self._held)
            if self._ended:
                raise SocketClosed(f"socket closed ({self.close_code}) while waiting for "
                                   f"{type!r}; buffered: {self._held}")
            left = deadline - loop.time()
            if (left <= 0 or not await self._pull(left)) and not self._ended:
                raise AssertionError(f"no {type!r} frame within {timeout}s; "
                                     f"buffered: {self._held}")

    async def frames_until_quiet(self, t: float = 0.3) -> list[Frame]:
        """Every buffered frame plus whatever arrives until `t` seconds pass with none."""
        self._take_queued()
        while await self._pull(t):
            pass
        frames, self._held = self._held, []
        return frames

    def buffered(self) -> list[Frame]:
        """What has arrived and not been taken (no waiting), without taking it."""
        self._take_queued()
        return list(self._held)

    async def closed(self, timeout: float = 5.0) -> int:
        """Wait for the server to close the socket; its close code. Frames stay buffered."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        self._take_queued()
        assert self.close_code is not None
        return self.close_code

    async def pong(self, ping_id: int, timeout: float = 5.0) -> Frame:
        """Ping, and wait for the pong to that very ping."""
        await self.send({"type": "ping", "id": ping_id})
        while True:
            frame = await self.next("pong", timeout)
            if frame.get("id") == ping_id:
                return frame

    # ---- ending ------------------------------------------------------------

    async def drop(self) -> None:
        """Cut the TCP connection without a WebSocket close (a network drop)."""
        transport = None
        if self.ws._response.connection is not None:
            transport = self.ws._response.connection.transport
        if transport is not None:
            transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 5)
        await self.close()

    async def close(self) -> None:
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.http.close()


async def open_socket(server: HasUrl) -> Peer:
    """A WebSocket to `/ws` that has said nothing yet."""
    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(server.url + "/ws", autoping=True)
    except BaseException:
        await http.close()
        raise
    peer = Peer(http, ws)
    _open.append(peer)
    return peer


async def join(server: HasUrl, link: str, dob: str | None = None,
               name: str | None = None) -> Frame:
    """POST /api/v1/join for `link`; the grant (ticket, participant, visit)."""
    body: Frame = {"token": token_of(link)}
    if dob is not None:
        body["dob"] = dob
    if name is not None:
        body["name"] = name
    status, grant = await server.post("/api/v1/join", body)
    assert status == 200, grant
    assert isinstance(grant, dict)
    return grant


async def connect(server: HasUrl, link: str, dob: str | None = None,
                  name: str | None = None) -> Peer:
    """Join with `link`, open the socket, say hello, and wait for the welcome."""
    grant = await join(server, link, dob, name)
    peer = await open_socket(server)
    peer.grant = grant
    peer.participant_id = str(grant["participant"]["id"])
    await peer.hello(str(grant["ticket"]))
    peer.welcome = await peer.next("welcome")
    return peer


async def close_all() -> None:
    while _open:
        await _open.pop().close()
