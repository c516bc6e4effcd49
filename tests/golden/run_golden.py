#!/usr/bin/env python3
"""Golden tests: a real capture in, the expected flow records out, diffed.

Each case replays one capture from ../shared/data with a fixed hash seed; records are
normalised (the handling core dropped, sorted by time and endpoints) and compared with
tests/golden/<case>.jsonl(.gz), whose last line holds the non-zero counters. The expected
files were produced once with --update and checked by hand against tshark (see
tests/golden/README.md); `--check` fails on any difference and prints the first ones."""
import argparse
import difflib
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lsdata import DATA, replay, skip  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# name, capture, extra arguments, why this case is here
CASES = [
    ("beacon-cc1", "slips/test-cc-capture-1.pcap", [], "2 s HTTPS beacon (Stratosphere)"),
    ("hide-and-seek", "slips/test7-malicious-hide-and-seek.pcap", [], "P2P botnet, many peers"),
    ("ddos-dns-rrsig-frag", "stopddos/amp.dns.RRSIG.fragmented.pcap", [], "DDoS with IPv4 fragments"),
    ("ddos-isakmp", "stopddos/amp.UDP.isakmp.pcap", [], "UDP amplification, 2767 spoofed sources"),
    ("app-mix", "bench/ndpi-ether-concat.pcap", [], "473 captures: VLAN, PPPoE, GRE, IPv6, backward clock jumps"),
    ("dns2tcp-sll", "ndpi/dns2tcp_tunnel.pcap", [], "Linux cooked capture"),
    ("mining-pcapng", "ndpi/mining.pcapng", [], "pcapng, stratum mining"),
    ("icmp-tunnel", "ndpi/icmp-tunnel.pcap", ["--payload-out"], "ICMP echo tunnel, payload prefix"),
    ("emotet-sampled", "ndpi/emotet.pcap", ["--sampling", "flow_hash:2:7"], "flow-hash sampling"),
]


# Replaying on K cores must give the same records as one core. Only the end reason may
# differ: whether an idle flow was expired by a core's sweep or by the final flush depends
# on which packets that core saw.
CORE_EQUIV = [("bench/ndpi-ether-concat.pcap", 4), ("stopddos/pkt.TCP.synflood.spoofed.pcap", 2)]


def records_only(recs):
    out = []
    for r in recs:
        r = dict(r)
        r.pop("core", None)
        r.pop("end_reason", None)
        out.append(json.dumps(r, sort_keys=True))
    return sorted(out)


def normalise(recs, summary):
    for r in recs:
        r.pop("core", None)
    recs.sort(key=lambda r: (r["first_ns"], r["src"], r["dst"], r["sport"], r["dport"], r["proto"], r["last_ns"]))
    lines = [json.dumps(r, sort_keys=True) for r in recs]
    counters = {k: v for k, v in summary["counters"].items() if v}
    lines.append(json.dumps({"counters": counters}, sort_keys=True))
    return "\n".join(lines) + "\n"


def path_for(name):
    for ext in (".jsonl", ".jsonl.gz"):
        p = os.path.join(HERE, name + ext)
        if os.path.exists(p):
            return p
    return None


def read(p):
    op = gzip.open if p.endswith(".gz") else open
    with op(p, "rt") as f:
        return f.read()


def write(name, text):
    for ext in (".jsonl", ".jsonl.gz"):
        p = os.path.join(HERE, name + ext)
        if os.path.exists(p):
            os.remove(p)
    if len(text) > 400_000:  # large cases are stored compressed
        with gzip.GzipFile(os.path.join(HERE, name + ".jsonl.gz"), "wb", mtime=0) as f:
            f.write(text.encode())
    else:
        with open(os.path.join(HERE, name + ".jsonl"), "w") as f:
            f.write(text)


def main():
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true")
    g.add_argument("--update", action="store_true")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    if not os.path.isdir(DATA):
        skip(f"{DATA} not found (shared data absent; set LINESIGHT_DATA)")
    failed = 0
    for name, rel, args, why in CASES:
        if a.cases and name not in a.cases:
            continue
        pcap = os.path.join(DATA, rel)
        if not os.path.exists(pcap):
            print(f"{name}: SKIP, {pcap} missing")
            continue
        recs, summary = replay(pcap, "--hash-seed", "1", *args)
        got = normalise(recs, summary)
        if a.update:
            write(name, got)
            print(f"{name}: wrote {len(recs)} records ({why})")
            continue
        p = path_for(name)
        if not p:
            print(f"{name}: FAIL, no expected file (run with --update)")
            failed += 1
            continue
        want = read(p)
        if got == want:
            print(f"{name}: ok, {len(recs)} records")
            continue
        failed += 1
        print(f"{name}: FAIL, records differ from {os.path.basename(p)}:")
        d = difflib.unified_diff(want.splitlines(), got.splitlines(), "expected", "got", lineterm="", n=0)
        for i, line in enumerate(d):
            if i >= 20:
                print("  ...")
                break
            print("  " + line[:300])
    if a.check and not a.cases:
        for rel, k in CORE_EQUIV:
            pcap = os.path.join(DATA, rel)
            if not os.path.exists(pcap):
                continue
            one, _ = replay(pcap, "--hash-seed", "1")
            many, s = replay(pcap, "--hash-seed", "1", "--cores", str(k))
            busy = sum(1 for c in s["per_core"] if c.get("packets"))
            same = records_only(one) == records_only(many)
            print(f"{rel} on {k} cores: {len(many)} records, {busy} cores busy, "
                  f"{'same as 1 core' if same else 'DIFFERENT from 1 core'}")
            failed += not same or busy != k
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
