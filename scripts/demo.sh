#!/usr/bin/env bash
# Start the demo app (examples/demo_app.py) on loopback after setting up .venv.
# PORT picks the port (default 8000).  Ctrl-C stops the server.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

port="${PORT:-8000}"
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "error: PORT must be a number between 1 and 65535, got '$port'" >&2
    exit 2
fi

# examples/demo_app.py prints the URL, serves on 127.0.0.1:$port, and on Ctrl-C
# drains every open stream (farewell event, clean end) before uvicorn exits.
PORT="$port" exec "$VENV_PY" -m examples.demo_app
