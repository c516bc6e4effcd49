#!/usr/bin/env bash
# End-to-end replay benchmark: linesight against softflowd on the same capture, same run.
#
# Generates (once, cached in perf/out/) a synthetic capture: PACKETS packets over FLOWS
# flows, Zipf flow sizes, IMIX frame sizes, 10 % IPv6, snaplen 128. Then runs, ROUNDS
# times each, interleaved:
#   linesight replay FILE             (file → libpcap → parse → table → JSON records)
#   linesight replay FILE --loop 5    (from memory: the dataplane stage without file I/O)
#   softflowd -r FILE -n 127.0.0.1:PORT -m 1000000   (exports NetFlow v5 to a closed port;
#                                       as invoked it ignores IPv6, so it does less work)
#   softflowd ... -v 10 -6            (IPFIX, IPv6 tracked too: the same work as linesight)
# and prints the median wall time, Mpps and user+sys CPU-seconds of each, and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-4000000}
FLOWS=${FLOWS:-200000}
ROUNDS=${ROUNDS:-3}
CORES=${CORES:-1}
BIN=${BIN:-build/ctrl/linesight}
OUT=perf/out
mkdir -p "$OUT"
command -v softflowd >/dev/null || { echo "softflowd missing: run scripts/setup.sh" >&2; exit 1; }
[ -x "$BIN" ] || ./scripts/build.sh
. perf/measure.sh
PCAP=$(synth_pcap "$PACKETS" "$FLOWS")
# Tables sized as an operator would: the next power of two above the concurrent flows
# (all flows of the capture are concurrent: it lasts 4 s, the idle timeout is 30 s).
CAP=$(python3 -c "f=int($FLOWS*1.3); print(1<<(f-1).bit_length())")

: > "$OUT/times"
for r in $(seq "$ROUNDS"); do
  measure linesight "$PACKETS" "$BIN" replay "$PCAP" --quiet --cores "$CORES" --capacity "$CAP" \
    --flows-out /dev/null --summary-json "$OUT/summary.json"
  measure linesight-mem5 $((PACKETS * 5)) "$BIN" replay "$PCAP" --quiet --cores "$CORES" --loop 5 \
    --capacity $((CAP * 4)) --flows-out /dev/null --summary-json "$OUT/summary.json"
  measure softflowd "$PACKETS" softflowd -r "$PCAP" -n 127.0.0.1:9 -m 1000000
  measure softflowd-v6 "$PACKETS" softflowd -r "$PCAP" -n 127.0.0.1:9 -m 1000000 -v 10 -6
done

python3 - "$OUT/times" "$PCAP" "$CORES" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, pk, wall, user, sys_, rss, pipe = line.split()
    rows.setdefault(name, []).append((int(pk), float(wall), float(user) + float(sys_), int(rss),
                                      None if pipe == "-" else float(pipe)))
print(f"capture: {sys.argv[2]}   linesight cores: {sys.argv[3]}   (median of {len(rows['softflowd'])} runs)")
print(f"{'run':16} {'packets':>10} {'wall s':>8} {'Mpps':>8} {'CPU s':>8} {'Mpps/CPU-s':>11} {'peak RSS MB':>12} {'pipeline Mpps':>14}")
res = {}
for name, v in rows.items():
    pk = v[0][0]
    wall = statistics.median(x[1] for x in v)
    cpu = statistics.median(x[2] for x in v)
    rss = max(x[3] for x in v) / 1024
    res[name] = (pk / wall / 1e6, pk / max(cpu, 1e-9) / 1e6)
    pipe = [x[4] for x in v if x[4]]
    pm = f"{pk / statistics.median(pipe) / 1e6:>14.2f}" if pipe else f"{'-':>14}"
    print(f"{name:16} {pk:>10} {wall:>8.2f} {res[name][0]:>8.2f} {cpu:>8.2f} {res[name][1]:>11.2f} {rss:>12.0f} {pm}")
for peer in ("softflowd", "softflowd-v6"):
    s = res[peer]
    for name in ("linesight", "linesight-mem5"):
        print(f"ratio {name}/{peer}: {res[name][0] / s[0]:.1f}x wall Mpps, {res[name][1] / s[1]:.1f}x per CPU-second")
PY
