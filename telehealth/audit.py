"""The append-only, hash-chained audit log (pure part).

Each entry's hash covers its own fields and the hash of the entry before it, so
changing, removing or reordering any stored entry breaks every hash after it.
`verify_chain` walks the stored entries and names the first one that breaks.
Details hold ids, codes, IP and user agent; never names, dates of birth or note text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def entry_hash(seq: int, at: datetime, actor: str, action: str, subject: str,
               detail: dict[str, Any], prev_hash: str) -> str:
    canonical = json.dumps(
        [seq, at.isoformat(), actor, action, subject, detail, prev_hash],
        sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(entries: Iterable[Entry]) -> ChainReport:
    """Check every link of the chain, in `seq` order; never raises."""
    prev, expected_seq, count = GENESIS, 1, 0
    for e in entries:
        count += 1
        if e.seq != expected_seq:
            return ChainReport(False, count, e.seq, f"entry {expected_seq} is missing")
        if e.prev_hash != prev:
            return ChainReport(False, count, e.seq, "it does not follow the entry before it")
        if entry_hash(e.seq, e.at, e.actor, e.action, e.subject, e.detail, e.prev_hash) != e.hash:
            return ChainReport(False, count, e.seq, "its contents were changed")
        prev, expected_seq = e.hash, expected_seq + 1
    return ChainReport(True, count)
