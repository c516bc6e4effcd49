#!/usr/bin/env bash
# RX-stage throughput of `linesight run` with the memory-replay source (no NIC): the
# capture is loaded into mbufs once and fed through net_ring queues; RX lcores run the
# full per-core stage (parse, key, table, expiry) and pass records to workers.
# Prints Mpps for 1..MAX_RX RX lcores and the ring/drop counters of each run.
#
# Lcores beyond the machine's CPUs share them (--lcores '(0-N)@(cpus)'), so on a small
# machine the feeder, the control core and the RX lcores compete: the figure is then a
# lower bound. On a sensor, give each lcore its own isolated core (docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PCAP=${PCAP:-../shared/data/bench/ndpi-ether-concat.pcap}
LOOPS=${LOOPS:-30}
MAX_RX=${MAX_RX:-2}
BIN=${BIN:-build/ctrl/linesight}
[ -f "$PCAP" ] || { echo "dpdk_bench: $PCAP not found (set PCAP=)" >&2; exit 1; }
CPUS=$(python3 -c "import os; print(','.join(map(str, sorted(os.sched_getaffinity(0)))))")
OUT=perf/out
mkdir -p "$OUT"
printf "%-9s %12s %8s %10s %12s %12s %s\n" "rx_lcores" "packets" "feed_s" "Mpps" "ring_full" "pool_empty" "per-lcore packets"
for rx in $(seq 1 "$MAX_RX"); do
  lcores=$((1 + rx + 1))
  "$BIN" run --quiet --socket "" --memory-replay "$PCAP" --loop "$LOOPS" --rx-queues "$rx" \
    --rx-lcores "$rx" --workers 1 --exit-idle 300ms --capacity 262144 --summary-json "$OUT/dpdk.json" \
    -- --no-huge -m 2048 --no-pci --no-shconf --no-telemetry --lcores "(0-$((lcores - 1)))@($CPUS)" \
    --log-level lib.eal:error
  python3 - "$OUT/dpdk.json" "$rx" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
pk = s["counters"]["packets"]
feed = s["feed_ns"] / 1e9
per = [c.get("packets", 0) for c in s["per_core"]]
print(f"{sys.argv[2]:<9} {pk:>12} {feed:>8.2f} {pk / feed / 1e6:>10.2f} {s['rings']['record_ring_full']:>12} "
      f"{s['rings']['record_pool_empty']:>12} {per}")
PY
done
