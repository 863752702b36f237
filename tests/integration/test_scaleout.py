"""Two real server instances on one Redis and one PostgreSQL serve one visit together.

The patient's socket is on instance A, the clinician's on instance B: waiting room,
admission, chat and the offer/answer/ICE relay cross between them through Redis. The
fault test runs its own redis-server on a free port and stops and starts it mid-visit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from telehealth.app import HUB
from telehealth.config import Settings
from telehealth.signaling.broker import BrokerUnavailable, RedisBroker
from telehealth.signaling.room import Refused, Room

from conftest import Clock, Running, free_port, redis_instances
from wsclient import Peer, close_all, connect, join, open_socket

DOB = "1990-04-27"
SHARED_REDIS = "redis://127.0.0.1:6379/0"
SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}

pytestmark = pytest.mark.usefixtures("needs_redis")


@contextlib.asynccontextmanager
async def instances(
    settings: Settings, clock: Clock, pg_url: str, redis_url: str, n: int = 2,
) -> AsyncIterator[list[Running]]:
    """`redis_instances`, with this module's test sockets closed before they stop."""
    async with redis_instances(settings, clock, pg_url, redis_url, n) as running:
        try:
            yield running
        finally:
            await close_all()


def broker_of(server: Running) -> RedisBroker:
    broker = server.app[HUB].broker
    assert isinstance(broker, RedisBroker)
    return broker


async def waiting_ids(dr: Peer) -> list[str]:
    return [w["id"] for w in (await dr.next("waiting_room"))["waiting"]]


async def alive(peer: Peer, ping_id: int) -> None:
    assert await peer.pong(ping_id) == {"type": "pong", "id": ping_id}


