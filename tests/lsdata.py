"""Shared helpers for the Python integration tests: where the data and binary are, and
how to skip (exit 77 = skipped for meson) with a clear message."""
import hashlib
import hmac
import ipaddress
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.environ.get("LINESIGHT_DATA", os.path.join(ROOT, "..", "shared", "data"))
BIN = os.environ.get("LINESIGHT_BIN", os.path.join(ROOT, "build", "ctrl", "linesight"))


def drop_counters():
    """Names of the counters that count lost packets or records (DROP in dataplane/counters.h)."""
    import re
    with open(os.path.join(ROOT, "dataplane", "counters.h")) as f:
        return set(re.findall(r"X\((\w+), DROP\)", f.read()))


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def need_data(rel):
    p = os.path.join(DATA, rel)
    if not os.path.exists(p):
        skip(f"{p} not found (shared data absent; set LINESIGHT_DATA)")
    return p


def replay(pcap, *args, check=True):
    """Runs linesight replay; returns (records, summary dict)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        out, summ = os.path.join(d, "f.jsonl"), os.path.join(d, "s.json")
        cmd = [BIN, "replay", pcap, "--quiet", "--flows-out", out, "--summary-json", summ, *args]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise SystemExit(f"linesight failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
        with open(out) as f:
            recs = [json.loads(line) for line in f]
        with open(summ) as f:
            return recs, json.load(f)


def receive_datagrams(send, rcvbuf=8 << 20, quiet_s=0.5):
    """The datagrams send(port) makes arrive at a fresh UDP port on 127.0.0.1: read while
    send runs in a thread (the kernel caps rcvbuf at net.core.rmem_max, 208 KB on a fresh
    Debian: a synchronous exporter would overflow it), until send has returned and none
    came for quiet_s."""
    import socket
    import threading
    import time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    failed = []

    def run():
        try:
            send(s.getsockname()[1])
        except Exception as e:  # re-raised below, in the caller's thread
            failed.append(e)
    t = threading.Thread(target=run)
    t.start()
    grams, last = [], time.monotonic()
    while True:
        try:
            grams.append(s.recv(65535))
            last = time.monotonic()
        except socket.timeout:
            if not t.is_alive() and time.monotonic() - last >= quiet_s:
                break
    t.join()
    s.close()
    if failed:
        raise failed[0]
    return grams


def free_udp_port(kind=None):
    """A UDP (or, with kind=socket.SOCK_STREAM, TCP) port on 127.0.0.1 that nothing
    listens on (right now)."""
    import socket
    s = socket.socket(socket.AF_INET, kind or socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


failures = 0


def pseudonym(secret, rotate_ns, t_ns, client):
    """(period, pseudonym) by the construction documented in docs/ti.md (TI export, client
    sketches), written independently of the C++."""
    a = ipaddress.ip_address(client)
    period = t_ns // rotate_ns
    key = hmac.new(secret, f"linesight-pseudonym-v1|{rotate_ns}|{period}".encode(), hashlib.sha256).digest()
    msg = bytes([a.version]) + a.packed + bytes(16 - len(a.packed))
    return period, hmac.new(key, msg, hashlib.sha256).hexdigest()[:24]


def check(cond, what):
    """Prints ok/FAIL for one assertion and remembers failures for finish()."""
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += not cond


def finish():
    sys.exit(1 if failures else 0)
