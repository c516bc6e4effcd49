#!/usr/bin/env bash
# Installs every Debian 12 package linesight's build, tests and benchmarks need.
# Idempotent: does nothing when everything is already installed.
set -euo pipefail
PKGS=(
  g++ pkg-config meson ninja-build python3
  dpdk-dev libhyperscan-dev libxxhash-dev libtbb-dev libpcap-dev libyaml-cpp-dev libssl-dev
  zlib1g-dev libzstd-dev liblzma-dev zstd xz-utils
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  tshark tcpdump tcpreplay softflowd pmacct nfdump iproute2 time prometheus curl
  python3-xgboost python3-sklearn python3-numpy python3-matplotlib clang libclang-rt-14-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}" >&2
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
