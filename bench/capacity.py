"""Capacity benchmark: idle connected participants one server process holds.

    .venv/bin/python -m bench.capacity [--n 10000] [--hold 21] [--http-joins 60]
                                       [--tracemalloc]

Memory per connection = (RSS of the server process with N participants connected
- RSS before they connected) / N, for

* full: the service as `telehealth serve` runs it (SQLite in a fresh temp dir), in a
  child process. N real participants: ceil(N/6) visits of a clinician and 5 guests
  (patient, legal representative, interpreter, 2 family members). The rows are
  inserted in bulk through `Store.session()`. Tickets: the first `--http-joins` come
  from `POST /api/v1/join`; the rest are minted in this process as `Services.join`
  mints them, `services.signer.ticket(services.signer.read_link(token))`, skipping
  the identity check and its timeline rows. Every socket says hello; in every other
  visit the clinician admits all 5 guests (a full room of 6), in the others the guests
  stay in the waiting room (the clinician connected and watching it).
* bare: an aiohttp server in a child process holding N WebSockets with the same
  heartbeat and frame limit, each sent the same hello frame (and ignoring it).

Both are driven by the same client code from this process (pinned to CPU 0; the
server to CPU 1). Before "before" is read, one warm-up visit (6 sockets) is connected
to each server. After connecting, the sockets are held `--hold` seconds (longer than
the heartbeat, so that every socket has answered the server's pings) and the
server is asked how many sockets it still holds. Target: 10,000 participants at no
more than 4x the bare memory per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from bench.common import (
    CLIENT_CPU,
    Peer,
    Seat,
    ServerProc,
    background_load,
    bench_settings,
    bounded_gather,
    client_session,
    close_all,
    connect,
    exit_on_sigterm,
    hello,
    join,
    machine,
    pin_cpu,
    raise_nofile_limit,
    seed,
    start_server,
    temp_data_dir,
    verdict,
)
from telehealth.config import Settings

TARGET_N = 10_000
TARGET_RATIO = 4.0  # full / bare memory per connection, at most
ROOM = 6


@dataclass
class Outcome:
    name: str
    n: int
    rss_before_kib: int = 0
    rss_connected_kib: int = 0
    rss_held_kib: int = 0
    connect_s: float = 0.0
    connect_cpu: float = 0.0  # server CPU while connecting, share of one core
    sockets_connected: int = 0  # as the server counts them, after connecting
    sockets_held: int = 0  # after the hold
    rooms: int = 0
    failures: list[str] = field(default_factory=list)
    tracemalloc: str = ""
    profile: str = ""

    @property
    def per_conn_kib(self) -> float:
        return (self.rss_held_kib - self.rss_before_kib) / self.n

    @property
    def per_conn_connected_kib(self) -> float:
        return (self.rss_connected_kib - self.rss_before_kib) / self.n


def group_sizes(n: int) -> list[int]:
    full, rest = divmod(n, ROOM)
    return [ROOM] * full + ([rest] if rest else [])


async def fill_full(
    http: aiohttp.ClientSession, url: str, group: list[Seat], admit: bool, peers: list[Peer]
) -> None:
    """One visit: the clinician enters, the guests wait, the clinician admits them (or not)."""
    clinician = await connect(http, url)
    peers.append(clinician)
    await hello(clinician, group[0])
    await clinician.expect("welcome")
    guests: list[Peer] = []
    for seat in group[1:]:
        guest = await connect(http, url)
        peers.append(guest)
        guests.append(guest)
        await hello(guest, seat)
    for guest in guests:
        await guest.expect("welcome", where=lambda m: m["state"] == "waiting")
    if admit:
        for guest, seat in zip(guests, group[1:], strict=True):
            await clinician.send({"type": "admit", "participant_id": seat.participant_id})
            await guest.expect("admitted")
    for peer in (clinician, *guests):
        peer.idle()


async def fill_bare(
    http: aiohttp.ClientSession, url: str, group: list[Seat], admit: bool, peers: list[Peer]
) -> None:
    """The same sockets and hello frames; the bare server answers nothing."""
    for seat in group:
        peer = await connect(http, url)
        peers.append(peer)
        await hello(peer, seat)
        peer.idle()


async def read_rss(server: ServerProc, samples: int = 3) -> int:
    values = []
    for _ in range(samples):
        await asyncio.sleep(0.3)
        values.append(server.rss_kib())
    return int(statistics.median(values))


async def run_variant(
    name: str, server: ServerProc, groups: list[list[Seat]], args: argparse.Namespace
) -> Outcome:
    fill = fill_full if name == "full" else fill_bare
    warm, rest = groups[0], groups[1:]
    outcome = Outcome(name, sum(len(g) for g in rest))
    peers: list[Peer] = []
    async with client_session() as http:
        try:
            await asyncio.wait_for(fill(http, server.ws_url, warm, True, peers), 60.0)
            await asyncio.sleep(1.0)
            outcome.rss_before_kib = await read_rss(server)
            if args.tracemalloc:
                await server.acall("tm_snapshot", within_s=300.0)
            if args.profile and name == "full":
                await server.acall("profile_start")
            start, cpu0 = time.perf_counter(), server.cpu_seconds()
            jobs = [
                (lambda g=g, i=i: fill(http, server.ws_url, g, i % 2 == 0, peers))
                for i, g in enumerate(rest)
            ]
            _, failed = await bounded_gather(jobs, concurrency=args.concurrency,
                                             within_s=args.connect_timeout)
            outcome.connect_s = time.perf_counter() - start
            outcome.connect_cpu = (server.cpu_seconds() - cpu0) / outcome.connect_s
            if args.profile and name == "full":
                outcome.profile = await server.acall("profile_stop", "tottime", 40)
            outcome.failures = [repr(f)[:200] for f in failed]
            await asyncio.sleep(args.settle)
            outcome.rss_connected_kib = await read_rss(server)
            outcome.sockets_connected = (await server.acall("stats"))["sockets"]
            await asyncio.sleep(args.hold)
            stats = await server.acall("stats")
            outcome.sockets_held, outcome.rooms = stats["sockets"], stats["rooms"]
            outcome.rss_held_kib = await read_rss(server)
            if args.tracemalloc:
                outcome.tracemalloc = await server.acall("tm_diff", 25, within_s=300.0)
        finally:
            await close_all(peers)
    return outcome


async def main_async(args: argparse.Namespace) -> int:
    load = await background_load()
    sizes = group_sizes(args.n)
    results: list[Outcome] = []
    with temp_data_dir("bench-capacity-") as data_dir:
        settings = bench_settings(data_dir / "full")
        t0 = time.perf_counter()
        groups = await seed(settings, [ROOM, *sizes], bulk=True, mint=True)
        seed_s = time.perf_counter() - t0

        server = start_server("idle", bench_settings(data_dir / "bare"), pin=not args.no_pin,
                              tracemalloc_frames=6 if args.tracemalloc else 0)
        try:
            results.append(await run_variant("bare", server, groups, args))
        finally:
            server.stop()

        server = start_server("full", settings, pin=not args.no_pin,
                              tracemalloc_frames=6 if args.tracemalloc else 0)
        try:
            # The warm-up visit and the first seats get real tickets from the join API.
            async with client_session() as http:
                joined = 0
                for gi, group in enumerate(groups):
                    if joined >= max(ROOM, args.http_joins):
                        break
                    groups[gi] = [await join(http, server.base_url, s) for s in group]
                    joined += len(group)
            results.append(await run_variant("full", server, groups, args))
        finally:
            server.stop()
    bare, full = results
    print(report(bare, full, args, load, seed_s, joined))
    return 0


def report(bare: Outcome, full: Outcome, args: argparse.Namespace, load: str, seed_s: float,
           joined: int) -> str:
    ratio = full.per_conn_kib / bare.per_conn_kib if bare.per_conn_kib > 0 else float("inf")
    lines = [
        f"capacity benchmark, {datetime.now().date()}, {machine()}, {load}",
        f"N = {args.n} idle participants ({len(group_sizes(args.n))} visits of up to {ROOM}; "
        f"every other visit admitted, the rest in the waiting room), heartbeat "
        f"{args.heartbeat:g} s, held {args.hold:g} s; rows seeded in {seed_s:.1f} s; "
        f"{joined} tickets from POST /api/v1/join (incl. the warm-up visit), the rest minted",
    ]
    for o in (bare, full):
        lines.append(
            f"  {o.name:<5} RSS before {o.rss_before_kib / 1024:7.1f} MiB, connected "
            f"{o.rss_connected_kib / 1024:7.1f} MiB, after hold {o.rss_held_kib / 1024:7.1f} MiB"
            f"  -> {o.per_conn_kib:6.1f} KiB per connection "
            f"({o.per_conn_connected_kib:.1f} right after connecting)")
        lines.append(
            f"        connected in {o.connect_s:5.1f} s ({o.n / max(o.connect_s, 1e-9):,.0f}/s, "
            f"server CPU {o.connect_cpu:.0%}), "
            f"server holds {o.sockets_connected} sockets, {o.sockets_held} after the hold "
            f"(+6 warm-up), rooms {o.rooms}, failed visits {len(o.failures)}"
            + (f": {o.failures[:2]}" if o.failures else ""))
    complete = full.sockets_held == full.n + ROOM and not full.failures
    lines.append(f"  ratio full/bare {ratio:.2f}x   target <= {TARGET_RATIO:g}x at "
                 f"{TARGET_N:,} participants   "
                 f"{verdict(ratio <= TARGET_RATIO and complete and args.n >= TARGET_N)}"
                 + ("" if args.n >= TARGET_N else f" (only {args.n} participants)")
                 + ("" if complete else " (not all participants held)"))
    if full.profile:
        lines.append("\ncProfile of the full server while the participants connected "
                     "(event-loop thread only; by own time):")
        lines.append(full.profile)
    for o in (bare, full) if full.tracemalloc else ():
        lines.append(f"\ntracemalloc, {o.name} server, what grew while the participants "
                     "connected (RSS figures above include tracemalloc's own overhead):")
        lines.append(o.tracemalloc)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=TARGET_N, help="participants to connect")
    parser.add_argument("--hold", type=float, default=21.0,
                        help="seconds to hold them after connecting (> heartbeat)")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16, help="visits connecting at once")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--http-joins", type=int, default=60,
                        help="tickets from POST /api/v1/join (the rest are minted)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace the full server's allocations (slow; use a small --n)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the full server while the participants connect")
    parser.add_argument("--deadline", type=float, default=900.0,
                        help="give up after this many seconds in all")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the client to CPU 0 and the servers to CPU 1")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if not (1 <= args.n <= 14_000 and 0 <= args.hold <= 120 and 0 <= args.settle <= 30
            and 1 <= args.concurrency <= 200 and 1 <= args.connect_timeout <= 600):
        parser.error("out of range: n 1..14000, hold 0..120, settle 0..30, concurrency 1..200")
    args.heartbeat = Settings().heartbeat_s  # the benchmark keeps the default
    if not args.no_pin:
        pin_cpu(CLIENT_CPU)
    limit = raise_nofile_limit()
    if limit < args.n + 200:
        parser.error(f"RLIMIT_NOFILE is {limit}; need {args.n + 200} for --n {args.n}")
    return asyncio.run(asyncio.wait_for(main_async(args), args.deadline))


if __name__ == "__main__":
    sys.exit(main())
