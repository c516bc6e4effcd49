#!/usr/bin/env python3
"""Writes a synthetic pcap for benchmarks and demos: Zipf-distributed flow sizes, IMIX
frame sizes (7:4:1 of 64/594/1518 bytes on the wire), a share of IPv6, TCP and UDP,
both directions, timestamps increasing at a fixed packet rate. Deterministic per seed.
Frames are truncated to --snaplen (the original length is kept in the record header),
as a flow probe's capture would be."""
import argparse
import bisect
import random
import struct
import sys


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


IMIX = [(60, 7), (590, 4), (1514, 1)]  # frame length without FCS


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=4_000_000)
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--ipv6-share", type=float, default=0.10)
    ap.add_argument("--udp-share", type=float, default=0.25)
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of flow sizes")
    ap.add_argument("--pps", type=float, default=1_000_000, help="timestamp rate")
    ap.add_argument("--snaplen", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rnd = random.Random(a.seed)

    flows = []
    for i in range(a.flows):
        v6 = rnd.random() < a.ipv6_share
        if v6:
            c = b"\xfd\x00" + rnd.randbytes(14)
            s = b"\xfd\x01" + rnd.randbytes(14)
        else:
            c = bytes([10]) + rnd.randbytes(3)
            s = bytes([172, 16 + rnd.randrange(16)]) + rnd.randbytes(2)
        proto = 17 if rnd.random() < a.udp_share else 6
        flows.append((v6, c, s, proto, rnd.randrange(1024, 65535), rnd.choice([80, 443, 53, 8080, 25, 22, 123, 1194])))
    # Zipf weights over a random permutation, so big flows are not the first ones.
    weights = [1.0 / (r + 1) ** a.zipf for r in range(a.flows)]
    rnd.shuffle(weights)
    cum = []
    t = 0.0
    for w in weights:
        t += w
        cum.append(t)
    sizes, sw = zip(*IMIX)
    size_cum = []
    t = 0
    for w in sw:
        t += w
        size_cum.append(t)

    seen = bytearray(a.flows)
    cache = {}
    eth = {4: b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00",
           6: b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x86\xdd"}

    def frame(fi, rev, size, flags):
        key = (fi, rev, size, flags)
        f = cache.get(key)
        if f is not None:
            return f
        v6, c, s, proto, cp, sp = flows[fi]
        src, dst, sport, dport = (s, c, sp, cp) if rev else (c, s, cp, sp)
        l4len = 20 if proto == 6 else 8
        iplen = 40 if v6 else 20
        pay = max(0, size - 14 - iplen - l4len)
        if proto == 6:
            l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0)
        else:
            l4 = struct.pack("!HHHH", sport, dport, 8 + pay, 0)
        if v6:
            ip = struct.pack("!IHBB", 6 << 28, l4len + pay, proto, 64) + src + dst
            f = eth[6] + ip + l4
        else:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4len + pay, 0, 0, 64, proto, 0, src, dst)
            ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
            f = eth[4] + ip + l4
        f = (f + bytes(max(0, size - len(f))))[: a.snaplen]
        if len(cache) < 2_000_000:
            cache[key] = f
        return f

    out = open(a.out, "wb")
    out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, a.snaplen, 1))  # ns pcap
    ns = int(1_700_000_000 * 1e9)
    step = int(1e9 / a.pps)
    chunk = 65536
    done = 0
    buf = []
    while done < a.packets:
        k = min(chunk, a.packets - done)
        picks = rnd.choices(range(a.flows), cum_weights=cum, k=k)
        for fi in picks:
            size = sizes[bisect.bisect_left(size_cum, rnd.random() * size_cum[-1])]
            if not seen[fi]:
                seen[fi] = 1
                rev, flags = False, 0x02
                size = 74 if flows[fi][0] else 60  # bare SYN (v6 / v4)
            else:
                rev, flags = rnd.random() < 0.4, 0x10
            fr = frame(fi, rev, size, flags if flows[fi][3] == 6 else 0)
            buf.append(struct.pack("<IIII", ns // 1_000_000_000, ns % 1_000_000_000, len(fr), size))
            buf.append(fr)
            ns += step
        out.write(b"".join(buf))
        buf.clear()
        done += k
    out.close()
    print(f"gen_pcap: {a.packets} packets, {sum(seen)} flows with packets -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
