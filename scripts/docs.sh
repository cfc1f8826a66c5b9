#!/usr/bin/env bash
# Build the documentation site into site/ (strict: any warning fails the build).
#
#   bash scripts/docs.sh                 build site/ (executes every notebook afresh)
#   bash scripts/docs.sh --serve [PORT]  build, then serve it on http://127.0.0.1:PORT (8000)
#   bash scripts/docs.sh --quick         render the notebooks without running them
#   bash scripts/docs.sh --out DIR       build into DIR instead of site/
#   bash scripts/docs.sh --source DIR    build the pages in DIR instead of docs/ (the tests use it)
#
# Every build starts from scratch: nothing is reused from an earlier one.
set -euo pipefail
cd "$(dirname "$0")/.."

serve="" port=8000 out=site source=docs
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --serve)
            serve=1
            if [[ "${2:-}" =~ ^[0-9]+$ ]]; then port=$2; shift; fi ;;
        --quick) extra+=(-D notebook_pages_execute=0) ;;
        --out) out=$2; shift ;;
        --source) source=$2; shift ;;
        *) echo "usage: bash scripts/docs.sh [--serve [PORT]] [--quick] [--out DIR] [--source DIR]" >&2; exit 2 ;;
    esac
    shift
done

[ -x .venv/bin/sphinx-build ] || bash scripts/setup.sh  # a fresh machine: set up first
# Build in a scratch folder (myst-nb also writes beside the output folder), then move the site to $out.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# -n: every reference must resolve; -W --keep-going: report every warning, then fail.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python -m sphinx -b html -j auto -n -W --keep-going -q \
    -d "$work/doctrees" "${extra[@]}" "$source" "$work/html"
rm -rf "$out"
mv "$work/html" "$out"
echo "docs: built $out/index.html"

if [ -n "$serve" ]; then
    echo "docs: serving $out on http://127.0.0.1:$port (Ctrl-C stops)"
    exec .venv/bin/python -m http.server --bind 127.0.0.1 --directory "$out" "$port"
fi
