#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries for the fleet tests, which start their own
# throwaway server on loopback (tooling/local_postgres.py); no cluster is started here.
# Idempotent: does nothing when initdb and pg_ctl are already present. Needs root (or sudo) and apt.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    echo "PostgreSQL server binaries already installed"
    exit 0
fi

# postgresql-15 and its postgres user; the packaged cluster is not needed by the tests
bash "$(dirname "$0")/apt-install.sh" postgresql
ls /usr/lib/postgresql/*/bin/initdb
