"""``create_app``: routes, middlewares and the resources the app owns. Wiring only."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from functools import partial
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from pathlib import Path

from aiohttp import web

from pricing.catalog import Catalog, ModelPrice
from pricing.money import usd_to_nano
from proxy.control import admin, admin_keys, admin_overview
from proxy.dashboard import routes as dashboard
from proxy.http import routes, usage_records
from proxy.compute import ResourceTable
from proxy.control.alerts import AlertDispatcher, MailSettings
from proxy.control.mail import SmtpServer
from proxy.ledger import alert_log, recipients
from proxy.http.appkeys import ADMIN_ACCESS, EDGE, REQUEST_ID, RESOURCES, SERVICES, SETTINGS
from proxy.http.edge import Edge
from proxy.errors import (FareboxError, Forbidden, NotFound, PayloadTooLarge, RequestTimeout, Unauthorized,
                          VersionNotSupported)
from proxy.ledger.ledger import LAYOUT_MOVING, Ledger, Ttls
from proxy.ledger.spool import Spool
from proxy.metrics import CONTENT_TYPE_LATEST, Metrics
from proxy.control.retention import trim_forever
from proxy.ledger.cluster import ClusterPipe
from proxy.ledger.connection import RedisHandle
from proxy.services import Services
from proxy.settings import Settings
from proxy.tokens import ensure_offline_encodings, preload_encodings
from proxy.upstream.routing import Upstreams

__all__ = ["create_app", "build_catalog"]

log = logging.getLogger("farebox")

SINK = web.AppKey("sink", object)  # the PostgreSQL sink of this process (record.sink.Sink or record.child.SinkProcess), or None

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REDIS_CHECK_S = 5.0  # how long start-up waits for Redis to answer before saying it does not
MIGRATE_RETRY_S = 2.0  # how often the move to this version's key layout is tried while Redis does not answer


def _error_response(edge: Edge, exc: FareboxError, request: web.Request, request_id: str) -> web.Response:
    status, headers, body = edge.render(exc, request_id, request.path)
    return web.Response(status=status, body=body, headers=headers)


def _same_secret(given: str, expected: str) -> bool:
    """Compare a presented credential in constant time (no timing hint of how much matched)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _is_admin_path(path: str) -> bool:
    return path.startswith("/admin/") or path == "/admin"


def _check_admin_token(request: web.Request, expected: str | None, read_only: str | None = None) -> str:
    """Keep the admin API behind its bearer tokens (and off when none is configured): the admin
    token allows everything (``"write"``), the read-only one (``admin_read_token``) GET requests
    only (``"read"``)."""
    if expected is None and read_only is None:
        raise NotFound("The admin API is disabled: set an admin token (--admin-token / FAREBOX_ADMIN_TOKEN).",
                       code="admin_disabled")
    given = request.headers.get("Authorization", "")
    if expected is not None and _same_secret(given, expected):
        return "write"
    if read_only is not None and _same_secret(given, read_only):
        if request.method in ("GET", "HEAD"):
            return "read"
        raise Forbidden("The read-only admin token allows GET requests only: use the admin token to change "
                        "anything.", code="read_only_token")
    raise Unauthorized("Missing or wrong admin token: send Authorization: Bearer <admin token>.")


