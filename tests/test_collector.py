#!/usr/bin/env python3
"""Router flow input: Debian's softflowd reads a capture and exports NetFlow v5, v9 and
IPFIX to `linesight collect` on 127.0.0.1; the collected flows and features are compared with
`linesight replay` of the same capture, within what the export carries (counts, ms times,
OR-ed TCP flags; bytes are IP bytes, ours are frame bytes: 14 per Ethernet packet).
Debian's pmacct (pmacctd's sfprobe plugin) exports the same captures as sFlow v5: every
packet, then 1 in 10.
Also: our own IPFIX export read back by our collector, hostile datagrams counted by name,
and the exporter's sampling rate carried into the records."""
import collections
import csv
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import signal
import tempfile
import time

from lsdata import BIN, ROOT, free_udp_port, need_data, receive_datagrams, skip, check, finish


SOFTFLOWD_TIMEOUTS = [x for t in ("tcp=30", "udp=30", "icmp=30", "general=30", "maxlife=300", "tcp.rst=2",
                                   "tcp.fin=2") for x in ("-t", t)]



class Collect:
    """linesight collect in the background; outputs in a temporary directory. `tcp`: listen
    on TCP instead of UDP; `also_tcp`: on both (the TCP port in tcp_port)."""

    def __init__(self, d, *extra, tcp=False, also_tcp=False, idle="1s"):
        self.port = free_udp_port(socket.SOCK_STREAM if tcp else None)
        listen = ["--listen-tcp" if tcp else "--listen", f"127.0.0.1:{self.port}"]
        if also_tcp:
            self.tcp_port = free_udp_port(socket.SOCK_STREAM)
            listen += ["--listen-tcp", f"127.0.0.1:{self.tcp_port}"]
        self.flows, self.feat, self.summ = (os.path.join(d, n) for n in ("c.jsonl", "c.csv", "c.json"))
        self.err = open(os.path.join(d, "c.err"), "w+")
        self.p = subprocess.Popen([BIN, "collect", *listen, "--exit-idle", idle,
                                   "--quiet", "--hash-seed", "1", "--flows-out", self.flows, "--features-out",
                                   self.feat, "--summary-json", self.summ, *extra],
                                  stdout=subprocess.DEVNULL, stderr=self.err, text=True)
        for _ in range(300):  # every socket is bound once this line is out
            self.err.seek(0)
            if "collecting" in self.err.read():
                break
            if self.p.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])

    def wait(self):
        rc = self.p.wait(timeout=120)
        self.err.seek(0)
        recs = [json.loads(line) for line in open(self.flows)]
        with open(self.summ) as f:
            return rc, recs, json.load(f), self.err.read()


def features(path):
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def final_pairs(rows):
    """Pair state after the pair's last contact: (contacts, periodicity, period)."""
    out = {}
    for r in rows:
        k = (r["src"], r["dst"], r["dport"], r["proto"])
        if k not in out or int(r["pair_contacts"]) >= out[k][0]:
            out[k] = (int(r["pair_contacts"]), float(r["pair_periodicity"]), float(r["pair_period_s"] or 0))
    return out


def match(ours, theirs, tol_ms, either=False):
    """Pairs flows by 5-tuple and start time within tol_ms. With `either`, a collected flow
    may have the other orientation (mid-connection records: the export does not say who
    initiated); it is then returned turned around."""
    by = collections.defaultdict(list)
    for r in theirs:
        by[(r["src"], r["dst"], r["sport"], r["dport"], r["proto"])].append((r, False))
        if either:
            by[(r["dst"], r["src"], r["dport"], r["sport"], r["proto"])].append((r, True))
    pairs, used = [], set()
    for r in ours:
        cands = [c for c in by.get((r["src"], r["dst"], r["sport"], r["dport"], r["proto"]), []) if id(c[0]) not in used]
        best = min(cands, key=lambda c: abs(c[0]["first_ns"] - r["first_ns"]), default=None)
        if best is not None and abs(best[0]["first_ns"] - r["first_ns"]) <= tol_ms * 1_000_000:
            used.add(id(best[0]))
            b = dict(best[0])
            if best[1]:
                for x in ("packets", "bytes", "tcp_flags"):
                    b[x + "_fwd"], b[x + "_rev"] = best[0].get(x + "_rev"), best[0].get(x + "_fwd")
            pairs.append((r, b))
    return pairs


