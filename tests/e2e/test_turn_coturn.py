"""coturn for real: the service's TURN REST credentials against Debian's `turnserver`.

Each test starts its own coturn on 127.0.0.1 (a free listening port, a small
free relay range, `use-auth-secret` with a random `static-auth-secret`) from a
turnserver.conf like the one in docs/deploy.md, and stops it afterwards.

1. Credentials minted by `telehealth.media.ice` allocate a relay on it: an
   aiortc peer whose only ICE server is that coturn, with the relay-only
   transport policy, offers a `typ relay` candidate inside coturn's relay range.
2. Credentials signed with another secret, expired ones and ones whose
   username was altered are refused with 401 and get no allocation.
3. A whole visit through the real server, both headless participants
   relay-only: video and audio flow, both ends of the nominated ICE pair are
   coturn relay addresses on both peers, and coturn's own log shows each
   participant's allocation, channel binding and the bytes it relayed.

A missing `turnserver` fails the run under CI (scripts/test installs coturn)
and skips the tests elsewhere.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aioice import Connection, TransportPolicy, stun, turn
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

import telehealth.media.participant as participant_module
from telehealth.config import Secret, Settings
from telehealth.media.ice import ice_servers, turn_credentials
from telehealth.media.participant import Participant, ParticipantOptions

from conftest import Running, free_port
from needs import require

pytestmark = pytest.mark.e2e
DOB = "1990-04-27"
RELAY_PORTS = 24  # enough for every allocation of one test, with room to spare


def require_turnserver() -> str:
    return require("turnserver", "apt-get install -y coturn (scripts/test does)")


@dataclass
class Coturn:
    """One running coturn on loopback."""

    port: int
    relay_ports: range
    secret: str
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def sessions_of(self, username: str) -> list[str]:
        """coturn's session ids of the allocations made with `username`."""
        return re.findall(r"session (\d+): new, realm=<test>, username=<" + re.escape(username)
                          + ">", self.log_text())

    def lines_of(self, session: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if f"session {session}:" in line]


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening_port() -> int:
    """A port free for both TCP and UDP (coturn listens on both)."""
    for _ in range(100):
        port = free_port()
        if _udp_free(port):
            return port
    raise RuntimeError("no free port for coturn")


def _relay_range() -> range:
    """RELAY_PORTS consecutive free UDP ports below the kernel's ephemeral range."""
    for _ in range(200):
        start = random.randrange(20000, 32000, 2)
        ports = range(start, start + RELAY_PORTS)
        if all(_udp_free(p) for p in ports):
            return ports
    raise RuntimeError("no free relay port range for coturn")


def turnserver_conf(*, port: int, relay_ports: range, secret: str, workdir: Path) -> str:
    """The test's turnserver.conf: docs/deploy.md's, moved onto loopback without TLS."""
    return "\n".join([
        f"listening-port={port}",
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        f"min-port={relay_ports.start}",
        f"max-port={relay_ports.stop - 1}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "realm=test",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-software-attribute",
        # Both peers and both relays are on 127.0.0.1 here; never in production.
        "allow-loopback-peers",
        "verbose",  # session lines: allocations, channel binds, usage
        "log-file=stdout",
        "simple-log",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"userdb={workdir / 'turndb'}",  # not /var/lib/turn
        "",
    ])


