#!/usr/bin/env python3
"""TI export with privacy: captures replayed with detection apps and --ti-export; every
client address seen (initiators of any flow, unless the address is itself an exported
server) is searched in every export file as text, packed bytes and hex — none may
appear. The STIX 2.1 bundle is checked against the specification's required properties
and references, the MISP feed directory against what a MISP subscription reads, and
client counts leave only from k distinct clients, bucketed."""
import ipaddress
import json
import os
import re
import subprocess
import tempfile
import time

from lsdata import BIN, ROOT, check, finish, need_data, pseudonym

RULES = os.path.join(ROOT, "features", "rules", "default.rules")
APPS = ["c2-server:server:" + os.path.join(ROOT, "detect", "models", "c2-server.json") + ":0.5",
        "beacon:server:rule:periodicity=0.8,contacts=10", "miner:server:rule:sig=1001+1002",
        "scanner:client:rule:cli_ports>=100,cli_failed_share>=0.5",
        "bot-host:client:rule:cli_periodic_servers>=3,pair_periodicity>=0.8"]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ID = re.compile(r"^([a-z0-9-]+)--[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def export(d, captures, *extra):
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "x")
    clients, flows = set(), os.path.join(d, "f.jsonl")
    for i, rel in enumerate(captures):
        args = [BIN, "replay", need_data(rel), "--quiet", "--hash-seed", "1", "--rules", RULES,
                "--detections-out", os.path.join(d, "det.jsonl"), "--flows-out", flows,
                "--ti-export", os.path.join(out, str(i)), *extra]
        for a in APPS:
            args += ["--app", a]
        subprocess.run(args, check=True)
        clients.update(json.loads(line)["src"] for line in open(flows))
    return out, clients


def check_stix(path):
    b = json.load(open(path))
    objs = b["objects"]
    ids = {o["id"] for o in objs}
    problems = []
    if b["type"] != "bundle" or not ID.match(b["id"]) or not b["id"].startswith("bundle--"):
        problems.append("bundle header")
    need = {"indicator": ["created", "modified", "pattern", "pattern_type", "valid_from", "indicator_types"],
            "observed-data": ["created", "modified", "first_observed", "last_observed", "number_observed", "object_refs"],
            "relationship": ["created", "modified", "relationship_type", "source_ref", "target_ref"],
            "identity": ["created", "modified", "name"], "ipv4-addr": ["value"], "ipv6-addr": ["value"]}
    for o in objs:
        m = ID.match(o.get("id", ""))
        if o.get("spec_version") != "2.1" or not m or m.group(1) != o.get("type"):
            problems.append(f"{o.get('id')}: type/id/spec_version")
        for k in need.get(o["type"], ["?"]):
            if k not in o:
                problems.append(f"{o['id']}: missing {k}")
        for k in ("created", "modified", "valid_from", "first_observed", "last_observed"):
            if k in o and not TS.match(o[k]):
                problems.append(f"{o['id']}: {k} not a STIX timestamp")
        for k in ("source_ref", "target_ref", "created_by_ref"):
            if k in o and o[k] not in ids:
                problems.append(f"{o['id']}: {k} dangles")
        for r in o.get("object_refs", []):
            if r not in ids:
                problems.append(f"{o['id']}: object_ref dangles")
        if o["type"] == "indicator" and not re.match(r"^\[ipv[46]-addr:value = '[0-9a-f.:]+'\]$", o["pattern"]):
            problems.append(f"{o['id']}: pattern {o['pattern']}")
        if o["type"] == "indicator" and not 0 <= o.get("confidence", 0) <= 100:
            problems.append(f"{o['id']}: confidence")
    return problems, sum(1 for o in objs if o["type"] == "indicator")


def find_leaks(files, clients):
    """(client, file) for every client address found in a file as text, hex or bytes."""
    blobs = {f: open(f, "rb").read() for f in files}
    leaks = []
    for c in sorted(clients):
        a = ipaddress.ip_address(c)
        forms = [c.encode(), a.packed.hex().encode(), a.exploded.encode()]
        # Packed bytes that are all printable are just text (e.g. 65.66.67.68 = "ABCD").
        if any(ch < 0x20 or ch > 0x7e for ch in a.packed):
            forms.append(a.packed)
        for f, b in blobs.items():
            leaks += [(c, os.path.basename(f)) for form in forms if re.search(rb"(?<![0-9a-f.:])" + re.escape(form) + rb"(?![0-9a-f:]|\.\d)", b)]
    return leaks


def ids_by_server(out):
    """indicator → {period_start: set(ids)} from an indicators.json."""
    return {r["indicator"]: {p["period_start"]: set(p["ids"]) for p in r.get("client_pseudonyms", [])}
            for r in json.load(open(os.path.join(out, "0", "indicators.json")))}