def totals(recs, l2):
    """(packets, bytes less `l2` per packet) per conversation, whatever the flow cuts."""
    t = collections.Counter()
    for r in recs:
        k = tuple(sorted([(r["src"], r["sport"]), (r["dst"], r["dport"])])) + (r["proto"],)
        n = r["packets_fwd"] + r["packets_rev"]
        t[k + ("p",)] += n
        t[k + ("b",)] += r["bytes_fwd"] + r["bytes_rev"] - l2 * n
    out = {}
    for k, v in t.items():
        out.setdefault(k[:-1], [0, 0])[0 if k[-1] == "p" else 1] = v
    return out


def replay_with_features(pcap, d, *extra):
    js, fe = os.path.join(d, "r.jsonl"), os.path.join(d, "r.csv")
    subprocess.run([BIN, "replay", pcap, "--quiet", "--hash-seed", "1", "--flows-out", js,
                    "--features-out", fe, *extra], check=True)
    return [json.loads(line) for line in open(js)], features(fe)


def softflowd_vs_replay():
    # softflowd -r expires flows only at the end of the file (its timeouts run on the wall
    # clock), so where a conversation pauses longer than our idle timeout it exports one flow
    # and we several: those captures are compared per conversation (5-tuple totals); the
    # beacon captures (every contact a short TCP connection ended by FIN) also per flow
    # and per client→server pair.
    for rel, per_flow in [("slips/test-cc-capture-1.pcap", True), ("slips/test-cc-capture-2.pcap", True),
                          ("ndpi/emotet.pcap", False), ("ndpi/tor.pcap", False),
                          ("ndpi/dns-tunnel-iodine.pcap", False)]:
        pcap = need_data(rel)
        with tempfile.TemporaryDirectory() as d:
            ours, ofeat = replay_with_features(pcap, d)
            # v1 (softflowd exports it too) and v7 (softflowd's v5 re-encoded) on the
            # beacon captures only: the same IPv4 records in older frames.
            for ver in (5, 9, 10) + ((1, 7) if per_flow else ()):
                grams = v5_as_v7(softflowd_datagrams(pcap, 5)) if ver == 7 else softflowd_datagrams(pcap, ver)
                c = Collect(d)
                send_paced(grams, c.port)
                rc, theirs, summ, err = c.wait()
                nf = summ["netflow"]
                bad = {k: v for k, v in nf.items() if v and k not in
                       ("datagrams", "datagrams_v1", "datagrams_v5", "datagrams_v7", "datagrams_v9", "datagrams_ipfix",
                        "records", "options_records", "templates")}
                as_ver = nf["datagrams_ipfix" if ver == 10 else f"datagrams_v{ver}"]
                check(rc == 0 and nf["records"] > 0 and not bad and as_ver == nf["datagrams"] == len(grams),
                      f"{rel} v{ver}: {nf['datagrams']} datagrams (of {len(grams)} sent; {as_ver} as v{ver}), "
                      f"{nf['records']} records, {len(theirs)} flows, no error counter ({bad or 'none'})")
                # v9 carries export time in whole seconds: starts are off by a constant < 1 s.
                ta, tb = totals(ours, 14), totals(theirs, 0)
                if ver in (1, 5, 7):  # IPv4 only: softflowd drops the IPv6 flows
                    ta = {k: v for k, v in ta.items() if ":" not in k[0][0]}
                check(ta == tb, f"{rel} v{ver}: {len(ta)} conversations, {sum(v[0] for v in ta.values())} packets: "
                                f"packets and IP bytes per conversation equal"
                                + ("" if ta == tb else f" (differ: {[(k, ta.get(k), tb.get(k)) for k in ta if ta.get(k) != tb.get(k)][:3]})"))
                if not per_flow:
                    continue
                # v5 (export s + ns) and IPFIX (init time): a base in ms + relative ms, each
                # truncated: ≤ 2 ms.
                pairs = match(ours, theirs, 1000 if ver == 9 else 2, either=True)
                exact = [1 for a, b in pairs if a["packets_fwd"] == b["packets_fwd"] and
                         a["packets_rev"] == b["packets_rev"] and
                         a["bytes_fwd"] - 14 * a["packets_fwd"] == b["bytes_fwd"] and
                         a["bytes_rev"] - 14 * a["packets_rev"] == b["bytes_rev"] and
                         a.get("tcp_flags_fwd") == b.get("tcp_flags_fwd") and
                         a.get("tcp_flags_rev") == b.get("tcp_flags_rev")]
                check(len(exact) >= 0.95 * len(ours),
                      f"{rel} v{ver}: {len(exact)}/{len(ours)} replay flows collected with equal direction, packets, "
                      f"IP bytes and TCP flags ({len(pairs)} matched by 5-tuple and start)")
                fa, fb = final_pairs(ofeat), final_pairs(features(c.feat))
                common = [k for k in fa if k in fb]
                # softflowd keeps a reused 5-tuple in one flow where we start a new one after
                # FIN: contacts may differ by a few.
                same = [k for k in common if abs(fa[k][0] - fb[k][0]) <= max(1, 0.02 * fa[k][0]) and
                        abs(fa[k][1] - fb[k][1]) <= 0.05]
                top = max(fa, key=lambda k: (fa[k][0], fa[k][1]))
                check(len(same) >= 0.9 * len(fa) and top in fb and abs(fa[top][2] - fb[top][2]) <= 0.05 * fa[top][2],
                      f"{rel} v{ver}: final pair features (contacts ±2 %, periodicity ±0.05) equal for {len(same)}/{len(fa)} "
                      f"pairs; busiest pair {top[0]}→{top[1]}:{top[2]} period {fa[top][2]:.2f} s replayed, "
                      f"{fb.get(top, (0, 0, 0))[2]:.2f} s collected, periodicity {fa[top][1]:.2f} / "
                      f"{fb.get(top, (0, 0, 0))[1]:.2f}")


