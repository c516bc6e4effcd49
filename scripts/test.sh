#!/usr/bin/env bash
# Installs dependencies, builds with warnings as errors, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD=${BUILD:-build} ./scripts/build.sh -Dwerror=true
meson test -C "${BUILD:-build}" --print-errorlogs --num-processes 2 "$@"
# The whole suite (no arguments) runs again under AddressSanitizer + UndefinedBehavior-
# Sanitizer, leaks checked (build-asan; SANITIZE=0 skips both sanitizer passes;
# docs/fuzzing.md), the threaded suites under ThreadSanitizer (build-tsan), then
# replays past fuzz crashes and fuzzes every target
# briefly (FUZZ_SECONDS each; 0 skips): clang build in build-fuzz (docs/fuzzing.md).
if [ $# -eq 0 ] && [ "${SANITIZE:-1}" != 0 ]; then
  BUILD=build-asan ./scripts/build.sh --buildtype=debugoptimized -Dsanitize_mode=address -Dbenchmarks=disabled \
    -Dwerror=true
  meson test -C build-asan --print-errorlogs --num-processes 2
  # ThreadSanitizer on what runs threads: replay's cores (unit, hostile_input) and the
  # multi-lcore DPDK runtime (tests/tsan.supp says what is suppressed and why).
  BUILD=build-tsan ./scripts/build.sh --buildtype=debugoptimized -Dsanitize_mode=thread -Dbenchmarks=disabled \
    -Dwerror=true
  meson test -C build-tsan --print-errorlogs --num-processes 2 unit hostile_input dpdk
fi
if [ $# -eq 0 ] && [ "${FUZZ_SECONDS:-10}" != 0 ]; then
  ./scripts/fuzz.sh all "${FUZZ_SECONDS:-10}"
fi
