#!/usr/bin/env bash
# Set-up and everyday commands for dss-console developers and evaluators.
#   ./dev.sh run    install into .venv, then start the embedded sandbox (real DSS server + demo data)
#   ./dev.sh test   install into .venv (with test extras), then lint and run the whole test suite
# Works on a fresh Debian/Ubuntu machine: missing system packages are installed with apt.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# git: the DSS server registers services from git repositories; openssl: the TLS test;
# curl: the transfer benchmark's reference.
SYSTEM_TOOLS=(git openssl curl)

need_system_packages() {
  local missing=()
  for tool in "${SYSTEM_TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if ((${#missing[@]})); then
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    echo "installing system packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_project() {
  local extras=$1
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
}

case "${1:-}" in
  run)
    need_system_packages
    install_project sandbox
    shift
    exec "$VENV/bin/dss-console" sandbox "$@"
    ;;
  test)
    need_system_packages
    install_project test
    shift
    "$VENV/bin/ruff" check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