def v5_as_v7(grams):
    """NetFlow v5 datagrams as a Catalyst would send them in v7 (Cisco's NDE tables): the
    header's engine and sampling bytes reserved (zero), each 48-byte record followed by
    the bypassed router's address (52 bytes), a full flow mask. No exporter in Debian
    speaks v7."""
    out = []
    for g in grams:
        assert struct.unpack("!H", g[:2])[0] == 5
        count = struct.unpack("!H", g[2:4])[0]
        m = struct.pack("!H", 7) + g[2:20] + b"\0" * 4
        for i in range(count):
            m += g[24 + 48 * i:24 + 48 * (i + 1)] + socket.inet_aton("192.0.2.254")
        out.append(m)
    return out


def softflowd_datagrams(pcap, ver, *flags):
    """What softflowd exports for a capture, as the datagrams it sent (received first, so
    softflowd's pace on a loaded machine never meets a collector's --exit-idle). -a: times
    from the capture; -6: IPv6 too; the file is flushed at its end; timeouts as ours
    (idle 30 s, active 300 s) unless `flags` are given, so both cut flows alike."""
    return receive_datagrams(lambda port: subprocess.run(
        ["softflowd", "-r", pcap, "-n", f"127.0.0.1:{port}", "-v", str(ver), "-6", "-d", "-a",
         *(flags or SOFTFLOWD_TIMEOUTS)], capture_output=True, check=True))


