#!/usr/bin/env bash
# Build the dss-console bundle from the current Python environment:
#   dist/dss-console/                                   one folder; run dist/dss-console/dss-console
#   dist/dss-console-<version>-linux-x86_64.tar.gz      on Linux: the folder + .desktop + icons
#
#   packaging/build.sh            (from any directory)
#
# The environment is, in this order: $PYTHON, the active virtualenv, <repo>/.venv, python3. It
# needs dss-console's dependencies with the gui and sandbox extras (./dev.sh run or test sets
# that up); PyInstaller is installed into it from packaging/requirements.txt when missing.
# PyInstaller copies the system libraries the bundled code links from the build machine, so
# build on the oldest system you support and keep it lean (see docs/packaging.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [[ -n ${PYTHON:-} ]]; then
  :
elif [[ -n ${VIRTUAL_ENV:-} && -x $VIRTUAL_ENV/bin/python ]]; then
  PYTHON=$VIRTUAL_ENV/bin/python
elif [[ -x .venv/bin/python ]]; then
  PYTHON=$ROOT/.venv/bin/python
else
  PYTHON=python3
fi

die() { echo "build.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
started=$(now)

# -- the environment ----------------------------------------------------------------------
missing=$("$PYTHON" - <<'PY'
import importlib.util
needed = ["dss_console", "PySide6.QtWidgets", "qasync", "itksnap_dss_server", "cheroot",
          "keyring", "requests", "platformdirs"]
missing = []
for name in needed:
    try:
        found = importlib.util.find_spec(name) is not None
    except ImportError:
        found = False
    if not found:
        missing.append(name)
print(" ".join(missing))
PY
) || die "cannot run $PYTHON"
if [[ -n $missing ]]; then
  die "$PYTHON lacks: $missing (install the project with its extras first, e.g. ./dev.sh test, or pip install -e '.[sandbox,gui]')"
fi
if ! "$PYTHON" -c 'import PyInstaller' 2>/dev/null; then
  echo "installing PyInstaller into $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
  "$PYTHON" -m pip install -q -r packaging/requirements.txt
fi
pyi_version=$("$PYTHON" -c 'import PyInstaller; print(PyInstaller.__version__)')
pinned=$(sed -n 's/^pyinstaller==//p' packaging/requirements.txt)
if [[ $pyi_version != "$pinned" ]]; then
  echo "note: PyInstaller $pyi_version here; the spec is tested with $pinned" >&2
fi

# -- the bundle ---------------------------------------------------------------------------
mkdir -p build dist
log=build/pyinstaller.log
rm -rf dist/dss-console
echo "building dist/dss-console with PyInstaller $pyi_version ($PYTHON) ..."
if ! "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
      --distpath dist --workpath build/pyinstaller packaging/dss-console.spec >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  die "PyInstaller failed (full log: $log)"
fi
exe=dist/dss-console/dss-console
[[ -x $exe || -x $exe.exe ]] || die "PyInstaller finished but $exe is missing (log: $log)"
built=$(now)

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/dss_console/__init__.py)
[[ -n $version ]] || die "no __version__ in src/dss_console/__init__.py"

# -- the Linux tarball --------------------------------------------------------------------
tarball=""
if [[ $(uname -s) == Linux ]]; then
  arch=$(uname -m)
  tarball=dist/dss-console-$version-linux-$arch.tar.gz
  extras=build/tarball
  rm -rf "$extras"
  mkdir -p "$extras/dss-console/share/applications" "$extras/dss-console/share/icons/hicolor/scalable/apps"
  cp resources/dss-console.desktop "$extras/dss-console/share/applications/"
  cp resources/icons/dss-console.svg "$extras/dss-console/share/icons/hicolor/scalable/apps/"
  for png in resources/icons/dss-console-*.png; do
    size=${png##*-}; size=${size%.png}
    mkdir -p "$extras/dss-console/share/icons/hicolor/${size}x${size}/apps"
    cp "$png" "$extras/dss-console/share/icons/hicolor/${size}x${size}/apps/dss-console.png"
  done
  sed "s/@VERSION@/$version/g" packaging/INSTALL.txt >"$extras/dss-console/INSTALL.txt"
  rm -f "$tarball"
  # Symbolic links inside the bundle are kept as links (PyInstaller >= 6 relies on them).
  tar --create --sort=name --owner=0 --group=0 --numeric-owner \
      -C dist dss-console \
      -C "$ROOT/$extras" dss-console/INSTALL.txt dss-console/share \
    | gzip -n -6 >"$tarball"
fi
finished=$(now)

# -- report -------------------------------------------------------------------------------
set +o pipefail  # the report below cuts long listings with head
echo
echo "dss-console $version bundle: dist/dss-console/  ($(du -sh dist/dss-console | cut -f1) unpacked)"
echo "largest files:"
find dist/dss-console -type f -printf '%s\t%P\n' | sort -nr | head -n 10 \
  | awk -F'\t' '{printf "  %7.1f MiB  %s\n", $1/1048576, $2}'
echo "by folder (_internal/):"
du -s --block-size=1K dist/dss-console/_internal/* 2>/dev/null | sort -nr | head -n 8 \
  | awk '{sub("dist/dss-console/", "", $2); printf "  %7.1f MiB  %s\n", $1/1024, $2}'
if [[ -n $tarball ]]; then
  echo "tarball: $tarball ($(du -h "$tarball" | cut -f1))"
fi
awk -v a="$started" -v b="$built" -v c="$finished" \
  'BEGIN { printf "build time: %.1f s (PyInstaller %.1f s, tarball %.1f s)\n", c - a, b - a, c - b }'
