"""Scale-out signaling benchmark: relay through two instances on one Redis, against one.

    .venv/bin/python -m bench.scaleout [--messages 5000] [--window 100] [--repeats 5]
                                       [--rate 200] [--seconds 1.5] [--chunks 12]
                                       [--redis redis://127.0.0.1:6379/0] [--profile] [--no-pin]
    (also: .venv/bin/python -m bench.signaling --cross-instance [the same options])

Three servers, each the service as `telehealth serve` runs it (`build_app`), each in a
child process of its own (pinned to CPU 1; the load client, this process, to CPU 0):

* instances A and B: `REDIS_URL` set (the Redis broker), one Redis key prefix made
  for this run (its keys are deleted afterwards), one records store: a throwaway
  PostgreSQL database (created for the run, dropped after; the admin DSN is
  `TELEHEALTH_BENCH_PG` or `TELEHEALTH_TEST_PG`, default
  postgresql://postgres@127.0.0.1:5432/test, as the tests use). If PostgreSQL cannot
  be reached, both use one shared SQLite file instead, and the output says so.
  Same secret key, separate data dirs.
* local: no Redis (the in-process LocalBroker), its own SQLite file: for context.

Three clinician -> patient pairs, each in a visit of its own, set up as in
`bench.signaling` (join API, hello, admit), the clinician sending `ice` frames to the
patient with the send time in the candidate:

* same-instance: clinician and patient both on A (Redis broker: A reads the room from
  Redis for every frame, then sends on its own socket);
* cross-instance: clinician on A, patient on B (A reads the room, publishes the frame
  on B's channel; B sends it on the patient's socket);
* local: both on the LocalBroker server.

All three servers run at once and the runs rotate between the pairs, so that a change
in the machine's load hits all alike. Throughput: `--messages` frames pipelined with
at most `--window` in flight, `--repeats` runs each, median. Latency: `--rate` frames
a second, `--chunks` runs of `--seconds` each, send to receive; the verdict is on the
median of the runs' p99 (robust to a burst that hits one run), the p99 over all frames
is printed next to it. The rate, 200/s, is about a fifth of what the cross-instance
path carries on the 2-core machine (bench.signaling's 2,000/s is about a tenth of one
instance's LocalBroker relay): it measures latency, not queueing (at 2,000/s the
Redis paths are past their capacity here and the latency grows with the length of
the run). Target: cross-instance p99 <= 3x the same-instance p99. The per-connection
rate limit is raised as in `bench.signaling`. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import (
    CLIENT_CPU,
    HOST,
    Peer,
    ServerProc,
    background_load,
    bench_settings,
    client_session,
    exit_on_sigterm,
    free_port,
    machine,
    percentile,
    pin_cpu,
    start_server,
    temp_data_dir,
    verdict,
)
from bench.signaling import Pair, Result, full_pair, latency, throughput

P99_TARGET = 3.0  # cross-instance / same-instance, at most
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
PG_ADMIN_DSN = (os.environ.get("TELEHEALTH_BENCH_PG") or os.environ.get("TELEHEALTH_TEST_PG")
                or "postgresql://postgres@127.0.0.1:5432/test")
RATE_LIFTED = {"rate_burst": 10**9, "rate_per_s": 1e9}


# ---- the shared stores: a throwaway PostgreSQL database, a Redis key prefix -------


def _where(dsn: str) -> str:
    """host:port of a DSN, without user or password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


@contextlib.asynccontextmanager
async def records_store(data_dir: Path) -> AsyncIterator[tuple[str, str]]:
    """(database URL for both instances, what it is): a PostgreSQL database of its own,
    dropped afterwards; a shared SQLite file if PostgreSQL cannot be reached."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"th_bench_{secrets.token_hex(6)}"
    failure = ""
    admin: Any = None
    try:
        admin = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_DSN, timeout=5.0), 10.0)
        await admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # not reachable, no rights: fall back, and say so
        failure = f"{type(exc).__name__}: {str(exc)[:120]}"
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
    if failure:
        path = data_dir / "shared.db"
        yield (f"sqlite+aiosqlite:///{path}",
               f"SHARED SQLITE FILE (PostgreSQL at {_where(PG_ADMIN_DSN)} not usable: "
               f"{failure}); instances A and B both use {path.name}")
        return
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield (f"{base}/{name}",
               f"PostgreSQL at {_where(PG_ADMIN_DSN)}, throwaway database {name} "
               "(dropped after the run)")
    finally:
        admin = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_DSN, timeout=5.0), 10.0)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def redis_prefix(url: str) -> AsyncIterator[tuple[str, Any]]:
    """A key prefix for this run and a client (for INFO); the prefix's keys go after."""
    from redis.asyncio import Redis

    client: Any = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0,
                                 decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise SystemExit(f"bench.scaleout needs Redis at {url}: {type(exc).__name__}: "
                         f"{exc}") from None
    prefix = f"th-bench-{secrets.token_hex(6)}:"
    try:
        yield prefix, client
    finally:
        with contextlib.suppress(Exception):
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        await client.aclose()


