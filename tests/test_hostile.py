#!/usr/bin/env python3
"""Hostile input, end to end (issue 7): captures built to lie. Every length field lying,
10,000 VLAN tags, tunnels within tunnels past the bound, pcaps cut mid-record and
mid-header, zero-length records, zero and giant snaplens, records claiming gigabytes,
timestamps jumping back and forward by years, pcapng blocks with lying lengths.

Each goes through `linesight replay` with every feature and app on, on one core and on
two, and the packet captures also through `linesight run` on a net_pcap vdev (the DPDK
path). What must hold: no crash (the ASan+UBSan pass of the suite runs this too), a
clear message for a file that cannot be read, every packet either in a record or under a
named DROP counter, and the counter that names the lie."""
import json
import os
import struct
import subprocess
import sys
import tempfile

from lsdata import BIN, ROOT, check, drop_counters, finish

RULES = os.path.join(ROOT, "features", "rules", "default.rules")
DROPS = drop_counters()

MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def ipv4(payload, proto, src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", ihl=5, total=None, ver=4):
    opts = b"\x01" * (ihl * 4 - 20) if ihl >= 5 else b""
    tl = total if total is not None else 20 + len(opts) + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", ver << 4 | ihl, 0, tl, 1, 0, 64, proto, 0, src, dst) + opts
    return h + payload


def tcp(sport=40000, dport=80, off=5, flags=0x18, payload=b"GET / HTTP/1.1\r\n\r\n"):
    opts = b"\x01" * max(0, off * 4 - 20)
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, off << 4, flags, 1024, 0, 0) + opts + payload


def udp(sport=5000, dport=53, payload=b"\x12\x34" + b"\0" * 10, length=None):
    ln = length if length is not None else 8 + len(payload)
    return struct.pack("!HHHH", sport, dport, ln, 0) + payload


def eth(l3, ethertype=0x0800):
    return MAC + struct.pack("!H", ethertype) + l3


def ipv6(payload, nxt, plen=None):
    pl = plen if plen is not None else len(payload)
    return struct.pack("!IHBB16s16s", 6 << 28, pl, nxt, 64, b"\x20\x01" + b"\0" * 13 + b"\x01",
                       b"\x20\x01" + b"\0" * 13 + b"\x02") + payload


def gre(inner, proto=0x0800):
    return struct.pack("!HH", 0, proto) + inner


def vxlan(inner_frame):
    return udp(49152, 4789, struct.pack("!BxxxI", 0x08, 42 << 8) + inner_frame)


def pcap(records, snaplen=65535, linktype=1, magic=0xA1B2C3D4):
    out = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for r in records:
        if isinstance(r, bytes):
            r = (1_000_000_000, 0, r)
        sec, usec, data = r[:3]
        caplen = r[3] if len(r) > 3 else len(data)
        wire = r[4] if len(r) > 4 else len(data)
        out += struct.pack("<IIII", sec, usec, caplen, wire) + data
    return out


def lying_packets():
    """(frame, name of the counter that must name it or None when it is usable)."""
    good = tcp()
    return [
        (eth(ipv4(good, 6)), None),
        (eth(ipv4(good, 6, ihl=15)[:40]), "truncated_ipv4"),   # header claims 60 bytes, 26 there
        (eth(ipv4(good, 6, ihl=3)), "bad_ip_header_len"),
        (eth(ipv4(good, 6, total=10)), "bad_ip_total_len"),
        (eth(ipv4(good, 6, total=65535)), None),                # longer than captured: snaplen cut
        (eth(ipv4(good, 6, ver=7)), "bad_ip_version"),
        (eth(ipv4(tcp(off=15), 6)[:60]), "truncated_tcp"),
        (eth(ipv4(tcp(off=2), 6)), "bad_tcp_header_len"),
        (eth(ipv4(udp(length=3), 17)), None),                   # UDP length is not trusted for bounds
        (eth(ipv4(udp(length=65535), 17)), None),
        (eth(ipv4(b"\x08", 1)), "truncated_icmp"),
        (eth(ipv4(b"\x00\x01", 132)), "truncated_sctp"),
        (eth(ipv4(b"\x00", 47)), "truncated_gre"),
        (eth(ipv6(tcp(), 6, plen=65000), 0x86DD), None),
        (eth(ipv6(bytes([6, 255]) + b"\0" * 6, 0), 0x86DD), "truncated_ipv6_ext"),  # hop-by-hop claims 2 KB
        (eth(ipv6(b"", 6), 0x86DD)[:30], "truncated_ipv6"),
        (eth(b"", 0x8100), "truncated_vlan"),
        (eth(b"\x00\x00\x01", 0x8847), "truncated_mpls"),
        (MAC[:7], "truncated_l2"),
    ]


