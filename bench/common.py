"""Shared benchmark helpers: servers in child processes, seeded visits, client sockets.

    parent (load client, pinned to CPU 0)          child (server, pinned to CPU 1)
      seed(): clinician + visits via Services/Store   full:  build_app(settings) as `serve` runs it
      POST /api/v1/join -> tickets                     relay: bare aiohttp socket A -> socket B
      Peer: one WebSocket + its reader task            idle:  bare aiohttp holding sockets
      ServerProc.call(): control pipe (stats, cProfile, tracemalloc, stop)

Everything listens on and connects to 127.0.0.1 only. Every wait has a timeout and
every loop a count bound. Each run gets a fresh temporary data dir (SQLite file,
explicit secret key) that is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import multiprocessing as mp
import os
import platform
import pstats
import resource
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from telehealth.config import Secret, Settings

HOST = "127.0.0.1"
PATIENT_DOB = "1990-04-27"
CLIENT_CPU = 0
SERVER_CPU = 1
SERVER_MAX_LIFETIME_S = 900.0  # a server child never outlives this, whatever the parent does
# The hub's own limit (telehealth/signaling/hub.py): the bare servers take the same.
WS_MAX_MSG_SIZE = 1 << 20
GUEST_ROLES = ("patient", "legal_representative", "interpreter", "family_member",
               "family_member")

log = logging.getLogger("bench")


# ---- the machine and the process -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_nofile_limit(want: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: servers stop, temp dirs go."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def pin_cpu(cpu: int) -> bool:
    """Run this process on one CPU only (when the machine has it); whether it did."""
    # Not from the current affinity: a child inherits its parent's (pinned) set.
    if (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError, ValueError):
        return False
    return True


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    return (f"{os.cpu_count()} cores, Linux {platform.release()}, Python "
            f"{platform.python_version()}, aiohttp {aiohttp.__version__}")


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


async def background_load(seconds: float = 1.0) -> str:
    """How busy the machine is before we start (others may be running on it)."""
    busy0, total0 = _cpu_times()
    await asyncio.sleep(seconds)
    busy1, total1 = _cpu_times()
    share = (busy1 - busy0) / max(1, total1 - total0)
    return (f"background load {share:.0%} of all CPUs over {seconds:g} s before the run, "
            f"loadavg {os.getloadavg()[0]:.2f}")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@contextlib.contextmanager
def temp_data_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one benchmark server: loopback, a free port, an explicit secret key.

    The secret is explicit so that the parent (seeding, minting) and the server child
    sign with the same key.
    """
    port = free_port()
    return replace(
        Settings(host=HOST, port=port, data_dir=data_dir, public_url=f"http://{HOST}:{port}",
                 secret_key=Secret(secrets.token_urlsafe(40))),
        **overrides,
    )


# ---- seeding: rows through Services / Store, links, tickets ------------------


@dataclass(frozen=True, slots=True)
class Seat:
    """One participant to connect: who, in which visit, and how to get in."""

    visit_id: str
    participant_id: str
    role: str
    name: str
    token: str  # the link token (the last part of the link)
    ticket: str = ""  # the join ticket, once joined or minted

    @property
    def care_team(self) -> bool:
        return self.role in ("clinician", "co_clinician")

    def join_body(self) -> dict[str, str]:
        body = {"token": self.token}
        if self.role in ("patient", "legal_representative", "family_member"):
            body["dob"] = PATIENT_DOB
        if self.role == "legal_representative":
            body["name"] = self.name
        return body


def _token_of(link: str) -> str:
    return link.rsplit("/v/", 1)[1]


