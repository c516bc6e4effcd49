#!/usr/bin/env bash
# linesight against its peers, in one run, on the same captures (issue 7):
#   linesight replay, full pipeline: flow records + every feature (signatures, TI lookups
#       against ../shared/data/ti, pair/server/client state) + the seven shipped apps
#       (six expert rules and the c2-server model), the TI table compiled once beforehand
#       (`linesight ti compile`; TI_FEEDS=1: parse the feeds every run, ≈ 1.4 s) and the
#       rules from a compiled-rule cache (--rules-cache) — the
#       same without the TI table (-noti), and without writing the feature CSV (-nocsv:
#       every feature still computed for the apps, as a sensor that only detects runs)
#   softflowd -r FILE -v 10 -6      (IPFIX to a closed local port, IPv6 tracked)
#   nfpcapd -r FILE -w DIR          (nfdump's pcap → nfcapd files)
#   argus -r FILE -w FILE           (argus flow records)
# on a synthetic capture (scripts/gen_pcap.py: PACKETS packets, FLOWS flows, IMIX, 10 %
# IPv6) and on the 35 MB real application mix repeated MIX_COPIES times (mergecap -a; its
# timestamps go backwards between segments, for every tool alike). ROUNDS runs each,
# interleaved; prints per capture: median CPU-seconds (user+sys), Mpps per CPU-second,
# peak RSS, flows produced, RSS per flow, each tool's fixed RSS (on the capture's first
# 10 packets) and RSS per flow above it, the slope of RSS per flow from the half capture
# (below) to the whole, and linesight's ratio to each peer.
# Usage: perf/compare.sh   (env: PACKETS FLOWS MIX_COPIES ROUNDS BIN DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-4000000}
FLOWS=${FLOWS:-200000}
MIX_COPIES=${MIX_COPIES:-10}
ROUNDS=${ROUNDS:-3}
BIN=${BIN:-build/ctrl/linesight}
DATA=${DATA:-../shared/data}
OUT=perf/out
mkdir -p "$OUT"
for t in softflowd nfpcapd nfdump argus ra mergecap editcap; do
  # argus-server is not in scripts/setup.sh: its package may start a capture daemon.
  command -v $t >/dev/null || { echo "$t missing: apt-get install softflowd nfdump argus-server argus-client wireshark-common" >&2; exit 1; }
done
[ -x "$BIN" ] || ./scripts/build.sh
. perf/measure.sh

# Each capture with its half (half the packets and flows; half the mix copies): memory per
# flow is also measured as the slope between the two, which leaves out every bounded table
# that is full at both sizes (linesight's endpoint tables, its TI table), as a tool at a
# backbone's scale sees it.
CAPS=("$(synth_pcap "$PACKETS" "$FLOWS")")
HALVES=("$(synth_pcap $((PACKETS / 2)) $((FLOWS / 2)))")
MIX_SRC="$DATA/bench/ndpi-ether-concat.pcap"
mix_pcap() {  # COPIES → the mix repeated COPIES times (made once)
  local m="$OUT/mix-x$1.pcap" srcs=()
  if [ ! -f "$m" ]; then
    for _ in $(seq "$1"); do srcs+=("$MIX_SRC"); done
    mergecap -a -F pcap -w "$m.tmp" "${srcs[@]}"
    mv "$m.tmp" "$m"
  fi
  echo "$m"
}
if [ -f "$MIX_SRC" ]; then
  CAPS+=("$(mix_pcap "$MIX_COPIES")")
  HALVES+=("$(mix_pcap $(((MIX_COPIES + 1) / 2)))")
else
  echo "note: $MIX_SRC absent: synthetic capture only" >&2
fi

APPS=(--app defaults --app "c2-server:server:detect/models/c2-server.json:0.5")
# The rule set compiled once into a cache, as an operator deploys it (docs/rules.md):
# filled here, untimed, so no measured run (nor the fixed-memory runs) compiles.
DETECT=(--rules features/rules/default.rules --rules-cache "$OUT/rules-cache" --detections-out /dev/null "${APPS[@]}")
editcap -F pcap -r "${CAPS[0]}" "$OUT/warm.pcap" 1
"$BIN" replay "$OUT/warm.pcap" --quiet --flows-out /dev/null "${DETECT[@]}"
FEATURES=(--features-out /dev/null "${DETECT[@]}")
TI=()
if [ -d "$DATA/ti" ]; then
  # Compiled once, as an operator deploys it (docs/ti.md); the compile is reported, not timed
  # into every replay. TI_FEEDS=1 loads the feed directory itself each run instead.
  if [ "${TI_FEEDS:-0}" = 1 ]; then
    TI=(--ti "$DATA/ti")
  else
    "$BIN" ti compile "$DATA/ti" -o "$OUT/feeds.lsti" 2>/dev/null
    TI=(--ti "$OUT/feeds.lsti")
  fi
fi

flows_of() {  # tool → flows it produced in the last run
  case $1 in
    linesight*) python3 -c "import json;print(json.load(open('$OUT/summary.json'))['records'])" ;;
    softflowd) sed -n 's/^Flows exported: \([0-9]*\).*/\1/p' "$OUT/stdout" "$OUT/stderr" | head -1 ;;
    nfpcapd) nfdump -R "$OUT/nfp" -I 2>/dev/null | sed -n 's/^Flows: //p' ;;
    argus) ra -r "$OUT/argus.out" -n -L -1 - not man 2>/dev/null | wc -l ;;
  esac
}

