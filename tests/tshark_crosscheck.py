#!/usr/bin/env python3
"""Per-conversation packet and byte totals from linesight equal tshark's
`tshark -q -z conv,tcp -z conv,udp` on real captures.

linesight may split one 5-tuple into several records (idle timeout, TCP end then a new
SYN); tshark may too (TCP stream index). Both sides are summed per 5-tuple and direction.
tshark prints exact byte counts below 10 kB and rounded kB/MB above; rounded values are
compared within half a unit. Captures with IP fragments or tunnels are not used here:
tshark counts a reassembled datagram once and counts outer and inner conversations of a
tunnel, where linesight attributes every fragment and keeps only the inner flow."""
import re
import shutil
import subprocess
import sys

from lsdata import need_data, replay, skip

CAPTURES = [
    "slips/test-cc-capture-1.pcap",
    "slips/test-cc-capture-2.pcap",
    "slips/test7-malicious-hide-and-seek.pcap",
    "slips/malicious-ssh-bruteforce.pcap",
    "ndpi/emotet.pcap",
    "ndpi/trickbot.pcap",
    "ndpi/mining.pcapng",
    "ndpi/dns2tcp_tunnel.pcap",
    "suricata-verify/tor_bl.pcap",
    "stopddos/pkt.TCP.synflood.spoofed.pcap",
    "stopddos/amp.UDP.isakmp.pcap",
]

LINE = re.compile(
    r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+(\d+)\s+(bytes|kB|MB)\s+(\d+)\s+(\d+)\s+(bytes|kB|MB)\s")
UNIT = {"bytes": 1, "kB": 1000, "MB": 1000_000}


def tshark_convs(pcap):
    out = subprocess.run(["tshark", "-n", "-q", "-r", pcap, "-z", "conv,tcp", "-z", "conv,udp"],
                         capture_output=True, text=True, check=True).stdout
    convs, proto = {}, None
    for line in out.splitlines():
        if line.startswith("TCP Conversations"):
            proto = 6
        elif line.startswith("UDP Conversations"):
            proto = 17
        m = LINE.match(line)
        if not m:
            continue
        a, pa, b, pb = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        # "<-" columns are B→A, "->" columns are A→B.
        ba = (int(m.group(5)), int(m.group(6)), UNIT[m.group(7)])
        ab = (int(m.group(8)), int(m.group(9)), UNIT[m.group(10)])
        for (s, sp, d, dp, v) in ((a, pa, b, pb, ab), (b, pb, a, pa, ba)):
            k = (proto, s, sp, d, dp)
            f, by, u = convs.get(k, (0, 0, 1))
            convs[k] = (f + v[0], by + v[1] * v[2], max(u, v[2]))
    return convs


def ours(pcap):
    recs, _ = replay(pcap, "--hash-seed", "1")
    agg = {}
    for r in recs:
        if r["proto"] not in (6, 17):
            continue
        for (s, sp, d, dp, n, b) in ((r["src"], r["sport"], r["dst"], r["dport"], r["packets_fwd"], r["bytes_fwd"]),
                                     (r["dst"], r["dport"], r["src"], r["sport"], r["packets_rev"], r["bytes_rev"])):
            k = (r["proto"], s, sp, d, dp)
            f, by = agg.get(k, (0, 0))
            agg[k] = (f + n, by + b)
    return agg


def main():
    if not shutil.which("tshark"):
        skip("tshark not installed (scripts/setup.sh installs it)")
    bad = 0
    for rel in CAPTURES:
        pcap = need_data(rel)
        t, o = tshark_convs(pcap), ours(pcap)
        o = {k: v for k, v in o.items() if v[0]}
        t = {k: v for k, v in t.items() if v[0]}
        missing = set(t) - set(o)
        extra = set(o) - set(t)
        diff = 0
        for k in set(t) & set(o):
            tf, tb, unit = t[k]
            of, ob = o[k]
            if tf != of or (unit == 1 and tb != ob) or (unit > 1 and abs(tb - ob) > unit):
                diff += 1
                if diff <= 5:
                    print(f"  {rel} {k}: tshark {tf} pkts {tb} B, linesight {of} pkts {ob} B")
        for k in list(missing)[:5]:
            print(f"  {rel} {k}: only in tshark {t[k]}")
        for k in list(extra)[:5]:
            print(f"  {rel} {k}: only in linesight {o[k]}")
        status = "ok" if not (missing or extra or diff) else "MISMATCH"
        print(f"{rel}: {len(t)} directed conversations, {diff} differ, {len(missing)} missing, {len(extra)} extra: {status}")
        bad += status != "ok"
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
