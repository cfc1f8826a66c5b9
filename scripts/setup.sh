#!/usr/bin/env bash
# Set up everything pbnb needs on a fresh Debian machine: a virtualenv with the
# package and its extras, the Debian packages and the npm packages the tests drive.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: chromium (browser tests), redis-server (backplane tests;
# each test starts its own, so the distribution's service is not needed), nginx (the
# reverse-proxy tests, which start their own too), nodejs and npm (Pyodide under Node).
missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages (Pyodide, ws) into js/node_modules, from the registry only:
# the tests load Pyodide from there, never from a CDN.
if [ ! -f js/node_modules/.pbnb-installed ] || [ js/package.json -nt js/node_modules/.pbnb-installed ]; then
    (cd js && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    touch js/node_modules/.pbnb-installed
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.pbnb-installed
# Installed editable, which also compiles pbnb's C speedups in place (setup.py): again
# when the C source changes.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ pbnb/core/_speedups.c -nt "$stamp" ] || [ pbnb/core/_receiving.c -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test,bench,fuzz,redis,docs,speed,lite]"
    touch "$stamp"
fi

# The wheels the JupyterLite site ships (js/lite-wheels), from the package index: the
# test builds the site from them and this checkout with nothing fetched at run time.
.venv/bin/python scripts/jupyterlite.py fetch
