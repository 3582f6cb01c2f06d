#!/usr/bin/env bash
# Builds a Python nanoservice into a component of nanogrid:service/nanoservice.
#
#   guest-sdk-py/build.sh APP_DIR OUT.wasm
#
# APP_DIR holds app.py (the module componentize-py wraps: it must bind `Handler`, e.g.
# `Handler = export(MyService)`) and any other .py modules/packages it imports. The app
# and the SDK (guest-sdk-py/nanogrid) are copied into a temporary staging directory first,
# because componentize-py writes __pycache__ next to the sources it compiles.
#
# Toolchain: componentize-py 0.25.1 in the venv
#   ${XDG_CACHE_HOME:-$HOME/.cache}/nanogrid/py-guests
# (tests/guests-build.sh installs it there). Building needs no network.
set -euo pipefail

die() {
  echo "build.sh: ERROR: $*" >&2
  exit 1
}

[[ $# -eq 2 && -n $1 && -n $2 ]] || die "usage: guest-sdk-py/build.sh APP_DIR OUT.wasm"
SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SDK/.." && pwd)
WIT=$ROOT/wit
APP=$1
OUT=$2
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/nanogrid/py-guests
TOOL=$VENV/bin/componentize-py

[[ -x $TOOL ]] || die "componentize-py not found at $TOOL; install it with:
  python3 -m venv '$VENV' && '$VENV/bin/pip' install componentize-py==0.25.1
(or run tests/guests-build.sh, which installs it there)"
[[ -f $APP/app.py ]] || die "$APP/app.py not found"
[[ -d $WIT ]] || die "WIT directory $WIT not found"

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/nanogrid-py.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/src"
# The app directory, without caches or earlier outputs; then the SDK (the app's own
# copy of `nanogrid`, if it has one, loses to the SDK's).
(cd "$APP" && find . -path '*/__pycache__' -prune -o \( -name '*.wasm' -o -name '*.pyc' \) -prune -o -type f -print0 |
  xargs -0 -r cp --parents -t "$STAGE/src")
rm -rf "$STAGE/src/nanogrid"
cp -r "$SDK/nanogrid" "$STAGE/src/nanogrid"
find "$STAGE/src" -name __pycache__ -prune -exec rm -rf {} +

start=$(date +%s.%N)
# Rust backtraces from componentize-py bury its one-line Python error; leave them out.
if ! RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$TOOL" -q -d "$WIT" -w nanogrid:service/nanoservice \
  componentize -p "$STAGE/src" app -o "$STAGE/out.wasm" 2>"$STAGE/err"; then
  cat "$STAGE/err" >&2
  if grep -q "has no attribute 'Handler'" "$STAGE/err"; then
    die "$APP/app.py must bind the exported class at its top level: Handler = export(YourService)"
  fi
  die "componentize-py failed to build $APP/app.py"
fi
[[ -s $STAGE/err ]] && cat "$STAGE/err" >&2
mkdir -p "$(dirname "$OUT")"
mv "$STAGE/out.wasm" "$OUT"
echo "build.sh: built $OUT ($(stat -c %s "$OUT") bytes) in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2