async def redis_cpu_seconds(client: Any) -> float:
    """CPU time the whole redis-server has used (anyone else's use of it included)."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# ---- the variants ---------------------------------------------------------------


@dataclass
class Variant:
    result: Result
    servers: list[ServerProc]  # whose CPU counts for this pair
    uses_redis: bool
    pair: Pair | None = None
    peers: list[Peer] = field(default_factory=list)
    redis_us_per_msg: list[float] = field(default_factory=list)

    @property
    def link(self) -> Pair:
        assert self.pair is not None, "set up first"
        return self.pair

    def cpu(self) -> float:
        return sum(s.cpu_seconds() for s in self.servers)


async def measure_throughput(v: Variant, args: argparse.Namespace, redis: Any) -> None:
    red0 = await redis_cpu_seconds(redis) if v.uses_redis else 0.0
    cpu0, own0, wall0 = v.cpu(), time.process_time(), time.perf_counter()
    v.result.throughput.append(await throughput(v.link, args.messages, args.window, 120.0))
    wall = time.perf_counter() - wall0
    used = v.cpu() - cpu0
    v.result.server_cpu.append(used / wall)
    v.result.client_cpu.append((time.process_time() - own0) / wall)
    v.result.server_us_per_msg.append(used / args.messages * 1e6)
    if v.uses_redis:
        v.redis_us_per_msg.append((await redis_cpu_seconds(redis) - red0)
                                  / args.messages * 1e6)


async def measure_latency(v: Variant, args: argparse.Namespace) -> None:
    lat, lost = await latency(v.link, args.rate, args.seconds, args.seconds + 30.0)
    v.result.latencies_ms += lat
    if lat:
        v.result.chunk_p99s.append(percentile(lat, 99))
    v.result.lost += lost


def rotations(variants: list[Variant], i: int) -> list[Variant]:
    """Run i's order: each variant goes first, second and last equally often."""
    k = i % len(variants)
    return variants[k:] + variants[:k]


@dataclass
class Outcome:
    local: Variant
    same: Variant
    cross: Variant
    store: str
    redis_version: str
    profiles: list[tuple[str, str]]


async def run(args: argparse.Namespace) -> Outcome:
    pin = not args.no_pin
    with temp_data_dir("bench-scaleout-") as data_dir:
        async with redis_prefix(args.redis) as (prefix, redis), \
                records_store(data_dir) as (db_url, store):
            redis_version = str((await redis.info("server"))["redis_version"])
            a_settings = bench_settings(data_dir / "a", database_url=db_url,
                                        redis_url=args.redis, redis_prefix=prefix,
                                        **RATE_LIFTED)
            port_b = free_port()
            b_settings = replace(a_settings, port=port_b, data_dir=data_dir / "b",
                                 public_url=f"http://{HOST}:{port_b}")
            servers: list[ServerProc] = []
            profiles: list[tuple[str, str]] = []
            try:
                # One after the other: both migrate the shared database at start.
                for settings in (a_settings, b_settings,
                                 bench_settings(data_dir / "local", **RATE_LIFTED)):
                    servers.append(await asyncio.to_thread(
                        start_server, "full", settings, pin=pin))
                a, b, local_server = servers
                local = Variant(Result("local"), [local_server], False)
                same = Variant(Result("same-inst"), [a], True)
                cross = Variant(Result("cross-inst"), [a, b], True)
                variants = [local, same, cross]
                async with client_session() as http:
                    local.pair, local.peers = await asyncio.wait_for(
                        full_pair(local_server, http), 60)
                    same.pair, same.peers = await asyncio.wait_for(full_pair(a, http), 60)
                    cross.pair, cross.peers = await asyncio.wait_for(
                        full_pair(a, http, b), 60)
                    for v in variants:  # warm up
                        await throughput(v.link, min(2000, args.messages), args.window, 60.0)
                        await latency(v.link, args.rate, 0.5, 30.0)
                    if args.profile:  # an extra cross-instance run; it does not count
                        for server in (a, b):
                            await server.acall("profile_start")
                        await throughput(cross.link, args.messages, args.window, 120.0)
                        for server, label in ((a, "A (sender's instance)"),
                                              (b, "B (receiver's instance)")):
                            profiles.append((label, await server.acall(
                                "profile_stop", "tottime", 30)))
                    for i in range(args.repeats):
                        for v in rotations(variants, i):
                            await measure_throughput(v, args, redis)
                    for i in range(args.chunks):
                        for v in rotations(variants, i):
                            await measure_latency(v, args)
                    for v in variants:
                        v.result.errors = (sum(len(p.errors) for p in v.peers)
                                           + len(v.link.others))
                        for peer in v.peers:
                            await peer.close()
            finally:
                for server in servers:
                    await asyncio.to_thread(server.stop)
    return Outcome(local, same, cross, store, redis_version, profiles)


