#!/usr/bin/env bash
# The integration tests use the real Redis on 127.0.0.1:6379. On this machine type it is started
# before the session; if it has stopped, start it the same way (no persistence: test data only).
set -euo pipefail
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "Redis not answering on 127.0.0.1:6379; starting it" >&2
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/perimeter-test-redis.log
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && exit 0; sleep 0.1; done
  echo "Redis did not start" >&2
  exit 1
fi
