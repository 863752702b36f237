"""Choose which local addresses aioice offers as host ICE candidates.

aioice gathers a host candidate on every address of every interface except
127.0.0.1 and ::1. On our test and CI machines the only other interface has a
routable address, and test traffic must stay on loopback; a deployment may
also want to keep media off a management interface.

aioice has no setting for this, but `Connection.gather_candidates` looks up
the module global `aioice.ice.get_host_addresses` each time it runs, so
replacing that global changes the host candidates of every connection
gathered afterwards, in the whole process. Connections already gathered keep
theirs. aioice has no other loopback filter: two peers whose only candidates
are on 127.0.0.1 connect to each other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice

_DEFAULT = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on `addresses` (e.g. ``["127.0.0.1"]``), process-wide.

    An empty sequence restores aioice's default (every interface but loopback).
    Addresses are checked here (ValueError if one is not an IP address) and
    filtered by family at gathering time, as aioice asks for IPv4 and/or IPv6.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _DEFAULT
        return
    chosen = [ipaddress.ip_address(a.strip()) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(ip) for ip in chosen
            if (ip.version == 4 and use_ipv4) or (ip.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def host_addresses_from_env(value: str | None) -> list[str]:
    """Parse a comma list (the `TELEHEALTH_ICE_HOST_ADDRESSES` setting); blanks are skipped."""
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]
