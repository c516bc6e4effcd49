#!/usr/bin/env python3
"""Server sketches merged across sensors (docs/features.md, "Merging sensors"): a capture's
conversations split between two "sensors" by address, each replayed with --sketches-out;
`linesight sketches merge` of the two must give, for every server, exactly the registers,
flows, bytes and times of one replay of the whole capture — the union of HyperLogLogs is
exact, so nothing is approximate here — while each sensor alone sees about half the
clients. Bad input is refused with the file, line and reason."""
import json
import os
import struct
import subprocess
import tempfile

from lsdata import BIN, check, finish, need_data

SYN = need_data("stopddos/pkt.TCP.synflood.spoofed.pcap")  # 37,623 spoofed sources (MANIFEST)
ISAKMP = need_data("stopddos/amp.UDP.isakmp.pcap")
HNS = need_data("slips/test7-malicious-hide-and-seek.pcap")  # a P2P bot: hundreds of servers


def split(src, a, b):
    """Classic pcap → two files: each conversation (its two addresses) goes to one side."""
    d = open(src, "rb").read()
    e = "<" if struct.unpack("<I", d[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    outs = [open(a, "wb"), open(b, "wb")]
    for o in outs:
        o.write(d[:24])
    off, n = 24, [0, 0]
    while off + 16 <= len(d):
        caplen = struct.unpack(e + "I", d[off + 8:off + 12])[0]
        rec = d[off:off + 16 + caplen]
        f = rec[16:]
        et = struct.unpack(">H", f[12:14])[0] if len(f) >= 14 else 0
        addrs = f[26:34] if et == 0x0800 else f[22:54] if et == 0x86DD else b""
        side = sum(addrs) & 1
        outs[side].write(rec)
        n[side] += 1
        off += 16 + caplen
    for o in outs:
        o.close()
    return n


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


def sketches(path):
    return {(j["server"], j["window"]): j for j in map(json.loads, open(path))}


def same_state(a, b):
    keys = ("clients", "client_nets", "ports", "flows", "bytes", "failed", "first_ns", "last_ns", "seed", "window_ns")
    return all(a[k] == b[k] for k in keys)


with tempfile.TemporaryDirectory() as d:
    p = lambda n: os.path.join(d, n)
    for name, cap in (("synflood", SYN), ("isakmp", ISAKMP), ("hide-and-seek", HNS)):
        n = split(cap, p("a.pcap"), p("b.pcap"))
        for part in ("a", "b"):
            r = run("replay", p(part + ".pcap"), "--flows-out", "/dev/null", "--sketches-out", p(part + ".jsonl"))
            check(r.returncode == 0 and "sketches: " in r.stdout, f"{name}: sensor {part} ({n['ab'.index(part)]} packets) "
                  f"writes sketches: {r.stdout.strip().splitlines()[-1] if r.stdout else r.stderr}")
        r = run("replay", cap, "--quiet", "--flows-out", "/dev/null", "--sketches-out", p("all.jsonl"))
        whole = sketches(p("all.jsonl"))
        r1 = run("sketches", "merge", p("a.jsonl"), p("b.jsonl"), "-o", p("m.jsonl"))
        r2 = run("sketches", "merge", p("b.jsonl"), p("a.jsonl"), "-o", p("m2.jsonl"))
        merged, merged2 = sketches(p("m.jsonl")), sketches(p("m2.jsonl"))
        a, b = sketches(p("a.jsonl")), sketches(p("b.jsonl"))
        exact = [k for k in whole if k in merged and same_state(whole[k], merged[k])]
        both = [k for k in merged if merged[k]["sensors"] == 2]
        check(r1.returncode == 0 and r2.returncode == 0 and len(exact) == len(whole) == len(merged) > 0
              and merged == merged2 and len(a) + len(b) - len(both) == len(whole),
              f"{name}: merged sensors equal the whole capture for {len(exact)}/{len(whole)} servers "
              f"({len(both)} seen by both sensors), in either order")
        top = json.loads(run("sketches", "merge", p("m.jsonl"), "--json", "--top", "1").stdout)
        one = json.loads(run("sketches", "merge", p("all.jsonl"), "--json", "--top", "1").stdout)
        ha = json.loads(run("sketches", "merge", p("a.jsonl"), "--json", "--top", "1").stdout)
        check(top["clients"] == one["clients"] and top["server"] == one["server"] and top["sensors"] == 2
              and ha["clients"] < 0.6 * top["clients"],
              f"{name}: busiest server {top['server']}: {ha['clients']:.0f} clients at one sensor, "
              f"{top['clients']:.0f} merged = {one['clients']:.0f} from the whole capture")
        if name == "synflood":
            check(abs(top["clients"] - 37623) < 0.15 * 37623 and top["flows"] == sum(v["flows"] for v in whole.values()),
                  f"synflood: {top['clients']:.0f} distinct clients estimated for 37,623 spoofed sources "
                  f"(HyperLogLog of 256 registers: ±6.5 % standard error)")

    # Refused with the file, line and reason.
    good = open(p("a.jsonl")).readline()
    j = json.loads(good)
    cases = {
        "seed": (json.dumps({**j, "seed": 7}), "sketch seeds differ"),
        "seed on another server": (json.dumps({**j, "seed": 7, "server": "0.0.0.1"}), "sketch seeds differ (1 and 7)"),
        "window": (json.dumps({**j, "window_ns": 60_000_000_000}), "windows differ"),
        "cut": (good[:40], "not a JSON object"),
        "rank": (json.dumps({**j, "clients": [[3, 99]]}), "\"clients\": rank 99 outside 1..57"),
        "index": (json.dumps({**j, "ports": [[64, 1]]}), "\"ports\": register index 64 >= 64"),
        "version": (json.dumps({**j, "linesight_sketch": 2}), "sketch version 2"),
        "failed": (json.dumps({**j, "failed": j["flows"] + 1}), "\"failed\" is more than \"flows\""),
    }
    for what, (line, why) in cases.items():
        open(p("bad.jsonl"), "w").write(good + line + "\n")
        r = run("sketches", "merge", p("a.jsonl"), p("bad.jsonl"))
        check(r.returncode == 2 and f"bad.jsonl:2: {why}" in r.stderr, f"sketch with a bad {what} refused: {r.stderr.strip()}")
    cfg = p("seed.yaml")
    open(cfg, "w").write("features:\n  sketch_seed: 9\n")
    run("replay", p("b.pcap"), "--config", cfg, "--quiet", "--flows-out", "/dev/null", "--sketches-out", p("b9.jsonl"))
    r = run("sketches", "merge", p("a.jsonl"), p("b9.jsonl"))
    check(r.returncode == 2 and "b9.jsonl:1: sketch seeds differ (1 and 9)" in r.stderr,
          f"sensors with different features.sketch_seed are not merged: {r.stderr.strip()}")
    r = run("replay", SYN, "--quiet", "--flows-out", "/dev/null", "--sketches-out", "/nonexistent-dir/s.jsonl")
    check(r.returncode == 2 and "/nonexistent-dir/s.jsonl" in r.stderr, "unwritable --sketches-out refused at start")
    r = run("sketches", "merge")
    check(r.returncode == 2 and "usage" in r.stderr, "merge without files explains its usage")

finish()
