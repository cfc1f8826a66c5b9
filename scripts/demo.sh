#!/usr/bin/env bash
# The demo on a laptop, as Binder does it: set up, start the demo broker and
# JupyterLab on notebooks/, print the URL. Ctrl-C stops everything.
# PBNB_LAB_PORT picks JupyterLab's port (default 8888).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

port=${PBNB_LAB_PORT:-8888}
url="http://127.0.0.1:$port/lab/tree/01-quickstart.ipynb"
settings=$(mktemp -d)
# Hide JupyterLab's "news" and update toasts: they cover the notebook.
echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
    >"$settings/overrides.json"
as_root=()
[ "$(id -u)" -ne 0 ] || as_root=(--allow-root)

lab_pid=""
cleanup() {
    trap - EXIT INT TERM
    # JupyterLab, its kernels and the demo broker share one process group.
    [ -z "$lab_pid" ] || kill -TERM -- "-$lab_pid" 2>/dev/null || true
    [ -z "$lab_pid" ] || wait "$lab_pid" 2>/dev/null || true
    rm -rf "$settings"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Token-less is safe only because it listens on 127.0.0.1. notebook_shim (for classic
# Notebook extensions, which Lab does not need) reads the deprecated ServerApp.token.
PATH="$PWD/.venv/bin:$PATH" TMPDIR="$settings" setsid binder/start jupyter lab --no-browser "${as_root[@]}" \
    --ServerApp.ip=127.0.0.1 --port="$port" --port-retries=0 \
    --IdentityProvider.token= \
    --ServerApp.jpserver_extensions='{"notebook_shim": False}' \
    --ServerApp.root_dir="$PWD/notebooks" --LabApp.app_settings_dir="$settings" &
lab_pid=$!

if ! .venv/bin/python - "$port" "$lab_pid" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1)
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(1)
        time.sleep(0.1)
sys.exit(1)
PY
then
    echo "demo.sh: JupyterLab did not start (is port $port free? set PBNB_LAB_PORT)" >&2
    exit 1
fi
echo
echo "pbnb demo ready: open $url"
echo "(Ctrl-C to stop JupyterLab and the demo broker)"
wait "$lab_pid"
