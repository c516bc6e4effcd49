#!/usr/bin/env bash
# Installs dependencies, builds with warnings as errors, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD=${BUILD:-build} ./scripts/build.sh -Dwerror=true
meson test -C "${BUILD:-build}" --print-errorlogs --num-processes 2 "$@"
