#!/usr/bin/env python3
"""`linesight run` on real DPDK virtual devices (no NIC, no hugepages):
- net_pcap vdev gives the same records as `linesight replay` on the same file;
- the memory-replay source (net_ring queues, 2 RX lcores, 2 workers) gives the same records
  as `replay --loop`, every flow on one lcore, both lcores busy;
- the control socket answers /help, /stats, errors, oversized requests, many clients and
  a client that never reads, while sampling is changed live under load; /shutdown and
  SIGTERM flush every flow (records written == records emitted, packets balance);
- net_af_packet on a veth in a network namespace we create, tcpreplay sending a capture."""
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

from lsdata import BIN, DATA, skip, check, drop_counters, finish

RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "features", "rules", "default.rules")
CTL = os.environ.get("LINESIGHTCTL_BIN", os.path.join(os.path.dirname(BIN), "linesightctl"))


# Sanitizer builds run 2-5x (ASan) or 5-15x (TSan) slower: paced replays go slower so that "no record dropped"
# still tests the pipeline, not the instrumentation.
SLOW = 16 if "TSAN_OPTIONS" in os.environ else 4 if "ASAN_OPTIONS" in os.environ else 1


def pps(n):
    return str(n // SLOW)


def eal(lcores, *vdevs, mem=512):
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    args = ["--no-huge", "-m", str(mem), "--no-pci", "--no-shconf", "--no-telemetry",
            "--file-prefix", f"ls{os.getpid()}_{time.monotonic_ns()}",
            "--lcores", f"(0-{lcores - 1})@({cpus})", "--log-level", "lib.eal:error"]
    for v in vdevs:
        args += ["--vdev", v]
    return args


def records(path, drop=("core",)):
    out = []
    for line in open(path):
        r = json.loads(line)
        for d in drop:
            r.pop(d, None)
        out.append(json.dumps(r, sort_keys=True))
    return sorted(out)


def replay(pcap, out, *args):
    subprocess.run([BIN, "replay", pcap, "--quiet", "--hash-seed", "1", "--flows-out", out, *args], check=True)


def run(d, args, eal_args, wait=True, timeout=120, env=None):
    summ = os.path.join(d, "summary.json")
    if os.path.exists(summ):
        os.remove(summ)  # never read the previous run's
    # 3-5 lcores share this machine's CPUs: idle lcores yield (--idle-sleep-us).
    cmd = [BIN, "run", "--hash-seed", "1", "--quiet", "--summary-json", summ, "--idle-sleep-us", "100",
           *args, "--", *eal_args]
    env = {**os.environ, **env} if env else None
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), summ
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return r, summ


def ctl(sock, *args):
    r = subprocess.run([CTL, "--socket", sock, *args], capture_output=True, text=True, timeout=20)
    return r


def raw(sock, payload, read=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock)
    try:
        s.sendall(payload)
    except BrokenPipeError:
        pass  # the daemon answered (an oversized request) and closed before we finished: read the answer
    if not read:
        return s
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf.split(b"\n")[0]) if buf else None


def wait_for(path, t=30):
    end = time.time() + t
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def balance(summary):
    """packets = packets in records + every DROP-kind counter (incl. sampled_out)."""
    return summary["counters"]


def test_netpcap(d):
    for rel in ["slips/test-cc-capture-1.pcap", "slips/test7-malicious-hide-and-seek.pcap",
                "stopddos/amp.UDP.isakmp.pcap"]:
        pcap = os.path.join(DATA, rel)
        a, b = os.path.join(d, "run.jsonl"), os.path.join(d, "rep.jsonl")
        r, _ = run(d, ["--flows-out", a, "--exit-idle", "1s", "--socket", ""],
                   eal(3, f"net_pcap0,rx_pcap={pcap}"))
        replay(pcap, b)
        ra, rb = records(a), records(b)
        check(r.returncode == 0 and ra == rb and ra, f"net_pcap run == replay on {rel} ({len(ra)} records)" + r.stderr[-300:])


def test_sketches(d):
    """--sketches-out in run: every worker's servers and clients, written once the workers
    stopped, are those replay computes on one thread (an endpoint lives on the worker that
    owns it). While running, --sketches-every and /sketches/export have the workers format
    theirs between records, a slice at a time: the file is replaced whole, and merges."""
    pcap = os.path.join(DATA, "slips/test7-malicious-hide-and-seek.pcap")
    a, b = os.path.join(d, "run-sk.jsonl"), os.path.join(d, "rep-sk.jsonl")
    sock = os.path.join(d, "sk.sock")
    p, summ = run(d, ["--workers", "2", "--flows-out", "/dev/null", "--sketches-out", a, "--sketches-every", "1s",
                      "--socket", sock], eal(4, f"net_pcap0,rx_pcap={pcap}"), wait=False)
    try:
        check(wait_for(sock), "socket of run --sketches-every")
        exports, ok = 0, False
        end = time.time() + 30
        while time.time() < end and exports < 2:
            exports = raw(sock, b'{"cmd":"/export"}\n')["result"]["sketches"]["exports"]
            time.sleep(0.2)
        asked = raw(sock, b'{"cmd":"/sketches/export"}\n')
        m = subprocess.run([BIN, "sketches", "merge", a, "--json", "--top", "0"], capture_output=True, text=True)
        live = collections.Counter(json.loads(l)["kind"] for l in m.stdout.splitlines())
        check(exports >= 2 and m.returncode == 0 and live["server"] > 100 and live["client"] > 10 and
              (asked.get("result", {}).get("asked") or "still being gathered" in asked.get("error", "")),
              f"run --sketches-every 1s: {exports} exports while running, {live['server']} servers and "
              f"{live['client']} clients in the file; /sketches/export: {asked}")
        shutdown(p, sock, summ)
    finally:
        if p.poll() is None:
            p.kill()
    replay(pcap, os.path.join(d, "rep.jsonl"), "--sketches-out", b)

    def endpoints(path):
        out = {}
        for j in map(json.loads, open(path)):
            j.pop("sensors")
            out[(j["kind"], j[j["kind"]])] = j
        return out
    ra, rb = endpoints(a), endpoints(b)
    kinds = collections.Counter(k for k, _ in ra)
    check(p.returncode == 0 and ra == rb and kinds["server"] > 100 and kinds["client"] > 10,
          f"run with 2 workers writes the sketches replay does: {len(ra)} and {len(rb)} endpoints "
          f"({kinds['server']} servers, {kinds['client']} clients in run's), "
          f"{sum(ra.get(k) == v for k, v in rb.items())} equal")
    # Clients by keyed pseudonym: the workers' stages name them as replay's stage does (the
    # counts may differ: with a window, a record's order decides which window it lands in).
    win, key = os.path.join(d, "win.yaml"), os.path.join(d, "sk.key")
    open(win, "w").write("features:\n  window: 10m\n")
    open(key, "w").write("a-secret-of-sixteen-or-more-bytes")
    os.chmod(key, 0o600)
    pseud = ["--config", win, "--sketch-clients", "pseudonym", "--pseudonym-secret", key]
    r, _ = run(d, ["--workers", "2", "--flows-out", "/dev/null", "--sketches-out", a, "--exit-idle", "1s",
                   "--socket", "", *pseud], eal(4, f"net_pcap0,rx_pcap={pcap}"))
    replay(pcap, os.path.join(d, "rep.jsonl"), "--sketches-out", b, *pseud)
    def keys(path):
        return {(j["kind"], j.get("server", j.get("client_pseudonym")), j["window"]): j for j in map(json.loads, open(path))}
    pa, pb = keys(a), keys(b)
    named = sum(1 for j in pa.values() if "client" in j)
    check(r.returncode == 0 and pa.keys() == pb.keys() and sum(k[0] == "client" for k in pa) == kinds["client"]
          and not named, f"run --sketch-clients pseudonym: {len(pa)} endpoints, named as replay names them, "
          f"{sum(k[0] == 'client' for k in pa)} clients, none by address")