def vlan_flood(n=10_000):
    tags = b"".join(struct.pack("!HH", i & 0xFFF, 0x8100) for i in range(n - 1)) + struct.pack("!HH", 7, 0x0800)
    return MAC + b"\x81\x00" + tags + ipv4(tcp(), 6)


def nested_gre(depth):
    f = ipv4(tcp(sport=41000), 6, src=b"\xc0\xa8\x00\x01", dst=b"\xc0\xa8\x00\x02")
    for _ in range(depth):
        f = ipv4(gre(f), 47)
    return eth(f)


def nested_vxlan(depth):
    f = eth(ipv4(udp(6000, 7000), 17, src=b"\xc0\xa8\x01\x01"))
    for _ in range(depth):
        f = eth(ipv4(vxlan(f), 17))
    return f


def run_replay(d, path, *extra):
    out, summ = os.path.join(d, "f.jsonl"), os.path.join(d, "s.json")
    for p in (out, summ):
        if os.path.exists(p):
            os.remove(p)
    cmd = [BIN, "replay", path, "--quiet", "--flows-out", out, "--summary-json", summ,
           "--rules", RULES, "--payload-bytes", "128", "--app", "defaults",
           "--features-out", os.path.join(d, "feat.csv"), "--detections-out", os.path.join(d, "det.jsonl"), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    s = json.load(open(summ)) if os.path.exists(summ) else None
    recs = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
    return r, s, recs


def balanced(s, recs):
    c = s["counters"]
    in_recs = sum(x["packets_fwd"] + x["packets_rev"] for x in recs)
    drops = sum(v for k, v in c.items() if k in DROPS)
    return in_recs + drops == c["packets"], f"{in_recs} in records + {drops} dropped == {c['packets']}"


def packet_captures(d):
    caps = {}
    lp = lying_packets()
    caps["lying"] = (pcap([f for f, _ in lp]), {n for _, n in lp if n})
    caps["vlan10k"] = (pcap([vlan_flood()]), {"too_many_vlan_tags"})
    # GRE 3 deep is within the bound (decapsulated); 40 deep is named; VXLAN 40 deep too.
    caps["tunnels"] = (pcap([nested_gre(3), nested_gre(40), nested_vxlan(40)]), {"tunnel_depth_exceeded"})
    # Zero-length records, and records whose capture length exceeds the file's snaplen.
    caps["zero_len"] = (pcap([b"", eth(ipv4(tcp(), 6)), (1_000_000_000, 5, b"", 0, 1500)]), {"truncated_l2"})
    caps["snaplen0"] = (pcap([eth(ipv4(tcp(), 6))] * 3, snaplen=0), set())
    caps["snaplen_giant"] = (pcap([eth(ipv4(tcp(), 6))] * 3, snaplen=0xFFFFFFFF), set())
    # One flow whose clock goes 2001 → 1971 → 2099 → 2001 (u32 seconds), then a second flow.
    f = eth(ipv4(tcp(), 6))
    years = [(1_000_000_000, 0, f), (1_000_000_001, 0, f), (40_000_000, 0, f), (4_000_000_000, 999_999, f),
             (1_000_000_002, 0, f), (0, 0, eth(ipv4(udp(), 17))), (0xFFFFFFFF, 0, eth(ipv4(udp(), 17)))]
    caps["years"] = (pcap(years), set())
    for name, (data, _) in caps.items():
        open(os.path.join(d, name + ".pcap"), "wb").write(data)
    return caps


def test_packet_captures(d):
    caps = packet_captures(d)
    for name, (_, want) in caps.items():
        path = os.path.join(d, name + ".pcap")
        for cores in ("1", "2"):
            r, s, recs = run_replay(d, path, "--cores", cores)
            ok = r.returncode == 0 and s is not None
            check(ok, f"{name} (--cores {cores}): exit {r.returncode} {r.stderr.strip()[-200:]}")
            if not ok:
                continue
            bal, why = balanced(s, recs)
            named = {k for k, v in s["counters"].items() if v and k in DROPS}
            check(bal and want <= named, f"{name} (--cores {cores}): {why}; named {sorted(named)}")
    _, s, recs = run_replay(d, os.path.join(d, "lying.pcap"))
    usable = sum(1 for _, n in lying_packets() if n is None)
    got = sum(x["packets_fwd"] + x["packets_rev"] for x in recs)
    check(got == usable, f"lying lengths: the {usable} usable packets are in records ({got})")
    _, s, recs = run_replay(d, os.path.join(d, "tunnels.pcap"))
    inner = [x for x in recs if x["src"] == "192.168.0.1" or x["dst"] == "192.168.0.1"]
    check(s["counters"]["tunnel_decapsulated"] >= 3 and len(inner) == 1 and s["counters"]["tunnel_depth_exceeded"] == 2,
          f"GRE 3 deep decapsulated to its inner flow, 40 deep GRE and VXLAN named "
          f"(decapsulated {s['counters']['tunnel_decapsulated']}, exceeded {s['counters']['tunnel_depth_exceeded']})")
    _, s, recs = run_replay(d, os.path.join(d, "years.pcap"))
    c = s["counters"]
    check(c["clock_backward_jumps"] >= 1 and c["flows_clock_jump"] >= 1 and all(x["first_ns"] <= x["last_ns"] < 1 << 63 for x in recs),
          f"years: backward jumps {c['clock_backward_jumps']}, flows ended by a clock jump {c['flows_clock_jump']}, "
          f"every record first <= last")
    _, s, recs = run_replay(d, os.path.join(d, "vlan10k.pcap"))
    check(s["counters"]["vlan_tagged"] <= 1 and s["counters"]["too_many_vlan_tags"] == 1,
          "10,000 VLAN tags: one packet, named too_many_vlan_tags")


def test_truncated_files(d):
    good = pcap([eth(ipv4(tcp(sport=40000 + i), 6)) for i in range(10)])
    rec = 16 + len(eth(ipv4(tcp(), 6)))
    cases = {
        "mid_record": (good[: 24 + 5 * rec + 30], 5),   # 5 whole records, the 6th cut in its data
        "mid_header": (good[: 24 + 5 * rec + 7], 5),    # cut inside the 6th record header
        "only_header": (good[:24], 0),
    }
    for name, (data, want) in cases.items():
        path = os.path.join(d, name + ".pcap")
        open(path, "wb").write(data)
        r, s, recs = run_replay(d, path)
        ok = r.returncode == 0 and s is not None and s["counters"]["packets"] == want
        check(ok and (want == 0 or any("truncated" in w for w in s["warnings"])),
              f"{name}: the {want} whole packets kept, the cut one reported "
              f"(exit {r.returncode}, {s and s['counters']['packets']} packets; {r.stderr.strip()[-150:]})")
    for name, data in {"cut_global_header": good[:10], "empty": b"", "not_a_pcap": b"\x00" * 100}.items():
        path = os.path.join(d, name + ".pcap")
        open(path, "wb").write(data)
        r, s, recs = run_replay(d, path)
        check(r.returncode in (1, 2) and path in r.stderr and "Traceback" not in r.stderr and "terminate" not in r.stderr,
              f"{name}: a clear error naming the file (exit {r.returncode}: {r.stderr.strip()[-150:]})")
    # A record claiming 2 GB: libpcap refuses it; we must neither allocate it nor lose what came before.
    path = os.path.join(d, "giant_record.pcap")
    open(path, "wb").write(pcap([eth(ipv4(tcp(), 6)), (1_000_000_000, 0, b"", 0x7FFFFFF0, 0x7FFFFFF0)]))
    r, s, recs = run_replay(d, path)
    check(r.returncode == 0 and s["counters"]["packets"] == 1 and s.get("warnings"),
          f"a record claiming 2 GB: the packet before it kept, a warning (exit {r.returncode}, {r.stderr.strip()[-150:]})")


def ng_block(btype, body, total=None):
    ln = total if total is not None else 12 + len(body)
    return struct.pack("<II", btype, ln) + body + struct.pack("<I", ln)


def test_pcapng(d):
    shb = ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = ng_block(1, struct.pack("<HHI", 1, 0, 0))
    frame = eth(ipv4(tcp(), 6))
    pad = frame + b"\0" * (-len(frame) % 4)

    def epb(ts, total=None, caplen=None):
        return ng_block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, caplen or len(frame), len(frame)) + pad,
                        total)
    # 64-bit microsecond timestamps: year 2001, then year 33658 (0xFFFF... >> 8), then 1970.
    ok_blocks = [shb, idb, epb(1_000_000_000_000_000), epb(0x00FFFFFFFFFFFFFF), epb(1)]
    cases = {
        "ng_years": (b"".join(ok_blocks), 3),
        "ng_block_len_small": (b"".join([shb, idb, epb(1_000_000_000_000_000), epb(5, total=8)]), 1),
        "ng_block_len_huge": (b"".join([shb, idb, epb(1_000_000_000_000_000), epb(5, total=0x7FFFFFF0)]), 1),
        "ng_caplen_lies": (b"".join([shb, idb, epb(1_000_000_000_000_000), epb(5, caplen=60000)]), 1),
    }
    for name, (data, want) in cases.items():
        path = os.path.join(d, name + ".pcapng")
        open(path, "wb").write(data)
        r, s, recs = run_replay(d, path)
        ok = r.returncode == 0 and s is not None and s["counters"]["packets"] == want
        check(ok, f"{name}: {want} packets read, the rest reported (exit {r.returncode}, "
                  f"{s and s['counters']['packets']} packets; {r.stderr.strip()[-150:]})")
        if ok:
            bal, why = balanced(s, recs)
            check(bal, f"{name}: {why}")


