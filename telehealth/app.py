"""`build_app(settings)`: the one place that wires the service together.

Every outside part (database engine, clock) comes in here; nothing opens a
connection at import time. This module is the composition root, so it is the
one place in `telehealth/` that imports `web/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from telehealth.auth import Signer
from telehealth.config import Settings, with_generated_secrets
from telehealth.consents import Consents
from telehealth.db.engine import make_engine, migrate
from telehealth.db.store import Store
from telehealth.media.echo import EchoService
from telehealth.media.hostaddr import use_host_addresses
from telehealth.services import Clock, Services, utc_now
from telehealth.signaling.broker import Broker, LocalBroker, RedisBroker
from telehealth.signaling.hub import Hub
from telehealth.throttle import LoginThrottle
from telehealth.visit_notes import VisitNotes
from web import api, clinician_pages, consent_api, consent_pages, note_pages, notes_api, pages
from web.keys import SERVICES
from web.render import STATIC
from web.security import errors_and_headers

HUB = web.AppKey("hub", Hub)


def login_throttle(settings: Settings) -> LoginThrottle:
    """Log-in failures counted across instances through Redis when there is one."""
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url, socket_timeout=1.0,
                               socket_connect_timeout=1.0)
    return LoginThrottle(limit=10, window_s=15 * 60, redis=redis, prefix=settings.redis_prefix)


def build_services(
    settings: Settings, *, engine: AsyncEngine | None = None, clock: Clock = utc_now
) -> Services:
    """The parts without a server (the CLI uses these directly)."""
    settings = with_generated_secrets(settings)
    store = Store(engine or make_engine(settings.sqlalchemy_url))
    signer = Signer(settings.secret_key.value)
    consents = Consents(settings, store, signer, clock)
    svc = Services(settings=settings, store=store, signer=signer, clock=clock,
                   consents=consents, notes=VisitNotes(settings, store, consents, clock),
                   login_throttle=login_throttle(settings))
    svc.notes.timeline = svc.timeline  # the hub's batched events flushed first
    return svc


def build_app(
    settings: Settings, *, engine: AsyncEngine | None = None, clock: Clock = utc_now
) -> web.Application:
    svc = build_services(settings, engine=engine, clock=clock)
    broker: Broker = (RedisBroker(svc.settings.redis_url, svc.settings.redis_prefix)
                      if svc.settings.redis_url else LocalBroker())
    hub = Hub(svc.settings, svc.store, svc.room_entry, clock, on_visit_over=svc.visit_over,
              broker=broker)
    svc.hub = hub
    app = web.Application(middlewares=[errors_and_headers], client_max_size=256 * 1024)
    app[SERVICES] = svc
    app[HUB] = hub
    echo = app[pages.ECHO] = EchoService()
    app.router.add_routes(api.routes)
    app.router.add_routes(consent_api.routes)
    app.router.add_routes(consent_pages.routes)
    app.router.add_routes(notes_api.routes)
    app.router.add_routes(note_pages.routes)
    app.router.add_routes(clinician_pages.routes)
    app.router.add_routes(pages.routes)
    app.router.add_static("/static", STATIC, append_version=False)
    app.router.add_get("/ws", hub.handle)
    app.router.add_get("/healthz", _healthz)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if svc.settings.ice_host_addresses:
            use_host_addresses(svc.settings.ice_host_addresses)
        await migrate(svc.store.engine)
        await svc.consents.start()
        await hub.start()
        yield
        await echo.close()
        await hub.stop()
        await svc.login_throttle.close()
        if engine is None:
            await svc.store.engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _healthz(request: web.Request) -> web.Response:
    """For load balancers: 200 when this instance can take a new visit, else 503 naming
    the part that is down (its records store, or Redis when several instances share)."""
    svc = request.app[SERVICES]
    checks = {"database": await svc.store.reachable(),
              "broker": await request.app[HUB].broker.healthy()}
    ok = all(checks.values())
    return web.json_response({"ok": ok, **{k: "ok" if v else "down" for k, v in checks.items()}},
                             status=200 if ok else 503)