def report(out: Outcome, args: argparse.Namespace) -> str:
    local, same, cross = out.local.result, out.same.result, out.cross.result
    run_p99 = {r.name: statistics.median(r.chunk_p99s) for r in (local, same, cross)}
    p99_ratio = cross.p(99) / same.p(99)
    run_p99_ratio = run_p99[cross.name] / run_p99[same.name]
    lines = [
        f"scale-out signaling benchmark, {datetime.now().date()}, {machine()}, {args.load}",
        f"records store: {out.store}",
        f"Redis {out.redis_version} at {_where(args.redis)}, key prefix of this run "
        "(deleted after)",
        f"throughput: {args.messages} ice frames clinician -> patient, window {args.window}, "
        f"median of {args.repeats}",
    ]
    for v in (out.local, out.same, out.cross):
        r = v.result
        runs = ", ".join(f"{t:,.0f}" for t in r.throughput)
        redis_part = (f"; Redis {statistics.median(v.redis_us_per_msg):.0f} us a frame"
                      if v.redis_us_per_msg else "")
        lines.append(
            f"  {r.name:<10} {r.msgs_per_s:>9,.0f} msgs/s   (runs {runs}; server CPU "
            f"{statistics.median(r.server_cpu):.0%} of a core, "
            f"{statistics.median(r.server_us_per_msg):.0f} us a frame{redis_part}; "
            f"client CPU {statistics.median(r.client_cpu):.0%})")
    lines.append(f"  cross/same {cross.msgs_per_s / same.msgs_per_s:.2f}x, "
                 f"same/local {same.msgs_per_s / local.msgs_per_s:.2f}x "
                 "(reported, no target)")
    lines.append(f"latency: {args.rate:.0f} msgs/s, {args.chunks} runs x {args.seconds:g} s "
                 f"({args.chunks * int(args.rate * args.seconds)} frames), send -> receive")
    for r in (local, same, cross):
        lines.append(r.latency_line(10, run_p99[r.name]))
    lines.append(f"  same/local p50 {same.p(50) / local.p(50):.2f}x, median run p99 "
                 f"{run_p99[same.name] / run_p99[local.name]:.2f}x (context)")
    lines.append(f"  ratio cross/same p50 {cross.p(50) / same.p(50):.2f}x, p99 {p99_ratio:.2f}x "
                 f"(all frames), median run p99 {run_p99_ratio:.2f}x   target p99 <= "
                 f"{P99_TARGET:g}x   {verdict(run_p99_ratio <= P99_TARGET)} (median run p99; "
                 f"all frames: {verdict(p99_ratio <= P99_TARGET)})")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    args.load = await background_load()
    started = time.perf_counter()
    out = await run(args)
    print(report(out, args))
    for label, profile in out.profiles:
        print(f"\ncProfile of instance {label} during one cross-instance throughput run "
              "(by tottime):")
        print(profile)
    print(f"(run took {time.perf_counter() - started:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0,
                        help="offered rate of the latency runs (msgs/s)")
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="length of one latency run (there are --chunks of them)")
    parser.add_argument("--chunks", type=int, default=12,
                        help="latency runs per variant, rotating between the variants")
    parser.add_argument("--repeats", type=int, default=5,
                        help="throughput runs per variant, rotating between the variants")
    parser.add_argument("--redis", default=DEFAULT_REDIS,
                        help=f"Redis for instances A and B (default {DEFAULT_REDIS})")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the client to CPU 0 and the servers to CPU 1")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile instances A and B during one extra cross-instance "
                             "throughput run")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if not (1 <= args.messages <= 1_000_000 and 1 <= args.window <= 1000
            and 1 <= args.repeats <= 20 and 1 <= args.chunks <= 40
            and 0 < args.rate <= 50_000 and 0 < args.seconds <= 60):
        parser.error("out of range: messages 1..1e6, window 1..1000, repeats 1..20, "
                     "chunks 1..40, rate 0..50000, seconds 0..60")
    if urlsplit(args.redis).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--redis must be on loopback (every benchmark stays on 127.0.0.1)")
    if not args.no_pin:
        pin_cpu(CLIENT_CPU)
    return asyncio.run(asyncio.wait_for(main_async(args), 600.0))


if __name__ == "__main__":
    sys.exit(main())