async def test_patient_on_a_clinician_on_b_share_one_room(
    settings: Settings, clock: Clock, pg_url: str,
) -> None:
    async with instances(settings, clock, pg_url, SHARED_REDIS) as (a, b):
        assert broker_of(a).instance_id != broker_of(b).instance_id
        clinician, _ = await a.clinician()
        created = await a.visit(clinician)

        # The patient waits on A; the clinician, entering on B, finds them waiting.
        pat = await connect(a, created.link_for_role("patient"), dob=DOB)
        assert pat.welcome["state"] == "waiting"
        dr = await connect(b, created.link_for_role("clinician"))
        assert dr.welcome["state"] == "admitted"
        assert (await dr.next("admitted"))["participants"] == []
        assert await waiting_ids(dr) == [pat.participant_id]

        # Admission on B reaches the patient on A, and B hears the patient came in.
        await dr.send({"type": "admit", "participant_id": pat.participant_id})
        admitted = await pat.next("admitted")
        assert [x["id"] for x in admitted["participants"]] == [dr.participant_id]
        joined = await dr.next("participant_joined")
        assert joined["participant"]["id"] == pat.participant_id
        assert await waiting_ids(dr) == []

        # Chat and the WebRTC relay cross in both directions.
        await pat.send({"type": "chat", "text": "hello from A"})
        assert (await dr.next("chat"))["text"] == "hello from A"
        assert (await pat.next("chat"))["text"] == "hello from A"
        await pat.send({"type": "offer", "to": dr.participant_id, "sdp": SDP})
        assert await dr.next("offer") == {"type": "offer", "from": pat.participant_id,
                                          "sdp": SDP}
        await dr.send({"type": "answer", "to": pat.participant_id, "sdp": SDP + "a=x\r\n"})
        assert await pat.next("answer") == {"type": "answer", "from": dr.participant_id,
                                            "sdp": SDP + "a=x\r\n"}
        await pat.send({"type": "ice", "to": dr.participant_id, "candidate": CANDIDATE})
        assert await dr.next("ice") == {"type": "ice", "from": pat.participant_id,
                                        "candidate": CANDIDATE}
        await dr.send({"type": "ice", "to": pat.participant_id, "candidate": None})
        assert await pat.next("ice") == {"type": "ice", "from": dr.participant_id,
                                         "candidate": None}
        await pat.send({"type": "media_connected", "peer": dr.participant_id,
                        "audio": True, "video": True})

        # The patient's network drops on A; they come back through B within the grace.
        await pat.drop()
        assert (await dr.next("reconnecting"))["participant_id"] == pat.participant_id
        back = await connect(b, created.link_for_role("patient"), dob=DOB)
        assert back.welcome["resumed"] is True and back.welcome["state"] == "admitted"
        assert [x["id"] for x in (await back.next("admitted"))["participants"]] == [
            dr.participant_id]
        assert (await dr.next("rejoined"))["participant_id"] == pat.participant_id

        # ... and again on A, which replaces (closes) the socket on B.
        again = await connect(a, created.link_for_role("patient"), dob=DOB)
        assert again.welcome["resumed"] is True
        assert await back.closed() == 4409
        await dr.send({"type": "chat", "text": "still there?"})
        assert (await again.next("chat"))["text"] == "still there?"

        # A second guest on A: the clinician on B turns them away.
        _, link = await a.services.add_participant(created.visit, role="interpreter",
                                                   name="Ana Lima")
        interp = await connect(a, link)
        assert await waiting_ids(dr) == [interp.participant_id]
        await dr.send({"type": "deny", "participant_id": interp.participant_id})
        assert (await interp.next("denied"))["type"] == "denied"
        assert await interp.closed() == 4403

        # The clinician on B ends the visit: the patient on A is told and closed.
        await dr.send({"type": "end"})
        assert (await again.next("ended"))["reason"] == "ended"
        assert await again.closed() == 4410
        assert await dr.closed() == 4410

        visit = await a.services.store.visit(created.visit.id)
        assert visit is not None and visit.status == "ended"
        for server in (a, b):
            await server.services.hub.flush_events()  # type: ignore[union-attr]
        kinds = [(e.participant_id, e.kind) for e in await a.services.timeline(created.visit)]
        for expected in [(pat.participant_id, "waiting"), (pat.participant_id, "admitted"),
                         (pat.participant_id, "media_connected"),
                         (pat.participant_id, "reconnecting"),
                         (pat.participant_id, "rejoined"), (interp.participant_id, "denied"),
                         (dr.participant_id, "ended")]:
            assert expected in kinds, expected
        # An ended visit's links are refused on every instance.
        for server in (a, b):
            status, body = await server.post(
                "/api/v1/join", {"token": created.link_for_role("patient").rsplit("/v/")[1],
                                 "dob": DOB})
            assert status != 200, body


async def test_dashboard_admit_on_one_instance_reaches_a_guest_on_another(
    settings: Settings, clock: Clock, pg_url: str,
) -> None:
    async with instances(settings, clock, pg_url, SHARED_REDIS) as (a, b):
        clinician, token = await a.clinician()
        created = await a.visit(clinician)
        pat = await connect(a, created.link_for_role("patient"), dob=DOB)
        # Admitted from B's HTTP API (the dashboard), with no clinician socket anywhere.
        status, body = await b.post(f"/api/v1/visits/{created.visit.id}/admit",
                                    {"participant_id": pat.participant_id}, token)
        assert status == 200, body
        assert (await pat.next("admitted"))["participants"] == []
        # Ending it from B's API closes the patient's socket on A.
        status, body = await b.post(f"/api/v1/visits/{created.visit.id}/end", {}, token)
        assert status == 200, body
        assert (await pat.next("ended"))["reason"] == "ended"
        assert await pat.closed() == 4410


# ---- the Redis broker on its own: concurrent updates, presence --------------------


@contextlib.asynccontextmanager
async def brokers(n: int, alive_ttl_s: float = 5.0) -> AsyncIterator[list[RedisBroker]]:
    prefix = f"th-test-{secrets.token_hex(6)}:"
    made = [RedisBroker(SHARED_REDIS, prefix, alive_ttl_s=alive_ttl_s) for _ in range(n)]
    for broker in made:
        await broker.start(lambda items: None)
    try:
        yield made
    finally:
        for broker in made:
            await broker.stop()
        client = aioredis.Redis.from_url(SHARED_REDIS, socket_timeout=1)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def new_room() -> Room:
    return Room("v1", max_participants=6)