def test_config_file_and_errors(d):
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    cfg, out = os.path.join(d, "run.yaml"), os.path.join(d, "cfg.jsonl")
    with open(cfg, "w") as f:
        f.write("dpdk:\n  eal: " + json.dumps(eal(3, f"net_pcap0,rx_pcap={pcap}")) + "\n  burst: 16\n"
                "control: {socket: '', exit_idle: 1s}\noutput: {flows: " + json.dumps(out) + "}\n")
    r = subprocess.run([BIN, "run", "--config", cfg, "--quiet", "--hash-seed", "1"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and sum(1 for _ in open(out)) == 299, "run configured entirely from YAML (dpdk.eal, control, output)")
    r = subprocess.run([BIN, "run", "--socket", "", "--", *eal(3)], capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "no DPDK ports" in r.stderr, "no ports: " + r.stderr.strip().splitlines()[-1])
    r = subprocess.run([BIN, "run", "--socket", "", "--rx-lcores", "4", "--", *eal(3, f"net_pcap0,rx_pcap={pcap}")],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "need 6 lcores" in r.stderr, "too few lcores explained")
    r = subprocess.run([BIN, "run", "--socket", "", "--rx-queues", "4", "--", *eal(3, f"net_pcap0,rx_pcap={pcap}")],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "RX queues" in r.stderr, "more queues than the port has explained: " + r.stderr.strip().splitlines()[-1])
    r = subprocess.run([BIN, "run", "--socket", "", "--collect", "127.0.0.1:99999", "--", *eal(3, f"net_pcap0,rx_pcap={pcap}")],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "99999" in r.stderr, "a bad --collect address explained: " + r.stderr.strip().splitlines()[-1])


def test_disk_full(d):
    # Exporter fault: the JSON file cannot be written (disk full). The run neither blocks
    # nor crashes: it counts every packet, finishes, and says what failed.
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    r, summ = run(d, ["--flows-out", "/dev/full", "--exit-idle", "1s", "--socket", ""],
                  eal(3, f"net_pcap0,rx_pcap={pcap}"), timeout=60)
    s = json.load(open(summ))
    check(r.returncode == 1 and "/dev/full: write failed: No space left on device" in r.stderr
          and s["counters"]["packets"] == 7931, "disk full: run completes, exit 1 naming the file and reason")


def test_memory_multi_lcore(d):
    pcap = os.path.join(DATA, "bench/ndpi-ether-concat.pcap")
    a, b = os.path.join(d, "mr.jsonl"), os.path.join(d, "mrr.jsonl")
    fa, fb = os.path.join(d, "mr.csv"), os.path.join(d, "mrr.csv")
    r, summ = run(d, ["--flows-out", a, "--exit-idle", "1s", "--socket", "", "--memory-replay", pcap,
                      "--loop", "3", "--rx-queues", "2", "--rx-lcores", "2", "--workers", "2",
                      "--features-out", fa, "--replay-pps", pps(250000), "--rules", RULES, "--payload-bytes", "256"],
                  eal(5, mem=1024))
    replay(pcap, b, "--loop", "3", "--features-out", fb, "--rules", RULES, "--payload-bytes", "256")
    # Features computed on the two workers (each owning its servers' pairs) agree with the
    # replay's: per-record flow features are equal; the pair state after its last contact
    # is equal (a row's pair features depend on which of the pair's flows ended first,
    # which expiry timing decides, so intermediate rows may differ).
    def rows(p):
        flow, final, server, client = [], {}, {}, {}
        for line in open(p):
            if line.startswith("#") or line.startswith("first_ns"):
                continue
            c = line.rstrip("\n").split(",")
            # + signature hits, TI, payload-less share and handshake RTT
            flow.append(",".join(c[:8] + c[9:28] + c[36:43] + c[50:52]))
            key = (c[2], c[3], c[5], c[6])
            if key not in final or int(c[28]) >= int(final[key][0]):
                final[key] = c[28:36]
            if c[3] not in server or int(c[46]) >= int(server[c[3]][3]):
                server[c[3]] = c[43:50]
            if c[2] not in client or int(c[54]) >= int(client[c[2]][2]):
                client[c[2]] = c[52:58]
        return sorted(flow), final, server, client
    (fla, fia, sva, cla), (flb, fib, svb, clb) = rows(fa), rows(fb)
    # Client view: computed on the worker owning the client, after the server's worker.
    cli_in = [k for k in clb if k in cla and float(clb[k][5]) < 3000 and float(cla[k][5]) < 3000]
    same_cli = sum(1 for k in cli_in if cla[k] == clb[k])
    check(same_cli >= 0.995 * len(cli_in) and len(cli_in) > 0.9 * len(clb),
          f"final client features (HLL servers, ports, flows, failures, periodic servers) equal for "
          f"{same_cli}/{len(cli_in)} clients within the aging window ({len(clb) - len(cli_in)} span it)")
    # HLL sketches are order-independent; only the 1 h aging edge can differ, as for pairs.
    srv_in = [k for k in svb if k in sva and float(svb[k][6]) < 3000 and float(sva[k][6]) < 3000]
    same_srv = sum(1 for k in srv_in if sva[k] == svb[k])
    check(same_srv >= 0.995 * len(srv_in) and len(srv_in) > 0.9 * len(svb),
          f"final server features (HLL clients, /24s, ports, flows, failures) equal for "
          f"{same_srv}/{len(srv_in)} servers within the aging window ({len(svb) - len(srv_in)} span it)")
    nsig = sum(1 for x in fla if x.split(",")[27])  # sig_hits, after the 27 flow columns
    check(fla == flb and len(fla) > 20000 and nsig > 100,
          f"flow features and signature hits from 2 workers == replay's ({len(fla)} rows, {nsig} with hits)")
    # Pairs whose contacts span the 1 h aging window may restart on one side and not on
    # the other (which of two records > 1 h apart arrives first decides): compared apart,
    # and a pair restarted mid-sequence can still differ; allow 0.5 %.
    inside = [k for k in fib if float(fib[k][1]) < 3000 and k in fia and float(fia[k][1]) < 3000]
    same = sum(1 for k in inside if fia[k] == fib[k])
    check(same >= 0.995 * len(inside) and len(inside) > 0.95 * len(fib),
          f"final pair features equal for {same}/{len(inside)} pairs within the aging window "
          f"({len(fib) - len(inside)} pairs span it)")
    drop = ("core", "end_reason")
    ra, rb = records(a, drop), records(b, drop)
    cores = {}
    for line in open(a):
        x = json.loads(line)
        cores.setdefault((x["src"], x["dst"], x["sport"], x["dport"], x["proto"]), set()).add(x["core"])
    split = sum(1 for v in cores.values() if len(v) > 1)
    s = json.load(open(summ))
    check(s["rings"] == {"record_ring_full": 0, "record_pool_empty": 0}, f"below saturation no record dropped: {s['rings']}")
    per = [c.get("packets", 0) for c in s["per_core"]]
    check(r.returncode == 0 and ra == rb, f"memory replay on 2 RX lcores == replay --loop 3 ({len(ra)} records)")
    check(split == 0, f"no flow split across RX lcores ({len(cores)} 5-tuples)")
    check(len(per) == 2 and min(per) > 0.2 * sum(per), f"both RX lcores busy: packets per lcore {per}")


def test_control_socket(d):
    pcap = os.path.join(DATA, "bench/ndpi-ether-concat.pcap")
    sock, out = os.path.join(d, "ctl.sock"), os.path.join(d, "live.jsonl")
    # Below saturation (this machine shares 2 CPUs among 3 lcores and the feeder): here
    # nothing may be dropped at all while sampling changes.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    mport = s.getsockname()[1]
    s.close()
    p, summ = run(d, ["--flows-out", out, "--socket", sock, "--memory-replay", pcap, "--loop", "100000",
                      "--replay-pps", pps(200000), "--capacity", "65536", "--metrics", f"127.0.0.1:{mport}"],
                  eal(3, mem=1024), wait=False)
    try:
        check(wait_for(sock), "control socket appears")
        time.sleep(0.5)
        mode = oct(os.stat(sock).st_mode & 0o777)
        check(mode == "0o600", f"socket mode is 0600 ({mode})")
        h = raw(sock, b'{"cmd":"/help"}\n')
        check(h["ok"] and "/stats" in h["result"] and "/sampling" in h["result"], "/help lists commands")
        # RX lcores publish their counters every few bursts; under ASan on a busy machine
        # the first ones can come later than the socket (CI saw 0 packets at 0.5 s once).
        end = time.time() + 20
        while True:
            st = raw(sock, b'{"cmd":"/stats"}\n')
            if not st["ok"] or st["result"]["total"]["packets"] > 0 or time.time() > end:
                break
            time.sleep(0.1)
        check(st["ok"] and st["result"]["total"]["packets"] > 0 and st["result"]["rings"],
              f"/stats has counters and rings ({st.get('result', {}).get('total', {}).get('packets')} packets)")
        e = raw(sock, b'{"cmd": /stats}\n')
        check(not e["ok"] and "malformed JSON" in e["error"], "malformed JSON gets an error reply")
        # Found by fuzz_ctl: the error text quoted non-UTF-8 bytes and the reply could not
        # be encoded, which aborted the daemon.
        e = raw(sock, b'{"\xff\xff\xffcmd":\n')
        check(e is not None and not e["ok"] and "malformed JSON" in e["error"], "non-UTF-8 request answered, daemon alive")
        e = raw(sock, b'{"cmd":"/nope"}\n')
        check(not e["ok"] and "unknown command /nope" in e["error"], "unknown command named")
        e = raw(sock, b'["cmd"]\n')
        check(not e["ok"] and "must be an object" in e["error"], "non-object request refused")
        e = raw(sock, b"x" * 200000)
        check(e is not None and not e["ok"] and "longer than" in e["error"], "oversized request refused")
        e = raw(sock, b'{"cmd":"/sampling","set":{"mode":"flow_hash","rate":0}}\n')
        check(not e["ok"] and "rate" in e["error"], "bad sampling value refused with a reason")
        # A client that floods requests and never reads must not stall the daemon.
        hog = raw(sock, b'{"cmd":"/stats"}\n' * 20000, read=False)
        clients = [raw(sock, b'{"cmd":"/stats"}\n', read=False) for _ in range(8)]
        ok = 0
        for c in clients:
            buf = b""
            while b"\n" not in buf:
                buf += c.recv(65536)
            ok += json.loads(buf.split(b"\n")[0])["ok"]
            c.close()
        check(ok == 8, "8 concurrent clients answered while another never reads")
        top = raw(sock, b'{"cmd":"/flows/top?by=packets&n=5"}\n')
        pk = [x["packets_fwd"] + x["packets_rev"] for x in top.get("result", [])]
        check(top["ok"] and 1 <= len(pk) <= 5 and pk == sorted(pk, reverse=True), f"/flows/top by packets: {pk}")
        e = raw(sock, b'{"cmd":"/flows/top?n=0"}\n')
        check(not e["ok"] and "n must be" in e["error"], "/flows/top checks n")
        for _ in range(100):  # the first records leave when flows end (later under a sanitizer)
            ex = raw(sock, b'{"cmd":"/export"}\n')
            if not ex["ok"] or ex["result"]["records"] > 0:
                break
            time.sleep(0.1)
        check(ex["ok"] and ex["result"]["json"]["path"] == out and ex["result"]["records"] > 0, "/export status")
        e = raw(sock, b'{"cmd":"/rules/reload"}\n')
        check(not e["ok"] and "no feature stage" in e["error"], "/rules/reload without features explains")
        r = ctl(sock, "sampling", "set", "--mode", "flow_hash", "--rate", "4", "--seed", "7")
        check(r.returncode == 0 and "flow_hash 1:4 seed 7" in r.stdout, "linesightctl sampling set: " + r.stdout.strip())
        time.sleep(0.5)
        r = ctl(sock, "sampling", "set", "--mode", "off")
        check(r.returncode == 0 and "off 1:1" in r.stdout, "sampling back to off")
        r = ctl(sock, "stats")
        check(r.returncode == 0 and "total:" in r.stdout and "rings:" in r.stdout, "linesightctl stats table")
        r = ctl(sock, "--json", "stats")
        check(r.returncode == 0 and json.loads(r.stdout)["ok"], "linesightctl --json")
        import urllib.request
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        check("linesight_packets_total{" in body and "linesight_dropped_packets_total{" in body
              and "linesight_packets_per_second{" in body,
              "Prometheus /metrics serves counters")
        if shutil.which("promtool"):
            pt = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
            check(pt.returncode == 0, "promtool check metrics passes " + pt.stdout + pt.stderr)
        else:
            print("SKIP promtool not installed (scripts/setup.sh installs prometheus)")
        r = ctl(sock, "bogus")
        check(r.returncode == 2 and "unknown command" in r.stderr, "linesightctl names a bad command")
        hog.close()
        # Clients that leave before their reply is written: EPIPE for the daemon, never SIGPIPE.
        for _ in range(50):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(sock)
                c.sendall(b'{"cmd":"/flows/top?n=1000"}\n{"cmd":"/help"}\n')
            except OSError:
                break  # the daemon is gone: reported below
            finally:
                c.close()
        time.sleep(0.5)
        st = ctl(sock, "--json", "stats")
        check(p.poll() is None and st.returncode == 0, f"50 clients gone before their replies: daemon alive ({p.poll()})")
        r = ctl(sock, "shutdown")
        check(r.returncode == 0, f"linesightctl shutdown ({r.returncode}: {r.stderr.strip()[-200:]})")
        so, se = p.communicate(timeout=60)
        check(p.returncode == 0, f"daemon exits 0 after /shutdown ({p.returncode}: {se.strip()[-300:]})")
        s = json.load(open(summ))
        c = s["counters"]
        n = sum(1 for _ in open(out))
        check(s["rings"] == {"record_ring_full": 0, "record_pool_empty": 0}, f"no record dropped: {s['rings']}")
        check(n == c["records_emitted"] and n == s["records"], f"every record written ({n} of {c['records_emitted']})")
        flow_pk = 0
        for line in open(out):
            x = json.loads(line)
            flow_pk += x["packets_fwd"] + x["packets_rev"]
        drops = sum(v for k, v in c.items() if k in DROPS)
        check(flow_pk + drops == c["packets"],
              f"packets balance through live sampling changes: {flow_pk} in records + {drops} dropped/sampled == {c['packets']}")
        check(c.get("sampled_out", 0) > 0, f"sampling took effect live (sampled_out {c.get('sampled_out', 0)})")
    finally:
        if p.poll() is None:
            p.kill()


def test_filter(d):
    """A capture filter (--filter, tcpdump syntax) in run: its records equal replay of the
    capture tcpdump filtered with the same expression, and what it drops is counted as
    filtered_out. Live through /filter: a bad expression is refused with libpcap's reason
    and the old filter stays; a new one takes effect, and packets still balance."""
    pcap = os.path.join(DATA, "ndpi/emotet.pcap")
    # Indirect loads (ports, TCP flags past the IP header) and a JSET with a small
    # constant: the two things DPDK 22.11's BPF JIT needed mending for (filter_jit.cpp).
    expr = "(tcp port 80 and tcp[tcpflags] & tcp-push != 0) or udp"
    if not shutil.which("tcpdump"):
        print("SKIP filter: tcpdump not installed (scripts/setup.sh installs it)")
        return
    pre = os.path.join(d, "prefiltered.pcap")
    subprocess.run(["tcpdump", "-r", pcap, "-w", pre, expr], check=True, capture_output=True)
    a, b = os.path.join(d, "flt-run.jsonl"), os.path.join(d, "flt-ref.jsonl")
    r, summ = run(d, ["--flows-out", a, "--exit-idle", "1s", "--socket", "", "--filter", expr],
                  eal(3, f"net_pcap0,rx_pcap={pcap}"))
    replay(pre, b)
    c = json.load(open(summ))["counters"] if r.returncode == 0 else {}
    kept = sum(1 for _ in subprocess.run(["tcpdump", "-r", pre], capture_output=True, text=True).stdout.splitlines())
    ra, rb = records(a), records(b)
    check(r.returncode == 0 and ra == rb and ra and c.get("filtered_out") == c.get("packets", 0) - kept,
          f"run --filter '{expr}' == replay of tcpdump's filtered capture ({len(ra)} records; "
          f"filtered_out {c.get('filtered_out')} of {c.get('packets')}, tcpdump kept {kept}) " + r.stderr[-300:])
    # The same run with libpcap's interpreter instead of DPDK's JIT: the same records.
    r, summ = run(d, ["--flows-out", a, "--exit-idle", "1s", "--socket", "", "--filter", expr],
                  eal(3, f"net_pcap0,rx_pcap={pcap}"), env={"LINESIGHT_FILTER_JIT": "0"})
    check(r.returncode == 0 and records(a) == rb, "LINESIGHT_FILTER_JIT=0 (interpreter): the same records " + r.stderr[-300:])

    sock, out = os.path.join(d, "flt.sock"), os.path.join(d, "flt-live.jsonl")
    p, summ = run(d, ["--flows-out", out, "--socket", sock, "--memory-replay", pcap, "--loop", "100000",
                      "--replay-pps", pps(50000), "--filter", "udp"], eal(3, mem=1024), wait=False)
    try:
        check(wait_for(sock), "socket of run --filter")
        f = ctl(sock, "filter")
        cf = raw(sock, b'{"cmd":"/config"}\n')["result"]["parser"]
        check(f.returncode == 0 and "filter: udp" in f.stdout and cf == {"filter": "udp"},
              f"linesightctl filter and /config show the running one: {f.stdout.strip()}, {cf}")
        check("engine: dpdk-bpf-jit" in f.stdout, f"run JIT-compiles the filter: {f.stdout.strip()}")
        e = ctl(sock, "filter", "set", "tcp port")
        f = ctl(sock, "--json", "filter")
        check(e.returncode == 1 and "syntax error" in e.stderr and '"filter":"udp"' in f.stdout,
              f"a bad filter is refused with libpcap's reason, the old one stays: {e.stderr.strip()}")
        stats = lambda: raw(sock, b'{"cmd":"/stats"}\n')["result"]["total"]

        def window():
            # Counters from now until 2,000 more packets (lcores publish them every few
            # bursts; slow under TSan), at most 20 s.
            t0 = t1 = stats()
            end = time.time() + 20
            while t1["packets"] < t0["packets"] + 2000 and time.time() < end:
                time.sleep(0.1)
                t1 = stats()
            return t0, t1
        t0, t1 = window()
        check(t1["filtered_out"] > t0["filtered_out"], f"filter 'udp' drops the TCP packets ({t1['filtered_out']})")
        # A set returns once every RX lcore has taken it (a QSBR grace period), though the
        # counters they published before it may lag: the window starts after one more.
        s = ctl(sock, "filter", "set", "")
        window()
        t0, t1 = window()
        check(s.returncode == 0 and "none" in s.stdout and t1["packets"] > t0["packets"]
              and t1["filtered_out"] == t0["filtered_out"],
              f"filter '' passes every packet ({t1['packets'] - t0['packets']} packets, no more filtered_out)")
        ctl(sock, "filter", "set", "not ip")
        window()
        t0, t1 = window()
        # /stats reads the lcores' counters as they run: packets and filtered_out of the
        # packet being counted may be one apart.
        check(abs((t1["filtered_out"] - t0["filtered_out"]) - (t1["packets"] - t0["packets"])) <= 1
              and t1["filtered_out"] > t0["filtered_out"],
              f"filter 'not ip' drops every packet of this capture ({t1['filtered_out'] - t0['filtered_out']})")
        ctl(sock, "shutdown")
        p.communicate(timeout=60)
        c = json.load(open(summ))["counters"]
        flow_pk = sum(x["packets_fwd"] + x["packets_rev"] for x in map(json.loads, open(out)))
        drops = sum(v for k, v in c.items() if k in DROPS)
        check(p.returncode == 0 and flow_pk + drops == c["packets"],
              f"packets balance through live filter changes: {flow_pk} in records + {drops} dropped == {c['packets']}")
    finally:
        if p.poll() is None:
            p.kill()


def test_rules_reload(d):
    pcap = os.path.join(DATA, "ndpi/mining.pcapng")
    sock, out = os.path.join(d, "rr.sock"), os.path.join(d, "rr.csv")
    only_ethproxy = os.path.join(d, "one.rules")
    open(only_ethproxy, "w").write('77:/^\\{\\s*"worker"/s  ethproxy-only\n')
    bad = os.path.join(d, "bad.rules")
    open(bad, "w").write("1:/(/ broken\n")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    mport = s.getsockname()[1]
    s.close()
    p, summ = run(d, ["--features-out", out, "--socket", sock, "--rules", RULES, "--payload-bytes", "256",
                      "--memory-replay", pcap, "--loop", "100000", "--replay-pps", pps(20000),
                      "--metrics", f"127.0.0.1:{mport}"], eal(3, mem=1024), wait=False)
    try:
        check(wait_for(sock), "socket for rule reload")
        time.sleep(1)
        for _ in range(300):  # until the workers have scored records with the first rule set
            st = raw(sock, b'{"cmd":"/stats"}\n')
            if st["result"]["feature_state"]["pairs"]["created"] >= 20:
                break
            time.sleep(0.1)
        e = raw(sock, json.dumps({"cmd": "/rules/reload", "path": bad}).encode() + b"\n")
        check(not e["ok"] and "Missing close parenthesis" in e["error"], "bad rules refused, old kept: " + e.get("error", ""))
        feed = os.path.join(d, "feed.ipset")
        open(feed, "w").write("#\n# test_feed\n#\n# Category        : malware\n#\n0.0.0.0/0\n")
        e = raw(sock, json.dumps({"cmd": "/ti/reload", "paths": ["/nonexistent/feed"]}).encode() + b"\n")
        check(not e["ok"] and "/nonexistent/feed" in e["error"], "bad TI path refused: " + e.get("error", ""))
        # Reloaded as a compiled table (`linesight ti compile`); the storm test reloads feeds.
        lsti = os.path.join(d, "feed.lsti")
        subprocess.run([BIN, "ti", "compile", feed, "-o", lsti], check=True, capture_output=True)
        ti = raw(sock, json.dumps({"cmd": "/ti/reload", "paths": [lsti]}).encode() + b"\n")
        check(ti["ok"] and ti["result"]["feeds"] == 1 and ti["result"]["entries"] == 1,
              "/ti/reload of a compiled table: " + json.dumps(ti))
        cf = raw(sock, b'{"cmd":"/config"}\n')
        check(cf["ok"] and cf["result"]["features"]["rules"] == RULES and cf["result"]["ti_export"]["pseudonyms"] is False,
              "/config shows features and TI export settings (never a secret)")
        e = raw(sock, json.dumps({"cmd": "/partners/reload", "paths": [feed]}).encode() + b"\n")
        check(not e["ok"] and "indicator" in e["error"], "a feed is not a partner export: " + e.get("error", ""))
        shared = os.path.join(d, "partner.json")
        json.dump([{"indicator": "178.32.196.217", "ports": ["3333/tcp"], "score": 0.9,
                    "first_seen": "2017-12-25T00:00:00Z"}], open(shared, "w"))
        pr = raw(sock, json.dumps({"cmd": "/partners/reload", "paths": [shared]}).encode() + b"\n")
        check(pr["ok"] and pr["result"] == {"servers": 1, "files": 1}, "/partners/reload: " + json.dumps(pr))
        st = raw(sock, b'{"cmd":"/stats"}\n')
        fs = st["result"].get("feature_state", {})
        check(st["ok"] and fs.get("pairs", {}).get("created", 0) > 0 and "evicted" in fs["servers"],
              f"/stats shows the workers' feature state: {fs}")
        # mining.pcapng: miners reconnect to their pools (up to 14 contacts per pair in one
        # pass), so pairs outgrow their entries (more than 7) and hold history blocks.
        check(fs.get("pairs", {}).get("overflowed", 0) > 0, f"/stats counts overflowed pairs: {fs.get('pairs')}")
        import urllib.request
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        check('linesight_feature_state_overflowed{table="pairs"}' in body
              and 'linesight_feature_state_evicted_total{table="servers"}' in body, "/metrics has the feature state")
        if shutil.which("promtool"):
            pt = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
            check(pt.returncode == 0, "promtool check metrics passes with features on " + pt.stdout + pt.stderr)
        fl = raw(sock, b'{"cmd":"/ti/feeds"}\n')
        check(fl["ok"] and fl["result"][0]["name"] == "test_feed" and fl["result"][0]["category"] == "malware", "/ti/feeds lists it")
        ok = raw(sock, json.dumps({"cmd": "/rules/reload", "path": only_ethproxy}).encode() + b"\n")
        check(ok["ok"] and "1 rules" in ok["result"]["reloaded"], "reload: " + json.dumps(ok.get("result", ok)))
        time.sleep(1.5)
        ctl(sock, "shutdown")
        p.communicate(timeout=60)
        import csv
        ids = set()
        for row in csv.DictReader(l for l in open(out) if not l.startswith("#")):
            ids.update(x for x in row["sig_hits"].split(";") if x)
        check({"1001", "77"} <= ids and "1002" in ids, f"hits from the old set then the new one, named correctly: {sorted(ids)}")
        listed = sum(1 for row in csv.DictReader(l for l in open(out) if not l.startswith("#"))
                     if row["ti_dst_categories"] == "malware")
        check(listed > 0, f"rows after /ti/reload see the new feed ({listed} rows)")
    finally:
        if p.poll() is None:
            p.kill()


def test_models_reload(d):
    """Detection apps in run: /models, /models/reload (a bad file keeps the old model),
    /apps/NAME/threshold, repeatedly under a memory replay, without losing a packet."""
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = os.path.join(d, "c2.json")
    good = open(os.path.join(root, "detect", "models", "c2-server.json")).read()
    open(model, "w").write(good)
    sock, out, det = os.path.join(d, "md.sock"), os.path.join(d, "md.jsonl"), os.path.join(d, "det.jsonl")
    loops = 20 if SLOW == 1 else 5  # ≈ 8 s unsanitized, 32 s under TSan
    p, summ = run(d, ["--flows-out", out, "--socket", sock, "--detections-out", det, "--rules", RULES,
                      "--app", f"c2-server:server:{model}:0.5", "--app", "beacon:server:rule:periodicity=0.8,contacts=10",
                      "--ti-export", os.path.join(d, "tix"),
                      "--memory-replay", pcap, "--loop", str(loops), "--replay-pps", pps(20000), "--exit-idle", "1s"],
                  eal(3, mem=1024), wait=False)
    try:
        check(wait_for(sock), "socket for model reload")
        m = raw(sock, b'{"cmd":"/models"}\n')
        check(m["ok"] and [a["name"] for a in m["result"]] == ["c2-server", "beacon"] and m["result"][0]["trees"] > 0,
              "/models lists both apps: " + json.dumps([(a["name"], a.get("trees")) for a in m.get("result", [])]))
        reloads = 0
        for i in range(5):
            open(model, "w").write(good[: len(good) // 2])  # a half-written file
            e = raw(sock, b'{"cmd":"/models/reload"}\n')
            if i == 0:
                check(not e["ok"] and "not JSON" in e["error"], "a bad model file is refused, the old model stays")
            open(model, "w").write(good)
            ok = raw(sock, b'{"cmd":"/models/reload"}\n')
            reloads += ok["ok"]
            t = raw(sock, json.dumps({"cmd": "/apps/c2-server/threshold", "set": 0.5 + i / 10}).encode() + b"\n")
            time.sleep(0.2)
        check(reloads == 5, f"5 reloads of a good model under replay ({reloads})")
        check(t["ok"] and abs(t["result"]["threshold"] - 0.9) < 1e-9, "/apps/c2-server/threshold set live")
        e = raw(sock, json.dumps({"cmd": "/apps/c2-server/threshold", "set": 2}).encode() + b"\n")
        check(not e["ok"] and "0 .. 1" in e["error"], "threshold outside 0 .. 1 refused")
        e = raw(sock, json.dumps({"cmd": "/apps/beacon/threshold", "set": 0.5}).encode() + b"\n")
        check(not e["ok"] and "expert rule" in e["error"], "a rule app has no threshold")
        x = raw(sock, b'{"cmd":"/ti/export"}\n')
        check(x["ok"] and x["result"]["indicators"] >= 1 and any(f.endswith("stix-bundle.json") for f in x["result"]["files"]),
              f"/ti/export on demand: {x.get('result', x)}")
        so, se = p.communicate(timeout=120)
        s = json.load(open(summ))
        c = s["counters"]
        flow_pk = sum(json.loads(l)["packets_fwd"] + json.loads(l)["packets_rev"] for l in open(out))
        drops = sum(v for k, v in c.items() if k in DROPS)
        check(p.returncode == 0 and flow_pk + drops == c["packets"] and c["packets"] == loops * 7931,
              f"no packet lost across reloads: {flow_pk} in records + {drops} dropped == {c['packets']}")
        apps = collections.Counter(json.loads(l)["app"] for l in open(det))
        check(apps["c2-server"] >= 1 and apps["beacon"] >= 1, f"detections from both apps: {dict(apps)}")
    finally:
        if p.poll() is None:
            p.kill()


def test_sigterm(d):
    pcap = os.path.join(DATA, "bench/ndpi-ether-concat.pcap")
    out = os.path.join(d, "term.jsonl")
    # Full speed: the control core may fall behind; every record is then either written
    # or counted as dropped, and the shutdown flush itself loses nothing.
    # SIGTERM during start-up (EAL init, loading the capture): an orderly stop, not a kill.
    p, summ = run(d, ["--flows-out", out, "--socket", "", "--memory-replay", pcap, "--loop", "100000"],
                  eal(3, mem=1024), wait=False)
    for _ in range(500):  # until the process catches SIGTERM (/proc SigCgt bit 15), then signal it
        caught = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("SigCgt:")]
        if caught and int(caught[0].split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    check(p.returncode == 0 and os.path.exists(summ) and json.load(open(summ))["stop_reason"] == "signal",
          f"SIGTERM during start-up: exit {p.returncode}, summary written")
    p, summ = run(d, ["--flows-out", out, "--socket", "", "--memory-replay", pcap, "--loop", "100000"],
                  eal(3, mem=1024), wait=False)
    for _ in range(300):  # running: records are being written (a loaded machine starts slowly)
        if os.path.exists(out) and os.path.getsize(out) > 1 << 20:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    so, se = p.communicate(timeout=60)
    s = json.load(open(summ))
    n = sum(1 for _ in open(out))
    lost = s["rings"]["record_ring_full"] + s["rings"]["record_pool_empty"]
    flushed = sum(1 for line in open(out) if '"end_reason":"flush"' in line)
    check(p.returncode == 0 and s["interrupted"] and s["stop_reason"] == "signal", "SIGTERM: exit 0")
    check(n + lost == s["counters"]["records_emitted"] and flushed == s["counters"]["flows_flushed"],
          f"SIGTERM: {n} records written + {lost} counted drops == {s['counters']['records_emitted']} emitted; "
          f"all {flushed} flushed flows written")


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_reload_storm(d):
    """Models, rules, TI, partner records, sampling and the capture filter changed again and
    again (good and bad inputs alternating) while a memory replay runs with every app on:
    no crash, no lost packet or record, and memory that stops growing (a reload that
    leaked its old table would add it per cycle; LeakSanitizer checks the exit in the ASan
    pass)."""
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    good_model = open(os.path.join(root, "detect", "models", "c2-server.json")).read()
    model, rules, bad_rules = (os.path.join(d, n) for n in ("storm.json", "storm.rules", "storm_bad.rules"))
    open(model, "w").write(good_model)
    shutil.copy(RULES, rules)
    open(bad_rules, "w").write("1:/[/ broken\n")
    feeds = sorted(os.path.join(DATA, "ti", "firehol-2024-01-24", f)
                   for f in os.listdir(os.path.join(DATA, "ti", "firehol-2024-01-24")) if f.endswith((".ipset", ".netset")))
    partner = os.path.join(d, "storm_partner.json")
    json.dump([{"indicator": "147.32.80.9", "ports": ["53/udp"], "score": 0.4}], open(partner, "w"))
    sock, out, det = os.path.join(d, "storm.sock"), os.path.join(d, "storm.jsonl"), os.path.join(d, "storm_det.jsonl")
    p, summ = run(d, ["--flows-out", out, "--socket", sock, "--detections-out", det, "--rules", rules,
                      "--features-out", os.path.join(d, "storm.csv"), "--ti", feeds[0],
                      "--app", f"c2-server:server:{model}:0.5", "--app", "defaults",
                      "--memory-replay", pcap, "--loop", "1000000", "--replay-pps", pps(20000)],
                  eal(3, mem=1024), wait=False)
    ask = lambda o: raw(sock, json.dumps(o).encode() + b"\n")
    try:
        check(wait_for(sock), "socket for the reload storm")
        time.sleep(1)
        answers = collections.Counter()
        rss = []
        modes = [("off", 1), ("flow_hash", 4), ("packet_random", 3), ("packet", 2), ("sample_hold", 5)]
        cycles, end = 0, time.time() + 10
        while cycles < 16 or time.time() < end:
            bad = cycles % 2 == 1
            open(model, "w").write(good_model[:1000] if bad else good_model)
            mode, rate = modes[cycles % len(modes)]
            for o in ({"cmd": "/models/reload"},
                      {"cmd": "/rules/reload", "path": bad_rules if bad else rules},
                      {"cmd": "/ti/reload", "paths": ["/nonexistent"] if bad else feeds},
                      {"cmd": "/partners/reload", "paths": [partner]},
                      {"cmd": "/sampling", "set": {"mode": mode, "rate": rate}},
                      # a new JIT-compiled filter each time (its code unmapped when replaced)
                      {"cmd": "/filter", "set": "tcp port (" if bad else
                       ["", "udp or tcp[tcpflags] & tcp-syn != 0", "not port 53", "ip"][(cycles // 2) % 4]},
                      {"cmd": "/apps/c2-server/threshold", "set": 0.3 + (cycles % 6) / 10}):
                r = ask(o)
                answers[(o["cmd"], r["ok"])] += 1
            cycles += 1
            if cycles == 8:
                rss.append(rss_kb(p.pid))  # after every table has been replaced a few times
        rss.append(rss_kb(p.pid))
        want_bad = cycles // 2
        check(answers[("/models/reload", False)] == want_bad and answers[("/rules/reload", False)] == want_bad
              and answers[("/ti/reload", False)] == want_bad and answers[("/models/reload", True)] == cycles - want_bad
              and answers[("/sampling", True)] == cycles and answers[("/partners/reload", True)] == cycles
              and answers[("/filter", False)] == want_bad and answers[("/filter", True)] == cycles - want_bad,
              f"storm answers: bad files refused, good ones taken ({dict(answers)})")
        check(p.poll() is None, "daemon alive after the storm")
        grow = rss[1] - rss[0]
        check(grow < 32 * 1024, f"RSS after 8 cycles {rss[0]} kB, after {cycles}: {rss[1]} kB (+{grow} kB; "
                                f"a leaked TI table or Hyperscan database per reload would add more)")
        r = ctl(sock, "shutdown")
        so, se = p.communicate(timeout=120)
        check(p.returncode == 0, f"exit 0 after the storm ({p.returncode}: {se.strip()[-300:]})")
        s = json.load(open(summ))
        c = s["counters"]
        n = 0
        flow_pk = 0
        for line in open(out):
            x = json.loads(line)
            flow_pk += x["packets_fwd"] + x["packets_rev"]
            n += 1
        drops = sum(v for k, v in c.items() if k in DROPS)
        check(s["rings"] == {"record_ring_full": 0, "record_pool_empty": 0} and n == c["records_emitted"],
              f"every record written through the storm ({n} of {c['records_emitted']}, rings {s['rings']})")
        check(flow_pk + drops == c["packets"] and c["packets"] > 0,
              f"packets balance through the storm: {flow_pk} in records + {drops} dropped/sampled == {c['packets']}")
    finally:
        if p.poll() is None:
            p.kill()


def test_ti_reload_frees_old_table(d):
    """/ti/reload to a small feed gives the first table's memory back: only the control
    core looks TI up, so no worker stage may keep the table it started with."""
    big = os.path.join(d, "big.lsti")
    subprocess.run([BIN, "ti", "compile", os.path.join(DATA, "ti"), "-o", big], check=True, capture_output=True)
    small = os.path.join(d, "small.ipset")
    open(small, "w").write("# small\n10.0.0.0/8\n")
    sock = os.path.join(d, "tifree.sock")
    p, _ = run(d, ["--features-out", "/dev/null", "--socket", sock, "--ti", big,
                   "--memory-replay", os.path.join(DATA, "slips/test-cc-capture-1.pcap"), "--loop", "1000000",
                   "--replay-pps", pps(20000)], eal(3, mem=1024), wait=False)
    try:
        check(wait_for(sock), "socket for the TI reload")
        time.sleep(1)
        before = rss_kb(p.pid)
        r = raw(sock, json.dumps({"cmd": "/ti/reload", "paths": [small]}).encode() + b"\n")
        time.sleep(0.5)
        after = rss_kb(p.pid)
        table_kb = os.path.getsize(big) // 1024
        check(r["ok"], "/ti/reload to one entry: " + json.dumps(r))
        if SLOW > 1:  # a sanitizer's allocator (ASan's quarantine) keeps freed memory resident
            print(f"note RSS not checked under a sanitizer ({before} kB before, {after} kB after)")
        else:
            check(before - after >= table_kb // 2,
                  f"RSS {before} kB with a {table_kb} kB table, {after} kB after /ti/reload to one entry "
                  f"(a stage still holding the first table gives nothing back)")
        ctl(sock, "shutdown")
        p.communicate(timeout=60)
        check(p.returncode == 0, "exit 0 after the TI reload")
    finally:
        if p.poll() is None:
            p.kill()


def test_ring_full_recovers(d):
    """Full rings, forced and then cleared (issue 7): a fault drill (/fault/stall) stops the
    workers taking records — the RX→worker ring fills — and then stops control draining
    the workers — the worker→control ring fills. RX keeps receiving throughout, each drop
    is counted where it happens, records flow again once a drill ends, and at exit every
    record the flow tables emitted is either written or counted as dropped."""
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    cfg = os.path.join(d, "rings.yaml")
    open(cfg, "w").write("dpdk:\n  ring_size: 64\n")  # small rings fill within a drill
    sock, out = os.path.join(d, "rings.sock"), os.path.join(d, "rings.jsonl")
    p, summ = run(d, ["--config", cfg, "--flows-out", out, "--socket", sock,
                      "--memory-replay", pcap, "--loop", "1000000", "--replay-pps", pps(40000)],
                  eal(3, mem=1024), wait=False)
    ask = lambda o: raw(sock, json.dumps(o).encode() + b"\n")

    def totals():
        st = ask({"cmd": "/stats"})["result"]
        return {"rx_full": sum(l["record_ring_full"] for l in st["rx_lcores"]),
                "worker_full": sum(w["record_ring_full"] for w in st["workers"]),
                "written": sum(w["records_out"] for w in st["workers"]),
                "packets": sum(l["counters"].get("packets", 0) for l in st["rx_lcores"]),
                "drills": st["fault_drills"]}
    try:
        check(wait_for(sock), "socket for the ring drills")
        for _ in range(100):
            if totals()["written"] > 0:
                break
            time.sleep(0.1)
        for stage, where in (("workers", "rx_full"), ("control", "worker_full")):
            before = totals()
            r = ask({"cmd": "/fault/stall", "stage": stage, "ms": 2000})
            check(r["ok"] and "stalled for 2000 ms" in r["result"]["stalled"], f"/fault/stall {stage}: {r}")
            time.sleep(1.5)
            during = totals()
            time.sleep(1.5)  # the drill is over
            after = totals()
            time.sleep(1.5)
            later = totals()
            check(during[where] > before[where] and during["packets"] > before["packets"],
                  f"{stage} stalled: the ring before them fills, {during[where] - before[where]} records dropped and "
                  f"counted ({where}); RX kept receiving ({during['packets'] - before['packets']} packets)")
            check(later["written"] > after["written"] and later[where] == after[where],
                  f"{stage} back: records flow again ({later['written'] - after['written']} in 1.5 s), no more drops")
        check(totals()["drills"] == 2, "/stats counts the drills")
        for bad, why in (({"stage": "rx", "ms": 10}, "stage"), ({"stage": "workers", "ms": 0}, "ms"),
                         ({"stage": "control", "ms": 600000}, "ms"), ({"ms": 5}, "stage")):
            e = ask({"cmd": "/fault/stall", **bad})
            check(not e["ok"] and why in e["error"], f"bad drill refused: {bad} → {e.get('error')}")
        r = ctl(sock, "shutdown")
        so, se = p.communicate(timeout=120)
        check(p.returncode == 0 and "fault drill: workers stalled for 2000 ms" in se,
              f"exit 0, drills logged ({p.returncode})")
        s = json.load(open(summ))
        n = sum(1 for _ in open(out))
        lost = s["rings"]["record_ring_full"] + s["rings"]["record_pool_empty"]
        check(n + lost == s["counters"]["records_emitted"] and s["rings"]["record_ring_full"] > 0,
              f"every record written or counted: {n} written + {lost} dropped (rings {s['rings']}) "
              f"== {s['counters']['records_emitted']} emitted")
    finally:
        if p.poll() is None:
            p.kill()


def test_detections_reader_stalls(d):
    """Detections go to a FIFO whose reader stops reading (a SIEM shipper that hangs) and
    comes back: RX never blocks, detections wait in the spool (/export says so), and once
    the reader returns every detection arrives, whole and in order; none is dropped."""
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = os.path.join(root, "detect", "models", "c2-server.json")
    fifo, sock = os.path.join(d, "det.fifo"), os.path.join(d, "stall.sock")
    os.mkfifo(fifo)
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there is a reader; it just does not read
    # Threshold 0 on flows: ~300 detections (200 KB) per pass, over a pipe's 64 KB.
    p, summ = run(d, ["--flows-out", os.path.join(d, "stall.jsonl"), "--socket", sock, "--detections-out", fifo,
                      "--app", f"every:flow:{model}:0", "--memory-replay", pcap, "--loop", "6",
                      "--replay-pps", pps(20000), "--exit-idle", "1s"], eal(3, mem=1024), wait=False)
    got = b""
    try:
        check(wait_for(sock), "socket for the stalled-reader test")
        time.sleep(2 * min(SLOW, 4))
        ex = raw(sock, b'{"cmd":"/export"}\n')
        det = ex["result"].get("detections", {}) if ex and ex["ok"] else {}
        check(det.get("spooled_bytes", 0) > 0 and det.get("write_errors", 0) > 0 and det.get("dropped") == 0,
              f"reader stalled: detections spooled, counted in /export ({det})")
        st = raw(sock, b'{"cmd":"/stats"}\n')
        check(st["ok"] and p.poll() is None, "the daemon answers while its detections reader stalls")
        while p.poll() is None:  # the reader comes back
            try:
                got += os.read(rd, 1 << 20)
            except BlockingIOError:
                time.sleep(0.05)
        while True:
            try:
                chunk = os.read(rd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        if p.poll() is None:
            p.kill()
        os.close(rd)
    so, se = p.communicate(timeout=60)
    s = json.load(open(summ))
    lines = got.decode().splitlines()
    ok_json = all(json.loads(l)["app"] == "every" for l in lines)
    c = s["counters"]
    check(p.returncode == 0 and s["detections"]["dropped"] == 0 and s["detections"]["spooled_peak"] > 65536
          and len(lines) == s["detections"]["count"] > 0 and ok_json and c["packets"] == 6 * 7931,
          f"reader back: all {s['detections']['count']} detections arrived whole ({len(lines)} lines, "
          f"spool peak {s['detections']['spooled_peak']} B), every packet replayed ({c['packets']}) "
          f"exit {p.returncode} {se.strip()[-200:]}")


def test_ipfix_collector_returns(d):
    """The IPFIX collector is down when the sensor starts (send errors counted, the
    pipeline unaffected), then comes up: with templates refreshed every second, nfcapd
    decodes the records that follow — the sensor recovers without a restart."""
    if not shutil.which("nfcapd") or not shutil.which("nfdump"):
        print("SKIP ipfix recovery: nfdump not installed (scripts/setup.sh installs it)")
        return
    from lsdata import free_udp_port
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    port, sock = free_udp_port(), os.path.join(d, "ipfix.sock")
    cfg = os.path.join(d, "ipfix.yaml")
    open(cfg, "w").write(f"output:\n  ipfix: 127.0.0.1:{port}\n  ipfix_template_refresh: 1s\n")
    flows = os.path.join(d, "nfcapd")
    os.mkdir(flows)
    p, summ = run(d, ["--config", cfg, "--flows-out", os.path.join(d, "ipfix.jsonl"), "--socket", sock,
                      "--memory-replay", pcap, "--loop", "1000", "--replay-pps", pps(20000)],
                  eal(3, mem=1024), wait=False)
    cap = None
    try:
        check(wait_for(sock), "socket for the IPFIX recovery test")
        time.sleep(3)
        ex = raw(sock, b'{"cmd":"/export"}\n')["result"]["ipfix"]
        check(ex["send_errors"] > 0 and p.poll() is None, f"collector down: send errors counted, sensor runs ({ex})")
        cap = subprocess.Popen(["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-w", flows, "-B", "16000000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(4 if SLOW == 1 else 10)
        after = raw(sock, b'{"cmd":"/export"}\n')["result"]["ipfix"]
        ctl(sock, "shutdown")
        p.communicate(timeout=120)
        time.sleep(1)
    finally:
        if cap:
            cap.send_signal(signal.SIGTERM)
            cap.wait(timeout=20)
        if p.poll() is None:
            p.kill()
    r = subprocess.run(["nfdump", "-R", flows, "-q", "-o", "csv", "-c", "100000"], capture_output=True, text=True)
    n = sum(1 for l in r.stdout.splitlines() if l and l[0].isdigit())
    check(p.returncode == 0 and n > 0 and after["messages"] > ex["messages"],
          f"collector back: nfdump decodes {n} flows sent after it came up "
          f"(messages {ex['messages']} -> {after['messages']}, send errors {after['send_errors']})")


def shutdown(p, sock, summ):
    """/shutdown, wait for the exit; the run's summary."""
    ctl(sock, "shutdown")
    p.communicate(timeout=120)
    return json.load(open(summ))


def send_export(udp_port, tcp_port, grams_udp, grams_tcp):
    """Export datagrams to a collector: one by one over UDP, then one TCP stream."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for g in grams_udp:
        u.sendto(g, ("127.0.0.1", udp_port))
        time.sleep(0.002)
    u.close()
    t = socket.create_connection(("127.0.0.1", tcp_port), timeout=10)
    t.sendall(b"".join(grams_tcp))
    t.close()


def test_collect_beside_packets(d):
    """`run --collect`: router flow export (softflowd's NetFlow v9 over UDP, its IPFIX over
    TCP) enters the same workers as a net_pcap vdev's packets. The run's records are
    exactly `replay` of the vdev's capture plus `linesight collect` of the same export;
    their features raise the beacon detection; /collector and /metrics count them; and a
    shutdown flushes every flow the collector still holds."""
    if not shutil.which("softflowd"):
        print("SKIP collect beside packets: softflowd not installed (scripts/setup.sh installs it)")
        return
    from lsdata import free_udp_port
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_collector import Collect, softflowd_datagrams
    rx_pcap = os.path.join(DATA, "ndpi/emotet.pcap")
    v9 = softflowd_datagrams(os.path.join(DATA, "slips/test-cc-capture-1.pcap"), 9)
    ipfix = softflowd_datagrams(os.path.join(DATA, "slips/test-cc-capture-2.pcap"), 10)

    # What `collect` makes of the same export, and `replay` of the vdev's capture.
    c = Collect(d, also_tcp=True, idle="2s")
    send_export(c.port, c.tcp_port, v9, ipfix)
    rc, _, _, err = c.wait()
    check(rc == 0, f"linesight collect of the export (exit code {rc})" + (f": {err.strip()}" if rc else ""))
    rx_ref = os.path.join(d, "emotet.jsonl")
    replay(rx_pcap, rx_ref)
    collected = records(c.flows)
    want = sorted(collected + records(rx_ref))

    up, tp = free_udp_port(), free_udp_port(socket.SOCK_STREAM)
    cfg, sock, mport = os.path.join(d, "collect.yaml"), os.path.join(d, "collect.sock"), free_udp_port(socket.SOCK_STREAM)
    open(cfg, "w").write(f"control:\n  collect: 127.0.0.1:{up}\n  collect_tcp: 127.0.0.1:{tp}\n")
    out, det = os.path.join(d, "run-collect.jsonl"), os.path.join(d, "run-collect-det.jsonl")
    p, summ = run(d, ["--config", cfg, "--workers", "2", "--flows-out", out, "--socket", sock,
                      "--metrics", f"127.0.0.1:{mport}", "--features-out", os.path.join(d, "run-collect.csv"),
                      "--rules", RULES, "--detections-out", det],
                  eal(4, f"net_pcap0,rx_pcap={rx_pcap}"), wait=False)
    try:
        check(wait_for(sock), "socket of run --collect")
        send_export(up, tp, v9, ipfix)
        end, st = time.time() + 30, {}
        while time.time() < end:
            st = raw(sock, b'{"cmd":"/collector"}\n')["result"]
            if st["netflow"]["datagrams_ipfix"] == len(ipfix) and st["netflow"]["datagrams_v9"] == len(v9):
                break
            time.sleep(0.2)
        nf = st["netflow"]
        check(nf["datagrams_v9"] == len(v9) and nf["datagrams_ipfix"] == len(ipfix) and nf["tcp_sessions"] == 1
              and st["exported_records"] > 0 and st["flows_active"] > 0 and st["record_ring_full"] == 0,
              f"/collector: {nf['datagrams_v9']} v9 datagrams, {nf['datagrams_ipfix']} IPFIX messages over TCP, "
              f"{st['exported_records']} exported records, {st['flows_active']} flows held, "
              f"{st['records_out']} records to the workers ({st['waits']} waits for room)")
        r = ctl(sock, "collector")
        check(r.returncode == 0 and json.loads(r.stdout)["netflow"]["datagrams_v9"] == len(v9),
              "linesightctl collector")
        import urllib.request
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        check('linesight_collector_datagrams_total{version="v9"} %d' % len(v9) in body
              and "linesight_collector_flows_active" in body and "linesight_packets_total{" in body,
              "/metrics: the collector's counters beside the dataplane's")
        if shutil.which("promtool"):
            pt = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
            check(pt.returncode == 0, "promtool check metrics passes with the collector " + pt.stdout + pt.stderr)
        s = shutdown(p, sock, summ)
    finally:
        if p.poll() is None:
            p.kill()
    got = records(out)
    check(p.returncode == 0 and got == want,
          f"run --collect: {len(got)} records = replay of the vdev ({len(records(rx_ref))}) + collect of the "
          f"same export ({len(collected)}), field for field ({s['rings']['record_ring_full']} dropped)")
    beacons = [json.loads(l) for l in open(det)]
    check(any(b["app"] == "beacon" and b["endpoint"] == "141.193.213.21" for b in beacons),
          f"the collected beacon flows raise the beacon detection in the workers ({len(beacons)} detections)")


def test_collect_workers_stalled(d):
    """`run --collect` with the workers stalled (a fault drill): the collector waits for
    room at most 100 ms, then drops and counts what the full rings cannot take, while the
    control socket keeps answering; after the drill, export flows in again, and at exit
    every record handed to the workers is written or counted as dropped (rings of 64: on
    a loaded machine the workers' own rings may drop too; the shutdown flush waits)."""
    if not shutil.which("softflowd"):
        print("SKIP collect with stalled workers: softflowd not installed")
        return
    from lsdata import free_udp_port
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_collector import softflowd_datagrams
    v9 = softflowd_datagrams(os.path.join(DATA, "slips/test-cc-capture-1.pcap"), 9)
    ipfix = softflowd_datagrams(os.path.join(DATA, "slips/test-cc-capture-2.pcap"), 10)
    up, tp = free_udp_port(), free_udp_port(socket.SOCK_STREAM)
    cfg, sock = os.path.join(d, "stall.yaml"), os.path.join(d, "stall.sock")
    open(cfg, "w").write("dpdk:\n  ring_size: 64\n")
    out = os.path.join(d, "stall.jsonl")
    rx_pcap = os.path.join(DATA, "ndpi/emotet.pcap")
    p, summ = run(d, ["--config", cfg, "--flows-out", out, "--socket", sock, "--collect", f"127.0.0.1:{up}",
                      "--collect-tcp", f"127.0.0.1:{tp}"], eal(3, f"net_pcap0,rx_pcap={rx_pcap}"), wait=False)
    ask = lambda o: raw(sock, json.dumps(o).encode() + b"\n")
    try:
        check(wait_for(sock), "socket of run --collect for the stall drill")
        r = ask({"cmd": "/fault/stall", "stage": "workers", "ms": 4000})
        check(r["ok"], f"/fault/stall workers: {r}")
        send_export(up, tp, v9, [])
        time.sleep(1)
        t0 = time.monotonic()
        during = ask({"cmd": "/collector"})["result"]
        answered = time.monotonic() - t0
        check(during["record_ring_full"] > 0 and during["netflow"]["datagrams_v9"] == len(v9) and answered < 2,
              f"workers stalled: {during['record_ring_full']} collected records dropped and counted, every datagram "
              f"decoded, /collector answered in {answered * 1000:.0f} ms")
        time.sleep(4)  # the drill is over
        send_export(up, tp, [], ipfix)
        end, after = time.time() + 30, during
        while time.time() < end and after["netflow"]["datagrams_ipfix"] < len(ipfix):
            time.sleep(0.2)
            after = ask({"cmd": "/collector"})["result"]
        check(after["records_out"] > during["records_out"] and after["record_ring_full"] == during["record_ring_full"],
              f"after the drill: {after['records_out'] - during['records_out']} more records to the workers, "
              f"no more dropped")
        s = shutdown(p, sock, summ)
    finally:
        if p.poll() is None:
            p.kill()
    rx_ref = os.path.join(d, "stall-emotet.jsonl")
    replay(rx_pcap, rx_ref)
    n, rx_n, g = len(records(out)), len(records(rx_ref)), s["rings"]
    later = g["record_ring_full"] - g["collector_record_ring_full"]  # past the collector: workers' rings
    check(p.returncode == 0 and n + later == g["collector_records_out"] + rx_n,
          f"at exit: {n} records written + {later} dropped past the collector = the collector's "
          f"{g['collector_records_out']} handed to the workers + the capture's {rx_n} (the collector dropped "
          f"{g['collector_record_ring_full']} during the drill; its flush waited {g['collector_shutdown_waits']} times)")


def test_collect_sflow(d):
    """`run --collect` takes sFlow as `collect` does: pmacctd's samples of two captures (two
    exporters), decoded on the control lcore, reach the workers: per conversation the run's
    records hold the same packets and bytes as `collect` of the same datagrams (times
    differ: sFlow is dated on arrival), and the sampled payload gives the same signature
    ids (WebattackRCE's HTTP attacks)."""
    if not shutil.which("pmacctd"):
        print("SKIP collect sFlow: pmacctd not installed (scripts/setup.sh installs pmacct)")
        return
    from lsdata import free_udp_port
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_collector import RULES, Collect, features, pmacct_datagrams, sig_hits, totals
    streams = [pmacct_datagrams(os.path.join(DATA, rel))
               for rel in ("slips/test7-malicious-hide-and-seek.pcap", "ndpi/WebattackRCE.pcap")]
    ngrams = sum(len(g) for g in streams)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in streams]

    def send(port):
        for u, grams in zip(socks, streams):
            for g in grams:
                u.sendto(g, ("127.0.0.1", port))
                time.sleep(0.002)

    c = Collect(d, "--rules", RULES, idle="2s")
    send(c.port)
    rc, recs, _, err = c.wait()
    check(rc == 0, f"linesight collect of the sFlow (exit code {rc})" + (f": {err.strip()}" if rc else ""))
    want = totals(recs, 0)
    want_sig = sig_hits(features(c.feat))

    up = free_udp_port()
    cfg, sock = os.path.join(d, "sflow.yaml"), os.path.join(d, "sflow.sock")
    open(cfg, "w").write(f"control:\n  collect: 127.0.0.1:{up}\n")
    out, feat = os.path.join(d, "run-sflow.jsonl"), os.path.join(d, "run-sflow.csv")
    p, summ = run(d, ["--config", cfg, "--workers", "2", "--flows-out", out, "--socket", sock,
                      "--rules", RULES, "--features-out", feat],
                  eal(4, f"net_pcap0,rx_pcap={os.path.join(DATA, 'ndpi/emotet.pcap')}"), wait=False)
    try:
        check(wait_for(sock), "socket of run --collect (sFlow)")
        send(up)
        end, nf = time.time() + 30, {}
        while time.time() < end:
            nf = raw(sock, b'{"cmd":"/collector"}\n')["result"]["netflow"]
            if nf["datagrams_sflow"] == ngrams:
                break
            time.sleep(0.2)
        s = shutdown(p, sock, summ)
    finally:
        if p.poll() is None:
            p.kill()
    got = totals([json.loads(l) for l in open(out)], 0)
    same = [k for k in want if got.get(k) == want[k]]
    got_sig = sig_hits(features(feat))
    same_sig = [k for k in want_sig if got_sig.get(k) == want_sig[k]]
    check(p.returncode == 0 and nf.get("datagrams_sflow") == ngrams and nf["sflow_flow_samples"] > 0
          and len(same) == len(want) > 0 and s["rings"]["record_ring_full"] == 0,
          f"run --collect with sFlow: {nf.get('datagrams_sflow')}/{ngrams} datagrams, "
          f"{nf.get('sflow_flow_samples')} samples; "
          f"{len(same)}/{len(want)} conversations with the packets and bytes `collect` gives")
    check(len(same_sig) == len(want_sig) > 0,
          f"run --collect with sFlow: signature ids equal collect's in {len(same_sig)}/{len(want_sig)} "
          f"conversations with hits")


def test_collect_filter(d):
    """run --collect: the capture filter, set live with /filter, applies to the collected
    records too, each seen as one packet of its 5-tuple: tor's IPFIX from softflowd gives
    the conversations and the records_filtered `collect --filter` gives."""
    if not shutil.which("softflowd"):
        print("SKIP collect filter: softflowd not installed (scripts/setup.sh installs it)")
        return
    from lsdata import free_udp_port
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_collector import Collect, send_paced, softflowd_datagrams, totals
    expr = "tcp port 443 or ip6"
    grams = softflowd_datagrams(os.path.join(DATA, "ndpi/tor.pcap"), 10)
    c = Collect(d, "--filter", expr, idle="2s")
    send_paced(grams, c.port)
    rc, recs, summary, err = c.wait()
    check(rc == 0, f"linesight collect --filter (exit code {rc})" + (f": {err.strip()}" if rc else ""))
    want = totals(recs, 0)
    want_filtered = summary["netflow"]["records_filtered"]

    up = free_udp_port()
    cfg, sock = os.path.join(d, "filter-collect.yaml"), os.path.join(d, "filter-collect.sock")
    open(cfg, "w").write(f"control:\n  collect: 127.0.0.1:{up}\n")
    out = os.path.join(d, "run-filter-collect.jsonl")
    # emotet on the port: IPv4 from 10.x, none of tor's addresses.
    p, summ = run(d, ["--config", cfg, "--workers", "2", "--flows-out", out, "--socket", sock],
                  eal(4, f"net_pcap0,rx_pcap={os.path.join(DATA, 'ndpi/emotet.pcap')}"), wait=False)
    try:
        check(wait_for(sock), "socket of run --collect (filter)")
        r = raw(sock, json.dumps({"cmd": "/filter", "set": expr}).encode() + b"\n")
        send_paced(grams, up)
        end, nf = time.time() + 30, {}
        while time.time() < end:
            nf = raw(sock, b'{"cmd":"/collector"}\n')["result"]["netflow"]
            if nf["datagrams"] == len(grams):
                break
            time.sleep(0.2)
        shutdown(p, sock, summ)
    finally:
        if p.poll() is None:
            p.kill()
    tor = lambda k: any(a.startswith("192.168.") or ":" in a for a, _ in k[:2])
    got = {k: v for k, v in totals([json.loads(l) for l in open(out)], 0).items() if tor(k)}
    check(r.get("ok") and p.returncode == 0 and got == want and len(want) > 0
          and nf.get("records_filtered") == want_filtered > 0,
          f"run --collect, /filter '{expr}' set live: {len(got)} collected conversations as `collect --filter` "
          f"gives ({len(want)}), records_filtered {nf.get('records_filtered')} ({want_filtered})")


def test_af_packet(d):
    if "TSAN_OPTIONS" in os.environ:
        print("SKIP af_packet under TSan: the kernel ring overflows at TSan's speed; the normal and ASan passes run it")
        return
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tcpreplay"):
        print("SKIP af_packet: needs root, iproute2 and tcpreplay")
        return
    ns, a, b = f"lst{os.getpid()}", f"lsa{os.getpid() % 10000}", f"lsb{os.getpid() % 10000}"
    pcap = os.path.join(DATA, "slips/test-cc-capture-1.pcap")
    sh = lambda *c: subprocess.run(c, check=True, capture_output=True)
    try:
        try:
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        except subprocess.CalledProcessError as e:
            print(f"SKIP af_packet: cannot create a network namespace and veth here ({e.stderr.decode().strip()})")
            return
        sh("ip", "link", "set", b, "netns", ns)
        # The capture holds 2654-byte frames (captured with offloads on): raise the MTU.
        for cmd in (["sysctl", "-qw", f"net.ipv6.conf.{a}.disable_ipv6=1"], ["ip", "link", "set", a, "mtu", "9000", "up"]):
            sh(*cmd)
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{b}.disable_ipv6=1")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", b, "mtu", "9000", "up")
        out = os.path.join(d, "afp.jsonl")
        p, summ = run(d, ["--flows-out", out, "--socket", "", "--exit-idle", "3s", "--mbuf-size", "4096"],
                      eal(3, f"net_af_packet0,iface={a},blocksz=65536,framesz=4096,framecnt=4096"),
                      wait=False)
        time.sleep(2)
        t = subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", b, "--pps", pps(20000), pcap],
                           capture_output=True, text=True)
        so, se = p.communicate(timeout=60)
        check(t.returncode == 0 and p.returncode == 0, "af_packet run and tcpreplay succeed" + (se[-300:] if p.returncode else ""))
        got = {}
        for line in open(out):
            x = json.loads(line)
            k = (x["proto"],) + tuple(sorted([(x["src"], x["sport"]), (x["dst"], x["dport"])]))
            got[k] = got.get(k, 0) + x["packets_fwd"] + x["packets_rev"]
        ref = os.path.join(d, "afp_ref.jsonl")
        replay(pcap, ref)
        want = {}
        for line in open(ref):
            x = json.loads(line)
            k = (x["proto"],) + tuple(sorted([(x["src"], x["sport"]), (x["dst"], x["dport"])]))
            want[k] = want.get(k, 0) + x["packets_fwd"] + x["packets_rev"]
        same = sum(1 for k in want if got.get(k) == want[k])
        check(same == len(want), f"af_packet: {same}/{len(want)} conversations with the capture's packet counts "
                                 f"({sum(got.values())} packets received, {sum(want.values())} sent)")
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


DROPS = drop_counters()


def main():
    if not os.path.isdir(DATA):
        skip(f"{DATA} not found (shared data absent; set LINESIGHT_DATA)")
    r = subprocess.run([BIN, "run", "--help"], capture_output=True, text=True)
    if "built without DPDK" in r.stderr:
        skip("linesight built without DPDK")
    with tempfile.TemporaryDirectory() as d:
        for t in (test_netpcap, test_sketches, test_config_file_and_errors, test_disk_full, test_memory_multi_lcore, test_control_socket, test_filter, test_rules_reload, test_models_reload, test_reload_storm, test_ti_reload_frees_old_table, test_ring_full_recovers, test_detections_reader_stalls, test_ipfix_collector_returns, test_collect_beside_packets, test_collect_workers_stalled, test_collect_sflow, test_collect_filter, test_sigterm, test_af_packet):
            if sys.argv[1:] and t.__name__ not in sys.argv[1:]:
                continue  # tests/test_dpdk.py test_NAME ... runs only those
            print(f"-- {t.__name__}", flush=True)
            t(d)
    finish()


if __name__ == "__main__":
    main()
