#!/usr/bin/env bash
# Check a built bundle the way a machine without Python would use it:
#
#   packaging/check_bundle.sh [BUNDLE_DIR]      (default: <repo>/dist/dss-console)
#
# Every run of the bundle gets a PATH without any project virtualenv (/usr/bin:/bin), an
# empty HOME and XDG dirs in a temporary folder, and QT_QPA_PLATFORM=offscreen. Checks:
#   - the unpacked size is at most DSS_BUNDLE_MAX_MIB (default 250) MiB;
#   - the bundle takes from the system only the libraries a target is expected to have
#     (C library, OpenGL/EGL, libxcb, Wayland client, fontconfig/freetype, C++ runtime);
#   - --version, and --help of worker, pro, login, sandbox, v6;
#   - itksnap-wt: `wt --shim DIR`, then DIR/itksnap-wt lists a workspace's layers;
#   - the hook: `dss-console _hook info hello` appends a JSON line to $DSS_EVENTS;
#   - the console's end-to-end self-test on the embedded sandbox (log in, claim a demo
#     ticket, run the demo service, upload, success), with a screenshot;
# then measures the console window's time to first paint (DSS_FIRST_PAINT_RUNS runs,
# default 4: the first with the bundle's files evicted from the page cache, then warm).
# Exits non-zero with a message naming the failed check; ends with "N passed, 0 failed".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=$(cd "${1:-$ROOT/dist/dss-console}" 2>/dev/null && pwd) \
  || { echo "check_bundle: FAILED: no bundle at ${1:-$ROOT/dist/dss-console} (run packaging/build.sh)" >&2; exit 1; }
EXE=$BUNDLE/dss-console
MAX_MIB=${DSS_BUNDLE_MAX_MIB:-250}
PAINT_RUNS=${DSS_FIRST_PAINT_RUNS:-4}
SELF_TEST_TIMEOUT=${DSS_SELF_TEST_TIMEOUT:-240}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dss-bundle-check.XXXXXX")
gui_pid=""
cleanup() {
  if [[ -n $gui_pid ]]; then kill "$gui_pid" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "check_bundle: FAILED: $*" >&2; exit 1; }
passed=0
pass() { echo "ok   $*"; passed=$((passed + 1)); }
now() { date +%s.%N; }

mkdir -p "$TMP"/{home,config,data,cache,state,runtime,tmp}
chmod 700 "$TMP/runtime"
# The clean environment every run of the bundle gets.
bundle_env=(env -i
  PATH=/usr/bin:/bin
  HOME="$TMP/home"
  XDG_CONFIG_HOME="$TMP/config" XDG_DATA_HOME="$TMP/data" XDG_CACHE_HOME="$TMP/cache"
  XDG_STATE_HOME="$TMP/state" XDG_RUNTIME_DIR="$TMP/runtime"
  TMPDIR="$TMP/tmp"
  LANG=C.UTF-8
  QT_QPA_PLATFORM=offscreen)
run() { "${bundle_env[@]}" "$@"; }

echo "checking $BUNDLE"
[[ -x $EXE ]] || fail "$EXE is missing or not executable"

# -- size ---------------------------------------------------------------------------------
size_kib=$(du -sk "$BUNDLE" | cut -f1)
size_mib=$(awk -v k="$size_kib" 'BEGIN { printf "%.1f", k / 1024 }')
awk -v s="$size_mib" -v m="$MAX_MIB" 'BEGIN { exit !(s <= m) }' \
  || fail "the bundle takes ${size_mib} MiB, more than ${MAX_MIB} MiB"
pass "size: ${size_mib} MiB unpacked (limit ${MAX_MIB} MiB)"

# -- libraries expected from the system ----------------------------------------------------
# PyInstaller bundles the system libraries it finds on the build machine. What the bundle
# may take from the target instead: the C library, the desktop's OpenGL/EGL, libxcb and
# Wayland client libraries, fontconfig/freetype and the C++ runtime (see docs/packaging.md).
# Anything else missing from the bundle means the build machine lacked it (e.g. a build
# without libxcb-cursor0 installed), and the bundle would need it on every target.
SYSTEM_OK='^(libc|libm|libdl|libpthread|librt|libutil|libresolv|libanl|ld-linux-x86-64|ld-linux-aarch64|libstdc\+\+|libgcc_s|libGL|libEGL|libGLX|libGLdispatch|libOpenGL|libxcb|libwayland-client|libwayland-cursor|libwayland-egl|libfontconfig|libfreetype)\.so'
if [[ $(uname -s) == Linux ]] && command -v readelf >/dev/null 2>&1; then
  provided=$TMP/provided.txt needed=$TMP/needed.txt
  find "$BUNDLE" \( -type f -o -type l \) -name '*.so*' -printf '%f\n' | sort -u >"$provided"
  find "$BUNDLE" -type f \( -name '*.so*' -o -path "$EXE" \) -print0 \
    | { xargs -0 readelf -d 2>/dev/null || true; } \
    | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p' | sort -u >"$needed"
  from_system=$(comm -23 "$needed" "$provided")
  unexpected=$(grep -Ev "$SYSTEM_OK" <<<"$from_system" || true)
  [[ -z $unexpected ]] || fail "the bundle needs system libraries it should carry (was the" \
    "build machine missing them?): $(tr '\n' ' ' <<<"$unexpected")"
  pass "libraries from the system: $(tr '\n' ' ' <<<"$from_system")"
