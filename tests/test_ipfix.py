#!/usr/bin/env python3
"""IPFIX export read back by real peers: Debian's nfcapd receives on 127.0.0.1, `nfdump -R`
reads the files, and every uniflow (src, dst, ports, protocol, packets, bytes, start ms)
equals the directions of our JSON records for the same replay, for IPv4 and IPv6. A
collector that is down costs counted send errors, never a failed or stuck run."""
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from lsdata import BIN, DATA, free_udp_port, need_data, skip, check, finish




def icmp_ports(r, initiator):
    """ICMP as exported: sport 0, dport type*256+code; echo flows (sport == dport, the
    identifier) as request from the initiator and reply back."""
    if r["sport"] != r["dport"]:
        return 0, r["dport"]
    req, rep = (8, 0) if r["proto"] == 1 else (128, 129)
    return 0, (req if initiator else rep) << 8


def ours(path):
    c = collections.Counter()
    for line in open(path):
        r = json.loads(line)
        start = r["first_ns"] // 1_000_000
        icmp = r["proto"] in (1, 58)
        if r["packets_fwd"]:
            sp, dp = icmp_ports(r, True) if icmp else (r["sport"], r["dport"])
            c[(r["src"], r["dst"], sp, dp, r["proto"], r["packets_fwd"], r["bytes_fwd"], start)] += 1
        if r["packets_rev"]:
            sp, dp = icmp_ports(r, False) if icmp else (r["dport"], r["sport"])
            c[(r["dst"], r["src"], sp, dp, r["proto"], r["packets_rev"], r["bytes_rev"], start)] += 1
    return c


def port(s):
    if "." in s:  # nfdump prints ICMP type.code
        t, c = s.split(".")
        return int(t) * 256 + int(c)
    return int(s)


def theirs(d):
    out = subprocess.run(["nfdump", "-R", d, "-q", "-N", "-6", "-o", "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt|%ts"],
                         capture_output=True, text=True, check=True).stdout
    c = collections.Counter()
    for line in out.splitlines():
        f = [x.strip() for x in line.split("|")]
        if len(f) != 8:
            continue
        # %ts is local-time text with ms; convert back to epoch ms.
        t = time.mktime(time.strptime(f[7][:19], "%Y-%m-%d %H:%M:%S"))
        ms = int(round(t * 1000)) + int(f[7][20:23])
        c[(f[0], f[1], port(f[2]), port(f[3]), int(f[4]), int(f[5]), int(f[6]), ms)] += 1
    return c


def main():
    for tool in ("nfcapd", "nfdump"):
        if not shutil.which(tool):
            skip(f"{tool} not installed (scripts/setup.sh installs nfdump)")
    for rel in ["slips/test-cc-capture-1.pcap", "ndpi/mining.pcapng", "bench/ndpi-ether-concat.pcap"]:
        pcap = need_data(rel)
        with tempfile.TemporaryDirectory() as d:
            port = free_udp_port()
            flows = os.path.join(d, "nfcapd")  # nfdump -R reads every file in it
            os.mkdir(flows)
            cap = subprocess.Popen(["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-w", flows, "-B", "16000000"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            js = os.path.join(d, "f.jsonl")
            r = subprocess.run([BIN, "replay", pcap, "--hash-seed", "1", "--flows-out", js,
                                "--ipfix", f"127.0.0.1:{port}"], capture_output=True, text=True)
            time.sleep(1)
            cap.send_signal(signal.SIGTERM)
            cap.wait(timeout=20)
            a, b = ours(js), theirs(flows)
            v6 = sum(n for k, n in a.items() if ":" in k[0])
            check(r.returncode == 0 and "0 send errors" in r.stdout, f"{rel}: replay exported ({r.stdout.strip().splitlines()[-1]})")
            same = a == b
            if not same:
                print("   only ours:", list((a - b).items())[:3])
                print("   only nfdump:", list((b - a).items())[:3])
            check(same, f"{rel}: nfdump reads {sum(b.values())} uniflows, {sum(k[5] * n for k, n in b.items())} packets, "
                        f"{sum(k[6] * n for k, n in b.items())} bytes = our records ({v6} IPv6 uniflows)")
    # Collector down: nothing listens on the port.
    port = free_udp_port()
    pcap = need_data("stopddos/amp.UDP.isakmp.pcap")
    t0 = time.time()
    r = subprocess.run([BIN, "replay", pcap, "--ipfix", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    line = [l for l in r.stdout.splitlines() if l.startswith("ipfix:")]
    errs = int(line[0].split(",")[1].split()[0]) if line else 0
    check(r.returncode == 0 and errs > 0 and time.time() - t0 < 30,
          f"collector down: run completes, send errors counted ({line[0] if line else r.stderr})")
    r = subprocess.run([BIN, "replay", pcap, "--ipfix", "nohost.invalid:9"], capture_output=True, text=True)
    check(r.returncode == 2 and "nohost.invalid" in r.stderr, "unresolvable collector named: " + r.stderr.strip())
    finish()


if __name__ == "__main__":
    main()
