#!/usr/bin/env bash
# Start the machine's PostgreSQL and Redis on loopback if they are installed but down. The tests
# use them when they answer (or KERASYARD_TEST_PG / KERASYARD_TEST_REDIS); where the machine has
# none, the tests start their own (tests/services.py), so nothing here is required.
set -u
if [ "${KERASYARD_TEST_SERVICES:-auto}" = own ]; then
  echo "KERASYARD_TEST_SERVICES=own: the tests bring their own PostgreSQL and Redis"
  exit 0
fi
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "PostgreSQL is down; starting it"
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
fi
if command -v redis-cli >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis is down; starting it"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
exit 0