def pseudonyms(d):
    """Opt-in keyed client pseudonyms: computable by a partner holding the secret, equal
    across sensors with the same secret, unrelated under another secret or period, and
    still no client address in any file."""
    s1, s2, short = (os.path.join(d, n) for n in ("s1", "s2", "short"))
    for path, text in ((s1, "partners-agreed-secret-2024\n"), (s2, "another-operators-secret\n"), (short, "tooshort\n")):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
    day = 86400 * 10**9
    cap = "slips/test-cc-capture-1.pcap"  # 11 minutes of beacons from one host
    a_dir = os.path.join(d, "psA")
    out, clients = export(a_dir, [cap], "--pseudonym-secret", s1)
    files = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs]
    exported = set(ids_by_server(out))
    leaks = find_leaks(files, clients - exported)
    check(not leaks, f"pseudonyms on: {len(clients - exported)} client addresses, none in {len(files)} files"
          + (f"; leaks {leaks[:3]}" if leaks else ""))
    got = ids_by_server(out)
    secret = b"partners-agreed-secret-2024"
    want, n = {}, 0
    for line in open(os.path.join(a_dir, "det.jsonl")):
        x = json.loads(line)
        if x["entity"] != "server" or x["endpoint"] not in got:
            continue
        period, pid = pseudonym(secret, day, x["time_ns"], x["evidence"]["client"])
        start = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(period * 86400))
        want.setdefault(x["endpoint"], {}).setdefault(start, set()).add(pid)
        n += 1
    ok = n > 0 and all(ids <= got[srv].get(start, set()) for srv, per in want.items() for start, ids in per.items())
    check(ok, f"a partner with the secret computes the same pseudonyms from the documented construction ({n} detections)")
    all_ids = [i for per in got.values() for ids in per.values() for i in ids]
    check(all(re.fullmatch(r"[0-9a-f]{24}", i) for i in all_ids) and all(len(ids) <= 64 for per in got.values() for ids in per.values()),
          f"{len(all_ids)} pseudonyms, 24 hex digits, at most 64 per server and period")
    # Another sensor, same secret (another hash seed): the same pseudonyms.
    out_b, _ = export(os.path.join(d, "psB"), [cap], "--pseudonym-secret", s1, "--hash-seed", "7")
    check(ids_by_server(out_b) == got, "same secret on another sensor: same pseudonyms")
    out_c, _ = export(os.path.join(d, "psC"), [cap], "--pseudonym-secret", s2)
    other = {i for per in ids_by_server(out_c).values() for ids in per.values() for i in ids}
    check(other and not (other & set(all_ids)), "another secret: no pseudonym in common")
    # Rotation every 2 minutes: the beacon host gets a new pseudonym in each period.
    out_h, _ = export(os.path.join(d, "psH"), [cap], "--pseudonym-secret", s1, "--pseudonym-rotate", "2m")
    hourly = ids_by_server(out_h)
    periods = max(len(per) for per in hourly.values())
    # Per server, a client's pseudonym never repeats across periods; across the two beacon
    # servers the same client has the same pseudonym within a period (that is the point).
    repeats = [srv for srv, per in hourly.items() if len(set().union(*per.values())) != sum(map(len, per.values()))]
    shared = [start for start in hourly.get("141.193.213.20", {}) if hourly["141.193.213.20"][start] & hourly.get("141.193.213.21", {}).get(start, set())]
    check(periods > 1 and not repeats and shared,
          f"2-minute rotation: {periods} periods, no pseudonym repeats across periods; one client links two servers in {len(shared)} periods")
    # Without the option: no pseudonyms anywhere; bad secrets are refused clearly.
    r = subprocess.run([BIN, "replay", need_data(cap), "--quiet", "--ti-export", os.path.join(d, "psX"),
                        "--detections-out", os.path.join(d, "x.jsonl"), "--pseudonym-secret", short],
                       capture_output=True, text=True)
    check(r.returncode != 0 and "shorter than 16 bytes" in r.stderr, f"a short secret is refused: {r.stderr.strip()}")
    r = subprocess.run([BIN, "replay", need_data(cap), "--quiet", "--pseudonym-secret", s1], capture_output=True, text=True)
    check(r.returncode != 0 and "needs --ti-export" in r.stderr, f"pseudonyms without an export: {r.stderr.strip()}")