else
  echo "skip system-library check (needs Linux and readelf from binutils)"
fi

# -- the CLI ------------------------------------------------------------------------------
version=$(run "$EXE" --version 2>&1) || fail "--version exited non-zero: $version"
[[ $version == "dss-console "* ]] || fail "--version printed: $version"
pass "--version: $version"
for verb in worker pro login sandbox v6; do
  out=$(run "$EXE" "$verb" --help 2>&1) || fail "'$verb --help' exited non-zero: ${out:0:400}"
  [[ $out == *usage:* ]] || fail "'$verb --help' printed no usage: ${out:0:400}"
  pass "$verb --help"
done

# -- the hook -----------------------------------------------------------------------------
events=$TMP/events.jsonl
: >"$events"
out=$(cd "$TMP" && run DSS_EVENTS="$events" "$EXE" _hook info hello 2>&1) \
  || fail "the hook ('_hook info hello') exited non-zero: $out"
grep -q '"args": \["info", "hello"\]' "$events" \
  || fail "the hook wrote no event to \$DSS_EVENTS (file: $(cat "$events"))"
pass "hook: _hook info hello -> $(wc -l <"$events") JSON line in \$DSS_EVENTS"

# -- itksnap-wt through its shim ---------------------------------------------------------
out=$(run "$EXE" wt --shim "$TMP/shim" 2>&1) || fail "'wt --shim' exited non-zero: $out"
cp "$ROOT/tests/wt_data/saved_by_itksnap.itksnap" "$TMP/ws.itksnap"
out=$(run "$TMP/shim/itksnap-wt" -i "$TMP/ws.itksnap" -layers-list 2>&1) \
  || fail "the itksnap-wt shim exited non-zero: ${out:0:400}"
[[ $out == *"2> 000    Main"* ]] || fail "the itksnap-wt shim listed no layers: ${out:0:400}"
pass "itksnap-wt shim: -i WS -layers-list"

# -- the console's end-to-end self-test ---------------------------------------------------
shot=$TMP/bundle.png
started=$(now)
set +e
timeout "$SELF_TEST_TIMEOUT" "${bundle_env[@]}" "$EXE" --sandbox --self-test --screenshot "$shot" \
  >"$TMP/self-test.log" 2>&1
status=$?
set -e
elapsed=$(awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
if ((status != 0)); then
  tail -n 30 "$TMP/self-test.log" >&2
  fail "the self-test (--sandbox --self-test) exited with $status after ${elapsed} s"
fi
[[ $(head -c 8 "$shot" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] \
  || fail "the self-test passed but wrote no PNG screenshot"
if [[ -n ${DSS_BUNDLE_SCREENSHOT:-} ]]; then cp "$shot" "$DSS_BUNDLE_SCREENSHOT"; fi
pass "self-test: claim, run, upload, success on the embedded sandbox in ${elapsed} s" \
     "(screenshot $(du -k "$shot" | cut -f1) KiB${DSS_BUNDLE_SCREENSHOT:+, kept as $DSS_BUNDLE_SCREENSHOT})"

# -- time to first paint ------------------------------------------------------------------
evict_bundle_from_page_cache() {
  # dd's "nocache" with count=0 asks the kernel to drop the file's cached pages (no root
  # needed). The system's own libraries and fonts stay cached.
  find "$BUNDLE" -type f -exec sh -c \
    'for f; do dd if="$f" iflag=nocache count=0 status=none 2>/dev/null; done; true' sh {} + \
    || true
}

paint_s=""
first_paint() {  # sets paint_s: seconds from exec to the window's first paint
  local out=$TMP/paint.out launched painted
  : >"$out"
  launched=$(now)
  "${bundle_env[@]}" DSS_CONSOLE_REPORT_FIRST_PAINT=1 "$EXE" >"$out" 2>&1 &
  gui_pid=$!
  for _ in $(seq 3000); do  # up to a minute or more
    grep -q '^DSS_CONSOLE_FIRST_PAINT ' "$out" && break
    kill -0 "$gui_pid" 2>/dev/null || break
    sleep 0.02
  done
  painted=$(sed -n 's/^DSS_CONSOLE_FIRST_PAINT \([0-9.]*\).*/\1/p' "$out" | head -n 1)
  kill "$gui_pid" 2>/dev/null || true
  wait "$gui_pid" 2>/dev/null || true
  gui_pid=""
  if [[ -z $painted ]]; then
    tail -n 20 "$out" >&2
    fail "the console window never reported its first paint"
  fi
  paint_s=$(awk -v a="$launched" -v b="$painted" 'BEGIN { printf "%.3f", b - a }')
}

paints=()
for ((i = 1; i <= PAINT_RUNS; i++)); do
  if ((i == 1)); then evict_bundle_from_page_cache; fi
  first_paint
  paints+=("$paint_s")
done
cold=${paints[0]}
warm=$(printf '%s\n' "${paints[@]:1}" | sort -n \
  | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }')
pass "first paint: cold ${cold} s (bundle evicted from the page cache), warm ${warm} s" \
     "(median of $((PAINT_RUNS - 1)); all runs: ${paints[*]})"

# The plain closing line CI reads as a test result.
echo "check_bundle: ${passed} passed, 0 failed"
