#!/usr/bin/env python3
"""The feature stage's prefetches are in the binary. GCC 12 deletes a call to a function
whose only effect is __builtin_prefetch when it does not inline it (it takes it for pure):
a refactoring once removed every table prefetch without changing any output, and only a
benchmark showed it. This reads the optimised binary's code and counts prefetch
instructions in the functions that issue them (docs/performance.md, tenth session)."""
import os
import re
import shutil
import subprocess

from lsdata import BIN, check, finish, skip

if os.environ.get("LINESIGHT_OPTIMIZED") != "1":
    skip("not an optimised, unsanitised build: its code says nothing about the release build")
if not shutil.which("objdump"):
    skip("objdump not installed (binutils)")

# The functions that issue the table prefetches (replay's consumer, the DPDK workers'
# stage), and how many prefetch instructions each keeps, its own plus those of the checked
# functions it calls or jumps to (GCC may or may not inline the stage into the consumer):
# per table a set's metadata line and the slot-line loop (pair, first contact and server;
# client). The build that lost them had none.
WANT = {
    "ls::FeatureWriter::prefetch(ls::FlowRecord const&, bool)": 8,
    "ls::FeatureStage::prefetch(ls::FlowRecord const&, bool)": 6,
    "ls::FeatureStage::prefetch_client(ls::FlowRecord const&, bool)": 2,
}
dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", BIN],
                     capture_output=True, text=True, check=True).stdout
counts, callees, seen, name = {}, {}, set(), None
for line in dis.splitlines():
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        name = m.group(1)
        seen.add(name)
        continue
    if name not in WANT:
        continue
    if re.search(r"\tprefetch(t0|t1|t2|nta|w|wt1)?\s", line):
        counts[name] = counts.get(name, 0) + 1
    c = re.search(r"\t(call|jmp)\s+[0-9a-f]+ <(.*)>$", line)
    if c and c.group(2) in WANT and c.group(2) != name:
        callees.setdefault(name, set()).add(c.group(2))
for fn, least in WANT.items():
    if fn not in seen:
        check(False, f"{fn} not in the binary (renamed? update this test)")
        continue
    n = counts.get(fn, 0) + sum(counts.get(c, 0) for c in callees.get(fn, ()))
    via = f" (with {', '.join(sorted(callees[fn]))})" if fn in callees else ""
    check(n >= least, f"{fn}: {n} prefetch instructions{via} (at least {least})")
finish()
