"""One frozen Settings, read once at the edge from `TELEHEALTH_*` variables and flags.

Secrets that are not given are generated on first start into
`<data_dir>/secrets.json` (mode 0600) and reused after that.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(Exception):
    """A setting has a value the service cannot use."""


@dataclass(frozen=True)
class Secret:
    """A string that never shows itself in a repr or a log line."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    """Address `serve` listens on."""
    port: int = 8080
    """Port `serve` listens on."""
    data_dir: Path = Path("var")
    """Where the SQLite file, generated secrets and the practice CA live."""
    public_url: str = ""
    """Base URL put into links (default `http://<host>:<port>`)."""
    practice_name: str = "Our practice"
    """Shown to patients on every page and in consent documents."""
    database_url: str = ""
    """SQLAlchemy URL; default a SQLite file in `data_dir`. `postgresql://...` for PostgreSQL."""
    redis_url: str = ""
    """Redis (`redis://host:6379/0`) when several instances serve one practice: rooms,
    cross-instance signaling and instance presence live there. Empty: one process, rooms
    in memory."""
    redis_prefix: str = "th:"
    """Prefix of every Redis key and channel (one Redis can serve several deployments)."""
    secret_key: Secret = Secret("")
    """Signs link tokens, tickets and sessions. Generated when empty."""
    link_valid_before_s: int = 3600
    """A link opens this long before the scheduled start."""
    link_valid_after_s: int = 3 * 3600
    """A link stops working this long after the scheduled start."""
    dob_max_attempts: int = 5
    """Wrong date-of-birth answers before a link is locked."""
    dob_lockout_s: int = 15 * 60
    """How long a locked link stays locked."""
    reconnect_grace_s: float = 60.0
    """A dropped participant keeps their place this long."""
    heartbeat_s: float = 20.0
    """WebSocket ping interval; a peer missing a pong is treated as dropped."""
    hello_timeout_s: float = 10.0
    """A socket that sends no valid hello within this is closed."""
    max_message_bytes: int = 64 * 1024
    """Largest signaling frame accepted."""
    rate_burst: int = 100
    """Signaling messages a connection may send at once."""
    rate_per_s: float = 50.0
    """Sustained signaling messages per second per connection."""
    max_participants: int = 6
    """Most participants in one visit's room (a full mesh)."""
    stun_urls: tuple[str, ...] = ()
    """STUN servers given to peers. None by default: no public server is contacted."""
    turn_urls: tuple[str, ...] = ()
    """TURN servers (coturn with `use-auth-secret`)."""
    turn_secret: Secret = Secret("")
    """coturn's `static-auth-secret`, used to mint TURN REST credentials."""
    turn_ttl_s: int = 3600
    """Lifetime of minted TURN credentials."""
    ice_host_addresses: tuple[str, ...] = ()
    """Local addresses the server's own WebRTC peer (the echo test) offers; empty = all."""
    require_telehealth_consent: bool = False
    """Patients must have a signed telehealth consent on file before they may wait."""
    consent_link_valid_days: int = 30
    """A consent link works this long after the consent is issued."""
    minor_may_consent: bool = False
    """Minors sign their own mental-health consents (some states allow it)."""
    adult_age: int = 18
    """Age from which a patient signs their own consents."""
    tsa_url: str = ""
    """An outside RFC 3161 timestamp authority; empty = the practice's built-in one."""
    signer_trust_roots: tuple[str, ...] = ()
    """PEM files of outside CAs whose certificates clinicians may sign consents with (a
    PKCS#12 of their own instead of a key the practice CA certifies); verification
    trusts them too. Empty = clinicians sign only with practice-CA certificates."""
    timezone: str = "UTC"
    """IANA zone that signature appearances and certificates print times in."""
    archive_renew_days: int = 90
    """`consent renew-archive` renews archive timestamps this close to their TSA's expiry."""
    note_format: str = "soap"
    """The progress-note format a new draft starts in (soap, dap, birp, girp, or a
    practice's own); the clinician can switch per note."""
    video_modifier: str = "95"
    """CPT modifier for synchronous audio-video (some payers want GT; empty for none)."""
    audio_only_modifier: str = "93"
    """CPT modifier for audio-only (FQ for rural and federally qualified health centers)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses of the reverse proxies (nginx) whose X-Forwarded-For names the client:
    the audit trail then records the signer's address, not the proxy's."""
    session_idle_s: int = 30 * 60
    """A clinician's web session ends after this long without activity."""
    api_token_ttl_days: int = 365
    """Lifetime of an API token."""

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def cookie_secure(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'telehealth.db')}"
        for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                              ("postgres://", "postgresql+asyncpg://"),
                              ("sqlite://", "sqlite+aiosqlite://")):
            if url.startswith(plain):
                return driver + url[len(plain):]
        return url


_ENV_PREFIX = "TELEHEALTH_"
_UNPREFIXED = {"DATABASE_URL": "database_url", "REDIS_URL": "redis_url"}


def _coerce(name: str, kind: Any, raw: str) -> Any:
    try:
        if kind is int or kind == "int":
            return int(raw)
        if kind is float or kind == "float":
            return float(raw)
        if kind in (Path, "Path"):
            return Path(raw)
        if kind in (Secret, "Secret"):
            return Secret(raw)
        if kind in (bool, "bool"):
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind in (tuple[str, ...], "tuple[str, ...]"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{_ENV_PREFIX}{name.upper()} must be a {kind}, not {raw!r}") from None
    return raw


def load_settings(
    env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings from the environment, then flags (`overrides`, None = not given)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(Settings)}
    for key, raw in env.items():
        if key in _UNPREFIXED:
            values[_UNPREFIXED[key]] = raw
        elif key.startswith(_ENV_PREFIX):
            name = key[len(_ENV_PREFIX):].lower()
            if name in known:
                values[name] = _coerce(name, known[name], raw)
    for name, value in overrides.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = _coerce(name, known[name], value) if isinstance(value, str) else value
    settings = Settings(**values)
    if settings.port < 0 or settings.port > 65535:
        raise ConfigError(f"port {settings.port} is out of range")
    try:
        settings.zone()
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError(f"timezone {settings.timezone!r} is not an IANA zone") from None
    return settings


def with_generated_secrets(settings: Settings) -> Settings:
    """Fill empty secrets from `<data_dir>/secrets.json`, generating it on first start."""
    if settings.secret_key.value:
        return settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    if "secret_key" not in stored:
        stored["secret_key"] = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh)
        os.replace(tmp, path)
    return replace(settings, secret_key=Secret(stored["secret_key"]))
