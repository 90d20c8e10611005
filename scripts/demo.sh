#!/usr/bin/env bash
# Start the demo app (examples/demo_app.py) on loopback after setting up .venv.
# PORT picks the port (default 8000).  Ctrl-C stops the server.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

host=127.0.0.1
port="${PORT:-8000}"
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "error: PORT must be a number between 1 and 65535, got '$port'" >&2
    exit 2
fi

echo "sse_sm demo: open http://$host:$port/"
# A browser tab keeps /events open forever; without a bound, uvicorn would wait
# for it on Ctrl-C.  After 3 s it cancels the stream (its `finally` still runs).
exec "$VENV_PY" -m uvicorn examples.demo_app:app --host "$host" --port "$port" \
    --timeout-graceful-shutdown 3