async def test_concurrent_updates_from_two_instances_are_never_lost() -> None:
    now = datetime.now(UTC)
    async with brokers(2) as (x, y):
        async def guest(broker: RedisBroker, n: int) -> None:
            conn = broker.instance_id << 32 | n
            await broker.update("v1", lambda room: room.connect(
                conn, f"g{n}", "family_member", f"Guest {n}", now), new_room)

        await asyncio.gather(*(guest(x if n % 2 else y, n) for n in range(1, 41)))
        room = (await x.snapshot())["v1"]
        assert sorted(room.members) == sorted(f"g{n}" for n in range(1, 41))
        assert (await y.snapshot())["v1"].to_state() == room.to_state()

        # An operation that refuses changes nothing; one on a room that is not there
        # reports that.
        with pytest.raises(Refused):
            await y.update("v1", lambda room: room.admit_by("nobody", "c1", now))
        assert (await x.snapshot())["v1"].to_state() == room.to_state()
        assert await x.update("no-such-visit", lambda room: []) is None

        # Everyone leaves: the room is gone from Redis for every instance.
        for n in range(1, 41):
            conn = (x if n % 2 else y).instance_id << 32 | n
            await x.update("v1", lambda room, conn=conn: room.disconnect(conn, now))
            await y.update("v1", lambda room: room.expire(now + room.grace))
        assert await x.snapshot() == {} and await y.snapshot() == {}


async def test_a_member_on_an_instance_that_stopped_beating_is_gone() -> None:
    now = datetime.now(UTC)
    async with brokers(2, alive_ttl_s=1.0) as (x, y):
        on_y = y.instance_id << 32 | 1
        await y.update("v1", lambda room: room.connect(on_y, "p1", "patient", "Pat", now),
                       new_room)
        await x.snapshot()
        assert not x.gone(on_y, set())
        await y.stop()  # y is gone: no more heartbeats (its key is removed)
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while not x.gone(on_y, set()):
            assert loop.time() < end, "x never noticed y stopped"
            await asyncio.sleep(0.1)
            await x.snapshot()
        # x's own connections: gone exactly when x holds no socket for them.
        mine = x.instance_id << 32 | 7
        assert x.gone(mine, set()) and not x.gone(mine, {mine})


async def test_unreachable_redis_is_reported_as_unavailable_quickly() -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", "th-test:", timeout_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerUnavailable):
        await broker.update("v1", lambda room: [], new_room)
    with pytest.raises(BrokerUnavailable):
        await broker.snapshot()
    assert loop.time() - started < 3
    await broker.redis.aclose()
    await broker._sub_redis.aclose()


# ---- a Redis of the test's own, stopped and started mid-visit -----------------


