#!/usr/bin/env bash
# Builds the non-Rust test guests: unmodified `wasi:http/proxy` components.
#
#   tests/guests-build.sh OUTDIR
#
# writes OUTDIR/reach-py.wasm (componentize-py, tests/guests-py/reach/app.py),
# OUTDIR/reach-js.wasm (componentize-js, tests/guests-js/reach/app.js), and the SDK
# samples OUTDIR/{counter,gateway}-{py,js}.wasm (guest-sdk-py/build.sh and
# guest-sdk-js/build.sh). A component newer than all of its sources (and its toolchain)
# is not rebuilt.
#
# Toolchains are cached outside the repo and installed only when missing or at another
# version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/nanogrid/py-guests  venv, componentize-py==0.25.1 (PyPI)
#   ${XDG_CACHE_HOME:-$HOME/.cache}/nanogrid/js         npm ci of tests/guests-js/package.json
#                                                       + package-lock.json (copied there)
# Needs: python3 with venv (Debian: python3-venv), node >= 20 and npm. Installing needs
# PyPI and the npm registry; building needs no network.
#
# WIT: tests/guests-wit (WASI 0.2.12, as linked by the host). componentize-js 0.23.0's
# engine is built on WASI 0.2.10 and exports only wasi:http/incoming-handler@0.2.10, so
# its build gets a copy of that WIT relabelled 0.2.10 (0.2.10 and 0.2.12 differ only in
# wasi:cli/exit.exit-with-code, which the world does not import, and in unstable items).
set -euo pipefail

PY_TOOL_VERSION=0.25.1
JS_WASI_VERSION=0.2.10

log() { echo "guests-build: $*" >&2; }
die() {
  echo "guests-build: ERROR: $*" >&2
  exit 1
}

