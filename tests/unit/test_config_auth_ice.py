"""Settings, secrets, tokens and TURN credentials."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telehealth.auth import AuthError, LinkClaims, Signer, check_password, hash_password
from telehealth.config import ConfigError, Secret, Settings, load_settings, with_generated_secrets
from telehealth.media.ice import ice_servers, turn_credentials

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def test_settings_from_env_and_flags() -> None:
    env = {"TELEHEALTH_PORT": "9000", "TELEHEALTH_STUN_URLS": "stun:a:3478, stun:b:3478",
           "DATABASE_URL": "postgresql://u@h/db", "TELEHEALTH_RECONNECT_GRACE_S": "12.5",
           "TELEHEALTH_UNKNOWN": "ignored", "HOME": "/root"}
    s = load_settings(env, port=None, host="0.0.0.0")
    assert s.port == 9000 and s.host == "0.0.0.0"
    assert s.stun_urls == ("stun:a:3478", "stun:b:3478")
    assert s.reconnect_grace_s == 12.5
    assert s.sqlalchemy_url == "postgresql+asyncpg://u@h/db"
    assert s.base_url == "http://0.0.0.0:9000"
    with pytest.raises(ConfigError):
        load_settings({"TELEHEALTH_PORT": "eighty"})
    with pytest.raises(ConfigError):
        load_settings({}, colour="blue")


def test_secrets_never_show(tmp_path: Path) -> None:
    s = load_settings({"TELEHEALTH_SECRET_KEY": "k" * 40, "TELEHEALTH_DATA_DIR": str(tmp_path)})
    assert "k" * 40 not in repr(s) and "k" * 40 not in str(s.secret_key)


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "var")
    first = with_generated_secrets(s)
    again = with_generated_secrets(s)
    assert len(first.secret_key.value) >= 48
    assert first.secret_key.value == again.secret_key.value
    path = tmp_path / "var" / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["secret_key"] == first.secret_key.value
    given = with_generated_secrets(Settings(data_dir=tmp_path / "v2", secret_key=Secret("x" * 40)))
    assert given.secret_key.value == "x" * 40 and not (tmp_path / "v2").exists()


def test_passwords_are_argon2id() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert check_password(stored, "correct horse battery")
    assert not check_password(stored, "correct horse batterY")
    assert not check_password("not a hash", "x")


def test_link_tokens_and_tickets_are_not_interchangeable() -> None:
    signer = Signer("s" * 40)
    claims = LinkClaims("visit", "person", "patient", NOW, NOW + timedelta(hours=4))
    link = signer.link_token(claims)
    assert signer.read_link(link) == claims
    assert signer.link_token(claims) == link  # deterministic: re-minted links are the same
    with pytest.raises(AuthError) as err:
        signer.read_ticket(link)
    assert err.value.code == "link_invalid"
    assert signer.read_ticket(signer.ticket(claims)) == claims
    with pytest.raises(AuthError):
        Signer("t" * 40).read_link(link)
    with pytest.raises(AuthError):
        signer.read_link(link[:-2])
    with pytest.raises(ValueError):
        Signer("short")


def test_turn_rest_credentials_match_coturn() -> None:
    # printf '1767225600:3f2a' | openssl dgst -sha1 -hmac coturn-secret -binary | base64
    assert turn_credentials("coturn-secret", "3f2a", 1767225600) == (
        "1767225600:3f2a", "QgO7DUfnTZp/p47EwPpbiRzcOec=")


def test_ice_servers_only_what_is_configured() -> None:
    assert ice_servers(Settings(), "p1", NOW) == []
    s = Settings(stun_urls=("stun:stun.example:3478",), turn_urls=("turn:turn.example:3478",),
                 turn_secret=Secret("shh"), turn_ttl_s=600)
    stun, turn = ice_servers(s, "p1", NOW)
    assert stun == {"urls": ["stun:stun.example:3478"]}
    expiry = int(NOW.timestamp()) + 600
    assert turn["username"] == f"{expiry}:p1"
    assert turn["credential"] == turn_credentials("shh", "p1", expiry)[1]
    # TURN without its secret is not offered: credentials could not be checked.
    assert ice_servers(Settings(turn_urls=("turn:t:3478",)), "p1", NOW) == []
