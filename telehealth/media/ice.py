"""ICE servers handed to each participant: STUN from settings, TURN with REST credentials.

TURN REST (what coturn's `use-auth-secret` checks): the username is
`<unix expiry>:<participant id>` and the password is
`base64(HMAC-SHA1(shared secret, username))`. Such credentials cannot be
revoked, so they are short lived (`turn_ttl_s`, 1 h by default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

from telehealth.config import Settings


def turn_credentials(secret: str, participant_id: str, expires_unix: int) -> tuple[str, str]:
    username = f"{expires_unix}:{participant_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(settings: Settings, participant_id: str, now: datetime) -> list[dict[str, Any]]:
    """The `iceServers` list for one participant, in the shape RTCPeerConnection takes."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls and settings.turn_secret.value:
        expires = int(now.timestamp()) + settings.turn_ttl_s
        username, credential = turn_credentials(settings.turn_secret.value, participant_id, expires)
        servers.append({"urls": list(settings.turn_urls), "username": username,
                        "credential": credential})
    return servers
