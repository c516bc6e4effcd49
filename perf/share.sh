#!/usr/bin/env bash
# The features' share of the steady-state cost per packet (issue 4's goal: ≤ 30 %).
# Replays a capture from memory LO and HI times (--loop, --prefault) in four modes:
#   flows     flow records only                       (the dataplane: parse, table, records)
#   features  + every feature and the expert apps     (--rules, --detections-out /dev/null,
#             and the TI lookups against ../shared/data/ti compiled once, if present)
#   models    + the c2-server model as well           (the full detection pass)
#   csv       + the feature CSV                       (--features-out /dev/null)
# ROUNDS runs of each, interleaved; the marginal user CPU from LO to HI loops removes
# start-up (table zeroing, Hyperscan compile, file read). Prints per mode the median
# marginal, ns per packet, and the share of that mode's cost above flow records only.
# User time only: the kernel's page zeroing is start-up and varies most between runs.
# Usage: perf/share.sh   (env: PCAP LO HI ROUNDS BIN CPU DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
PCAP=${PCAP:-../shared/data/bench/ndpi-ether-concat.pcap}
LO=${LO:-10}
HI=${HI:-100}
ROUNDS=${ROUNDS:-5}
BIN=${BIN:-build/ctrl/linesight}
CPU=${CPU:-0}
DATA=${DATA:-../shared/data}
OUT=perf/out
mkdir -p "$OUT"
[ -f "$PCAP" ] || { echo "capture $PCAP absent (set PCAP)" >&2; exit 1; }
[ -x "$BIN" ] || ./scripts/build.sh
. perf/measure.sh

DETECT=(--rules features/rules/default.rules --detections-out /dev/null --app defaults)
if [ -d "$DATA/ti" ]; then
  "$BIN" ti compile "$DATA/ti" -o "$OUT/feeds.lsti" 2>/dev/null
  DETECT+=(--ti "$OUT/feeds.lsti")
fi
MODEL=(--app "c2-server:server:detect/models/c2-server.json:0.5")
declare -A ARGS=(
  [flows]=""
  [features]="${DETECT[*]}"
  [models]="${DETECT[*]} ${MODEL[*]}"
  [csv]="${DETECT[*]} ${MODEL[*]} --features-out /dev/null"
)
MODES=(flows features models csv)
"$BIN" replay "$PCAP" --quiet --flows-out /dev/null --summary-json "$OUT/summary.json"
PK=$(python3 -c "import json;print(json.load(open('$OUT/summary.json'))['counters']['packets'])")

: > "$OUT/times"
for r in $(seq "$ROUNDS"); do
  for m in "${MODES[@]}"; do
    for L in "$LO" "$HI"; do
      # shellcheck disable=SC2086  # ARGS holds whole argument lists without spaces inside
      measure "$m-$L" $((PK * L)) taskset -c "$CPU" "$BIN" replay "$PCAP" --loop "$L" --quiet \
        --prefault --flows-out /dev/null ${ARGS[$m]}
    done
  done
done

python3 - "$OUT/times" "$PCAP" "$LO" "$HI" "$PK" "${MODES[@]}" <<'PY'
import statistics, sys
times_file, pcap, lo, hi, pk, *modes = sys.argv[1:]
lo, hi, pk = int(lo), int(hi), int(pk)
runs = {}
for line in open(times_file):
    name, _, _, user, _, _, _ = line.split()
    runs.setdefault(name, []).append(float(user))
n = len(runs[f"{modes[0]}-{lo}"])
marg = {}
for m in modes:
    # marginal per round (runs of one round are adjacent in time), then the median
    marg[m] = statistics.median(h - l for h, l in zip(runs[f"{m}-{hi}"], runs[f"{m}-{lo}"]))
packets = pk * (hi - lo)
print(f"capture: {pcap} ({pk} packets), loops {lo} → {hi}, median of {n} rounds, user CPU")
print(f"{'mode':10} {'marginal s':>11} {'ns/packet':>10} {'Mpps':>7} {'above flows':>12} {'share of total':>15}")
base = marg[modes[0]]
for m in modes:
    extra = marg[m] - base
    share = f"{extra / marg[m]:>15.0%}" if m != modes[0] else f"{'':>15}"
    above = f"{extra / base:>+12.0%}" if m != modes[0] else f"{'':>12}"
    print(f"{m:10} {marg[m]:>11.2f} {marg[m] / packets * 1e9:>10.1f} {packets / marg[m] / 1e6:>7.2f} {above} {share}")
PY
