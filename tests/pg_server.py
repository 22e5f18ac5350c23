"""The fleet tests' PostgreSQL: a real server on loopback (tooling.local_postgres), one per module.

    from tests.pg_server import postgres  # noqa: F401  (the fixture)

In CI, .ci/install-postgres.sh installs the server; a machine without one fails the
fleet tests with that script's name rather than skipping them.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tooling.local_postgres import LocalPostgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres.start() as server:
        yield server