def _middleware(settings: Settings, edge: Edge) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The one middleware, aiohttp's side of the ``Edge``: every request gets an id and an
    access-log line, its head is checked, ``/admin`` paths need the admin token, and every error
    becomes the same answer as on farebox's own server. One layer rather than one per concern:
    each layer costs a call on every request."""
    expected = f"Bearer {settings.admin_token.get_secret_value()}" if settings.admin_token else None
    read_only = f"Bearer {settings.admin_read_token.get_secret_value()}" if settings.admin_read_token else None

    async def answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
        try:
            if request.version.major != 1:
                raise VersionNotSupported(f"HTTP/{request.version.major}.{request.version.minor} is not "
                                          "supported: farebox speaks HTTP/1.1.")
            edge.check_head(request.headers)
            edge.check_forwarded(request.headers.items())
            if _is_admin_path(request.path):
                request[ADMIN_ACCESS] = _check_admin_token(request, expected, read_only)
            return await handler(request)
        except FareboxError as exc:
            response = _error_response(edge, exc, request, request_id)
            if isinstance(exc, (VersionNotSupported, RequestTimeout)):
                response.force_close()  # what follows on the connection cannot be read as requests
            return response
        except web.HTTPRequestEntityTooLarge as exc:
            return _error_response(edge, PayloadTooLarge(f"Request body exceeds the limit of {exc.max_size} bytes."),
                                   request, request_id)
        except web.HTTPNotFound:
            return _error_response(edge, NotFound(f"No such endpoint: {request.method} {request.path}.",
                                                  code="unknown_endpoint"), request, request_id)
        except web.HTTPMethodNotAllowed as exc:
            error = FareboxError(f"Method {request.method} is not allowed on {request.path}; use "
                                 f"{', '.join(sorted(exc.allowed_methods))}.", code="method_not_allowed")
            error.status, error.type = 405, "invalid_request_error"
            return _error_response(edge, error, request, request_id)
        except (web.HTTPException, ConnectionError):
            raise  # aiohttp's own answer; a client gone
        except Exception:  # a bug: logged, answered 500 as on farebox's own server
            return _error_response(edge, edge.crashed(request_id), request, request_id)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        since = time.perf_counter()
        request_id = request[REQUEST_ID] = edge.new_request_id()
        status = 499  # unless an answer comes
        answer_id = None
        try:
            response = await answer(request, handler, request_id)
            status, answer_id = response.status, response.headers.get("X-Upstream-Request-Id")
            if not response.prepared and "X-Request-Id" not in response.headers:
                response.headers["X-Request-Id"] = request_id
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            edge.access(request.method, request.rel_url.raw_path, status, request.headers, request_id, since,
                        answer_id)

    return middleware


def _alert_mail(settings: Settings, ledger: Ledger) -> MailSettings | None:
    """Alert e-mails, when an SMTP server is configured: each budget's addresses read from the ledger."""
    if settings.smtp_url is None:
        return None
    return MailSettings(SmtpServer.from_url(settings.smtp_url.get_secret_value()), settings.smtp_from,
                        partial(recipients.alert_emails, ledger))


def build_catalog(settings: Settings) -> Catalog:
    fallback = None
    if settings.unknown_model_price is not None:
        per_m = settings.unknown_model_price
        fallback = ModelPrice(
            name="fallback", provider="fallback", mode="chat",
            input=usd_to_nano(per_m.input_per_million_usd),  # USD per million → nano-USD per million
            output=usd_to_nano(per_m.output_per_million_usd),
            cached_input=None, cache_creation_input=None, reasoning_output=None,
            max_input_tokens=None, max_output_tokens=None,
        )
    return Catalog.load(extra_files=[str(p) for p in settings.price_files], aliases=settings.model_aliases,
                        fallback=fallback)


def _load_encodings_and_catalog(settings: Settings) -> Catalog:
    ensure_offline_encodings()
    preload_encodings()
    return build_catalog(settings)


async def _open_resources(settings: Settings) -> tuple[Catalog, RedisHandle]:
    """The price catalog and the Redis connection, with the encodings loaded.

    Redis is opened (the embedded one starting as a process of its own) while a thread loads
    the encodings, then the catalog: both are Python work that would only take turns under the
    GIL, and their allocations interleaved leave the process a few MB larger. A failure is
    raised as when the steps ran one after the other (encodings, catalog, Redis), and a Redis
    opened meanwhile is closed first.
    """
    opening = asyncio.ensure_future(RedisHandle.open(settings.redis_target, settings.data_dir))
    try:
        catalog = await asyncio.to_thread(_load_encodings_and_catalog, settings)
    except BaseException:
        await _close_when_opened(opening)
        raise
    return catalog, await opening


async def _close_when_opened(opening: asyncio.Future[RedisHandle]) -> None:
    try:
        redis = await opening
    except BaseException:
        return  # it did not open: nothing to close, and the error to report is the other step's
    await redis.close()