def test_dpdk_path(d):
    r = subprocess.run([BIN, "run", "--help"], capture_output=True, text=True)
    if "built without DPDK" in r.stderr:
        print("SKIP dpdk path: linesight built without DPDK")
        return
    from test_dpdk import eal
    caps = packet_captures(d)
    for name in ("lying", "tunnels", "years", "zero_len"):
        path = os.path.join(d, name + ".pcap")
        out, summ = os.path.join(d, "run.jsonl"), os.path.join(d, "run.json")
        cmd = [BIN, "run", "--quiet", "--socket", "", "--flows-out", out, "--summary-json", summ, "--exit-idle", "1s",
               "--rules", RULES, "--payload-bytes", "128", "--app", "defaults", "--features-out", os.path.join(d, "rf.csv"),
               "--idle-sleep-us", "100", "--", *eal(3, f"net_pcap0,rx_pcap={path}")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        ok = r.returncode == 0 and os.path.exists(summ)
        check(ok, f"run on net_pcap {name}: exit {r.returncode} {r.stderr.strip()[-200:]}")
        if ok:
            s = json.load(open(summ))
            recs = [json.loads(l) for l in open(out)]
            bal, why = balanced(s, recs)
            want = caps[name][1] - {"truncated_l2"}  # DPDK's pcap PMD drops zero-length records itself
            named = {k for k, v in s["counters"].items() if v and k in DROPS}
            check(bal and want <= named, f"run on net_pcap {name}: {why}; named {sorted(named)}")
            if name == "years":
                stamps = sorted(x["first_ns"] for x in recs)
                check(all(x["first_ns"] <= x["last_ns"] < 1 << 63 for x in recs) and stamps[-2] == 4_000_000_000_999_999_000,
                      f"run on net_pcap: a 2096 timestamp (past the signed 32-bit seconds) kept, not wrapped ({stamps})")
    # The capture filter on lying frames: run's RX lcore runs it JIT-compiled by DPDK,
    # replay in libpcap's interpreter; they must drop the same packets.
    # ("vlan" last: libpcap offsets every later clause by the tag, as tcpdump does.)
    expr = "tcp[tcpflags] & tcp-syn != 0 or udp port 53 or ip[6:2] & 0x1fff != 0 or ip[9] == 47 or vlan"
    for name in ("lying", "tunnels"):
        path = os.path.join(d, name + ".pcap")
        out, summ = os.path.join(d, "run.jsonl"), os.path.join(d, "run.json")
        cmd = [BIN, "run", "--quiet", "--socket", "", "--flows-out", out, "--summary-json", summ, "--exit-idle", "1s",
               "--filter", expr, "--idle-sleep-us", "100", "--", *eal(3, f"net_pcap0,rx_pcap={path}")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        got = json.load(open(summ))["counters"] if r.returncode == 0 and os.path.exists(summ) else {}
        _, s, _ = run_replay(d, path, "--filter", expr)
        want = s["counters"] if s else {}
        check(r.returncode == 0 and "interpreter" not in r.stderr and got.get("packets") == want.get("packets")
              and got.get("filtered_out") == want.get("filtered_out") and 0 < want.get("filtered_out", 0) < want.get("packets", 0),
              f"run --filter (JIT) on net_pcap {name} drops what replay's interpreter drops: "
              f"{got.get('filtered_out')} == {want.get('filtered_out')} of {got.get('packets')} {r.stderr.strip()[-200:]}")


def main():
    with tempfile.TemporaryDirectory() as d:
        for t in (test_packet_captures, test_truncated_files, test_pcapng, test_dpdk_path):
            if sys.argv[1:] and t.__name__ not in sys.argv[1:]:
                continue
            print(f"-- {t.__name__}", flush=True)
            t(d)
    finish()


if __name__ == "__main__":
    main()