[[ $# -eq 1 && -n $1 ]] || die "usage: tests/guests-build.sh OUTDIR"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/nanogrid
PY_VENV=$CACHE/py-guests
JS_DIR=$CACHE/js
WIT=$ROOT/tests/guests-wit
mkdir -p "$CACHE"

# One build at a time per cache (npm ci and venv creation are not concurrency-safe).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/guests-build.lock"
  flock 9
fi

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/nanogrid-guests.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
size() { stat -c %s "$1"; }

# True when $1 exists and no later path argument (file or directory tree) is newer.
up_to_date() {
  local out=$1
  shift
  [[ -f $out ]] || return 1
  [[ -z $(find -L "$@" -newer "$out" -print -quit) ]]
}

# Imports of a component, one line, if jco (installed with componentize-js) is there.
show_imports() {
  local jco=$JS_DIR/node_modules/.bin/jco
  [[ -x $jco ]] || return 0
  local list
  list=$("$jco" wit "$1" 2>/dev/null | sed -n 's/^ *import \([^:]*:[^;]*\);$/\1/p' | sort | tr '\n' ' ') || return 0
  log "  imports: $list"
}

ensure_py() {
  local tool=$PY_VENV/bin/componentize-py
  if [[ -x $tool ]] && [[ $("$tool" --version 2>/dev/null) == "componentize-py $PY_TOOL_VERSION" ]]; then
    return
  fi
  command -v python3 >/dev/null || die "python3 not found; it is needed to install componentize-py"
  log "installing componentize-py $PY_TOOL_VERSION into $PY_VENV"
  local t0
  t0=$(now)
  python3 -m venv --clear "$PY_VENV" ||
    die "could not create a venv at $PY_VENV (on Debian: apt-get install python3-venv)"
  "$PY_VENV/bin/pip" install --disable-pip-version-check --no-input -q "componentize-py==$PY_TOOL_VERSION" ||
    die "could not install componentize-py==$PY_TOOL_VERSION from PyPI into $PY_VENV"
  [[ $("$tool" --version 2>/dev/null) == "componentize-py $PY_TOOL_VERSION" ]] ||
    die "componentize-py in $PY_VENV does not report version $PY_TOOL_VERSION after installing"
  log "installed componentize-py $PY_TOOL_VERSION in $(since "$t0")s"
}

ensure_js() {
  command -v node >/dev/null || die "node not found; componentize-js needs node >= 20"
  command -v npm >/dev/null || die "npm not found; it is needed to install componentize-js"
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  ((major >= 20)) || die "node $(node --version) is too old; componentize-js needs node >= 20"
  local want
  want=$(node -p 'require(process.argv[1]).devDependencies["@bytecodealliance/componentize-js"]' \
    "$ROOT/tests/guests-js/package.json")
  local have=""
  local pkg=$JS_DIR/node_modules/@bytecodealliance/componentize-js/package.json
  [[ -f $pkg ]] && have=$(node -p 'require(process.argv[1]).version' "$pkg")
  if [[ $have == "$want" ]] && cmp -s "$ROOT/tests/guests-js/package-lock.json" "$JS_DIR/package-lock.json"; then
    return
  fi
  log "installing componentize-js $want into $JS_DIR (npm ci)"
  local t0
  t0=$(now)
  mkdir -p "$JS_DIR"
  cp "$ROOT/tests/guests-js/package.json" "$ROOT/tests/guests-js/package-lock.json" "$JS_DIR/"
  (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
    die "could not install componentize-js $want with npm ci in $JS_DIR"
  [[ -x $JS_DIR/node_modules/.bin/componentize-js ]] ||
    die "npm ci in $JS_DIR did not install the componentize-js command"
  log "installed componentize-js $want in $(since "$t0")s"
}

build_py() {
  local out=$OUT/reach-py.wasm src=$ROOT/tests/guests-py/reach
  if up_to_date "$out" "$src/app.py" "$WIT" "$PY_VENV/bin/componentize-py"; then
    log "$out is up to date ($(size "$out") bytes)"
    return
  fi
  # componentize-py writes __pycache__ next to the app: build from a copy.
  mkdir -p "$STAGE/py"
  cp "$src/app.py" "$STAGE/py/"
  local t0
  t0=$(now)
  "$PY_VENV/bin/componentize-py" -q -d "$WIT" -w "wasi:http/proxy@0.2.12" \
    componentize -p "$STAGE/py" app -o "$STAGE/reach-py.wasm" ||
    die "componentize-py failed to build $src/app.py"
  mv "$STAGE/reach-py.wasm" "$out"
  log "built $out ($(size "$out") bytes) in $(since "$t0")s"
  show_imports "$out"
}

build_js() {
  local out=$OUT/reach-js.wasm src=$ROOT/tests/guests-js/reach
  if up_to_date "$out" "$src/app.js" "$WIT" "$ROOT/tests/guests-js/package-lock.json"; then
    log "$out is up to date ($(size "$out") bytes)"
    return
  fi
  mkdir -p "$STAGE/wit-js"
  cp -rL "$WIT/." "$STAGE/wit-js/"
  find "$STAGE/wit-js" -name '*.wit' -exec sed -i "s/0\.2\.12/$JS_WASI_VERSION/g" {} +
  local t0
  t0=$(now)
  "$JS_DIR/node_modules/.bin/componentize-js" --wit "$STAGE/wit-js" -n reach-js \
    -o "$STAGE/reach-js.wasm" "$src/app.js" >&2 ||
    die "componentize-js failed to build $src/app.js"
  mv "$STAGE/reach-js.wasm" "$out"
  log "built $out ($(size "$out") bytes) in $(since "$t0")s"
  show_imports "$out"
}

# The nanoservice SDKs' samples, each with its language's SDK build script.
build_sdk_samples() {
  local lang=$1 tool=$2 sdk=$ROOT/guest-sdk-$1
  [[ -f $sdk/build.sh ]] || return 0
  for app in counter gateway; do
    local out=$OUT/$app-$lang.wasm
    if up_to_date "$out" "$sdk" "$ROOT/wit" "$tool"; then
      log "$out is up to date ($(size "$out") bytes)"
      continue
    fi
    local t0
    t0=$(now)
    bash "$sdk/build.sh" "$sdk/samples/$app" "$out" || die "building $sdk/samples/$app failed"
    log "built $out ($(size "$out") bytes) in $(since "$t0")s"
  done
}

ensure_py
ensure_js
build_py
build_js
build_sdk_samples py "$PY_VENV/bin/componentize-py"
build_sdk_samples js "$JS_DIR/node_modules/.bin/componentize-js"
