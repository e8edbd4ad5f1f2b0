"""A real PostgreSQL server for the PostgreSQL sink tests (import these fixtures).

``DOCSTREAMS_TEST_PG_DSN`` points the tests at an existing server (a database they may
create databases on). Without it the session runs ``tools/postgres.sh start``, which
installs the Debian package if it is missing and starts a throwaway cluster on a free
port, and stops it at the end. Each test gets a new, empty database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "postgres.sh"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The DSN of a PostgreSQL server for the session."""
    external = os.environ.get("DOCSTREAMS_TEST_PG_DSN")
    if external:
        yield external
        return
    folder = tempfile.mkdtemp(prefix="docstreams-pg-")
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start", folder], capture_output=True,
                                 text=True, timeout=900, check=False)
        if started.returncode != 0:
            pytest.fail(f"tools/postgres.sh start failed:\n{started.stderr}", pytrace=False)
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=120,
                       check=False)
        shutil.rmtree(folder, ignore_errors=True)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A postgresql:// DSN of a new, empty database, dropped after the test."""
    import psycopg

    name = f"docstreams_t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
