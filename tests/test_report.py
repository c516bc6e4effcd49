#!/usr/bin/env python3
"""linesight report: figures on a small hand-built case whose every number is worked out
by hand below, then the report on shared data (labelled captures replayed with the
shipped apps, against the dated firehol snapshots, maltrail, ipsum, executemalware and
signature-base)."""
import json
import os
import subprocess
import tempfile

from lsdata import BIN, DATA, ROOT, check, finish

DAY = 86400 * 10**9


def ns(date, hour=12):
    import calendar
    import time
    return (calendar.timegm(time.strptime(date, "%Y-%m-%d")) + hour * 3600) * 10**9


def det(ip, date, port, proto=6, score=1.0, app="c2-server", entity="server"):
    return json.dumps({"time_ns": ns(date), "app": app, "entity": entity, "endpoint": ip, "score": score,
                       "threshold": 0.5, "evidence": {"client": "10.1.1.1", "server": ip, "sport": 50000,
                                                      "dport": port, "proto": proto}})


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def hand_built(d):
    feeds = os.path.join(d, "feeds")
    # feedA: one file dated by its firehol header; lists .1, .2 and a /24.
    write(os.path.join(feeds, "feedA.ipset"),
          "# Source File Date: Wed Jan 10 00:00:00 UTC 2024\n198.51.100.1\n198.51.100.2\n203.0.113.0/24\n")
    # feedB: two dated snapshots; .3 appears only in the later one.
    write(os.path.join(feeds, "snap-2024-01-01", "feedB.ipset"), "198.51.100.1\n")
    write(os.path.join(feeds, "snap-2024-03-01", "feedB.ipset"), "198.51.100.1\n198.51.100.3\n")
    # iocs: CSV with ports; .4 has no date.
    write(os.path.join(feeds, "iocs.csv"),
          "ip,port,first_seen\n198.51.100.2,443,2024-02-01\n198.51.100.4,8080,\n")
    partner = os.path.join(d, "partner", "indicators.json")
    write(partner, json.dumps([{"indicator": "192.0.2.50", "ports": ["443/tcp"], "first_seen": "2024-01-18T00:00:00Z",
                                "last_seen": "2024-01-18T00:00:00Z", "reliability": 0.8, "threats": ["x"]}]))
    lines = [
        det("198.51.100.1", "2023-12-20", 443),              # before feedB (01-01) and feedA (01-10): ahead 12 d
        det("198.51.100.1", "2023-12-21", 443),              # same server again: one row
        det("198.51.100.2", "2024-02-05", 8443),             # feedA 01-10, iocs 02-01 (port 443): 8443 is new
        det("198.51.100.3", "2024-02-10", 53, proto=17),     # feedB 03-01 snapshot only: ahead 20 d
        det("203.0.113.9", "2024-01-15", 80),                # feedA's /24 (01-10): not ahead, 80 new
        det("198.51.100.4", "2024-01-05", 8080),             # iocs undated, names 8080: not new
        det("192.0.2.50", "2024-01-20", 443, score=0.9),     # no feed; the partner (0.8, 01-18)
        det("192.0.2.51", "2024-01-20", 443, score=0.5),     # nobody knows it
        det("10.0.0.5", "2024-01-20", 443),                  # private: kept home
        det("192.0.2.99", "2024-01-20", 0, app="scanner", entity="client"),  # a client: never reported
        "{not json",
    ]
    dets = os.path.join(d, "det", "a.jsonl")
    write(dets, "\n".join(lines) + "\n")
    out = os.path.join(d, "r.json")
    r = subprocess.run([BIN, "report", "--detections", os.path.join(d, "det"), "--feeds", feeds,
                        "--partner", partner, "--json", out], capture_output=True, text=True)
    print(r.stdout)
    check(r.returncode == 0, f"report runs ({r.stderr.strip()})")
    check("1 malformed records skipped" in r.stderr and "a.jsonl:11" in r.stderr,
          "the malformed line is counted and named with file:line")
    j = json.load(open(out))
    s = j["summary"]
    # 7 public servers: .1 .2 .3 .4, 203.0.113.9, 192.0.2.50, 192.0.2.51
    check(s["reported"] == 7, f"reported 7 ({s['reported']})")
    check(s["listed"] == 5 and s["unknown_to_feeds"] == 2, f"listed 5, unknown 2 ({s['listed']}, {s['unknown_to_feeds']})")
    check(s["partner_listed"] == 1 and s["unknown_to_feeds_and_partner"] == 1, "partner lists 1; 1 unknown to all")
    check(s["seen_before_feeds"] == 2 and s["lead_days"] == [12, 20], f"ahead 2 by 12 and 20 days ({s['lead_days']})")
    check(s["listed_undated"] == 1, "one listing without a date")
    # feeds per listed server: .1 A+B, .2 A+iocs, .3 B, /24 A, .4 iocs → 7 / 5
    check(abs(s["mean_feeds_per_listed"] - 1.4) < 1e-9, f"1.4 feeds per listed server ({s['mean_feeds_per_listed']})")
    # new ports: 443 on .1 (feeds name none), 8443 on .2 (iocs names 443), 53/udp on .3, 80 on the /24 one
    check(s["new_port_pairs"] == 4 and s["new_port_servers"] == 4, "4 new (server, port) pairs on 4 servers")
    rows = {x["server"]: x for x in j["servers"]}
    check(rows["198.51.100.2"]["new_ports"] == ["8443/tcp"] and rows["198.51.100.2"]["feed_ports"] == [443],
          "8443 is new where the feed named 443")
    check(rows["198.51.100.4"]["new_ports"] == [], "a port the feed names is not new")
    check(rows["198.51.100.3"]["new_ports"] == ["53/udp"], "protocol kept")
    check(rows["198.51.100.1"]["detections"] == 2 and rows["198.51.100.1"]["first_listed"] == "2024-01-01",
          "two detections of one server: one row, first listed by feedB's first snapshot")
    ov = {f["feed"]: f for f in j["feed_overlap"]}
    check([f["feed"] for f in j["feed_overlap"]] == ["feedA", "feedB", "iocs"], "feeds sorted by overlap")
    check(ov["feedA"]["ours"] == 3 and abs(ov["feedA"]["overlap_pct"] - 300 / 7) < 1e-9, "feedA 3 of 7 = 42.9%")
    check(ov["feedB"]["ours"] == 2 and ov["feedB"]["dates"] == 2, "feedB 2 of ours over 2 dated snapshots")
    check(ov["iocs"]["ours"] == 2, "iocs 2 of ours")
    # unique, judged at the sighting (01-20 12:00): 192.0.2.50 = our 0.9 and the partner's 0.8
    # from 2.5 days earlier (14-day half-life): 1-(1-0.9)(1-0.8·2^(-2.5/14)) = 0.9707 → [0.8,1.0];
    # 192.0.2.51 = 0.5 → [0.4,0.6]
    want = 1 - (1 - 0.9) * (1 - 0.8 * 2 ** (-2.5 / 14))
    check(abs(rows["192.0.2.50"]["reliability"] - want) < 1e-9, f"partner corroborates: {want:.4f} ({rows['192.0.2.50']['reliability']})")
    check([b["servers"] for b in j["unique_reliability"]] == [0, 0, 1, 0, 1], "reliability of unique entries")
    # .3 judged at its sighting (02-10): feedB's 03-01 listing is not evidence yet → score alone
    check(abs(rows["198.51.100.3"]["reliability"] - 1.0) < 1e-9, "own score")
    check(j["input"] == {"records": 11 - 1, "not_server": 1, "not_public": 1, "malformed": 1,
                         "first_malformed": j["input"].get("first_malformed")}, f"input counts ({j['input']})")
    check("unknown to every feed" in r.stdout and "feedA" in r.stdout, "terminal table")

    # --at: a later day decays our own evidence (7-day half-life): 192.0.2.51 seen 01-20 12:00,
    # judged 01-27 00:00 → 0.5·2^(-6.5/7) = 0.2624
    r = subprocess.run([BIN, "report", "--detections", dets, "--feeds", feeds, "--at", "2024-01-27", "--json", out],
                       capture_output=True, text=True)
    j = json.load(open(out))
    rel = {x["server"]: x["reliability"] for x in j["servers"]}
    check(abs(rel["192.0.2.51"] - 0.5 * 2 ** (-6.5 / 7)) < 1e-9, f"--at decays own evidence ({rel['192.0.2.51']})")
    # …and feedB's 03-01 listing of .3 is still in the future on 01-27: own evidence only
    check(abs(rel["198.51.100.3"] - 1.0) < 1e-9 and j["judged_on"] == "2024-01-27", "future listings are not evidence")

    # errors name what is wrong
    r = subprocess.run([BIN, "report", "--detections", dets, "--feeds", "/nonexistent/feeds"], capture_output=True, text=True)
    check(r.returncode == 2 and "/nonexistent/feeds" in r.stderr, "a missing feed path is named")
    r = subprocess.run([BIN, "report", "--detections", dets], capture_output=True, text=True)
    check(r.returncode == 2 and "usage" in r.stderr, "no feeds: usage")
    r = subprocess.run([BIN, "report", "--detections", dets, "--feeds", feeds, "--at", "yesterday"],
                       capture_output=True, text=True)
    check(r.returncode == 2 and "YYYY-MM-DD" in r.stderr, "a bad --at is refused")

    # PNG through Debian's matplotlib
    png = os.path.join(d, "r.png")
    r = subprocess.run([BIN, "report", "--detections", dets, "--feeds", feeds, "--png", png],
                       capture_output=True, text=True, env={**os.environ, "LINESIGHT_SCRIPTS": os.path.join(ROOT, "scripts")})
    if r.returncode != 0 and "matplotlib" in r.stderr:
        print("SKIP png: python3-matplotlib not installed")
    else:
        check(r.returncode == 0 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"PNG written ({r.stderr.strip()})")


