#!/bin/bash
# Reproduces docs/report/: the assessment report on shared data. Our sensor replays every
# labelled capture (slips/, ndpi/, suricata-verify/) with the shipped apps; a partner
# sensor replays the 35 MB application mix and shares its TI export (indicators.json);
# `linesight report` compares our detections with the dated firehol snapshots, maltrail,
# ipsum, executemalware and signature-base, and with the partner.
# Usage: scripts/report_example.sh [OUT_DIR]   (default docs/report)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/docs/report}")
cd "$ROOT"  # relative paths in the committed report
DATA=${LINESIGHT_DATA:-../shared/data}
BIN=${LINESIGHT_BIN:-build/ctrl/linesight}
[ -d "$DATA/ti" ] || { echo "shared data not found at $DATA (set LINESIGHT_DATA)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN not built (scripts/build.sh)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
APPS=(--app "c2-server:server:detect/models/c2-server.json:0.5"
      --app beacon:server:rule:periodicity=0.8,contacts=10
      --app c2-signature:server:rule:sig=1401+1402+1501+1502+1503
      --app miner:server:rule:sig=1001+1002
      --app exploit:server:rule:sig=1101+1102+1201+1202+1203)
COMMON=(--quiet --flows-out /dev/null --rules features/rules/default.rules --ti "$DATA/ti")
mkdir -p "$WORK/ours"
n=0
for f in "$DATA"/slips/*.pcap "$DATA"/ndpi/*.pcap "$DATA"/ndpi/*.pcapng "$DATA"/suricata-verify/*.pcap; do
  "$BIN" replay "$f" "${COMMON[@]}" "${APPS[@]}" --detections-out "$WORK/ours/$(basename "$f").jsonl"
  n=$((n + 1))
done
"$BIN" replay "$DATA/bench/ndpi-ether-concat.pcap" "${COMMON[@]}" "${APPS[@]}" \
  --detections-out "$WORK/partner.jsonl" --ti-export "$WORK/partner"
mkdir -p "$OUT"
{
  echo "# $n labelled captures replayed; partner = the 35 MB mix's TI export"
  echo "# produced by scripts/report_example.sh"
  "$BIN" report --detections "$WORK/ours" --feeds "$DATA/ti" --partner "$WORK/partner/indicators.json" \
    --json "$OUT/report.json" --png "$OUT/report.png" 2>&1
} | tee "$OUT/report.txt"
