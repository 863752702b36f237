"""Shared fixtures: real servers on loopback, real SQLite and PostgreSQL, a steerable clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from playwright.async_api import Browser

from telehealth.app import build_app
from telehealth.auth import hash_password, new_opaque_token
from telehealth.config import Secret, Settings
from telehealth.db.tables import Clinician, VisitEvent
from telehealth.media.hostaddr import use_host_addresses
from telehealth.services import CreatedVisit, Services
from telehealth.visits import Representative, VisitRequest
from web.keys import SERVICES

from browser import launch
from needs import require

PG_ADMIN_DSN = os.environ.get("TELEHEALTH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Clock:
    """A clock the test moves by hand; starts at the real now."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


async def until(check: object, timeout: float = 20.0) -> None:
    """Wait until `check()` is true (polling), or fail naming what was awaited."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {getattr(check, '__name__', check)}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.asynccontextmanager
async def throwaway_pg() -> AsyncIterator[str]:
    """A PostgreSQL database of its own, dropped afterwards: runs never see each other."""
    name = f"th_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://")
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with throwaway_pg() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Both records stores: each test using this runs once on each."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    else:
        async with throwaway_pg() as url:
            yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    port = free_port()
    return Settings(
        host="127.0.0.1", port=port, data_dir=tmp_path / "var",
        public_url=f"http://127.0.0.1:{port}", secret_key=Secret(secrets.token_urlsafe(40)),
        heartbeat_s=5.0, reconnect_grace_s=5.0,
    )


@dataclass
class Running:
    """A real server on loopback, with the services behind it."""

    app: web.Application
    url: str
    http: aiohttp.ClientSession

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    async def clinician(
        self, email: str = "dr.rivera@example.org", name: str = "Dana Rivera",
        password: str = "correct horse battery",
    ) -> tuple[Clinician, str]:
        """A clinician and an API token for it."""
        svc = self.services
        row = await svc.store.create_clinician(email=email, name=name, credentials="LCSW",
                                               password_hash=hash_password(password),
                                               now=svc.clock())
        token, digest = new_opaque_token()
        await svc.store.add_api_token(token_hash=digest, clinician_id=row.id, label="test",
                                      now=svc.clock(), ttl=timedelta(days=1))
        return row, token

    async def visit(
        self, clinician: Clinician, *, dob: str = "1990-04-27",
        representative: bool = False, **kwargs: Any,
    ) -> CreatedVisit:
        svc = self.services
        req = VisitRequest(
            patient_name=kwargs.pop("patient_name", "Alex Morgan"),
            patient_dob=datetime.fromisoformat(dob).date(),
            scheduled_start=kwargs.pop("scheduled_start", svc.clock()),
            representative=Representative("Sam Morgan", "parent", "parent of a minor")
            if representative else None,
            **kwargs,
        )
        return await svc.create_visit(req, clinician)

    async def visit_in_progress(self, clinician: Clinician, *, at_home: bool = True,
                                video: bool = True) -> CreatedVisit:
        """A visit whose timeline says the patient and clinician are in it from now, the
        patient at home (or not) in Minnesota, with two-way video (or audio only)."""
        svc = self.services
        created = await self.visit(clinician)
        ids = {p.role: p.id for p in created.participants}
        t0 = svc.clock()
        events = [
            VisitEvent(visit_id=created.visit.id, participant_id=ids["clinician"],
                       kind="admitted", at=t0, detail={}),
            VisitEvent(visit_id=created.visit.id, participant_id=ids["patient"],
                       kind="location", at=t0, detail={"state": "MN", "at_home": at_home}),
            VisitEvent(visit_id=created.visit.id, participant_id=ids["patient"],
                       kind="admitted", at=t0, detail={"by": ids["clinician"]}),
        ] + [VisitEvent(visit_id=created.visit.id, participant_id=ids[role],
                        kind="media_connected", at=t0, detail={"audio": True, "video": video})
             for role in ("clinician", "patient")]
        await svc.store.add_events(events)
        await svc.store.set_visit_status(created.visit.id, "in_progress", now=t0,
                                         only_from=("scheduled",))
        return created

    async def end_visit(self, created: CreatedVisit) -> None:
        visit = await self.services.store.visit(created.visit.id)
        assert visit is not None
        await self.services.finish_visit(visit, "ended", actor="test")

    async def held_visit(self, clinician: Clinician, minutes: float, *, at_home: bool = True,
                         video: bool = True) -> CreatedVisit:
        """`visit_in_progress` for `minutes` (the server's clock moves on), then ended."""
        created = await self.visit_in_progress(clinician, at_home=at_home, video=video)
        self.services.clock.advance(minutes=minutes)  # type: ignore[attr-defined]
        await self.end_visit(created)
        return created

    async def post(self, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.url + path, headers=headers) as resp:
            return resp.status, await resp.json()


async def start_server(settings: Settings, clock: Clock) -> AsyncIterator[Running]:
    app = build_app(settings, clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    async with aiohttp.ClientSession() as http:
        yield Running(app, settings.base_url, http)
    await runner.cleanup()


@pytest.fixture
def needs_redis() -> None:
    """For tests that start Redis servers of their own (scale-out)."""
    require("redis-server", "apt-get install -y redis-server")


@contextlib.asynccontextmanager
async def redis_instances(
    settings: Settings, clock: Clock, pg_url: str, redis_url: str, n: int = 2,
) -> AsyncIterator[list[Running]]:
    """`n` servers of one practice: one PostgreSQL database, one secret key, one Redis
    key prefix (its keys are deleted afterwards)."""
    prefix = f"th-test-{secrets.token_hex(6)}:"
    gens = []
    running: list[Running] = []
    try:
        for _ in range(n):
            port = free_port()
            one = replace(settings, port=port, public_url=f"http://127.0.0.1:{port}",
                          database_url=pg_url, redis_url=redis_url, redis_prefix=prefix)
            gen = start_server(one, clock)
            running.append(await gen.__anext__())
            gens.append(gen)
        yield running
    finally:
        for gen in reversed(gens):
            with contextlib.suppress(StopAsyncIteration):
                await gen.__anext__()
        with contextlib.suppress(Exception):
            client = aioredis.Redis.from_url(redis_url, socket_timeout=1)
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


@pytest.fixture
async def server(settings: Settings, clock: Clock) -> AsyncIterator[Running]:
    async for running in start_server(settings, clock):
        yield running


@pytest.fixture
async def pg_server(settings: Settings, clock: Clock, pg_url: str) -> AsyncIterator[Running]:
    async for running in start_server(replace(settings, database_url=pg_url), clock):
        yield running


@pytest.fixture(autouse=True)
def _no_leaked_tokens(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No log line of any test may hold a link token or ticket."""
    yield
    for record in caplog.records:
        text = record.getMessage()
        assert "eyJ" not in text, f"a token reached the log: {record.name}"


@pytest.fixture(autouse=True)
def loopback_ice(request: pytest.FixtureRequest) -> Iterator[None]:
    """In end-to-end tests, headless participants gather host candidates on 127.0.0.1 only."""
    if request.node.get_closest_marker("e2e") is None:
        yield
        return
    use_host_addresses(["127.0.0.1"])
    yield
    use_host_addresses([])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium (Debian's) per test, with fake camera and microphone."""
    async for b in launch():
        yield b
