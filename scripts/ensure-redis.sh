#!/usr/bin/env bash
# ensure-redis: make sure a Redis answers on 127.0.0.1:6379 for the tests.
# Starts a throw-away one (no persistence) when none answers; fails clearly when it cannot.
set -euo pipefail
host=127.0.0.1 port=6379

ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG
  else
    # bash /dev/tcp fallback: send PING, expect +PONG
    { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    local reply; read -r -t 2 reply <&3 || true
    exec 3>&- 3<&-
    [[ "$reply" == +PONG* ]]
  fi
}

# The Redis Cluster and Sentinel tests (internal/redistest) start their own
# servers, so the binaries are needed even when a Redis already answers.
for bin in redis-server redis-cli; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "ensure-redis: $bin is not installed; the tests need it (the Cluster and Sentinel tests start their own servers)." >&2
    echo "ensure-redis: install Redis 7 (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis)." >&2
    exit 1
  fi
done

if ping; then exit 0; fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "ensure-redis: no Redis answers on $host:$port and redis-server is not installed." >&2
  echo "ensure-redis: install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or start one on $host:$port." >&2
  exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/vivi-redis.XXXXXX")
echo "ensure-redis: starting redis-server on $host:$port (data in $dir, nothing persisted)" >&2
redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" >/dev/null
for _ in $(seq 1 50); do
  # The Redis Cluster and Sentinel tests (internal/redistest) start their own
# servers, so the binaries are needed even when a Redis already answers.
for bin in redis-server redis-cli; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "ensure-redis: $bin is not installed; the tests need it (the Cluster and Sentinel tests start their own servers)." >&2
    echo "ensure-redis: install Redis 7 (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis)." >&2
    exit 1
  fi
done

if ping; then exit 0; fi
  sleep 0.1
done
echo "ensure-redis: redis-server did not answer on $host:$port within 5 s; see $dir/redis.log" >&2
exit 1
