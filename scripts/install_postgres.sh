#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries when initdb and pg_ctl are missing: the sweep
# test (tests/test_sweep.py) starts a throwaway server in a temporary folder (initdb + pg_ctl,
# Unix socket only) and runs workers against it. No cluster is created or started here.
# `make test` runs it.
set -euo pipefail
if { command -v initdb && command -v pg_ctl; } >/dev/null 2>&1 \
    || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
exec bash "$(dirname "$0")/apt_install.sh" "the sweep test" postgresql
