"""The commands of the usage of record (PostgreSQL): ``db migrate``, ``sink``, ``statement``,
``reconcile`` and ``restore --from-postgres``.

Each reads ``--postgres-url`` / ``FAREBOX_POSTGRES_URL`` / the config file's ``postgres_url``
(refusing with status 2 when there is none); ``sink``, ``reconcile`` and ``restore`` also reach
Redis as the other commands do (``--redis-url`` / ``REDIS_URL``, or the embedded Redis of
``--data-dir``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from proxy.cli.source import EXIT_FAILURE, CommandError
from proxy.cli.target import check_embedded, with_ledger
from proxy.settings import Settings, SettingsError

__all__ = ["COMMANDS", "add_commands", "run", "SETTING_KEYS"]

COMMANDS = ("db", "sink", "statement", "reconcile", "restore")
SETTING_KEYS = ("config", "redis_url", "data_dir", "redis_prefix", "postgres_url")

T = TypeVar("T")


def add_commands(sub: Any, store_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    def flags(parser: argparse.ArgumentParser) -> None:
        store_flags(parser)
        parser.add_argument("--postgres-url", help="PostgreSQL URL of the usage of record (env FAREBOX_POSTGRES_URL)")

    db = sub.add_parser("db", help="the usage of record's PostgreSQL schema")
    dsub = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    flags(dsub.add_parser("migrate", help="apply the schema migrations not applied yet"))

    flags(sub.add_parser("sink", help="drain every project's events into PostgreSQL (until stopped)"))

    statement = sub.add_parser("statement", help="a project's monthly statement, from PostgreSQL")
    flags(statement)
    statement.add_argument("project")
    statement.add_argument("--month", required=True, help="YYYY-MM")
    form = statement.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print it as JSON")
    form.add_argument("--csv", action="store_true", help="print it as CSV")

    reconcile = sub.add_parser("reconcile", help="list every difference between PostgreSQL and Redis for a month "
                                                 "(exit 0: none, 1: some)")
    flags(reconcile)
    reconcile.add_argument("project")
    reconcile.add_argument("--month", required=True, help="YYYY-MM")
    reconcile.add_argument("--json", action="store_true", help="print the differences as JSON")

    restore = sub.add_parser("restore", help="rebuild Redis's usage aggregates (and so budget spend) from PostgreSQL")
    flags(restore)
    restore.add_argument("--from-postgres", action="store_true", required=True,
                         help="the source: the usage of record in PostgreSQL")
    restore.add_argument("--project", help="only this project (default: every project PostgreSQL has)")


def _postgres_url(settings: Settings) -> str:
    if settings.postgres_url is None:
        raise CommandError("no PostgreSQL configured: set --postgres-url, FAREBOX_POSTGRES_URL or postgres_url")
    return settings.postgres_url.get_secret_value()


async def _with_pool(settings: Settings, action: Callable[[Any], Awaitable[T]], *, migrated: bool = True) -> T:
    """``action`` on a pool to the configured PostgreSQL (the schema migrated first unless
    ``migrated`` is False); a PostgreSQL that cannot be reached or refuses is a ``CommandError``."""
    import asyncpg  # noqa: PLC0415

    from proxy.record.db import connect, describe_url, migrate  # noqa: PLC0415

    url = _postgres_url(settings)
    try:
        pool = await connect(url, max_size=2)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CommandError(f"cannot reach PostgreSQL at {describe_url(url)}: {exc}", EXIT_FAILURE) from None
    try:
        if migrated:
            await migrate(pool)  # what the commands read is there, empty or not
        return await action(pool)
    except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
        raise CommandError(f"cannot reach PostgreSQL at {describe_url(url)}: {exc}", EXIT_FAILURE) from None
    except asyncpg.PostgresError as exc:
        raise CommandError(f"PostgreSQL at {describe_url(url)}: {exc}", EXIT_FAILURE) from None
    finally:
        await pool.close()


def _with_both(settings: Settings, action: Callable[[Any, Any], Awaitable[T]]) -> T:
    _postgres_url(settings)
    if not settings.redis_url:
        check_embedded(settings)
    return asyncio.run(with_ledger(settings, lambda ledger: _with_pool(settings, lambda pool: action(pool, ledger))))


def _month(text: str) -> Any:
    from proxy.record.statement import parse_month  # noqa: PLC0415

    try:
        return parse_month(text)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _check_project(project: str) -> str:
    from proxy.domain import ID_PATTERN  # noqa: PLC0415

    if not ID_PATTERN.fullmatch(project):
        raise SettingsError(f"invalid project {project!r}: 1-128 characters of letters, digits and . _ - @")
    return project


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "db":
        return _migrate(settings)
    if args.command == "sink":
        return _sink(settings)
    if args.command == "statement":
        return _statement(args, settings)
    if args.command == "reconcile":
        return _reconcile(args, settings)
    return _restore(args, settings)


def _migrate(settings: Settings) -> int:
    from proxy.record.db import migrate  # noqa: PLC0415

    applied = asyncio.run(_with_pool(settings, migrate, migrated=False))
    print(f"applied {', '.join(applied)}" if applied else "the schema is up to date")
    return 0


def _statement(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.record.statement import read_statement  # noqa: PLC0415

    project, month = _check_project(args.project), _month(args.month)
    statement = asyncio.run(_with_pool(settings, lambda pool: read_statement(pool, project, month)))
    if args.json:
        sys.stdout.write(orjson.dumps(statement.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.csv:
        sys.stdout.write(statement.to_csv())
    else:
        sys.stdout.write(statement.to_text())
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.record.reconcile import reconcile  # noqa: PLC0415

    project, month = _check_project(args.project), _month(args.month)
    _, differences = _with_both(settings, lambda pool, ledger: reconcile(pool, ledger, project, month))
    if args.json:
        sys.stdout.write(orjson.dumps({"project": project, "month": args.month,
                                       "differences": [d.to_json() for d in differences]},
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    elif differences:
        for d in differences:
            print(d.to_text())
        print(f"{len(differences)} difference(s) between PostgreSQL and Redis for {project} {args.month}")
    else:
        print(f"no difference between PostgreSQL and Redis for {project} {args.month}")
    return EXIT_FAILURE if differences else 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.ledger.settle import Ttls  # noqa: PLC0415
    from proxy.record.restore import restore  # noqa: PLC0415

    project = _check_project(args.project) if args.project else None
    ttls = Ttls(hour=settings.ttl_hour_s or None, day=settings.ttl_day_s or None, week=settings.ttl_week_s or None,
                month=settings.ttl_month_s or None, session=settings.ttl_session_s or None)
    written = _with_both(settings, lambda pool, ledger: restore(pool, ledger, ttls=ttls, now=time.time(),
                                                                project=project,
                                                                ranking_size=settings.session_ranking_size))
    for name, n in written.items():
        print(f"restored {name}: {n} aggregates")
    if not written:
        print("PostgreSQL holds no usage to restore")
    return 0


def _sink(settings: Settings) -> int:
    from proxy.record.serving import sink_options  # noqa: PLC0415
    from proxy.record.sink import Sink  # noqa: PLC0415

    url = _postgres_url(settings)
    if not settings.redis_url:
        check_embedded(settings)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def drain(ledger: Any) -> int:
        sink = Sink(ledger, url, sink_options(settings))
        task = asyncio.ensure_future(sink.run_forever())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        logging.getLogger("farebox.sink").info("sink %s draining into %s", sink.drain.consumer,
                                               sink.status()["postgres"])
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await sink.close()
        return 0

    return asyncio.run(with_ledger(settings, drain))
