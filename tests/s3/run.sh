#!/usr/bin/env bash
# moto's S3-compatible server, for crates/objects/tests/s3_conformance.rs: the object store
# conformance suite runs against a real S3 API on a free loopback port.
#
#   run.sh install        create or refresh the venv (idempotent; CI runs it)
#   run.sh check          exit 0 when the venv holds the pinned version, else 2
#   run.sh serve PORT     run `moto_server` on 127.0.0.1:PORT in the foreground
#   run.sh install-s3s    build s3s-fs (pinned), an S3 server that checks presigned
#                         signatures, which moto does not (optional: about 5 min cold)
#
# The venv lives outside the clone (VIGIA_MOTO_VENV, default /var/tmp/vigia-moto-venv),
# s3s-fs too (VIGIA_S3S_ROOT, default /var/tmp/vigia-s3s), so repeated runs reuse them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VIGIA_MOTO_VENV:-/var/tmp/vigia-moto-venv}"
stamp="$venv/.vigia-requirements"
s3s_root="${VIGIA_S3S_ROOT:-/var/tmp/vigia-s3s}"
s3s_version="0.14.1"  # the newest whose rust-version (1.92) this toolchain meets

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
  install-s3s)
    if "$s3s_root/bin/s3s-fs" --version 2>/dev/null | grep -qx "s3s-fs $s3s_version"; then
      echo "s3s-fs: $s3s_root is up to date"; exit 0
    fi
    cargo install "s3s-fs@$s3s_version" --features binary --locked --root "$s3s_root" \
      --target-dir "$s3s_root/target" --quiet
    echo "s3s-fs: installed in $s3s_root (tests find $s3s_root/bin/s3s-fs)"
    ;;
  ""|-h|--help)
    sed -n '2,13p' "$0"; exit 64
    ;;
  *)
    echo "unknown command: $1 (see $0 --help)" >&2; exit 64
    ;;
esac
