#!/usr/bin/env bash
# moto's S3-compatible server, for crates/objects/tests/s3_conformance.rs: the object store
# conformance suite runs against a real S3 API on a free loopback port.
#
#   run.sh install        create or refresh the venv (idempotent; CI runs it)
#   run.sh check          exit 0 when the venv holds the pinned version, else 2
#   run.sh serve PORT     run `moto_server` on 127.0.0.1:PORT in the foreground
#
# The venv lives outside the clone (VIGIA_MOTO_VENV, default /var/tmp/vigia-moto-venv)
# so repeated runs reuse it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VIGIA_MOTO_VENV:-/var/tmp/vigia-moto-venv}"
stamp="$venv/.vigia-requirements"

installed() { [ -x "$venv/bin/moto_server" ] && cmp -s "$here/requirements.txt" "$stamp"; }

case "${1:-}" in
  install)
    if installed; then echo "moto: $venv is up to date"; exit 0; fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
    echo "moto: installed in $venv"
    ;;
  check)
    installed || { echo "moto: not installed in $venv (run: $0 install)"; exit 2; }
    ;;
  serve)
    installed || { echo "moto: not installed in $venv (run: $0 install)" >&2; exit 2; }
    port="${2:?usage: $0 serve PORT}"
    # exec: the test kills this process id and so the server itself.
    exec "$venv/bin/moto_server" -H 127.0.0.1 -p "$port"
    ;;
  ""|-h|--help)
    sed -n '2,10p' "$0"; exit 64
    ;;
  *)
    echo "unknown command: $1 (see $0 --help)" >&2; exit 64
    ;;
esac
