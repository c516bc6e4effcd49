#!/usr/bin/env bash
# Configures (once) and builds linesight in ./build. Extra args go to `meson setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" --buildtype=release "$@" >/dev/null
fi
ninja -C "$BUILD" >/dev/null