async def _redis_problem(ledger: Ledger) -> str | None:
    """Why Redis does not answer a ping now (within ``REDIS_CHECK_S``), or None when it does."""
    try:
        async with asyncio.timeout(REDIS_CHECK_S):
            await ledger.ping()
    except FareboxError as exc:
        return exc.message
    except TimeoutError:
        return f"no answer within {REDIS_CHECK_S:g} s"
    return None


async def _migrate(ledger: Ledger, *, warned: bool = False) -> None:
    """Bring what an earlier version left in Redis to this version's key layout (``ledger.migrate``),
    trying again every ``MIGRATE_RETRY_S`` while Redis does not answer (saying so once, unless
    ``warned``: the start already said Redis does not answer)."""
    while True:
        try:
            moved = await ledger.migrate()
        except FareboxError as exc:
            if not warned:
                log.warning("redis keys not yet in this version's layout (%s); trying again every %g s",
                            exc.message, MIGRATE_RETRY_S)
                warned = True
            await asyncio.sleep(MIGRATE_RETRY_S)
            continue
        if moved:
            log.info("moved %d session aggregates to this version's key layout", moved)
        return


def _without_redis(fail_mode: str, spool: Path) -> str:
    """What happens to requests meanwhile, under ``fail_mode``."""
    if fail_mode == "open":
        return (f"meanwhile metered requests are forwarded without a budget check (fail_mode open) and their "
                f"usage is spooled to {spool}")
    return "meanwhile metered requests are answered 503, as they need a budget check (fail_mode closed)"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    fb = request.app[SERVICES]
    try:
        await fb.ledger.ping()
    except FareboxError as exc:
        return web.json_response({"status": "unavailable", "redis": fb.redis_description, "error": exc.message}, status=503)
    if not fb.ledger.layout_ready:
        return web.json_response({"status": "unavailable", "redis": fb.redis_description, "error": LAYOUT_MOVING},
                                 status=503)
    body = {"status": "ready", "redis": fb.redis_description}
    sink = request.app.get(SINK)
    if sink is not None:
        body["sink"] = sink.status()  # type: ignore[attr-defined]
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    fb = request.app[SERVICES]
    token = fb.settings.metrics_token
    if token is not None and not _same_secret(request.headers.get("Authorization", ""),
                                              f"Bearer {token.get_secret_value()}"):
        raise Unauthorized("Missing or wrong metrics token: send Authorization: Bearer <metrics token>.")
    return web.Response(body=fb.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _append_maxlen(settings: Settings) -> int:
    if settings.postgres_url is None:
        return settings.stream_maxlen
    from proxy.record.serving import append_maxlen  # noqa: PLC0415 - only with the sink

    return append_maxlen(settings)


async def _start_sink(settings: Settings, ledger: Ledger, app_metrics: Metrics) -> tuple[Any, asyncio.Task | None]:
    """This process's sink (and its task when it runs on this loop), when ``postgres_url`` is set
    and ``sink_in_serve``: a child process (``sink_process``) or a task of this event loop."""
    if settings.postgres_url is None or not settings.sink_in_serve:
        return None, None
    from proxy.record.serving import postgres_url, sink_options  # noqa: PLC0415
    from proxy.record.sink import Sink, SinkMetrics  # noqa: PLC0415

    metrics = SinkMetrics(app_metrics.registry)
    if settings.sink_process:
        from proxy.record.child import SinkProcess  # noqa: PLC0415

        child = SinkProcess(settings, metrics)
        await child.start()
        return child, None
    url = postgres_url(settings)
    assert url is not None
    sink = Sink(ledger, url, sink_options(settings), metrics)
    return sink, asyncio.get_running_loop().create_task(sink.run_forever())


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The farebox application for these settings (tests build their own)."""
    edge = Edge(project_header=settings.project_header, agent_header=settings.agent_header,
                session_header=settings.session_header)
    app = web.Application(
        middlewares=[_middleware(settings, edge)],
        client_max_size=settings.max_body_bytes + 1,
    )
    app[SETTINGS] = settings
    app[EDGE] = edge
    app[RESOURCES] = ResourceTable.from_settings(settings)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        catalog, redis = await _open_resources(settings)
        upstreams = Upstreams.from_settings(
            settings, drop_headers=(settings.project_header, settings.agent_header, settings.session_header))
        await upstreams.start()
        keyless = [u.name for u in upstreams.all() if not u.kind.has_own_key]
        if settings.auth == "keys" and keyless:
            log.warning("auth = \"keys\", but farebox holds no API key for the upstream(s) %s: requests that go "
                        "there are refused (500 upstream_key_missing) until one is configured", ", ".join(keyless))
        upstream = upstreams.default("openai")
        ttls = Ttls(hour=settings.ttl_hour_s or None, day=settings.ttl_day_s or None,
                    week=settings.ttl_week_s or None, month=settings.ttl_month_s or None,
                    session=settings.ttl_session_s or None)
        ledger = Ledger(redis.client, prefix=settings.redis_prefix, stream_maxlen=_append_maxlen(settings), clock=clock,
                        ttls=ttls, pipe=redis.pipe, lease_requests=settings.budget_lease_requests,
                        hold_ttl_s=settings.hold_ttl_s, idempotency_window_s=settings.idempotency_window_s,
                        ranking_size=settings.session_ranking_size)
        spool = Spool(Path(settings.data_dir) / "spool.ndjson")
        app_metrics = Metrics(project_labels=settings.metrics_project_labels)
        if isinstance(redis.pipe, ClusterPipe):
            app_metrics.watch_redirections(lambda: redis.pipe.redirections)
        secret = settings.alert_webhook_secret
        alerts = AlertDispatcher(settings.alert_webhook_urls, secret.get_secret_value() if secret else None,
                                 metrics=app_metrics, max_attempts=settings.alert_max_attempts,
                                 base_delay_s=settings.alert_retry_base_s, timeout_s=settings.alert_timeout_s,
                                 mail=_alert_mail(settings, ledger),
                                 note=partial(alert_log.note_delivery, ledger))
        await alerts.start()
        services = Services(settings=settings, catalog=catalog, ledger=ledger, upstream=upstream, spool=spool,
                            metrics=app_metrics, redis_description=redis.description, alerts=alerts,
                            upstreams=upstreams)
        app[SERVICES] = services
        problem = await _redis_problem(ledger)
        migrating = None
        if problem is None:
            await _migrate(ledger)  # before the first request: session budgets read the new layout
            log.info("ready: redis %s; upstreams %s; %d priced models", redis.description,
                     ", ".join(f"{u.name} {u.base_url}" for u in upstreams.all()), len(catalog))
        else:
            log.warning("started, but not ready: redis %s does not answer (%s); /readyz answers 503 until it does; "
                        "%s", redis.description, problem, _without_redis(settings.fail_mode, spool.path))
            ledger.layout_ready = False  # no budget read until what an earlier version left is moved
            migrating = asyncio.get_running_loop().create_task(_migrate(ledger, warned=True))  # once it answers
        if await spool.pending():
            services.start_replay()
        trimming = (asyncio.get_running_loop().create_task(trim_forever(ledger, settings.stream_max_age_s, time.time))
                    if settings.stream_max_age_s and settings.postgres_url is None else None)  # else the sink's
        sink, sinking = await _start_sink(settings, ledger, app_metrics)
        app[SINK] = sink
        renewing = asyncio.get_running_loop().create_task(ledger.renew_forever())  # holds in flight stay held
        assert services.auth is not None
        watching = asyncio.get_running_loop().create_task(services.auth.resolver.watch_forever())  # keys' changes
        try:
            yield
        finally:
            for task in (trimming, sinking, migrating):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if sink is not None:
                await sink.close()
            await services.close()
            renewing.cancel()
            watching.cancel()
            await asyncio.gather(renewing, watching, return_exceptions=True)
            await alerts.close()
            await upstreams.close()
            await redis.close()

    app.cleanup_ctx.append(services_ctx)
    app.add_routes([
        *routes.routes(),
        *usage_records.routes(),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        *admin.routes(),
        *admin_keys.routes(),
        *admin_overview.routes(),
        *dashboard.routes(),
        web.route("*", "/{tail:.*}", routes.not_found),
    ])
    return app
