#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the PostgresPersister's tests, bound to 127.0.0.1
# only, with a database and a user for plumio. Idempotent.
#
#   .ci/postgres.sh            install (apt) if missing, create and start the cluster if the
#                              DSN doesn't answer, wait until it does; prints the DSN last
#
# Environment:
#   PLUMIO_POSTGRES_PORT        the port (default 5432)
#   POSTGRES_WAIT_SECONDS       how long to wait for the server to answer (default 60)
#   POSTGRES_NO_INSTALL=1       fail instead of installing postgresql with apt-get
#
# The cluster is Debian's `pg_createcluster` cluster "plumio" (data in /var/lib/postgresql/,
# run by the `postgres` system user: PostgreSQL refuses to run as root), listening on
# 127.0.0.1 only, with password logins over TCP. The DSN it prints is the tests' default,
# postgresql://plumio:plumio@127.0.0.1:5432/plumio; a caller that wants it exported evaluates
# the last line (`export PLUMIO_POSTGRES_DSN=...`). Exits non-zero with a message saying what
# failed.
set -euo pipefail

PORT="${PLUMIO_POSTGRES_PORT:-5432}"
WAIT_SECONDS="${POSTGRES_WAIT_SECONDS:-60}"
CLUSTER=plumio
DSN="postgresql://plumio:plumio@127.0.0.1:${PORT}/plumio"

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

log() {
    echo "postgres.sh: $*" >&2
}

dsn_answers() {
    # a login as plumio with a query: the server is up, the user and the database exist
    PGCONNECT_TIMEOUT=2 psql "$DSN" -tAqc "SELECT 1" >/dev/null 2>&1
}

as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        "$@"
    else
        runuser -u postgres -- "$@"
    fi
}

if dsn_answers; then
    log "PostgreSQL already answers at $DSN"
    echo "export PLUMIO_POSTGRES_DSN=$DSN"
    exit 0
fi

if ! command -v pg_createcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    [[ "${POSTGRES_NO_INSTALL:-0}" == 1 ]] && die "postgresql is not installed"
    command -v apt-get >/dev/null 2>&1 || die "postgresql is not installed and apt-get is missing"
    [[ "$(id -u)" == 0 ]] || die "installing postgresql needs root (or install it first)"
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends postgresql >/tmp/postgres-apt.log 2>&1; then
        apt-get update >>/tmp/postgres-apt.log 2>&1 || die "apt-get update failed (see /tmp/postgres-apt.log)"
        apt-get install -y --no-install-recommends postgresql >>/tmp/postgres-apt.log 2>&1 \
            || die "apt-get install postgresql failed (see /tmp/postgres-apt.log)"
    fi
fi
[[ "$(id -u)" == 0 || "$(id -un)" == postgres ]] \
    || die "creating a cluster needs root or the postgres user"

# the newest installed server version
VERSION="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -1)"
[[ -n "$VERSION" ]] || die "no PostgreSQL server under /usr/lib/postgresql"

if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c' | grep -q .; then
    log "creating cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
    pg_createcluster "$VERSION" "$CLUSTER" -p "$PORT" >/tmp/postgres-create.log 2>&1 \
        || die "pg_createcluster failed (see /tmp/postgres-create.log)"
fi
# loopback only (set each time: it is what this script promises, whoever made the cluster)
CONF_D="/etc/postgresql/$VERSION/$CLUSTER/conf.d"
[[ -d "$CONF_D" ]] || die "$CONF_D is missing"
echo "listen_addresses = '127.0.0.1'" >"$CONF_D/plumio-loopback.conf"
status="$(pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $4}')"
if [[ "$status" != online* ]]; then
    log "starting cluster $VERSION/$CLUSTER"
    # pg_ctlcluster as root starts the server as the cluster's owner (postgres)
    pg_ctlcluster "$VERSION" "$CLUSTER" start >/tmp/postgres-start.log 2>&1 \
        || die "pg_ctlcluster start failed (see /tmp/postgres-start.log and" \
            "/var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)"
fi

deadline=$((SECONDS + WAIT_SECONDS))
until as_postgres psql -p "$PORT" -h /var/run/postgresql -tAqc "SELECT 1" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        die "the server of cluster $VERSION/$CLUSTER does not answer after ${WAIT_SECONDS}s" \
            "(log: /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)"
    fi
    sleep 1
done

# the user and the database, if missing (the cluster may be left from an earlier run)
psql_admin() {
    as_postgres psql -p "$PORT" -h /var/run/postgresql -v ON_ERROR_STOP=1 -tAq "$@"
}
if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'plumio'")" != 1 ]]; then
    psql_admin -c "CREATE ROLE plumio LOGIN PASSWORD 'plumio'" || die "CREATE ROLE failed"
fi
if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'plumio'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE plumio OWNER plumio" || die "CREATE DATABASE failed"
fi

dsn_answers || die "the server is up but $DSN does not log in (is another server on port $PORT?)"
log "PostgreSQL answers at $DSN"
echo "export PLUMIO_POSTGRES_DSN=$DSN"
