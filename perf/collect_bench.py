#!/usr/bin/python3
"""Router flow input end to end: softflowd's IPFIX export of a capture (made once, kept in
perf/out) sent as one TCP stream to `linesight collect --listen-tcp` and to
`linesight run --collect-tcp` (one RX lcore on a 10-packet pcap vdev, one worker), both
with every feature, the rules and the expert apps. Prints per round the wall seconds from
the first byte sent to the process's exit with every flow written (collect: minus its
200 ms --exit-idle; run: /shutdown once every message is decoded, so its flush is in),
exported records, flow records, and the medians.

Usage: perf/collect_bench.py [--pcap FILE] [--rounds N] [--bin PATH]"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "perf", "out")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lsdata import free_udp_port, receive_datagrams  # noqa: E402


def export_of(pcap):
    """softflowd's IPFIX messages for `pcap`, as one byte stream (cached)."""
    path = os.path.join(OUT, os.path.basename(pcap) + ".ipfix")
    if os.path.exists(path):
        return open(path, "rb").read()
    grams = receive_datagrams(lambda port: subprocess.run(
        ["softflowd", "-r", pcap, "-n", f"127.0.0.1:{port}", "-v", "10", "-6", "-d", "-a",
         "-t", "maxlife=300", "-t", "general=30", "-m", "4000000"], capture_output=True, check=True),
        rcvbuf=512 << 20, quiet_s=3)  # needs net.core.rmem_max as large
    data = b"".join(grams)
    open(path, "wb").write(data)
    return data


def send(port, data):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(data)
    c.close()


def ask(sock, cmd):
    u = socket.socket(socket.AF_UNIX)
    u.connect(sock)
    u.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
    b = b""
    while b"\n" not in b:
        b += u.recv(65536)
    u.close()
    return json.loads(b)["result"]


def one(binary, mode, data, messages, head):
    summ = os.path.join(OUT, "collect_bench.json")
    common = ["--features-out", "/dev/null", "--rules", os.path.join(ROOT, "features/rules/default.rules"),
              "--rules-cache", os.path.join(OUT, "rules-cache"), "--detections-out", "/dev/null", "--app", "defaults",
              "--flows-out", "/dev/null", "--hash-seed", "1", "--quiet", "--capacity", "262144",
              "--summary-json", summ]
    port = free_udp_port(socket.SOCK_STREAM)
    if mode == "collect":
        p = subprocess.Popen([binary, "collect", "--listen-tcp", f"127.0.0.1:{port}", "--exit-idle", "200ms",
                              *common], stderr=subprocess.PIPE, text=True)
        while "on tcp" not in (line := p.stderr.readline()):
            if not line:
                sys.exit(f"collect exited before listening (exit {p.wait()})")
        t = time.monotonic()
        send(port, data)
        p.wait()
        wall = time.monotonic() - t - 0.2
    else:
        sock = os.path.join(OUT, "collect_bench.sock")
        if os.path.exists(sock):
            os.remove(sock)
        cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        p = subprocess.Popen([binary, "run", "--collect-tcp", f"127.0.0.1:{port}", "--socket", sock,
                              "--idle-sleep-us", "100", "--workers", "1", *common, "--",
                              "--no-huge", "-m", "1024", "--no-pci", "--no-shconf", "--no-telemetry",
                              "--file-prefix", f"cb{os.getpid()}", "--lcores", f"(0-2)@({cpus})",
                              "--log-level", "lib.eal:error", "--vdev", f"net_pcap0,rx_pcap={head}"],
                             stderr=subprocess.DEVNULL)
        while not os.path.exists(sock):
            time.sleep(0.01)
        t = time.monotonic()
        send(port, data)
        while ask(sock, "/collector")["netflow"]["datagrams_ipfix"] < messages:
            time.sleep(0.005)
        ask(sock, "/shutdown")
        p.wait()
        wall = time.monotonic() - t
    s = json.load(open(summ))
    if p.returncode != 0 or s["netflow"]["sequence_gaps"]:
        sys.exit(f"{mode}: exit {p.returncode}, sequence gaps {s['netflow']['sequence_gaps']} (gaps: the cached "
                 f"export lost datagrams; remove perf/out/*.ipfix, sysctl -w net.core.rmem_max=536870912, rerun)")
    return wall, s["netflow"]["records"], s["records"]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--pcap", default=os.path.join(OUT, "synth-2000000p-100000f.pcap"))
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--bin", default=os.path.join(ROOT, "build/ctrl/linesight"))
    o = a.parse_args()
    if not os.path.exists(o.pcap):
        sys.exit(f"{o.pcap} absent: perf/compare.sh makes it (or give --pcap)")
    os.makedirs(OUT, exist_ok=True)
    data = export_of(o.pcap)
    messages, off = 0, 0
    while off < len(data):  # IPFIX message length: bytes 2-3
        off += int.from_bytes(data[off + 2:off + 4], "big")
        messages += 1
    head = os.path.join(OUT, "collect_bench_head.pcap")
    subprocess.run(["editcap", "-F", "pcap", "-r", o.pcap, head, "1-10"], check=True)
    walls = {"collect": [], "run": []}
    for _ in range(o.rounds):
        for mode in walls:
            w, recs, flows = one(o.bin, mode, data, messages, head)
            walls[mode].append(w)
            print(f"{mode:8} {w:7.3f} s  {recs} exported records  {flows} flow records", flush=True)
    for mode, ws in walls.items():
        m = statistics.median(ws)
        print(f"median {mode:8} {m:.3f} s  {recs / m / 1e6:.2f} M exported records/s  {flows / m / 1e6:.2f} M flows/s "
              f"(with features)")


if __name__ == "__main__":
    main()
