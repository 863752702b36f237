"""Signaling relay benchmark: the full service against a bare aiohttp relay.

    .venv/bin/python -m bench.signaling [--messages 20000] [--window 100] [--repeats 5]
                                        [--rate 2000] [--seconds 0.5] [--chunks 12]
                                        [--profile] [--no-pin]
    .venv/bin/python -m bench.signaling --cross-instance [...]   (= bench.scaleout)

Two sockets, A sends `ice` frames to B, a monotonic timestamp in the candidate string.

* full: the service as `telehealth serve` runs it (SQLite in a fresh temp dir), in a
  child process. A clinician and a patient get tickets from `POST /api/v1/join`, say
  hello, the clinician admits the patient; then the clinician sends `ice` to the patient.
  The per-connection rate limit is raised (rate_burst 10**9, rate_per_s 1e9) so that
  this measures relaying, not the limiter.
* bare: an aiohttp server in another child process that sends whatever arrives on
  socket A on socket B. No auth, no parsing.

Both servers run at once and are driven by the same client code from this process
(pinned to CPU 0; the servers to CPU 1); the runs alternate between them so that
another tenant's burst of load hits both alike. Throughput: `--messages` frames
pipelined with at most `--window` in flight, `--repeats` runs each, median.
Latency: `--rate` frames a second, `--chunks` runs of `--seconds` each, send to
receive; p99 over all frames and the median of the runs' p99s (robust to a burst
that hits one run). Targets: full >= 0.5x the bare throughput, full p99 <= 2x the
bare p99. Nothing is asserted: the figures are printed with PASS or MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import aiohttp

from bench.common import (
    CLIENT_CPU,
    Peer,
    ServerProc,
    background_load,
    bench_settings,
    client_session,
    connect,
    exit_on_sigterm,
    hello,
    join,
    machine,
    percentile,
    pin_cpu,
    seed,
    start_server,
    temp_data_dir,
    verdict,
)

THROUGHPUT_TARGET = 0.5  # full / bare, at least
P99_TARGET = 2.0  # full / bare, at most
CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host"
_MARK = "@@CANDIDATE@@"


def frame_maker(to: str) -> Callable[[int, int], str]:
    """An `ice` frame to `to` with `seq` and a monotonic timestamp (ns) in the candidate."""
    template = json.dumps({"type": "ice", "to": to, "candidate": {
        "candidate": _MARK, "sdpMid": "0", "sdpMLineIndex": 0}}, separators=(",", ":"))
    head, tail = template.split(_MARK)

    def make(seq: int, ts_ns: int) -> str:
        return f"{head}{CANDIDATE} {seq} {ts_ns}{tail}"

    return make


def stamp_of(text: str) -> tuple[int, int] | None:
    """(seq, timestamp ns) of a relayed `ice` frame; None for any other frame."""
    obj = json.loads(text)
    if obj.get("type") != "ice":
        return None
    _, seq, ts = obj["candidate"]["candidate"].rsplit(" ", 2)
    return int(seq), int(ts)


@dataclass
class Pair:
    """A sending and a receiving socket, and the id the frames are addressed to."""

    tx: Peer
    rx: Peer
    to: str
    others: list[str] = field(default_factory=list)  # frames that were not the relayed ice


@dataclass
class Result:
    name: str
    throughput: list[float] = field(default_factory=list)  # msgs/s per repeat
    server_cpu: list[float] = field(default_factory=list)  # share of one core, per repeat
    client_cpu: list[float] = field(default_factory=list)
    server_us_per_msg: list[float] = field(default_factory=list)  # server CPU per frame
    latencies_ms: list[float] = field(default_factory=list)
    chunk_p99s: list[float] = field(default_factory=list)
    lost: int = 0
    errors: int = 0
    profile: str = ""

    @property
    def msgs_per_s(self) -> float:
        return statistics.median(self.throughput)

    def p(self, pct: float) -> float:
        return percentile(self.latencies_ms, pct)

    def latency_line(self, width: int, run_p99: float) -> str:
        """The report's latency line; `run_p99` is the median of the runs' p99s."""
        return (f"  {self.name:<{width}} p50 {self.p(50):6.3f} ms   p99 {self.p(99):6.3f} ms   "
                f"p99.9 {self.p(99.9):6.3f} ms   max {max(self.latencies_ms):6.3f} ms   "
                f"(median p99 of a run {run_p99:6.3f} ms)   "
                f"lost {self.lost}, error/other frames {self.errors}")


async def throughput(pair: Pair, n: int, window: int, within_s: float) -> float:
    """Frames per second for `n` frames, at most `window` sent and not yet received."""
    make = frame_maker(pair.to)
    credit = asyncio.Semaphore(window)
    done = asyncio.Event()
    got = 0

    def on_frame(text: str) -> None:
        nonlocal got
        if stamp_of(text) is None:
            pair.others.append(text[:200])
            return
        got += 1
        credit.release()
        if got >= n:
            done.set()

    pair.rx.on_frame = on_frame

    async def send_all() -> None:
        for seq in range(n):
            await credit.acquire()
            await pair.tx.ws.send_str(make(seq, time.monotonic_ns()))
        await done.wait()

    start = time.perf_counter()
    try:
        await asyncio.wait_for(send_all(), within_s)
    finally:
        pair.rx.on_frame = None
    return n / (time.perf_counter() - start)


async def latency(
    pair: Pair, rate: float, seconds: float, within_s: float
) -> tuple[list[float], int]:
    """Send-to-receive latencies (ms) at a fixed `rate`; and how many never arrived."""
    make = frame_maker(pair.to)
    count = max(1, int(rate * seconds))
    lat: list[float] = []
    done = asyncio.Event()

    def on_frame(text: str) -> None:
        stamp = stamp_of(text)
        if stamp is None:
            pair.others.append(text[:200])
            return
        lat.append((time.monotonic_ns() - stamp[1]) / 1e6)
        if len(lat) >= count:
            done.set()

    pair.rx.on_frame = on_frame
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    try:
        while sent < count and loop.time() - start < within_s:
            due = min(count, int((loop.time() - start) * rate) + 1)
            while sent < due:
                await pair.tx.ws.send_str(make(sent, time.monotonic_ns()))
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
        left = max(0.1, within_s - (loop.time() - start))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), min(left, 10.0))
    finally:
        pair.rx.on_frame = None
    return lat, count - len(lat)


# ---- the two setups ---------------------------------------------------------------


async def full_pair(
    server: ServerProc, http: aiohttp.ClientSession, rx_server: ServerProc | None = None,
) -> tuple[Pair, list[Peer]]:
    """Clinician and patient through join, hello, admit; the clinician (the sender) on
    `server`, the patient (the receiver) on `rx_server` (default the same server)."""
    rx = rx_server or server
    # Seeding needs only the database (and the secret key both instances share).
    [group] = await seed(replace(server.settings, redis_url=""), [2], bulk=False, mint=False)
    clinician_seat = await join(http, server.base_url, group[0])
    patient_seat = await join(http, rx.base_url, group[1])
    clinician = await connect(http, server.ws_url)
    await hello(clinician, clinician_seat)
    await clinician.expect("welcome", where=lambda m: m["state"] == "admitted")
    patient = await connect(http, rx.ws_url)
    await hello(patient, patient_seat)
    await patient.expect("welcome", where=lambda m: m["state"] == "waiting")
    pid = patient_seat.participant_id
    await clinician.expect("waiting_room",
                           where=lambda m: any(w["id"] == pid for w in m["waiting"]))
    await clinician.send({"type": "admit", "participant_id": pid})
    await patient.expect("admitted")
    await clinician.expect("participant_joined")
    clinician.idle()
    patient.idle()
    return Pair(clinician, patient, pid), [clinician, patient]


async def bare_pair(server: ServerProc, http: aiohttp.ClientSession) -> tuple[Pair, list[Peer]]:
    a = await connect(http, server.ws_url)
    b = await connect(http, server.ws_url)
    a.idle()
    b.idle()
    return Pair(a, b, "00000000-0000-4000-8000-000000000000"), [a, b]


@dataclass
class Variant:
    result: Result
    server: ServerProc
    pair: Pair | None = None
    peers: list[Peer] = field(default_factory=list)

    @property
    def link(self) -> Pair:
        assert self.pair is not None, "set up first"
        return self.pair


async def measure_throughput(v: Variant, args: argparse.Namespace) -> None:
    cpu0, own0, wall0 = v.server.cpu_seconds(), time.process_time(), time.perf_counter()
    v.result.throughput.append(await throughput(v.link, args.messages, args.window, 120.0))
    wall = time.perf_counter() - wall0
    v.result.server_cpu.append((v.server.cpu_seconds() - cpu0) / wall)
    v.result.client_cpu.append((time.process_time() - own0) / wall)
    v.result.server_us_per_msg.append((v.server.cpu_seconds() - cpu0) / args.messages * 1e6)


async def measure_latency(v: Variant, args: argparse.Namespace) -> None:
    lat, lost = await latency(v.link, args.rate, args.seconds, args.seconds + 30.0)
    v.result.latencies_ms += lat
    if lat:
        v.result.chunk_p99s.append(percentile(lat, 99))
    v.result.lost += lost


async def run(args: argparse.Namespace) -> tuple[Result, Result]:
    """Both servers up at once; the runs alternate between them so that a change in the
    machine's background load hits both alike."""
    with temp_data_dir("bench-signaling-") as data_dir:
        overrides = {"rate_burst": 10**9, "rate_per_s": 1e9}
        bare = Variant(Result("bare relay"), start_server(
            "relay", bench_settings(data_dir / "bare", **overrides), pin=not args.no_pin))
        try:
            full = Variant(Result("full"), start_server(
                "full", bench_settings(data_dir / "full", **overrides), pin=not args.no_pin))
        except BaseException:
            bare.server.stop()
            raise
        try:
            async with client_session() as http:
                bare.pair, bare.peers = await asyncio.wait_for(bare_pair(bare.server, http), 60)
                full.pair, full.peers = await asyncio.wait_for(full_pair(full.server, http), 60)
                for v in (bare, full):  # warm up
                    await throughput(v.link, min(2000, args.messages), args.window, 60.0)
                    await latency(v.link, args.rate, 0.5, 30.0)
                if args.profile:  # an extra run of the full server; it does not count
                    await full.server.acall("profile_start")
                    await throughput(full.link, args.messages, args.window, 120.0)
                    full.result.profile = await full.server.acall("profile_stop", "tottime", 30)
                for i in range(args.repeats):
                    for v in ((bare, full) if i % 2 == 0 else (full, bare)):
                        await measure_throughput(v, args)
                for i in range(args.chunks):
                    for v in ((bare, full) if i % 2 == 0 else (full, bare)):
                        await measure_latency(v, args)
                for v in (bare, full):
                    v.result.errors = (sum(len(p.errors) for p in v.peers)
                                       + len(v.link.others))
                    for peer in v.peers:
                        await peer.close()
        finally:
            bare.server.stop()
            full.server.stop()
    return bare.result, full.result