def ipfix_over_tcp():
    """IPFIX over TCP (RFC 7011 10.4): softflowd's messages as one stream, cut at random
    points, give the same flows as the same messages over UDP; a session that sends
    something else is closed and counted, and the others go on."""
    pcap = need_data("slips/test-cc-capture-1.pcap")
    grams = softflowd_datagrams(pcap, 10)
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "udp"))
        os.mkdir(os.path.join(d, "tcp"))
        u = Collect(os.path.join(d, "udp"))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for g in grams:
            s.sendto(g, ("127.0.0.1", u.port))
        _, by_udp, usumm, _ = u.wait()
        t = Collect(os.path.join(d, "tcp"), tcp=True)
        bad = socket.create_connection(("127.0.0.1", t.port))
        bad.sendall(struct.pack("!HH", 9, 40) + b"\x00" * 36)  # NetFlow v9: not a TCP stream
        bad.settimeout(5)
        try:
            closed = bad.recv(1) == b""
        except ConnectionResetError:  # closed with our bytes unread: closed all the same
            closed = True
        stream = b"".join(grams)
        rnd = random.Random(1)
        c = socket.create_connection(("127.0.0.1", t.port))
        at = 0
        while at < len(stream):
            n = rnd.randint(1, 3000)
            c.sendall(stream[at:at + n])
            at += n
        c.close()
        rc, by_tcp, tsumm, _ = t.wait()
        tn = tsumm["netflow"]
        key = lambda r: json.dumps(r, sort_keys=True)
        check(rc == 0 and len(grams) > 5 and by_udp and sorted(map(key, by_tcp)) == sorted(map(key, by_udp)) and
              tn["records"] == usumm["netflow"]["records"],
              f"IPFIX over TCP: {len(grams)} softflowd messages as one stream in random cuts: {len(by_tcp)} flows, "
              f"{tn['records']} records, the same as over UDP ({len(by_udp)} flows)")
        check(closed and tn["tcp_sessions"] == 2 and tn["tcp_bad_stream"] == 1 and tn["bad_version"] == 0,
              f"a session sending NetFlow v9 over TCP closed by the collector ({closed}) and counted: "
              f"tcp_sessions {tn['tcp_sessions']}, tcp_bad_stream {tn['tcp_bad_stream']}")


def metrics_while_collecting():
    """collect --metrics: a long-running collector's counters live in Prometheus form."""
    import urllib.request
    pcap = need_data("slips/test-cc-capture-1.pcap")
    grams = softflowd_datagrams(pcap, 5)
    with tempfile.TemporaryDirectory() as d:
        mport = free_udp_port(socket.SOCK_STREAM)
        c = Collect(d, "--exit-idle", "600s", "--metrics", f"127.0.0.1:{mport}")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for g in grams:
            s.sendto(g, ("127.0.0.1", c.port))
        s.sendto(b"\xff" * 30, ("127.0.0.1", c.port))  # one bad_version
        want = sum(struct.unpack("!H", g[2:4])[0] for g in grams)
        body, vals = "", {}
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            except OSError:
                body = ""
            vals = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                    if line and not line.startswith("#")}
            if vals.get("linesight_collector_records_total") == want:
                break
            time.sleep(0.05)
        running = c.p.poll() is None
        c.p.send_signal(signal.SIGINT)
        rc, recs, summ, _ = c.wait()
        v5 = vals.get('linesight_collector_datagrams_total{version="v5"}')
        bad = vals.get('linesight_collector_errors_total{reason="bad_version"}')
        check(running and vals.get("linesight_collector_records_total") == want == summ["netflow"]["records"] and
              v5 == len(grams) and bad == 1 and vals.get("linesight_collector_exporters") == 1,
              f"collect --metrics while running: {vals.get('linesight_collector_records_total')} records of {want} "
              f"sent, {v5} of {len(grams)} v5 datagrams, bad_version {bad}, "
              f"{vals.get('linesight_collector_exporters')} exporter")
        if shutil.which("promtool"):
            pt = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
            check(pt.returncode == 0, "collect's metrics pass promtool check metrics " + pt.stdout + pt.stderr)


