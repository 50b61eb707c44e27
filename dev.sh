#!/usr/bin/env bash
# Set-up and everyday commands for dss-console developers and evaluators.
#   ./dev.sh run    install into .venv, then open the console on the embedded sandbox (a real DSS
#                   server with demo tickets); without a display it runs the console's self-test
#                   offscreen and saves a screenshot instead
#   ./dev.sh test   install into .venv (with test extras), then lint, type-check and run the
#                   whole test suite
# Works on a fresh Debian/Ubuntu machine: missing system packages are installed with apt.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# git: the DSS server registers services from git repositories; openssl: the TLS test;
# curl: the transfer benchmark's reference.
SYSTEM_TOOLS=(git openssl curl)
# What Qt needs on a fresh Debian/Ubuntu box: offscreen (tests), then a real X11 window.
QT_PACKAGES=(libgl1 libegl1 libfontconfig1 libxkbcommon0 libdbus-1-3 libglib2.0-0 fonts-dejavu-core
             libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0
             libxcb-shape0 libxkbcommon-x11-0)

# The SLURM tests run a real single-node cluster (munged, slurmctld, slurmd) as root.
SLURM_PACKAGES=(slurmctld slurmd slurm-client munge)
# The isolation tests run commands in a real sandbox (bubblewrap, what Flatpak uses).
SANDBOX_PACKAGES=(bubblewrap)
# The notification tests send to a real daemon (dunst) on a virtual X display (Xvfb); systemd
# for busctl, which `dunstctl history` calls (present on most systems already).
NOTIFY_PACKAGES=(dunst xvfb xauth systemd)

need_system_packages() {
  local missing=()
  if [[ ${1:-} == with-slurm && $(id -u) -eq 0 ]] && command -v dpkg >/dev/null 2>&1; then
    for pkg in "${SLURM_PACKAGES[@]}"; do
      dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
  fi
  if [[ ${1:-} == with-slurm ]] && command -v dpkg >/dev/null 2>&1; then
    for pkg in "${SANDBOX_PACKAGES[@]}" "${NOTIFY_PACKAGES[@]}"; do
      dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
  fi
  for tool in "${SYSTEM_TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${QT_PACKAGES[@]}"; do
      dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
  fi
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
    install_project sandbox,gui
    shift
    if [[ -n ${DISPLAY:-}${WAYLAND_DISPLAY:-} ]]; then
      exec "$VENV/bin/dss-console" --sandbox "$@"
    fi
    shot=${TMPDIR:-/tmp}/dss-console-sandbox.png
    echo "no display: running the console's self-test offscreen (claim, run, succeed)" >&2
    QT_QPA_PLATFORM=offscreen "$VENV/bin/dss-console" --sandbox --self-test --screenshot "$shot"
    echo "the console's window as it ended: $shot (open the GUI on a desktop with ./dev.sh run)" >&2
    ;;
  test)
    need_system_packages with-slurm
    install_project test
    shift
    "$VENV/bin/ruff" check .
    # The type checker proves the plug-in interfaces are kept (config: pyproject.toml).
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