run_tools() {  # CAPTURE: one measured run of every tool → $OUT/times, $OUT/flows
  measure linesight-full "$PK" "$BIN" replay "$1" --quiet --capacity "$CAP" --flows-out /dev/null \
    "${FEATURES[@]}" "${TI[@]}" --summary-json "$OUT/summary.json"
  echo "linesight-full $(flows_of linesight)" >> "$OUT/flows"
  measure linesight-noti "$PK" "$BIN" replay "$1" --quiet --capacity "$CAP" --flows-out /dev/null \
    "${FEATURES[@]}" --summary-json "$OUT/summary.json"
  echo "linesight-noti $(flows_of linesight)" >> "$OUT/flows"
  measure linesight-nocsv "$PK" "$BIN" replay "$1" --quiet --capacity "$CAP" --flows-out /dev/null \
    "${DETECT[@]}" "${TI[@]}" --summary-json "$OUT/summary.json"
  echo "linesight-nocsv $(flows_of linesight)" >> "$OUT/flows"
  measure softflowd "$PK" softflowd -r "$1" -n 127.0.0.1:9 -v 10 -6 -d -m 4000000
  echo "softflowd $(flows_of softflowd)" >> "$OUT/flows"
  rm -rf "$OUT/nfp" && mkdir -p "$OUT/nfp"
  measure nfpcapd "$PK" nfpcapd -r "$1" -w "$OUT/nfp"
  echo "nfpcapd $(flows_of nfpcapd)" >> "$OUT/flows"
  rm -f "$OUT/argus.out"
  measure argus "$PK" argus -r "$1" -w "$OUT/argus.out"
  echo "argus $(flows_of argus)" >> "$OUT/flows"
}

for i in "${!CAPS[@]}"; do
  cap=${CAPS[$i]}
  # packets, and table capacity sized as an operator would (next power of two above 1.3 × flows)
  "$BIN" replay "$cap" --quiet --flows-out /dev/null --summary-json "$OUT/summary.json"
  read -r PK FL < <(python3 -c "import json;s=json.load(open('$OUT/summary.json'));print(s['counters']['packets'], s['records'])")
  CAP=$(python3 -c "f=int($FL*1.3)+1; print(max(1024, 1<<(f-1).bit_length()))")
  # Each tool once on the capture's first 10 packets: its fixed memory (binary, libraries,
  # tables, the TI table), so the table can also show memory per flow above it.
  editcap -F pcap -r "$cap" "$OUT/head.pcap" 1-10
  : > "$OUT/times"
  : > "$OUT/flows"
  run_tools "$OUT/head.pcap"
  mv "$OUT/times" "$OUT/base"
  : > "$OUT/times"
  : > "$OUT/flows"
  # And once on the half capture, at the same table capacity: the slope's lower point.
  run_tools "${HALVES[$i]}"
  mv "$OUT/times" "$OUT/half"
  mv "$OUT/flows" "$OUT/half-flows"
  : > "$OUT/times"
  : > "$OUT/flows"
  for r in $(seq "$ROUNDS"); do
    run_tools "$cap"
  done
  python3 - "$OUT/times" "$OUT/flows" "$cap" "$ROUNDS" "$OUT/base" "$OUT/half" "$OUT/half-flows" <<'PY'
import statistics, sys
times, flows, base, half, half_flows = {}, {}, {}, {}, {}
for line in open(sys.argv[5]):
    name, _, _, _, _, rss, _ = line.split()
    base[name] = int(rss)
for line in open(sys.argv[6]):
    name, _, _, _, _, rss, _ = line.split()
    half[name] = int(rss)
for line in open(sys.argv[7]):
    name, n = line.split()
    half_flows[name] = int(n)
for line in open(sys.argv[1]):
    name, pk, wall, user, sys_, rss, _ = line.split()
    times.setdefault(name, []).append((int(pk), float(wall), float(user) + float(sys_), int(rss)))
for line in open(sys.argv[2]):
    name, n = line.split()
    flows[name] = int(n)
print(f"\n{sys.argv[3]}  ({next(iter(times.values()))[0][0]} packets, median of {sys.argv[4]})")
print(f"{'tool':16} {'wall s':>7} {'CPU s':>7} {'Mpps/CPU-s':>11} {'peak RSS MB':>12} {'flows':>9} {'RSS KB/flow':>12}"
      f" {'fixed MB':>9} {'above, KB/flow':>15} {'slope, KB/flow':>15}")
res = {}
for name, v in times.items():
    pk = v[0][0]
    wall = statistics.median(x[1] for x in v)
    cpu = statistics.median(x[2] for x in v)
    rss = max(x[3] for x in v)
    res[name] = pk / max(cpu, 1e-9) / 1e6
    f = flows.get(name, 0)
    b = base.get(name, 0)
    per = f"{rss / f:12.2f} {b / 1024:9.0f} {(rss - b) / f:15.2f}" if f else f"{'-':>12}"
    hf = half_flows.get(name, 0)
    if f and f > hf and name in half:  # peak RSS per extra flow, half capture → whole
        per += f" {(rss - half[name]) / (f - hf):15.2f}"
    print(f"{name:16} {wall:7.2f} {cpu:7.2f} {res[name]:11.2f} {rss / 1024:12.0f} {f:9} {per}")
peers = [p for p in ("softflowd", "nfpcapd", "argus") if p in res]
for ls in ("linesight-full", "linesight-noti", "linesight-nocsv"):
    print(f"{ls} per CPU-second: " + ", ".join(f"{res[ls] / res[p]:.1f}x {p}" for p in peers))
PY
done