def ipfix_round_trip():
    pcap = need_data("ndpi/mining.pcapng")
    with tempfile.TemporaryDirectory() as d:
        c = Collect(d)
        js = os.path.join(d, "r.jsonl")
        subprocess.run([BIN, "replay", pcap, "--quiet", "--hash-seed", "1", "--flows-out", js, "--ipfix",
                        f"127.0.0.1:{c.port}"], check=True)
        rc, theirs, summ, _ = c.wait()
        ours = [json.loads(line) for line in open(js)]
        pairs = match(ours, theirs, 1)
        same = [1 for a, b in pairs if all(a.get(k) == b.get(k) for k in
                ("packets_fwd", "packets_rev", "bytes_fwd", "bytes_rev", "tcp_flags_fwd", "tcp_flags_rev"))]
        check(rc == 0 and len(same) == len(ours) == len(theirs),
              f"our IPFIX export read back by our collector: {len(same)}/{len(ours)} flows equal "
              f"({summ['netflow']['records']} uniflows)")


def hostile_then_valid():
    """Garbage first, then a valid stream: each piece counted by name, nothing stops."""
    pcap = need_data("slips/test-cc-capture-1.pcap")
    valid = softflowd_datagrams(pcap, 10, "-s", "4")
    with tempfile.TemporaryDirectory() as d:
        c = Collect(d)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hdr10 = lambda n, seq=0: struct.pack("!HHIII", 10, n, 1700000000, seq, 7)
        grams = [
            b"\x00",                                              # truncated_header
            struct.pack("!I", 4) + b"\x00" * 24,                  # bad_version (sFlow v4)
            struct.pack("!II", 5, 9) + b"\x00" * 24,              # sflow_bad_agent_address
            struct.pack("!IIIIIIIII", 5, 1, 0x7F000001, 0, 1, 0, 1, 1, 400),  # sflow_bad_length (sample past the end)
            struct.pack("!HH", 5, 1) + b"\x00" * 40,              # bad_length (NetFlow v5: a record cut short)
            hdr10(200) + b"\x00" * 4,                             # bad_length
            hdr10(24) + struct.pack("!HH", 2, 2) + b"\x00" * 4,   # bad_set_length (4 < set header)
            hdr10(24) + struct.pack("!HH", 300, 8) + b"\x01\x02\x03\x04",  # data_without_template
            hdr10(28) + struct.pack("!HHHH", 2, 12, 400, 3) + b"\x00\x08\x00\x04",  # bad_template (3 fields, 1 given)
            struct.pack("!HHIIII", 9, 1, 0, 0, 0, 0) + struct.pack("!HH", 0, 60000),  # v9 set past the datagram
            b"\xff" * 65000,                                       # bad_version, giant
        ]
        for g in grams:
            s.sendto(g, ("127.0.0.1", c.port))
        send_paced(valid, c.port)
        rc, theirs, summ, err = c.wait()
        nf = summ["netflow"]
        want = {"truncated_header": 1, "bad_version": 2, "bad_length": 2, "bad_set_length": 2,
                "data_without_template": 1, "bad_template": 1, "sflow_bad_agent_address": 1, "sflow_bad_length": 1}
        got = {k: nf[k] for k in want}
        check(rc == 0 and got == want, f"hostile datagrams counted by name: {got}")
        rates = collections.Counter((r["sampling"]["method"], r["sampling"]["rate"]) for r in theirs)
        est = all(r["est_packets"] == 4 * (r["packets_fwd"] + r["packets_rev"]) for r in theirs)
        check(nf["records"] > 0 and len(theirs) > 0 and list(rates) == [("packet", 4)] and est,
              f"then the valid stream is collected: {len(theirs)} flows, exporter sampling 1:4 in every record "
              f"and renormalised ({dict(rates)})")


