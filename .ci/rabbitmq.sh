#!/usr/bin/env bash
# Start a RabbitMQ server for the AMQP adapter's tests, bound to 127.0.0.1 only. Idempotent.
#
#   .ci/rabbitmq.sh            install (apt) if missing, start if not answering, wait until it does
#
# Environment:
#   RABBITMQ_WAIT_SECONDS   how long to wait for the node to answer (default 90)
#   RABBITMQ_NO_INSTALL=1   fail instead of installing rabbitmq-server with apt-get
#
# Every listener is loopback-only: AMQP (5672), Erlang distribution (25672) and epmd (4369).
# The management plugin is not enabled. Exits non-zero with a message saying what failed.
set -euo pipefail

WAIT_SECONDS="${RABBITMQ_WAIT_SECONDS:-90}"
export RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-rabbit@localhost}"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="${RABBITMQ_NODE_PORT:-5672}"
export RABBITMQ_DIST_PORT="${RABBITMQ_DIST_PORT:-25672}"
export ERL_EPMD_ADDRESS=127.0.0.1
# the distribution listener follows inet_dist_use_interface, not NODE_IP_ADDRESS
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

die() {
    echo "rabbitmq.sh: $*" >&2
    exit 1
}

log() {
    echo "rabbitmq.sh: $*"
}

amqp_answers() {
    # a TCP connect plus the AMQP protocol header: a broker answers with connection.start
    python3 - "$RABBITMQ_NODE_PORT" <<'EOF' >/dev/null 2>&1
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
    s.settimeout(2)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    frame = s.recv(7)
sys.exit(0 if frame[:1] == b"\x01" else 1)
EOF
}

node_answers() {
    rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

if amqp_answers; then
    log "RabbitMQ already answers on 127.0.0.1:${RABBITMQ_NODE_PORT}"
    exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    [[ "${RABBITMQ_NO_INSTALL:-0}" == 1 ]] && die "rabbitmq-server is not installed"
    command -v apt-get >/dev/null 2>&1 || die "rabbitmq-server is not installed and apt-get is missing"
    [[ "$(id -u)" == 0 ]] || die "installing rabbitmq-server needs root (or install it first)"
    log "installing rabbitmq-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends rabbitmq-server >/tmp/rabbitmq-apt.log 2>&1; then
        apt-get update >>/tmp/rabbitmq-apt.log 2>&1 || die "apt-get update failed (see /tmp/rabbitmq-apt.log)"
        apt-get install -y --no-install-recommends rabbitmq-server >>/tmp/rabbitmq-apt.log 2>&1 \
            || die "apt-get install rabbitmq-server failed (see /tmp/rabbitmq-apt.log)"
    fi
    # a package post-install script may have started a node with default (all-interface)
    # settings; stop it so that ours, bound to loopback, takes its place
    if node_answers; then
        log "stopping the node the package started"
        rabbitmqctl -q stop >/dev/null 2>&1 || true
    fi
fi

if node_answers; then
    # the node runs but its AMQP listener does not answer: the app is stopped
    log "node is up with its app stopped; starting the app"
    rabbitmqctl -q start_app >/dev/null 2>&1 || die "rabbitmqctl start_app failed"
else
    log "starting rabbitmq-server on 127.0.0.1 (node ${RABBITMQ_NODENAME})"
    epmd -address 127.0.0.1 -daemon || die "epmd failed to start"
    rabbitmq-server -detached >/tmp/rabbitmq-start.log 2>&1 \
        || die "rabbitmq-server -detached failed (see /tmp/rabbitmq-start.log)"
fi

deadline=$((SECONDS + WAIT_SECONDS))
until amqp_answers; do
    if ((SECONDS >= deadline)); then
        die "no AMQP answer on 127.0.0.1:${RABBITMQ_NODE_PORT} after ${WAIT_SECONDS}s" \
            "(logs: /var/log/rabbitmq/, /tmp/rabbitmq-start.log)"
    fi
    sleep 1
done
log "RabbitMQ answers on 127.0.0.1:${RABBITMQ_NODE_PORT}"