CAPTURES = ["slips/test-cc-capture-1.pcap", "slips/test-cc-capture-2.pcap", "slips/test7-malicious-hide-and-seek.pcap",
            "ndpi/emotet.pcap", "ndpi/trickbot.pcap", "ndpi/malware.pcap", "ndpi/mining.pcapng"]
APPS = ["c2-server:server:" + os.path.join(ROOT, "detect", "models", "c2-server.json") + ":0.5",
        "beacon:server:rule:periodicity=0.8,contacts=10", "c2-signature:server:rule:sig=1401+1402+1501+1502+1503",
        "miner:server:rule:sig=1001+1002", "exploit:server:rule:sig=1101+1102+1201+1202+1203"]


def shared_data(d):
    ti = os.path.join(DATA, "ti")
    if not os.path.isdir(ti) or not all(os.path.exists(os.path.join(DATA, c)) for c in CAPTURES):
        print("SKIP shared-data report: shared data absent (set LINESIGHT_DATA)")
        return
    dets = os.path.join(d, "shared")
    os.makedirs(dets)
    for c in CAPTURES:
        args = [BIN, "replay", os.path.join(DATA, c), "--quiet", "--flows-out", "/dev/null", "--rules",
                os.path.join(ROOT, "features", "rules", "default.rules"), "--ti", ti,
                "--detections-out", os.path.join(dets, os.path.basename(c) + ".jsonl")]
        for a in APPS:
            args += ["--app", a]
        subprocess.run(args, check=True, capture_output=True)
    out = os.path.join(d, "shared.json")
    r = subprocess.run([BIN, "report", "--detections", dets, "--feeds", ti, "--json", out], capture_output=True, text=True)
    print(r.stdout)
    check(r.returncode == 0, "report on shared data")
    j = json.load(open(out))
    rows = {x["server"]: x for x in j["servers"]}
    emotet = rows.get("138.197.147.101", {})
    check("malware-iocs-ips" in emotet.get("feeds", []) and emotet.get("first_listed") == "2022-04-21",
          "Emotet C&C: executemalware listed it on 2022-04-21, four days before the capture")
    trick = rows.get("82.118.225.196", {})
    check("maltrail-static-ips" in trick.get("feeds", []) and 7080 in trick.get("feed_ports", []) and
          trick.get("new_ports") == [], "TrickBot server: maltrail names port 7080, the one we saw")
    check(j["summary"]["reported"] >= 10 and j["summary"]["unknown_to_feeds"] >= 1,
          f"reported {j['summary']['reported']}, unknown to feeds {j['summary']['unknown_to_feeds']}")


def main():
    with tempfile.TemporaryDirectory() as d:
        hand_built(d)
        shared_data(d)
    finish()


if __name__ == "__main__":
    main()