def with_filler(pcap, out, n=256):
    """The capture and then n packets of one UDP conversation (192.0.2.1:9 → 192.0.2.2:9),
    a second after its last: pmacctd exits before it exports a savefile's last few
    (≤ 10 seen) packets, so they come from the filler, which is left out of the comparison.
    pmacctd exports in order: one filler packet collected means the capture's all were."""
    b = open(pcap, "rb").read()
    e = "<" if struct.unpack("<I", b[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, last = 24, 0
    while off + 16 <= len(b):
        sec, _, cap, _ = struct.unpack(e + "IIII", b[off:off + 16])
        last, off = max(last, sec), off + 16 + cap
    out_b = bytearray(b[:off])
    for i in range(n):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 32, i, 0, 64, 17, 0, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
        pkt = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + struct.pack("!HHHH", 9, 9, 12, 0) + b"fill"
        out_b += struct.pack(e + "IIII", last + 1 + i, 0, len(pkt), len(pkt)) + pkt
    open(out, "wb").write(out_b)


def pmacct_sflow(pcap, port, rate, d):
    """pmacctd reads the capture and its sfprobe plugin sends sFlow v5 to our port."""
    conf = os.path.join(d, f"pmacctd-{rate}.conf")
    with open(conf, "w") as f:
        f.write(f"daemonize: false\npcap_savefile: {pcap}\nplugins: sfprobe\nsfprobe_receiver: 127.0.0.1:{port}\n"
                f"sfprobe_agentip: 127.0.0.1\nsampling_rate: {rate}\n")
    return subprocess.run(["pmacctd", "-f", conf], capture_output=True, text=True, timeout=120)


FILLER_ADDRS = bytes([192, 0, 2, 1, 192, 0, 2, 2])


def pmacct_datagrams(pcap, rate=1, until=None, tries=3):
    """What pmacctd's sfprobe exports for a capture: its datagrams, received here first and
    sent on by the caller (send_paced). pmacctd sleeps 2 s before it reads a savefile and,
    on a loaded machine, can stall longer than a collector's --exit-idle; caught here, its
    pace never decides what a collector sees. With `until` (bytes), pmacctd runs again
    (up to `tries` times) until some datagram holds them: a run it cut short is not taken."""
    for _ in range(tries):
        with tempfile.TemporaryDirectory() as d:
            rcs = []
            grams = receive_datagrams(lambda port: rcs.append(pmacct_sflow(pcap, port, rate, d).returncode))
        if rcs == [0] and (until is None or any(until in g for g in grams)):
            return grams
    raise RuntimeError(f"pmacctd did not export {pcap} whole in {tries} runs")


def send_paced(grams, port, every=0.001):
    """Datagrams to 127.0.0.1:port in order, paced so that a collector slowed by a
    sanitizer keeps up with a socket buffer capped by net.core.rmem_max."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for g in grams:
            u.sendto(g, ("127.0.0.1", port))
            time.sleep(every)


SFLOW_OK = ("datagrams", "datagrams_sflow", "sflow_flow_samples", "sflow_counter_samples", "sflow_samples_not_ip")
RULES = os.path.join(ROOT, "features", "rules", "default.rules")


def sig_hits(rows):
    """Signature ids matched per conversation, whatever the flow cuts."""
    h = collections.defaultdict(set)
    for r in rows:
        k = tuple(sorted([(r["src"], r["sport"]), (r["dst"], r["dport"])])) + (r["proto"],)
        h[k] |= {x for x in r["sig_hits"].split(";") if x}
    return {k: v for k, v in h.items() if v}


FILLER = (("192.0.2.1", 9), ("192.0.2.2", 9), 17)


def sflow_vs_replay():
    # Every packet sampled: per conversation, packets and frame bytes equal replay's (the
    # header is our parser's input, the agent's frame length less the FCS its bytes), and
    # so do the payload signatures (the sampled headers' payload fills the prefixes).
    # pmacctd sends frames whose MAC addresses are all zero (WebattackRCE's) as bare IPv4
    # headers with the IP length: 14 bytes a packet less there.
    for rel, l2 in (("ndpi/emotet.pcap", 0), ("ndpi/tor.pcap", 0), ("ndpi/dns-tunnel-iodine.pcap", 0),
                    ("slips/test7-malicious-hide-and-seek.pcap", 0), ("slips/test-cc-capture-1.pcap", 0),
                    ("ndpi/WebattackRCE.pcap", 14), ("ndpi/dns_exfiltration.pcap", 0), ("ndpi/icmp-tunnel.pcap", 0)):
        src = need_data(rel)
        with tempfile.TemporaryDirectory() as d:
            pcap = os.path.join(d, "in.pcap")
            with_filler(src, pcap)
            ours, ofeat = replay_with_features(pcap, d, "--rules", RULES)
            grams = pmacct_datagrams(pcap, until=FILLER_ADDRS)
            c = Collect(d, "--rules", RULES)
            send_paced(grams, c.port)
            rc, theirs, summ, err = c.wait()
            sa, sb = sig_hits(ofeat), sig_hits(features(c.feat))
            nf = summ["netflow"]
            bad = {k: v for k, v in nf.items() if v and k not in SFLOW_OK}
            ta, tb = totals(ours, l2), totals(theirs, 0)
            fa, fb = ta.pop(FILLER), tb.pop(FILLER, [0, 0])
            diff = [(k, ta.get(k), tb.get(k)) for k in set(ta) | set(tb) if ta.get(k) != tb.get(k)]
            check(rc == 0 and not bad and not diff and fb[0] > 0 and
                  all(r["sampling"]["rate"] == 1 for r in theirs) and sa == sb,
                  f"{rel} as sFlow from pmacctd: {nf['datagrams_sflow']} datagrams, {nf['sflow_flow_samples']} "
                  f"samples; {len(ta)} conversations, {sum(v[0] for v in ta.values())} packets: packets and bytes per "
                  f"conversation equal to replay's, filler {fb[0]}/{fa[0]}; signatures in {len(sb)}/{len(sa)} "
                  f"conversations, the same ids; no error counter ({bad or 'none'})"
                  + (f"; differ: {diff[:3]}" if diff else ""))
    # 1 in 10: about a tenth of the packets, each record says so and is scaled back.
    src = need_data("slips/test-cc-capture-1.pcap")
    with tempfile.TemporaryDirectory() as d:
        ours, _ = replay_with_features(src, d)
        grams = pmacct_datagrams(src, rate=10)
        c = Collect(d)
        send_paced(grams, c.port)
        rc, theirs, summ, _ = c.wait()
        n = sum(r["packets_fwd"] + r["packets_rev"] for r in ours)
        got = summ["netflow"]["sflow_flow_samples"]
        est = sum(r["est_packets"] for r in theirs)
        modes = collections.Counter((r["sampling"]["method"], r["sampling"]["rate"]) for r in theirs)
        scaled = all(r["est_packets"] == 10 * (r["packets_fwd"] + r["packets_rev"]) for r in theirs)
        check(rc == 0 and 0.08 * n <= got <= 0.12 * n and list(modes) == [("packet_random", 10)]
              and scaled and 0.8 * n <= est <= 1.2 * n,
              f"sFlow 1 in 10: {got} samples of {n} packets, records {dict(modes)}, est_packets {est}")


def scheduled_export():
    """--ti-export-every: a long-running collector exports while it runs, not only at exit."""
    pcap = need_data("slips/test-cc-capture-1.pcap")
    with tempfile.TemporaryDirectory() as d:
        tx = os.path.join(d, "tx")
        c = Collect(d, "--exit-idle", "600s", "--detections-out", os.path.join(d, "d.jsonl"),
                    "--app", "beacon:server:rule:periodicity=0.8,contacts=10", "--ti-export", tx,
                    "--ti-export-every", "1s")
        ind = os.path.join(tx, "indicators.json")

        def exported():
            try:
                return [x["indicator"] for x in json.load(open(ind))]
            except (OSError, ValueError):
                return None
        for _ in range(400):  # 20 s: room for a loaded CI machine; ends at the first file
            if exported() is not None:
                break
            time.sleep(0.05)
        first = exported()
        subprocess.run([BIN, "replay", pcap, "--quiet", "--ipfix", f"127.0.0.1:{c.port}"], check=True)
        later = None
        for _ in range(400):  # the next scheduled export names the beacon server
            later = exported()
            if later and "141.193.213.21" in later:
                break
            time.sleep(0.05)
        running = c.p.poll() is None
        c.p.send_signal(signal.SIGINT)
        rc, _, _, err = c.wait()
        check(first == [] and later and "141.193.213.21" in later and running and rc == 0
              and "export failed" not in err,
              f"scheduled export while running: first {first}, after the beacons {later}")


def filtered_collect():
    """--filter in collect keeps the exported records that pass it, each seen as one packet
    of its addresses, ports, protocol and flags. An expression about those gives, per
    conversation, what replay --filter gives of the capture (a `dst port` clause keeps one
    direction in both), from softflowd's IPFIX and from pmacctd's sFlow; a bad expression
    is refused with libpcap's reason."""
    cases = [("ndpi/tor.pcap", "tcp port 443 or ip6", "ipfix"),
             ("ndpi/emotet.pcap", "tcp dst port 587 or tcp src port 80", "ipfix")]
    if shutil.which("pmacctd"):
        cases.append(("slips/test7-malicious-hide-and-seek.pcap", "tcp dst port 23 or udp port 123", "sflow"))
    for rel, expr, how in cases:
        src = need_data(rel)
        with tempfile.TemporaryDirectory() as d:
            pcap = src
            if how == "sflow":
                pcap = os.path.join(d, "in.pcap")
                with_filler(src, pcap)
                grams = pmacct_datagrams(pcap, until=FILLER_ADDRS)
            else:
                grams = softflowd_datagrams(pcap, 10)
            ours, _ = replay_with_features(pcap, d, "--filter", expr)
            c = Collect(d, "--filter", expr)
            send_paced(grams, c.port)
            rc, theirs, summ, err = c.wait()
            ta, tb = totals(ours, 14 if how == "ipfix" else 0), totals(theirs, 0)  # softflowd: IP bytes
            ta.pop(FILLER, None)
            tb.pop(FILLER, None)
            nf = summ["netflow"]
            check(rc == 0 and ta == tb and len(ta) > 0 and nf["records_filtered"] > 0,
                  f"collect --filter '{expr}' ({how}, {rel}): {len(tb)} conversations, "
                  f"{sum(v[0] for v in tb.values())} packets, as replay --filter gives; "
                  f"{nf['records_filtered']} records filtered"
                  + ("" if ta == tb else f"; differ: {[(k, ta.get(k), tb.get(k)) for k in set(ta) | set(tb) if ta.get(k) != tb.get(k)][:3]}"))
    r = subprocess.run([BIN, "collect", "--listen", f"127.0.0.1:{free_udp_port()}", "--filter", "tcp port"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "syntax error" in r.stderr, f"collect --filter with a bad expression refused: {r.stderr.strip()}")
    r = subprocess.run([BIN, "collect", "--listen", f"127.0.0.1:{free_udp_port()}", "--filter", "vlan and tcp"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "link layer" in r.stderr,
          f"collect --filter that needs a link layer refused: {r.stderr.strip()}")


def main():
    if not shutil.which("softflowd"):
        skip("softflowd not installed (scripts/setup.sh installs it)")
    softflowd_vs_replay()
    ipfix_over_tcp()
    metrics_while_collecting()
    ipfix_round_trip()
    hostile_then_valid()
    scheduled_export()
    filtered_collect()
    if shutil.which("pmacctd"):
        sflow_vs_replay()
    else:
        print("SKIP: sFlow: pmacctd not installed (scripts/setup.sh installs pmacct)")
    finish()


if __name__ == "__main__":
    main()