def _answers_stun(address: tuple[str, int]) -> bool:
    request = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(bytes(request), address)
        try:
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
    response = stun.parse_message(data)
    return (response.transaction_id == request.transaction_id
            and response.message_class == stun.Class.RESPONSE)


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    binary = require_turnserver()
    workdir = tmp_path / "coturn"
    workdir.mkdir()
    server = Coturn(port=_listening_port(), relay_ports=_relay_range(),
                    secret=secrets.token_urlsafe(32), log=workdir / "turnserver.log")
    conf = workdir / "turnserver.conf"
    conf.write_text(turnserver_conf(port=server.port, relay_ports=server.relay_ports,
                                    secret=server.secret, workdir=workdir))
    with server.log.open("wb") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + 10
        while not _answers_stun(server.address):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"turnserver did not start (exit {proc.poll()}):\n"
                            + server.log_text()[-3000:])
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def settings(settings: Settings, coturn: Coturn) -> Settings:
    """The server fixture's settings with this test's coturn as the practice's TURN."""
    return replace(settings, turn_urls=(coturn.url,), turn_secret=Secret(coturn.secret))


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def allocate(server: Coturn, username: str, password: str) -> tuple[str, int]:
    """Allocate a relay on `server` with these credentials (then release it); its address."""
    transport, protocol = await turn.create_turn_endpoint(
        _Sink, server_addr=server.address, username=username, password=password)
    relayed: tuple[str, int] = transport.get_extra_info("sockname")
    transport.close()
    async with asyncio.timeout(5):
        await protocol.closed
    return relayed


async def relay_candidates(server: Coturn, username: str, password: str) -> list[Any]:
    """What aioice gathers, relay-only, with only `server` configured."""
    conn = Connection(ice_controlling=True, turn_server=server.address,
                      turn_username=username, turn_password=password,
                      transport_policy=TransportPolicy.RELAY)
    try:
        await conn.gather_candidates()
        return [c for c in conn.local_candidates if c.type == "relay"]
    finally:
        await conn.close()


# ---- 1. minted credentials allocate ----------------------------------------


async def test_minted_credentials_allocate_a_relay(coturn: Coturn, settings: Settings) -> None:
    now = datetime.now(UTC)
    servers = ice_servers(settings, "participant-1", now)
    assert servers == [{"urls": [coturn.url], "username": servers[0]["username"],
                        "credential": servers[0]["credential"]}]
    username = servers[0]["username"]
    assert username == f"{int(now.timestamp()) + settings.turn_ttl_s}:participant-1"

    # The join answer's entry as the browser and the headless participant take it.
    pc = RTCPeerConnection(RTCConfiguration(
        iceServers=[RTCIceServer(**entry) for entry in servers],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    candidates = re.findall(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\S+)", sdp, re.M)
    assert candidates, sdp
    for host, port, kind in candidates:
        assert (host, kind) == ("127.0.0.1", "relay"), sdp
        assert int(port) in coturn.relay_ports, (port, coturn.relay_ports)

    # coturn's own word: an allocation for exactly that username.
    sessions = coturn.sessions_of(username)
    assert len(sessions) == 1, coturn.log_text()[-3000:]
    assert any("ALLOCATE processed, success" in line for line in coturn.lines_of(sessions[0]))

    # And straight through aioice, as the ICE agent does it.
    relays = await relay_candidates(coturn, username, servers[0]["credential"])
    assert len(relays) == 1 and relays[0].port in coturn.relay_ports


# ---- 2. wrong credentials are refused ---------------------------------------


def _wrong_secret(secret: str, now: int) -> tuple[str, str]:
    return turn_credentials(secret + "x", "p-wrong-secret", now + 3600)


def _expired(secret: str, now: int) -> tuple[str, str]:
    return turn_credentials(secret, "p-expired", now - 60)


def _altered_username(secret: str, now: int) -> tuple[str, str]:
    _, password = turn_credentials(secret, "p-someone", now + 3600)
    return f"{now + 3600}:p-someone-else", password


@pytest.mark.parametrize("make", [_wrong_secret, _expired, _altered_username],
                         ids=["wrong-secret", "expired", "altered-username"])
async def test_wrong_credentials_are_refused(
    coturn: Coturn, make: Callable[[str, int], tuple[str, str]],
) -> None:
    now = int(time.time())
    # The control: the same path with good credentials allocates.
    good = turn_credentials(coturn.secret, "p-good", now + 3600)
    assert (await allocate(coturn, *good))[1] in coturn.relay_ports

    username, password = make(coturn.secret, now)
    with pytest.raises(stun.TransactionFailed) as refused:
        await allocate(coturn, username, password)
    assert refused.value.response.error_code == 401
    assert await relay_candidates(coturn, username, password) == []
    assert coturn.sessions_of(username) == []  # coturn made no allocation for it
    assert len(coturn.sessions_of(good[0])) == 1


# ---- 3. a whole visit, relay only -------------------------------------------


@dataclass
class _RelayOnly:
    """Stands in for RTCPeerConnection inside the participant module: relay-only, recorded.

    Each connection is recorded with the TURN username its participant got in
    the join answer (`<expiry>:<participant id>`).
    """

    made: list[tuple[str, RTCPeerConnection]]

    def __call__(self, configuration: RTCConfiguration | None = None) -> RTCPeerConnection:
        assert configuration is not None and configuration.iceServers, "no ICE servers"
        usernames = [s.username for s in configuration.iceServers if s.username]
        assert len(usernames) == 1, configuration
        pc = RTCPeerConnection(replace(configuration,
                                       iceTransportPolicy=RTCIceTransportPolicy.RELAY))
        self.made.append((usernames[0], pc))
        return pc

    def of(self, participant_id: str) -> list[tuple[str, RTCPeerConnection]]:
        return [(u, pc) for u, pc in self.made if u.endswith(f":{participant_id}")]


def _usage(lines: list[str], kind: str) -> dict[str, int]:
    """coturn's `usage` (client side) or `peer usage` (relay side) counters of one session."""
    for line in lines:
        found = re.search(rf": {kind}: realm=<test>, username=<[^>]*>, (.*)$", line)
        if found:
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found.group(1))}
    return {}


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _transport_bytes(pc: RTCPeerConnection) -> tuple[int, int]:
    """(sent, received) on the connection's one bundled transport, from getStats."""
    stats = [s for s in (await pc.getStats()).values() if s.type == "transport"]
    assert stats, "no transport stats"
    return stats[0].bytesSent, stats[0].bytesReceived