async def seed(
    settings: Settings, group_sizes: Sequence[int], *, bulk: bool, mint: bool
) -> list[list[Seat]]:
    """One clinician and one visit per group (clinician first, then guests).

    `bulk=False`: `Services.create_visit` and `Services.add_participant`, one transaction
    each (what the API does). `bulk=True`: the same rows built as `Store.create_visit`
    builds them, inserted through `Store.session()` a few hundred visits a transaction
    (thousands of single-row commits would take minutes on SQLite).
    `mint=True`: tickets minted as `Services.join` mints them,
    `services.signer.ticket(services.signer.read_link(token))`, without the HTTP round
    trip and the identity check.
    """
    from telehealth.app import build_services
    from telehealth.auth import hash_password
    from telehealth.db.engine import migrate
    from telehealth.db.store import new_id
    from telehealth.db.tables import Participant, Visit
    from telehealth.visits import Representative, VisitRequest

    svc = build_services(settings)
    groups: list[list[Seat]] = []
    try:
        await migrate(svc.store.engine)
        now = svc.clock()
        doctor = await svc.store.create_clinician(
            email=f"bench-{secrets.token_hex(4)}@example.org", name="Dana Rivera",
            credentials="LCSW", password_hash=hash_password("benchmark password"), now=now)
        pairs: list[tuple[Visit, list[Participant]]] = []
        if not bulk:
            for i, size in enumerate(group_sizes):
                created = await svc.create_visit(VisitRequest(
                    patient_name=f"Alex Morgan {i}", patient_dob=date.fromisoformat(PATIENT_DOB),
                    scheduled_start=now,
                    representative=Representative("Sam Morgan", "parent", "parent of a minor"),
                ), doctor)
                people = list(created.participants[:size])
                for role in GUEST_ROLES[1:size - 1]:
                    person, _ = await svc.add_participant(
                        created.visit, role=role, name=f"{role.replace('_', ' ').title()} {i}")
                    people.append(person)
                pairs.append((created.visit, people))
        else:
            chunk = 300
            for start in range(0, len(group_sizes), chunk):
                visits: list[Visit] = []
                people_rows: list[Participant] = []
                for i in range(start, min(start + chunk, len(group_sizes))):
                    visit = Visit(
                        id=new_id(), clinician_id=doctor.id, patient_name=f"Alex Morgan {i}",
                        patient_dob=date.fromisoformat(PATIENT_DOB), patient_contact="",
                        representative_name=f"Sam Morgan {i}",
                        representative_relationship="parent",
                        representative_authority="parent of a minor",
                        scheduled_start=now, visit_type="psychotherapy", status="scheduled",
                        created_at=now, ended_at=None)
                    people = [Participant(
                        id=new_id(), visit_id=visit.id, role="clinician", name=doctor.name,
                        clinician_id=doctor.id, created_at=now, failed_checks=0)]
                    for role in GUEST_ROLES[:group_sizes[i] - 1]:
                        name = {"patient": visit.patient_name,
                                "legal_representative": visit.representative_name or ""
                                }.get(role, f"{role.replace('_', ' ').title()} {i}")
                        people.append(Participant(
                            id=new_id(), visit_id=visit.id, role=role, name=name,
                            clinician_id=None, created_at=now, failed_checks=0))
                    visits.append(visit)
                    people_rows += people
                    pairs.append((visit, people))
                async with svc.store.session() as s:
                    s.add_all(visits)
                    await s.flush()
                    s.add_all(people_rows)
                    await s.commit()
        for visit, people in pairs:
            group = []
            for person in people:
                token = _token_of(svc.link_for(visit, person))
                ticket = svc.signer.ticket(svc.signer.read_link(token)) if mint else ""
                group.append(Seat(visit.id, person.id, person.role, person.name, token, ticket))
            groups.append(group)
    finally:
        await svc.store.engine.dispose()
    return groups


async def join(http: aiohttp.ClientSession, base_url: str, seat: Seat) -> Seat:
    """The seat with a ticket from the real join API (`POST /api/v1/join`)."""
    async with http.post(f"{base_url}/api/v1/join", json=seat.join_body(),
                         timeout=aiohttp.ClientTimeout(total=30)) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"join failed for a {seat.role}: {resp.status} {body}")
    if body["participant"]["id"] != seat.participant_id:
        raise RuntimeError("join answered for another participant")
    return replace(seat, ticket=str(body["ticket"]))


# ---- client sockets ----------------------------------------------------------


def client_session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False))