class RedisProcess:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.workdir),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = aioredis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
            raise AssertionError("redis-server did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)
        self.proc = None


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = RedisProcess(free_port(), workdir)
    yield proc
    await proc.stop()


async def subscribed(redis_url: str, *brokers: RedisBroker, timeout: float = 10.0) -> None:
    """Wait until every instance listens on its channel again."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=1)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        channels = [b._channel(b.instance_id) for b in brokers]
        while loop.time() < end:
            with contextlib.suppress(Exception):
                counts = dict(await client.pubsub_numsub(*channels))
                if all(counts.get(c.encode(), 0) >= 1 for c in channels):
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("instances did not subscribe again")
    finally:
        await client.aclose()


async def test_redis_stopped_and_started_mid_visit(
    settings: Settings, clock: Clock, pg_url: str, own_redis: RedisProcess,
) -> None:
    await own_redis.start()
    async with instances(settings, clock, pg_url, own_redis.url) as (a, b):
        clinician, _ = await a.clinician()
        created = await a.visit(clinician)
        pat = await connect(a, created.link_for_role("patient"), dob=DOB)
        dr = await connect(b, created.link_for_role("clinician"))
        assert await waiting_ids(dr) == [pat.participant_id]
        await dr.send({"type": "admit", "participant_id": pat.participant_id})
        await pat.next("admitted")
        await dr.next("participant_joined")
        assert await waiting_ids(dr) == []
        await pat.send({"type": "chat", "text": "before"})
        assert (await dr.next("chat"))["text"] == "before"
        _, interp_link = await a.services.add_participant(
            created.visit, role="interpreter", name="Ana Lima")

        await own_redis.stop()

        # A new hello is told "unavailable" and closed with 4503, quickly, on either side.
        for server in (a, b):
            grant = await join(server, interp_link)  # the database still answers
            peer = await open_socket(server)
            started = asyncio.get_running_loop().time()
            await peer.hello(str(grant["ticket"]))
            err = await peer.next("error")
            assert (err["code"], err["ref"]) == ("unavailable", "hello")
            assert "temporarily unavailable" in err["message"]
            assert await peer.closed() == 4503
            assert asyncio.get_running_loop().time() - started < 5
        # Sockets already in the call stay open; a message that needs the room is
        # refused with the same clear error, and the socket still lives.
        await alive(pat, 1)
        await alive(dr, 2)
        await pat.send({"type": "chat", "text": "during"})
        err = await pat.next("error")
        assert (err["code"], err["ref"]) == ("unavailable", "chat")
        await alive(pat, 3)
        assert not pat.ws.closed and not dr.ws.closed

        # Redis is back, empty (it keeps nothing on disk): signaling recovers by itself.
        await own_redis.start()
        await subscribed(own_redis.url, broker_of(a), broker_of(b))
        interp = await connect(a, interp_link)
        assert interp.welcome["state"] == "waiting"
        assert interp.participant_id in await waiting_ids(dr)
        await dr.send({"type": "admit", "participant_id": interp.participant_id})
        # The room came back as it was: the patient and the clinician are still in it.
        inside = {x["id"] for x in (await interp.next("admitted"))["participants"]}
        assert inside == {pat.participant_id, dr.participant_id}
        assert (await pat.next("participant_joined"))["participant"]["id"] == (
            interp.participant_id)
        await pat.send({"type": "chat", "text": "after"})
        assert (await dr.next("chat"))["text"] == "after"
        assert (await interp.next("chat"))["text"] == "after"
        await pat.send({"type": "offer", "to": dr.participant_id, "sdp": SDP})
        assert (await dr.next("offer"))["from"] == pat.participant_id

        # Nothing is stuck: the visit ends for everyone, on both instances.
        await dr.send({"type": "end"})
        for peer in (pat, interp, dr):
            assert await peer.closed() == 4410
        visit = await a.services.store.visit(created.visit.id)
        assert visit is not None and visit.status == "ended"
        for server in (a, b):
            await server.services.hub.flush_events()  # type: ignore[union-attr]
        kinds = [(e.participant_id, e.kind) for e in await a.services.timeline(created.visit)]
        for expected in [(pat.participant_id, "waiting"), (pat.participant_id, "admitted"),
                         (interp.participant_id, "waiting"),
                         (interp.participant_id, "admitted"), (dr.participant_id, "ended")]:
            assert expected in kinds, expected


# ---- an instance killed mid-visit -----------------------------------------------


class Process:
    """A `telehealth serve` in a process of its own (so it can be killed outright)."""

    def __init__(self, url: str, http: aiohttp.ClientSession,
                 proc: asyncio.subprocess.Process) -> None:
        self.url = url
        self.http = http
        self.proc = proc

    async def post(self, path: str, body: object, token: str | None = None) -> tuple[int, object]:
        async with self.http.post(self.url + path, json=body) as resp:
            return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def serve_process(settings: Settings, pg_url: str, prefix: str,
                        data_dir: Path) -> AsyncIterator[Process]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TELEHEALTH_SECRET_KEY": settings.secret_key.value,
           "DATABASE_URL": pg_url, "REDIS_URL": SHARED_REDIS,
           "TELEHEALTH_REDIS_PREFIX": prefix, "TELEHEALTH_DATA_DIR": str(data_dir),
           "TELEHEALTH_PUBLIC_URL": url,
           "TELEHEALTH_HEARTBEAT_S": str(settings.heartbeat_s),
           "TELEHEALTH_RECONNECT_GRACE_S": str(settings.reconnect_grace_s)}
    exe = Path(sys.executable).with_name("telehealth")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                if proc.returncode is not None:
                    raise AssertionError("telehealth serve exited")
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("telehealth serve did not start")
            yield Process(url, http, proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_instance_killed_mid_visit_participant_resumes_on_the_other(
    settings: Settings, clock: Clock, pg_url: str, tmp_path: Path,
) -> None:
    async with instances(settings, clock, pg_url, SHARED_REDIS, n=1) as (b,):
        prefix = broker_of(b).prefix
        async with serve_process(settings, pg_url, prefix, tmp_path / "var-a") as a:
            clinician, _ = await b.clinician()
            created = await b.visit(clinician)
            link = created.link_for_role("patient")
            pat = await connect(a, link, dob=DOB)
            dr = await connect(b, created.link_for_role("clinician"))
            assert await waiting_ids(dr) == [pat.participant_id]
            await dr.send({"type": "admit", "participant_id": pat.participant_id})
            await pat.next("admitted")
            await dr.next("participant_joined")
            await pat.send({"type": "chat", "text": "from the doomed instance"})
            assert (await dr.next("chat"))["text"] == "from the doomed instance"

            a.proc.kill()  # SIGKILL: no goodbye, no disconnect written to Redis
            await a.proc.wait()
            # B notices A stopped beating and tells the clinician the patient is away.
            frame = await dr.next("reconnecting", timeout=15)
            assert frame["participant_id"] == pat.participant_id
            # The patient's client retries; the load balancer sends it to B: resumed.
            back = await connect(b, link, dob=DOB)
            assert back.welcome["resumed"] is True and back.welcome["state"] == "admitted"
            assert (await dr.next("rejoined"))["participant_id"] == pat.participant_id
            await back.send({"type": "offer", "to": dr.participant_id, "sdp": SDP})
            assert (await dr.next("offer"))["from"] == pat.participant_id
            await dr.send({"type": "end"})
            assert await back.closed() == 4410


async def test_login_failures_count_across_instances_and_survive_redis_outages(
    settings: Settings, clock: Clock, pg_url: str, own_redis: RedisProcess,
) -> None:
    await own_redis.start()
    async with instances(settings, clock, pg_url, own_redis.url) as (a, b):
        await a.clinician(email="dr.lee@example.org")
        wrong = {"email": "dr.lee@example.org", "password": "wrong password!"}
        right = {"email": "dr.lee@example.org", "password": "correct horse battery"}
        for server in (a, b) * 5:  # ten failures, half on each instance
            status, body = await server.post("/api/v1/session", wrong)
            assert (status, body["error"]["code"]) == (401, "bad_credentials")
        for server in (a, b):
            status, body = await server.post("/api/v1/session", right)
            assert (status, body["error"]["code"]) == (429, "throttled")
        # Without Redis, log-ins still work, throttled by each instance's own count: A
        # saw five failures, so five more there throttle it; B still lets the right one in.
        await own_redis.stop()
        for _ in range(5):
            status, body = await a.post("/api/v1/session", wrong)
            assert (status, body["error"]["code"]) == (401, "bad_credentials")
        status, body = await a.post("/api/v1/session", right)
        assert (status, body["error"]["code"]) == (429, "throttled")
        status, body = await b.post("/api/v1/session", right)
        assert status == 200, body


async def test_health_check_names_redis_when_it_is_down(
    settings: Settings, clock: Clock, pg_url: str, own_redis: RedisProcess,
) -> None:
    await own_redis.start()
    async with instances(settings, clock, pg_url, own_redis.url, n=1) as (a,):
        async with a.http.get(a.url + "/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"ok": True, "database": "ok", "broker": "ok"}
        await own_redis.stop()
        async with a.http.get(a.url + "/healthz") as resp:
            assert resp.status == 503
            assert await resp.json() == {"ok": False, "database": "ok", "broker": "down"}
        await own_redis.start()
        async with a.http.get(a.url + "/healthz") as resp:
            assert resp.status == 200
