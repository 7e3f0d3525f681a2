#!/usr/bin/env bash
# Offline validation of deploy/ (no Docker engine, no cluster): pinned validators only.
#
#   run.sh install   install them (idempotent; CI runs it): npm ci here (node_modules is
#                    git-ignored) and a venv with kubernetes-validate outside the clone
#                    (VIGIA_DEPLOY_VENV, default /var/tmp/vigia-deploy-venv)
#   run.sh installed exit 0 when both hold the pinned versions, else 2
#   run.sh check     validate every manifest and compose file under deploy/ (exit 1 on any
#                    problem, 2 when not installed); VIGIA_DEPLOY_CHECK_DIR checks a copy
#   run.sh envs      the environment of every Vigía container, as JSON
#
# What is checked: Kubernetes manifests against the schemas of Kubernetes $K8S_VERSION
# with unknown fields refused (kubernetes-validate --strict) and against kubernetes-models
# (KEDA's ScaledObject too); compose files against the compose-spec schema; and, in
# check.mjs, every name a manifest takes from the code (settings, roles, routes, metrics).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VIGIA_DEPLOY_VENV:-/var/tmp/vigia-deploy-venv}"
stamp="$venv/.vigia-requirements"
npm_stamp="$here/node_modules/.vigia-package-lock.json"
# The Kubernetes version the manifests target: minikube's default in the README's steps.
K8S_VERSION=1.31.0

venv_ok() { [ -x "$venv/bin/kubernetes-validate" ] && cmp -s "$here/requirements.txt" "$stamp"; }
npm_ok() { [ -d "$here/node_modules" ] && cmp -s "$here/package-lock.json" "$npm_stamp"; }
require() {
  venv_ok && npm_ok && return
  echo "deploy validators: not installed (run: $0 install)" >&2
  exit 2
}

case "${1:-}" in
  install)
    if venv_ok; then
      echo "deploy validators: $venv is up to date"
    else
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
      cp "$here/requirements.txt" "$stamp"
      echo "deploy validators: kubernetes-validate installed in $venv"
    fi
    if npm_ok; then
      echo "deploy validators: node_modules is up to date"
    else
      (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
      cp "$here/package-lock.json" "$npm_stamp"
      echo "deploy validators: npm packages installed"
    fi
    ;;
  installed)
    venv_ok && npm_ok || exit 2
    ;;
  check)
    require
    dir="${VIGIA_DEPLOY_CHECK_DIR:-$here/../../deploy}"
    status=0
    # --quiet prints only failures; a kind it has no schema for (KEDA's) is left to check.mjs.
    "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" "$dir"/k8s/*.yaml || status=1
    node "$here/check.mjs" check || status=1
    exit "$status"
    ;;
  envs)
    require
    exec node "$here/check.mjs" envs
    ;;
  ""|-h|--help)
    sed -n '2,16p' "$0"; exit 64
    ;;
  *)
    echo "unknown command \`$1\`; use install, installed, check or envs" >&2; exit 64
    ;;
esac
