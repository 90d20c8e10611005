#!/usr/bin/env bash
# The demo (examples/demo_app.py) as two workers sharing one Redis:
#
#   bash scripts/demo_redis.sh
#
# Sets up .venv (scripts/_venv.sh), installs redis-server if it is missing
# (scripts/install_redis.sh), starts a throwaway redis-server on loopback in a
# temporary directory (no persistence), then two uvicorn workers of the demo on
# PORT and PORT+1 whose hubs use the Redis backend.  Only the first runs the
# ticker (DEMO_TICKER=0 for the second), so every tick is published once and
# both workers stream the same ticks with the same ids.  It prints both URLs.
#
# Ctrl-C (or SIGTERM) stops the workers, each draining its open streams
# (farewell event, clean end), then redis-server, and removes the directory.
# If a worker or Redis dies, the rest is stopped the same way.
#
# Environment:
#   PORT               the first worker's port (default 8000); the second uses PORT+1
#   REDIS_PORT         redis-server's port (default: a free one)
#   DEMO_TICK_SECONDS  seconds between ticks (default 1)
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

check_port() {  # name value
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
        echo "error: $1 must be a number between 1 and 65535, got '$2'" >&2
        exit 2
    fi
}
port="${PORT:-8000}"
check_port PORT "$port"
check_port "PORT+1" "$((port + 1))"

if ! command -v redis-server >/dev/null 2>&1; then
    bash scripts/install_redis.sh
    command -v redis-server >/dev/null 2>&1 \
        || { echo "error: no redis-server, and it could not be installed" >&2; exit 1; }
fi
if ! "$VENV_PY" -c 'import coredis' >/dev/null 2>&1; then
    echo "error: coredis is missing from .venv: $VENV_PY -m pip install -e '.[redis]'" >&2
    exit 1
fi

if [[ -n "${REDIS_PORT:-}" ]]; then
    redis_port="$REDIS_PORT"
    check_port REDIS_PORT "$redis_port"
else
    redis_port="$("$VENV_PY" -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
')"
fi
redis_url="redis://127.0.0.1:$redis_port/0"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/sse_sm-demo-redis.XXXXXX")"
redis_pid=""
worker_pids=()

running() {  # pid: alive and not a zombie
    kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_process() {  # pid signal seconds: signal it (unless "-"), wait, then SIGKILL its session
    local pid="$1" sig="$2" seconds="$3" waited=0
    if [[ "$sig" != - ]] && running "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
    fi
    while running "$pid" && ((waited < seconds * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if running "$pid"; then
        echo "==> pid $pid did not stop within ${seconds} s: killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stopped=0
stop() {
    ((stopped)) && return
    stopped=1
    # Another Ctrl-C now would leave the workers running: ignore it (this is bounded).
    trap '' INT TERM
    # The workers first: each drains its streams (uvicorn's graceful shutdown
    # allows 5 s), and their backends close while Redis is still up.
    if ((${#worker_pids[@]})); then
        echo "==> stopping the workers (pids ${worker_pids[*]})"
        for pid in "${worker_pids[@]}"; do  # both at once, one SIGINT each
            if running "$pid"; then kill -INT "$pid" 2>/dev/null || true; fi
        done
        for pid in "${worker_pids[@]}"; do
            stop_process "$pid" - 10
        done
    fi
    if [[ -n "$redis_pid" ]]; then
        echo "==> stopping redis-server (pid $redis_pid)"
        stop_process "$redis_pid" TERM 5
    fi
    rm -rf "$workdir"
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

# Each child runs in a session of its own (setsid), so the terminal's Ctrl-C
# reaches this script only, and each worker gets exactly one SIGINT from
# stop(): a second one would make uvicorn exit without draining.
setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$workdir" --logfile "$workdir/redis.log" --daemonize no </dev/null &
redis_pid=$!

for i in 0 1; do
    PORT="$((port + i))" DEMO_REDIS_URL="$redis_url" DEMO_TICKER="$((i == 0 ? 1 : 0))" \
        setsid "$VENV_PY" -m examples.demo_app </dev/null &
    worker_pids+=($!)
done

# Wait (30 s at most) for Redis to answer PING and both workers' /health.
if ! "$VENV_PY" - "$redis_port" "$port" "$((port + 1))" <<'PY'; then
import socket
import sys
import time
import urllib.request

redis_port, *ports = (int(arg) for arg in sys.argv[1:])
deadline = time.monotonic() + 30


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", redis_port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.read() == b"ok"
    except OSError:
        return False


while not (redis_up() and all(healthy(port) for port in ports)):
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
PY
    echo "error: Redis or a worker did not come up within 30 s; see the output above" >&2
    [[ -f "$workdir/redis.log" ]] && tail -n 20 "$workdir/redis.log" >&2
    exit 1
fi

cat <<EOF
==> two demo workers share $redis_url
    worker 1, runs the ticker: http://127.0.0.1:$port/   pid ${worker_pids[0]} (examples.demo_app)
    worker 2, no ticker:       http://127.0.0.1:$((port + 1))/   pid ${worker_pids[1]} (examples.demo_app)
    redis-server: pid $redis_pid (redis-server), files in $workdir
    try: curl -N http://127.0.0.1:$port/events and curl -N http://127.0.0.1:$((port + 1))/events
==> ready: Ctrl-C stops the workers (their streams drain), then redis-server
EOF

# Until Ctrl-C (the trap), or until any of them exits by itself.
wait -n || true
echo "==> a process exited by itself; stopping the others" >&2
exit 1