def partner_reliability(d):
    """A partner's report of the server (--partner) adds its evidence to the exported
    reliability: 1 − (1 − own score)(1 − partner score · 2^(−age/14 d))."""
    cap = "ndpi/malware.pcap"  # c2-server scores its server 0.77: room for corroboration
    partner = os.path.join(d, "partner-ind.json")
    with open(partner, "w") as f:
        json.dump([{"indicator": "67.215.92.210", "ports": ["80/tcp"], "score": 0.9,
                    "first_seen": "2019-09-20T00:00:00Z", "last_seen": "2019-09-20T00:00:00Z"}], f)
    alone, _ = export(os.path.join(d, "pr0"), [cap])
    helped, _ = export(os.path.join(d, "pr1"), [cap], "--partner", partner)
    a = {r["indicator"]: r for r in json.load(open(os.path.join(alone, "0", "indicators.json")))}
    b = {r["indicator"]: r for r in json.load(open(os.path.join(helped, "0", "indicators.json")))}
    x, y = a.get("67.215.92.210"), b.get("67.215.92.210")
    if not x or not y:
        check(False, f"malware.pcap's server exported with and without a partner ({sorted(a)}, {sorted(b)})")
        return
    import calendar
    last = calendar.timegm(time.strptime(y["last_seen"][:19], "%Y-%m-%dT%H:%M:%S"))
    age = (last - calendar.timegm(time.strptime("2019-09-20", "%Y-%m-%d"))) / 86400
    want = 1 - (1 - y["score"]) * (1 - 0.9 * 2 ** (-age / 14))
    check(abs(x["reliability"] - x["score"]) < 1e-6 and abs(y["reliability"] - want) < 1e-3,
          f"a partner's week-old report raises reliability {x['reliability']:.3f} → {y['reliability']:.3f} "
          f"(expected {want:.3f})")


def main():
    caps = ["slips/test-cc-capture-1.pcap", "ndpi/emotet.pcap", "ndpi/trickbot.pcap", "ndpi/mining.pcapng",
            "slips/test7-malicious-hide-and-seek.pcap", "bench/ndpi-ether-concat.pcap"]
    with tempfile.TemporaryDirectory() as d:
        out, clients = export(d, caps)
        files = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs]
        exported = set()
        for f in files:
            if f.endswith("indicators.json"):
                exported.update(x["indicator"] for x in json.load(open(f)))
        leaks = find_leaks(files, clients - exported)
        check(len(files) >= 6 * 5 and not leaks,
              f"{len(clients - exported)} client addresses from {len(caps)} captures: none in {len(files)} export files "
              f"as text, packed or hex ({len(exported)} servers exported){'; leaks: ' + str(leaks[:3]) if leaks else ''}")
        check(not any(ipaddress.ip_address(x).is_private or ipaddress.ip_address(x).is_loopback for x in exported),
              f"only public addresses exported: {sorted(exported)}")
        check({"138.197.147.101", "82.118.225.196", "141.193.213.21"} <= exported,
              "the labelled C&C servers are exported")
        for i, rel in enumerate(caps):
            p, n = check_stix(os.path.join(out, str(i), "stix-bundle.json"))
            man = json.load(open(os.path.join(out, str(i), "misp", "manifest.json")))
            (uuid, meta), = man.items()
            ev = json.load(open(os.path.join(out, str(i), "misp", uuid + ".json")))["Event"]
            attrs_ok = all(a["type"] == "ip-dst|port" and re.match(r"^[0-9a-f.:]+\|\d+$", a["value"]) for a in ev["Attribute"])
            check(not p and ev["uuid"] == uuid and meta["Orgc"]["name"] and attrs_ok,
                  f"{rel}: STIX 2.1 bundle valid ({n} indicators), MISP feed {len(ev['Attribute'])} attributes"
                  + (f"; problems: {p[:3]}" if p else ""))
        # A partner imports the exports as feeds: STIX and MISP both name the servers.
        for feed in ("stix-bundle.json", "misp"):
            fe = os.path.join(d, "imp.csv")
            subprocess.run([BIN, "replay", need_data("ndpi/emotet.pcap"), "--quiet", "--features-out", fe,
                            "--ti", os.path.join(out, "1", feed)], check=True)
            import csv
            hit = {r["dst"] for r in csv.DictReader(l for l in open(fe) if not l.startswith("#")) if r["ti_dst_feeds"] != "0"}
            check(hit == {"138.197.147.101"}, f"our {feed} export imported as a TI feed by another sensor: {sorted(hit)}")
        # k-anonymity: the mix's beacon servers have few clients; with k = 1 counts appear, bucketed.
        rows = json.load(open(os.path.join(out, "5", "indicators.json")))
        hidden = all("clients_bucket" not in r for r in rows)
        out1, _ = export(d, ["bench/ndpi-ether-concat.pcap"], "--privacy-k", "1")
        shown = [r.get("clients_bucket") for r in json.load(open(os.path.join(out1, "0", "indicators.json")))]
        check(hidden and shown and set(shown) <= {"1-4", "5-9", "10-49", "50-99", "100-499", "500+"},
              f"client counts below k = 5 withheld; with k = 1 they are bucketed: {sorted(set(shown))}")
        check(all("client_pseudonyms" not in r for r in rows), "no pseudonyms unless asked for")
        partner_reliability(d)
        pseudonyms(d)
    finish()


if __name__ == "__main__":
    main()
