#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries for the fleet tests, which start their own
# throwaway server on loopback (tooling/local_postgres.py); no cluster is started here.
# Idempotent: does nothing when initdb and pg_ctl are already present. Needs root (or sudo) and apt.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    echo "PostgreSQL server binaries already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# postgresql-15 and its postgres user; the packaged cluster is not needed by the tests
$SUDO apt-get install -y -qq --no-install-recommends postgresql
ls /usr/lib/postgresql/*/bin/initdb
