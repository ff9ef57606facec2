"""PostgreSQL fixtures: the shared server (or one of the run's own when there is none), and a
throwaway database per test, dropped when it ends."""

from __future__ import annotations

import asyncio

import pytest

from tests.record.pgserver import SHARED_URL, OwnPostgres, bin_dir, create_database, drop_database, reachable


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    if reachable(SHARED_URL):
        yield SHARED_URL
        return
    if bin_dir() is None:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 and no server programs (initdb) to start one")
    server = OwnPostgres().start()
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture
def pg_url(postgres_admin_url: str) -> str:
    name, url = asyncio.run(create_database(postgres_admin_url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(postgres_admin_url, name))
