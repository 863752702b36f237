"""`telehealth join LINK`: join a visit as a headless participant and report what it saw.

Exit codes: 0 media connected with someone (or the visit was ended by the
clinic), 1 it never connected (or the service could not be reached), 2 the
join was refused (or the link is not a visit link, or `--video` cannot be
read). The environment setting `TELEHEALTH_ICE_HOST_ADDRESSES` (a comma list,
e.g. ``127.0.0.1``) limits the host ICE candidates to those addresses (see
`telehealth.media.hostaddr`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
from contextlib import suppress
from typing import Any, TextIO

from telehealth.media.hostaddr import host_addresses_from_env, use_host_addresses
from telehealth.media.participant import (
    InvalidLink,
    JoinRefused,
    Participant,
    ParticipantError,
    ParticipantOptions,
    ParticipantResult,
    ParticipantState,
)
from telehealth.media.tracks import MediaFileError, MediaSource

HOST_ADDRESSES_ENV = "TELEHEALTH_ICE_HOST_ADDRESSES"


def _date(value: str) -> str:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        # Do not echo the value: it is a date of birth.
        raise argparse.ArgumentTypeError("expected a date as YYYY-MM-DD") from None
    return value


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return seconds


def add_join_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `telehealth join` (the caller owns the parser and its help)."""
    parser.add_argument("link", metavar="LINK", help="the visit link, http(s)://host/v/<token>")
    parser.add_argument("--dob", type=_date, metavar="YYYY-MM-DD",
                        help="the patient's date of birth (patients, representatives, family)")
    parser.add_argument("--name", metavar="NAME",
                        help="your own full name (legal representatives)")
    parser.add_argument("--admit-all", action="store_true",
                        help="as care team, admit everyone who enters the waiting room")
    parser.add_argument("--duration", type=_seconds, metavar="S",
                        help="leave after S seconds (default: stay until the visit ends)")
    parser.add_argument("--video", metavar="FILE",
                        help="send this media file (looped) instead of a synthetic picture")
    parser.add_argument("--no-video", action="store_true", help="send no video")
    parser.add_argument("--no-audio", action="store_true", help="send no audio")
    parser.add_argument("--reconnect-grace", type=_seconds, default=60.0, metavar="S",
                        help="keep trying to come back after a drop for S seconds (default 60)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def exit_code(result: ParticipantResult) -> int:
    return 0 if result.connected or result.state == ParticipantState.ENDED else 1


async def run_join(args: argparse.Namespace) -> int:
    """Carry out `telehealth join` with parsed `args`; returns the exit code."""
    addresses = host_addresses_from_env(os.environ.get(HOST_ADDRESSES_ENV))
    if addresses:
        try:
            use_host_addresses(addresses)
        except ValueError:
            print(f"{HOST_ADDRESSES_ENV} must be a comma list of IP addresses", file=sys.stderr)
            return 2
    if args.video is not None and not args.no_video:
        try:
            MediaSource(video_file=args.video).close()
        except MediaFileError as exc:
            _report_error(args.json, "video_unreadable", str(exc), None, prefix="cannot join")
            return 2
    options = ParticipantOptions(
        admit_all=args.admit_all, send_video=not args.no_video, send_audio=not args.no_audio,
        video_file=args.video, reconnect_grace_s=args.reconnect_grace)
    try:
        participant = Participant(args.link, dob=args.dob, name=args.name, options=options)
    except InvalidLink as exc:
        _report_error(args.json, "link_invalid", str(exc), None, prefix="cannot join")
        return 2

    loop = asyncio.get_running_loop()
    leaving: set[asyncio.Task[None]] = set()

    def on_signal() -> None:
        leaving.add(loop.create_task(participant.leave()))

    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
    try:
        result = await participant.run(args.duration)
    except JoinRefused as exc:
        _report_error(args.json, exc.code, exc.message, exc.action,
                      {"status": exc.status, **exc.details})
        return 2
    except ParticipantError as exc:
        _report_error(args.json, "unreachable", str(exc), None, prefix="cannot join")
        return 1
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if leaving:
            await asyncio.gather(*leaving, return_exceptions=True)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_summary(result, sys.stdout)
    return exit_code(result)


def _report_error(as_json: bool, code: str, message: str, action: str | None,
                  details: dict[str, Any] | None = None, prefix: str = "join refused") -> None:
    if as_json:
        error: dict[str, Any] = {"code": code, "message": message, "action": action}
        error.update(details or {})
        print(json.dumps({"error": error}, indent=2))
        return
    print(f"{prefix}: {code}: {message}", file=sys.stderr)
    if action:
        print(action, file=sys.stderr)


def print_summary(result: ParticipantResult, out: TextIO) -> None:
    """A few readable lines: the state, the timings, frames per peer."""
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    why = f" ({result.reason})" if result.reason else ""
    print(f"state: {result.state}{why}", file=out)
    print(f"media connected: {'yes' if result.connected else 'no'}"
          f" after {seconds(result.time_to_connected_s)},"
          f" first video frame after {seconds(result.time_to_first_frame_s)}", file=out)
    print(f"frames received: {result.video_frames_received} video,"
          f" {result.audio_frames_received} audio", file=out)
    for peer in result.peers.values():
        status = "connected" if peer.connected else "not connected"
        print(f"  {peer.id} ({peer.role or '?'}): {status},"
              f" {peer.video_frames} video / {peer.audio_frames} audio frames", file=out)
    if result.reconnects:
        print(f"reconnects: {result.reconnects}", file=out)
    for error in result.errors:
        print(f"server error: {error.code}: {error.message}", file=out)
    print(f"chat messages received: {len(result.chat)}", file=out)
