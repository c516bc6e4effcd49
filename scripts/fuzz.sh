#!/usr/bin/env bash
# Runs one libFuzzer target: scripts/fuzz.sh TARGET SECONDS [extra libFuzzer flags]
#   TARGET: parser pcap netflow ctl ti sketch model rules rules_hs filter_jit (or "all": each for SECONDS)
# Builds (once) in build-fuzz with clang, ASan+UBSan and coverage. Seeds come from the
# test suite's inputs and ../shared/data (when present); the corpus grows in
# fuzz-corpus/TARGET. A crash leaves crash-* in fuzz-out/ and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
SECS=${2:-60}
shift 2 || true
BUILD=${BUILD_FUZZ:-build-fuzz}
# An undefined-behaviour report is a crash, as in the test suite (tests/meson.build):
# without halt_on_error UBSan prints it and the run goes on (one did: docs/fuzzing.md).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
DATA=${LINESIGHT_DATA:-../shared/data}
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$BUILD" -Dfuzz=true -Dbuildtype=debugoptimized -Db_lundef=false \
    -Dtests=disabled -Dbenchmarks=disabled >/dev/null
fi
ninja -C "$BUILD" >/dev/null

seed() {  # target → seed directory
  local t=$1 d=fuzz-corpus/$1
  mkdir -p "$d"
  [ -n "$(ls -A "$d")" ] && { echo "$d"; return; }
  case $t in
    parser|filter_jit)  # first packets of real captures, one per file (byte 0 = 0: Ethernet; wire = captured)
      if command -v tshark >/dev/null && [ -d "$DATA" ]; then
        local i=0
        for f in "$DATA"/ndpi/*.pcap "$DATA"/slips/*.pcap "$DATA"/stopddos/*.pcap; do
          [ -f "$f" ] || continue
          tshark -r "$f" -c 20 -T fields -e frame.protocols >/dev/null 2>&1 || continue
          python3 - "$f" "$d" "$i" <<'PY'
import struct, sys
f, d, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = open(f, "rb").read()
if b[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
    e = "<" if b[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    off, k = 24, 0
    while off + 16 <= len(b) and k < 20:
        incl = struct.unpack(e + "I", b[off + 8:off + 12])[0]
        open(f"{d}/{i}_{k}", "wb").write(b"\x00" + b[off + 16:off + 16 + incl])
        off += 16 + incl; k += 1
PY
          i=$((i + 1))
        done
      fi ;;
    pcap)
      for f in "$DATA"/slips/test12-icmp-portscan.pcap "$DATA"/ndpi/dns-tunnel-iodine.pcap "$DATA"/ndpi/mining.pcapng; do
        [ -f "$f" ] && head -c 65536 "$f" > "$d/$(basename "$f")"
      done
      # Shapes real captures rarely have: byte-swapped, nanosecond, pre-2.4 length order.
      python3 - "$d" <<'PY'
import struct, sys
for name, e, magic, minor in (("swapped-nano", ">", 0xa1b23c4d, 4), ("v2.3", "<", 0xa1b2c3d4, 3)):
    b = struct.pack(e + "IHHiIII", magic, 2, minor, 0, 0, 96, 1)
    for i in range(6):
        data = bytes(range(40 + 13 * i))
        cap, wire = len(data), len(data) + 20 * (i % 2)
        b += struct.pack(e + "IIII", 1600000000 + i, 999 * i, wire if minor == 3 and i == 5 else cap,
                         cap if minor == 3 and i == 5 else wire) + data
    open(f"{sys.argv[1]}/{name}", "wb").write(b)
PY
      ;;
    netflow)  # softflowd's v1, v5, v9 and IPFIX (and its v5 as v7) and pmacct's sFlow for a capture, length-prefixed
      if [ -f "$DATA/slips/test-cc-capture-2.pcap" ]; then
        for v in 1 5 7 9 10 sflow; do
          if [ $v = sflow ]; then command -v pmacctd >/dev/null || continue
          else command -v softflowd >/dev/null || continue; fi
          python3 - "$d/export-$v" "$v" "$DATA/slips/test-cc-capture-2.pcap" <<'PY'
import os, socket, struct, subprocess, sys, tempfile
out, v, pcap = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(3)
port = s.getsockname()[1]
if v == "sflow":
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.write(f"daemonize: false\npcap_savefile: {pcap}\nplugins: sfprobe\n"
               f"sfprobe_receiver: 127.0.0.1:{port}\nsfprobe_agentip: 127.0.0.1\n"); conf.close()
    subprocess.run(["pmacctd", "-f", conf.name], capture_output=True); os.unlink(conf.name)
else:
    subprocess.run(["softflowd", "-r", pcap, "-n", f"127.0.0.1:{port}", "-v", "5" if v == "7" else v, "-6", "-d",
                    "-a"], capture_output=True)
data = b""
try:
    while len(data) < 20000:
        g = s.recv(65535)
        if v == "7":  # v5 → v7: reserved header bytes, a router address after each record
            g = struct.pack("!H", 7) + g[2:20] + bytes(4) + b"".join(
                g[24 + 48 * i:72 + 48 * i] + bytes([192, 0, 2, 254]) for i in range((len(g) - 24) // 48))
        data += struct.pack("!H", len(g)) + g
except socket.timeout:
    pass
open(out, "wb").write(data)
PY
        done
      fi ;;
    sketch)  # a replay's --sketches-out of a capture with many servers and clients (a scanner), in files of a few lines
      if [ -x build/ctrl/linesight ] && [ -f "$DATA/slips/test7-malicious-hide-and-seek.pcap" ]; then
        build/ctrl/linesight replay "$DATA/slips/test7-malicious-hide-and-seek.pcap" --quiet --flows-out /dev/null \
          --sketches-out "$d/all.jsonl" && split -l 3 "$d/all.jsonl" "$d/lines-" && rm "$d/all.jsonl"
      fi
      if [ -x build/ctrl/linesight ] && [ -f "$DATA/stopddos/amp.UDP.isakmp.pcap" ]; then
        build/ctrl/linesight replay "$DATA/stopddos/amp.UDP.isakmp.pcap" --quiet --flows-out /dev/null \
          --sketches-out "$d/isakmp" && head -n 1 "$d/isakmp" > "$d/dense" && rm "$d/isakmp"  # its server: dense registers
      fi
      if [ -x build/ctrl/linesight ] && [ -f "$DATA/slips/test7-malicious-hide-and-seek.pcap" ]; then  # clients by pseudonym
        printf 'features:\n  window: 10m\n' > "$d/window.yaml"; printf 'fuzz-seed-secret-0123456789' > "$d/secret"
        chmod 600 "$d/secret"
        build/ctrl/linesight replay "$DATA/slips/test7-malicious-hide-and-seek.pcap" --quiet --flows-out /dev/null \
          --config "$d/window.yaml" --sketch-clients pseudonym --pseudonym-secret "$d/secret" \
          --sketches-out "$d/all.jsonl" && grep client_pseudonym "$d/all.jsonl" | split -l 2 - "$d/pseudonyms-"
        rm -f "$d/all.jsonl" "$d/window.yaml" "$d/secret"
      fi ;;
    ctl)
      printf '%s' '{"cmd":"/echo?a=1&b=2"}' > "$d/echo"; printf '%s' '{"cmd":"/help"}' > "$d/help"
      printf '%s' '{"cmd":"/nope"}' > "$d/unknown"; printf '%s' '{"cmd":' > "$d/cut" ;;
    ti)
      for f in "$DATA"/ti/*; do
        [ -f "$f" ] || continue
        case $f in *.netset|*.ipset) p='\x00';; *.csv) p='\x02';; *) p='\x01';; esac
        { printf "$p"; head -c 4096 "$f"; } > "$d/$(basename "$f")"
      done
      printf '\x04%s' '{"type":"bundle","objects":[{"type":"indicator","pattern_type":"stix","pattern":"[ipv4-addr:value = '"'"'192.0.2.1'"'"']"}]}' > "$d/stix"
      printf '\x04%s' '{"Event":{"info":"x","date":"2024-01-01","Attribute":[{"type":"ip-dst|port","value":"192.0.2.2|80"}]}}' > "$d/misp"
      # a compiled table (`linesight ti compile`), found by its magic whatever the name
      if [ -x build/ctrl/linesight ]; then
        printf '# c2\n10.0.0.0/8\n192.0.2.1\n2001:db8::/32\n' > "$d/feed.netset"
        printf 'ip,port,report_title\n192.0.2.9,443,Emotet\n' > "$d/feed.csv"
        build/ctrl/linesight ti compile "$d/feed.netset" "$d/feed.csv" -o "$d/table.lsti" >/dev/null &&
          { printf '\x00'; cat "$d/table.lsti"; } > "$d/compiled"
        rm -f "$d/feed.netset" "$d/feed.csv" "$d/table.lsti"
      fi ;;
    model)
      if /usr/bin/python3 -c 'import xgboost' 2>/dev/null; then
        /usr/bin/python3 - "$d" <<'PY'
import sys, numpy as np, xgboost as xgb
x = np.random.default_rng(1).normal(size=(300, 5)); y = (x[:, 0] > 0).astype(int)
for i, (obj, extra) in enumerate([("binary:logistic", {}), ("multi:softprob", {"num_class": 3})]):
    yy = y if obj.startswith("binary") else (x[:, 1] > 0).astype(int) + y
    b = xgb.train({"objective": obj, "max_depth": 3, **extra}, xgb.DMatrix(x, label=yy), 4)
    b.save_model(f"{sys.argv[1]}/m{i}.json")
# depth 8 from hist: the bins kernels' deepest levels (ranks by 4-8 shuffles, leaves past 64)
x = np.random.default_rng(2).normal(size=(2000, 5)); y = (x[:, 0] * x[:, 1] + np.sin(3 * x[:, 2]) > 0).astype(int)
xgb.train({"objective": "binary:logistic", "max_depth": 8, "tree_method": "hist"}, xgb.DMatrix(x, label=y), 2).save_model(f"{sys.argv[1]}/m8.json")
PY
      fi ;;
    rules|rules_hs) cp features/rules/default.rules "$d/default" ;;
  esac
  echo "$d"
}

run() {
  local t=$1 bin=$BUILD/tests/fuzz/fuzz_$1
  shift
  [ -x "$bin" ] || { echo "no fuzz target '$t' (parser pcap netflow ctl ti model rules rules_hs filter_jit)" >&2; exit 2; }
  if compgen -G "tests/fuzz/regressions/$t/*" >/dev/null; then  # past crashes first
    "$bin" tests/fuzz/regressions/"$t"/* >/dev/null 2>&1 || { echo "$t: a past crash is back" >&2; return 1; }
  fi
  local corpus
  corpus=$(seed "$t")
  mkdir -p fuzz-out
  echo "== $t: ${SECS}s"
  "$bin" "$corpus" -max_total_time="$SECS" -artifact_prefix="fuzz-out/$t-" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=4096 "$@" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|SUMMARY|crash-|Done" || true
  ls fuzz-out/"$t"-crash-* fuzz-out/"$t"-leak-* fuzz-out/"$t"-timeout-* 2>/dev/null && return 1
  return 0
}

if [ "$TARGET" = all ]; then
  rc=0
  for t in parser pcap netflow ctl ti sketch model rules rules_hs filter_jit; do
    [ "$t" = filter_jit ] && [ ! -x "$BUILD/tests/fuzz/fuzz_filter_jit" ] && continue  # built without DPDK
    run "$t" "$@" || rc=1
  done
  exit $rc
fi
run "$TARGET" "$@"