async def test_whole_visit_with_both_participants_relay_only(
    server: Running, coturn: Coturn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The participant has no ICE transport policy option (it builds
    # RTCConfiguration(iceServers=...) itself), so its RTCPeerConnection is
    # swapped for one with aiortc's relay-only policy: aioice then gathers no
    # host (nor server-reflexive) candidate at all, only the TURN relay.
    relay_only = _RelayOnly([])
    monkeypatch.setattr(participant_module, "RTCPeerConnection", relay_only)

    clinician, _ = await server.clinician()
    created = await server.visit(clinician)
    ids = {p.role: p.id for p in created.participants}
    dr = Participant(created.link_for_role("clinician"),
                     options=ParticipantOptions(admit_all=True))
    patient = Participant(created.link_for_role("patient"), dob=DOB)
    started = time.monotonic()
    tasks = [asyncio.create_task(dr.run()), asyncio.create_task(patient.run())]

    def frames(p: Participant, peer: str) -> tuple[int, int]:
        result = p.snapshot().peers.get(peer)
        return (result.video_frames, result.audio_frames) if result else (0, 0)

    def media_both_ways() -> bool:
        (dv, da), (pv, pa) = frames(dr, ids["patient"]), frames(patient, ids["clinician"])
        return min(dv, pv) >= 60 and min(da, pa) > 0

    usernames: dict[str, str] = {}
    relay_port: dict[str, int] = {}
    nominated: dict[str, tuple[int, int]] = {}
    moved: dict[str, tuple[int, int]] = {}
    try:
        await _until(media_both_ways, "video and audio both ways over the relay", 30)
        connected_after = time.monotonic() - started

        # Each participant's live peer connection (to the other), made with the
        # TURN credentials of that participant's own join answer.
        for role in ("clinician", "patient"):
            live = [(u, pc) for u, pc in relay_only.of(ids[role])
                    if pc.connectionState == "connected"]
            assert len(live) == 1, (role, [pc.connectionState for _, pc in relay_only.made])
            usernames[role], pc = live[0]
            ice = pc.getTransceivers()[0].sender.transport.transport
            local = ice.iceGatherer.getLocalCandidates()
            remote = ice.getRemoteCandidates()
            # Every candidate on both sides is a coturn relay address.
            assert len(local) == 1 and local[0].type == "relay", local
            assert local[0].ip == "127.0.0.1" and local[0].port in coturn.relay_ports
            assert remote and {c.type for c in remote} == {"relay"}, remote
            relay_port[role] = local[0].port
            # aiortc has no candidate-pair stats: aioice's own record of the nomination.
            pair = ice._connection._nominated[1]
            assert pair.local_candidate.type == pair.remote_candidate.type == "relay"
            nominated[role] = (pair.local_candidate.port, pair.remote_candidate.port)
            moved[role] = await _transport_bytes(pc)
        # Relay to relay: each side's nominated pair is (own relay, the other's relay).
        assert nominated["clinician"] == (relay_port["clinician"], relay_port["patient"])
        assert nominated["patient"] == (relay_port["patient"], relay_port["clinician"])
    finally:
        await dr.end_visit()
        results = await asyncio.gather(*tasks)
    assert [r.state for r in results] == ["ended", "ended"]

    kinds = [(e.participant_id, e.kind) for e in await server.services.timeline(created.visit)]
    for role in ("clinician", "patient"):
        assert (ids[role], "media_connected") in kinds

    # coturn's side of it, per participant: among the allocations made with that
    # participant's username, the one whose relay the other participant's relay
    # address was bound to as a channel (which installs the permission); once it
    # is released at the end, the bytes coturn carried for it.
    other = {"clinician": "patient", "patient": "clinician"}
    usage: dict[str, dict[str, int]] = {}
    peer_usage: dict[str, dict[str, int]] = {}
    allocations: dict[str, int] = {}
    for role in ("clinician", "patient"):
        sessions = coturn.sessions_of(usernames[role])
        allocations[role] = len(sessions)
        # The offerer (the patient, as the newcomer) gathers one relay per m-line
        # before BUNDLE is agreed (aiortc's balanced bundle policy), so it can
        # hold two allocations where the answerer holds one.
        assert sessions, (role, coturn.log_text()[-3000:])
        permission = f"peer 127.0.0.1:{relay_port[other[role]]} lifetime updated"
        used = [s for s in sessions if any(permission in line for line in coturn.lines_of(s))]
        assert len(used) == 1, (role, permission, coturn.log_text()[-3000:])
        session = used[0]
        await _until(lambda s=session: bool(_usage(coturn.lines_of(s), "peer usage")),
                     f"coturn's usage line for the {role}", 10)
        lines = coturn.lines_of(session)
        assert any("ALLOCATE processed, success" in line for line in lines), lines
        assert any("CHANNEL_BIND processed, success" in line for line in lines), lines
        usage[role] = _usage(lines, "usage")
        peer_usage[role] = _usage(lines, "peer usage")
        # Everything this peer's transport sent and received (DTLS, SRTP, ICE
        # checks), counted by aiortc mid-call, went through its coturn allocation.
        sent, received = moved[role]
        assert received > 20_000 and sent > 20_000, moved
        assert usage[role]["rb"] >= sent and usage[role]["sb"] >= received, (usage, moved)
        assert peer_usage[role]["rb"] > 20_000 and peer_usage[role]["sb"] > 20_000, peer_usage
    print(f"\nrelay-only visit: media both ways after {connected_after:.1f}s; "
          f"aiortc transport bytes (sent, received) {moved}; coturn usage {usage}, "
          f"peer usage {peer_usage}; allocations per participant {allocations}")