def report(bare: Result, full: Result, args: argparse.Namespace) -> str:
    tput_ratio = full.msgs_per_s / bare.msgs_per_s
    p99_ratio = full.p(99) / bare.p(99)
    p50_ratio = full.p(50) / bare.p(50)
    run_p99_ratio = statistics.median(full.chunk_p99s) / statistics.median(bare.chunk_p99s)
    lines = [
        f"signaling benchmark, {datetime.now().date()}, {machine()}, {args.load}",
        f"throughput: {args.messages} ice frames A->B, window {args.window}, "
        f"median of {args.repeats}",
    ]
    for r in (bare, full):
        runs = ", ".join(f"{t:,.0f}" for t in r.throughput)
        lines.append(
            f"  {r.name:<11} {r.msgs_per_s:>9,.0f} msgs/s   (runs {runs}; server CPU "
            f"{statistics.median(r.server_cpu):.0%} of a core, "
            f"{statistics.median(r.server_us_per_msg):.0f} us a frame; client CPU "
            f"{statistics.median(r.client_cpu):.0%})")
    lines.append(f"  ratio full/bare {tput_ratio:.2f}x   target >= {THROUGHPUT_TARGET}x   "
                 f"{verdict(tput_ratio >= THROUGHPUT_TARGET)}")
    lines.append(f"latency: {args.rate:.0f} msgs/s, {args.chunks} runs x {args.seconds:g} s "
                 f"({args.chunks * int(args.rate * args.seconds)} frames), send -> receive")
    for r in (bare, full):
        lines.append(r.latency_line(11, statistics.median(r.chunk_p99s)))
    lines.append(f"  ratio full/bare p50 {p50_ratio:.2f}x, p99 {p99_ratio:.2f}x (all frames), "
                 f"median run p99 {run_p99_ratio:.2f}x   target p99 <= {P99_TARGET}x   "
                 f"{verdict(run_p99_ratio <= P99_TARGET)} (median run p99; all frames: "
                 f"{verdict(p99_ratio <= P99_TARGET)})")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    args.load = await background_load()
    bare, full = await run(args)
    print(report(bare, full, args))
    if full.profile:
        print("\ncProfile of the full server during one throughput run (by tottime):")
        print(full.profile)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--cross-instance" in argv:  # the scale-out mode lives in bench/scaleout.py
        from bench import scaleout
        return scaleout.main([a for a in argv if a != "--cross-instance"])
    parser = argparse.ArgumentParser(prog="python -m bench.signaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cross-instance", action="store_true",
                        help="two instances on one Redis instead: same as "
                             "`python -m bench.scaleout` (its options: --help there)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="length of one latency run (there are --chunks of them)")
    parser.add_argument("--chunks", type=int, default=12,
                        help="latency runs per variant, alternating between the variants")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the client to CPU 0 and the servers to CPU 1")
    parser.add_argument("--repeats", type=int, default=5,
                        help="throughput runs per variant, alternating between the variants")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the full server during one extra throughput run")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if not (1 <= args.messages <= 1_000_000 and 1 <= args.window <= 1000
            and 1 <= args.repeats <= 20 and 1 <= args.chunks <= 40
            and 0 < args.rate <= 50_000 and 0 < args.seconds <= 60):
        parser.error("out of range: messages 1..1e6, window 1..1000, repeats 1..20, "
                     "chunks 1..40, rate 0..50000, seconds 0..60")
    if not args.no_pin:
        pin_cpu(CLIENT_CPU)
    return asyncio.run(asyncio.wait_for(main_async(args), 600.0))


if __name__ == "__main__":
    sys.exit(main())
