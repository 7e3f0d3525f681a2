#!/usr/bin/env bash
# Schemathesis against a running Vigía server: every check, the hooks in hooks.py.
#
#   run.sh install                 create or refresh the venv (idempotent; CI runs it)
#   run.sh check                   exit 0 when the venv holds the pinned version, else 2
#   run.sh BASE_URL TOKEN [ARGS…]  run `st run BASE_URL/api/openapi.json --checks all`
#                                  with the key; ARGS go to `st run` (e.g. --max-time 45)
#
# The venv lives outside the clone (VIGIA_SCHEMATHESIS_VENV, default
# /var/tmp/vigia-schemathesis-venv) so repeated runs reuse it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VIGIA_SCHEMATHESIS_VENV:-/var/tmp/vigia-schemathesis-venv}"
stamp="$venv/.vigia-requirements"

installed() { [ -x "$venv/bin/st" ] && cmp -s "$here/requirements.txt" "$stamp"; }

case "${1:-}" in
  install)
    if installed; then echo "schemathesis: $venv is up to date"; exit 0; fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
    echo "schemathesis: installed in $venv"
    ;;
  check)
    installed || { echo "schemathesis: not installed in $venv (run: $0 install)"; exit 2; }
    ;;
  ""|-h|--help)
    sed -n '2,10p' "$0"; exit 64
    ;;
  *)
    installed || { echo "schemathesis: not installed in $venv (run: $0 install)" >&2; exit 2; }
    base="$1" token="$2"; shift 2
    # /api/v1/ws answers a valid handshake with 101 and then speaks WebSocket, which an
    # HTTP fuzzer cannot follow; crates/vigia/tests/alerts.rs covers it with a real client.
    export SCHEMATHESIS_HOOKS="$here/hooks.py"
    # Schemathesis keeps a cache of past failures (`.schemathesis/`) and reports in its
    # working directory: a fresh one keeps them out of the clone and each run independent.
    cd "$(mktemp -d)"
    exec "$venv/bin/st" run "$base/api/openapi.json" \
      --checks all \
      --header "Authorization: Bearer $token" \
      --exclude-path /api/v1/ws \
      --request-timeout 5 \
      --no-color \
      "$@"
    ;;
esac
