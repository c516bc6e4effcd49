# Sourced by the perf scripts. measure NAME PACKETS CMD... appends to $OUT/times:
#   NAME PACKETS wall user sys peak_rss_kb pipeline_s
# (pipeline_s: linesight's own pipeline time from --summary-json $OUT/summary.json, or -)
measure() {
  local name=$1 pk=$2; shift 2
  rm -f "$OUT/summary.json"
  /usr/bin/time -o "$OUT/one" -f "%e %U %S %M" "$@" >"$OUT/stdout" 2>"$OUT/stderr"
  local pipe=-
  [ -f "$OUT/summary.json" ] && pipe=$(python3 -c "import json;print(json.load(open('$OUT/summary.json'))['wall_ns']/1e9)")
  echo "$name $pk $(tail -1 "$OUT/one") $pipe" >> "$OUT/times"
}

# synth_pcap PACKETS FLOWS → prints the path of the synthetic capture (generated once,
# cached in $OUT: scripts/gen_pcap.py).
synth_pcap() {
  local p="$OUT/synth-${1}p-${2}f.pcap"
  if [ ! -f "$p" ]; then
    python3 scripts/gen_pcap.py --packets "$1" --flows "$2" --out "$p.tmp" >&2
    mv "$p.tmp" "$p"
  fi
  echo "$p"
}