class Peer:
    """One client WebSocket and the task reading it.

    The reader keeps the socket answering the server's pings (aiohttp autopong while
    reading). Frames go to `on_frame` when set (raw text, for the measurements), else
    are parsed into a queue for `expect` while `keep` is on, else are dropped.
    `error` frames are always kept in `errors`.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: list[dict[str, Any]] = []
        self.received = 0
        self.keep = True
        self.on_frame: Callable[[str], None] | None = None
        self.closed_with: int | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for msg in self.ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                self.received += 1
                if self.on_frame is not None:
                    self.on_frame(msg.data)
                    continue
                if not (self.keep or '"error"' in msg.data):
                    continue
                obj = json.loads(msg.data)
                if obj.get("type") == "error":
                    self.errors.append(obj)
                if self.keep:
                    self.frames.put_nowait(obj)
        self.closed_with = self.ws.close_code

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(obj, separators=(",", ":")))

    async def expect(
        self, kind: str, *, within_s: float = 20.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The next frame of type `kind` (matching `where`); earlier ones are skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for _ in range(10_000):
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                obj = await asyncio.wait_for(self.frames.get(), left)
            except TimeoutError:
                break
            if obj.get("type") == kind and (where is None or where(obj)):
                return obj
        raise TimeoutError(f"no '{kind}' frame within {within_s}s (errors: {self.errors[-3:]},"
                           f" close code {self.closed_with})")

    def idle(self) -> None:
        """From now on only count frames (and keep errors)."""
        self.keep = False
        while not self.frames.empty():
            self.frames.get_nowait()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5.0)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


async def connect(http: aiohttp.ClientSession, url: str, *, within_s: float = 20.0) -> Peer:
    ws = await asyncio.wait_for(
        http.ws_connect(url, autoping=True, max_msg_size=WS_MAX_MSG_SIZE,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)),
        within_s)
    return Peer(ws)


async def hello(peer: Peer, seat: Seat) -> None:
    await peer.send({"type": "hello", "v": 1, "ticket": seat.ticket})


async def bounded_gather(
    jobs: Sequence[Callable[[], Awaitable[Any]]], *, concurrency: int, within_s: float
) -> tuple[list[Any], list[BaseException]]:
    """Run the jobs, at most `concurrency` at once, all within `within_s` seconds."""
    gate = asyncio.Semaphore(concurrency)
    results: list[Any] = []
    failures: list[BaseException] = []

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            try:
                results.append(await job())
            except Exception as exc:  # a failed job is counted, the run goes on
                failures.append(exc)

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    _, pending = await asyncio.wait(tasks, timeout=within_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10.0)
        failures += [TimeoutError("job did not finish in time")] * len(pending)
    return results, failures


async def close_all(peers: Sequence[Peer], *, concurrency: int = 200) -> None:
    await bounded_gather([p.close for p in peers], concurrency=concurrency, within_s=120.0)


# ---- the bare aiohttp servers (baselines) ---------------------------------------


SOCKETS = web.AppKey("sockets", set)


def bare_relay_app(settings: Settings) -> web.Application:
    """No auth, no validation: whatever arrives on socket A is sent on socket B (pairs)."""
    waiting: list[tuple[web.WebSocketResponse, asyncio.Future[web.WebSocketResponse]]] = []
    app = web.Application()
    app[SOCKETS] = set()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s, max_msg_size=WS_MAX_MSG_SIZE)
        await ws.prepare(request)
        request.app[SOCKETS].add(ws)
        try:
            if waiting:
                first, paired = waiting.pop()
                paired.set_result(ws)
                peer = first
            else:
                future = asyncio.get_running_loop().create_future()
                waiting.append((ws, future))
                peer = await asyncio.wait_for(future, 120.0)
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await peer.send_str(msg.data)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            request.app[SOCKETS].discard(ws)
        return ws

    app.router.add_get("/ws", handle)
    return app


def bare_idle_app(settings: Settings) -> web.Application:
    """Accepts WebSockets and holds them (same heartbeat as the service); drops frames."""
    app = web.Application()
    app[SOCKETS] = set()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s, max_msg_size=WS_MAX_MSG_SIZE)
        await ws.prepare(request)
        request.app[SOCKETS].add(ws)
        try:
            async for _msg in ws:
                pass
        finally:
            request.app[SOCKETS].discard(ws)
        return ws

    app.router.add_get("/ws", handle)
    return app


# ---- a server in a child process -------------------------------------------------


@dataclass
class ServerProc:
    """A server (`full`, `relay` or `idle`) running in a spawned child process."""

    kind: str
    settings: Settings
    proc: Any  # multiprocessing.process.BaseProcess (spawn context)
    pipe: Pipe
    pid: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.settings.port}/ws"

    def call(self, *command: Any, timeout: float = 60.0) -> Any:
        self.pipe.send(command)
        if not self.pipe.poll(timeout):
            raise TimeoutError(f"server did not answer {command[0]!r} within {timeout}s")
        reply = self.pipe.recv()
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"server child: {reply['error']}")
        return reply

    async def acall(self, *command: Any, within_s: float = 60.0) -> Any:
        return await asyncio.to_thread(self.call, *command, timeout=within_s)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(Exception):
            self.call("stop", timeout=timeout)
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()  # this very child, by its own handle
            self.proc.join(10.0)
        self.pipe.close()


def start_server(
    kind: str, settings: Settings, *, tracemalloc_frames: int = 0, pin: bool = True,
    timeout: float = 60.0,
) -> ServerProc:
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_server_main, name=f"bench-{kind}-server", daemon=True,
                       args=(kind, settings, child_end, tracemalloc_frames, pin))
    proc.start()
    child_end.close()
    if not parent_end.poll(timeout):
        proc.terminate()
        raise TimeoutError(f"the {kind} server did not start within {timeout}s")
    try:
        ready = parent_end.recv()
    except EOFError:
        ready = {"error": f"exited with code {proc.exitcode}"}
    if "error" in ready:
        proc.join(10.0)
        raise RuntimeError(f"the {kind} server did not start: {ready['error']}")
    return ServerProc(kind, settings, proc, parent_end, int(ready["pid"]))


def _server_main(
    kind: str, settings: Settings, pipe: Pipe, tracemalloc_frames: int, pin: bool
) -> None:
    if pin:
        pin_cpu(SERVER_CPU)
    raise_nofile_limit()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="server %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(kind, settings, pipe, tracemalloc_frames))
    except Exception as exc:
        with contextlib.suppress(Exception):
            pipe.send({"error": repr(exc)})
        raise


async def _serve(kind: str, settings: Settings, pipe: Pipe, tracemalloc_frames: int) -> None:
    from telehealth.app import HUB, build_app
    from web.security import RedactingAccessLogger

    if kind == "full":
        app = build_app(settings)
    elif kind == "relay":
        app = bare_relay_app(settings)
    elif kind == "idle":
        app = bare_idle_app(settings)
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    # As `telehealth serve` runs it (cli.cmd_serve), logging at WARNING instead of INFO.
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger,
                           access_log=logging.getLogger("telehealth.access"))
    await runner.setup()
    site = web.TCPSite(runner, HOST, settings.port, backlog=1024)
    await site.start()
    if tracemalloc_frames:  # after the imports: tracing those would take minutes
        tracemalloc.start(tracemalloc_frames)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    profiler: list[cProfile.Profile] = []
    snapshots: list[tracemalloc.Snapshot] = []

    def stats() -> dict[str, int]:
        if kind == "full":
            hub = app[HUB]
            return {"sockets": len(hub.conns), "rooms": len(hub.rooms)}
        return {"sockets": len(app[SOCKETS]), "rooms": 0}

    def on_command() -> None:
        try:
            command = pipe.recv()
        except EOFError:  # the parent is gone
            stopping.set()
            return
        try:
            name = command[0]
            reply: Any = "ok"
            if name == "stop":
                stopping.set()
            elif name == "stats":
                reply = stats()
            elif name == "gc":
                reply = gc.collect()
            elif name == "profile_start":
                profiler[:] = [cProfile.Profile()]
                profiler[0].enable()
            elif name == "profile_stop":
                profiler[0].disable()
                out = io.StringIO()
                ps = pstats.Stats(profiler[0], stream=out)
                ps.sort_stats(command[1] if len(command) > 1 else "tottime")
                ps.print_stats(command[2] if len(command) > 2 else 25)
                reply = out.getvalue()
            elif name == "tm_snapshot":
                snapshots[:] = [tracemalloc.take_snapshot()]
            elif name == "tm_diff":
                reply = _tracemalloc_report(snapshots[0], tracemalloc.take_snapshot(),
                                            command[1] if len(command) > 1 else 25)
            else:
                reply = {"error": f"unknown command {name!r}"}
        except Exception as exc:
            reply = {"error": repr(exc)}
        pipe.send(reply)

    loop.add_reader(pipe.fileno(), on_command)
    pipe.send({"ready": True, "pid": os.getpid()})
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SERVER_MAX_LIFETIME_S)
    finally:
        loop.remove_reader(pipe.fileno())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 30.0)


def _tracemalloc_report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
                        top: int) -> str:
    """Where the memory grown between two snapshots was allocated."""
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(keep), after.filter_traces(keep)
    lines: list[str] = []
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    lines.append(f"grown by {total / 1024:.0f} KiB (traced Python allocations)")
    lines.append("-- by file --")
    for stat in after.compare_to(before, "filename")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size_diff / 1024:10.0f} KiB {stat.count_diff:+9d} blocks  "
                     f"{_short(frame.filename)}")
    lines.append("-- by line --")
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size_diff / 1024:10.0f} KiB {stat.count_diff:+9d} blocks  "
                     f"{_short(frame.filename)}:{frame.lineno}")
    lines.append("-- by first frame in telehealth/ or web/ (callers of the allocations) --")
    owners: dict[str, list[int]] = {}
    for stat in after.compare_to(before, "traceback"):
        ours = next((f for f in stat.traceback
                     if "/telehealth/" in f.filename or "/web/" in f.filename
                     or "/bench/" in f.filename), None)
        key = f"{_short(ours.filename)}:{ours.lineno}" if ours else "(no telehealth frame)"
        acc = owners.setdefault(key, [0, 0])
        acc[0] += stat.size_diff
        acc[1] += stat.count_diff
    for key, (size, count) in sorted(owners.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{size / 1024:10.0f} KiB {count:+9d} blocks  {key}")
    return "\n".join(lines)


def _short(path: str) -> str:
    for marker in ("/site-packages/", str(Path(__file__).parent.parent) + "/",
                   os.path.dirname(os.__file__) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path

