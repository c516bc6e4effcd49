#!/usr/bin/env python3
"""The default signature set on real captures: each attributed capture raises the rules
written for it, and captures without those behaviours raise none. Also: a bad rules file
is refused with the file, line and Hyperscan's message."""
import collections
import csv
import os
import subprocess
import sys
import tempfile

from lsdata import BIN, DATA, ROOT, skip, check, finish

RULES = os.path.join(ROOT, "features", "rules", "default.rules")
EXPECT = [  # capture, rules that must fire, rules that must not
    ("ndpi/mining.pcapng", {"1001", "1002"}, set()),
    ("ndpi/log4j-webapp-exploit.pcap", {"1101", "1102"}, set()),
    ("ndpi/WebattackRCE.pcap", {"1201"}, set()),
    ("ndpi/dns-tunnel-iodine.pcap", {"1301"}, set()),
    ("ndpi/dns_exfiltration.pcap", {"1301"}, set()),
    ("ndpi/icmp-tunnel.pcap", {"1302"}, set()),
    ("suricata-verify/mta-TLPW1-tcp-174.56.47.59-10.3.11.101-tcp-80-49309.pcap", {"1501"}, set()),
    ("slips/test-cc-capture-1.pcap", set(), "all"),
    ("slips/test7-malicious-hide-and-seek.pcap", set(), "all"),
    ("stopddos/amp.UDP.isakmp.pcap", set(), "all"),
]


def main():
    if not os.path.isdir(DATA):
        skip(f"{DATA} not found (shared data absent; set LINESIGHT_DATA)")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "f.csv")
        for rel, must, must_not in EXPECT:
            r = subprocess.run([BIN, "replay", os.path.join(DATA, rel), "--quiet", "--rules", RULES,
                                "--payload-bytes", "256", "--features-out", out], capture_output=True, text=True)
            hits = collections.Counter()
            for row in csv.DictReader(l for l in open(out) if not l.startswith("#")):
                for x in row["sig_hits"].split(";"):
                    if x:
                        hits[x] += 1
            ok = r.returncode == 0 and must <= set(hits) and (not hits if must_not == "all" else not (must_not & set(hits)))
            check(ok, f"{rel}: hits {dict(hits)}, expected {sorted(must) or 'none'}")
        bad = os.path.join(d, "bad.rules")
        open(bad, "w").write("# test\n10:/ok/ fine\n11:/un(closed/ broken\n")
        r = subprocess.run([BIN, "replay", os.path.join(DATA, EXPECT[0][0]), "--rules", bad], capture_output=True, text=True)
        check(r.returncode == 2 and "bad.rules:3: rule 11: Missing close parenthesis" in r.stderr,
              "bad rules file refused: " + r.stderr.strip())
    finish()


if __name__ == "__main__":
    main()
