#!/usr/bin/python3
"""Plot a `linesight report --json` file: per-feed overlap with our reported servers,
and what our detections add (unknown to feeds, seen first, reliability of our unique
entries). Usage: report_plot.py REPORT.json OUT.png  (Debian's python3-matplotlib)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display on a sensor
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        r = json.load(f)
    s = r["summary"]
    feeds = r["feed_overlap"][:20]
    fig, (ax1, ax2, ax3) = plt.subplots(
        1, 3, figsize=(15, max(4, 0.35 * len(feeds) + 2)),
        gridspec_kw={"width_ratios": [3, 2, 2]})

    names = [f["feed"] for f in feeds][::-1]
    pcts = [f["overlap_pct"] for f in feeds][::-1]
    ax1.barh(names or ["(no feed lists any)"], pcts or [0], color="#4477aa")
    for y, f in enumerate(feeds[::-1]):
        ax1.text(f["overlap_pct"] + 1, y, f'{f["ours"]}', va="center", fontsize=8)
    ax1.set_xlim(0, 100)
    ax1.set_xlabel(f'% of our {s["reported"]} reported servers listed by the feed')
    ax1.set_title("Overlap per feed")

    bars = [("reported", s["reported"], "#999999"), ("unknown to\nevery feed", s["unknown_to_feeds"], "#cc6677")]
    if "unknown_to_feeds_and_partner" in s:
        bars.append(("unknown to\nfeeds + partner", s["unknown_to_feeds_and_partner"], "#cc6677"))
    bars += [("listed", s["listed"], "#4477aa"), ("seen before\nany feed", s["seen_before_feeds"], "#117733")]
    labels, values, colors = zip(*bars)
    ax2.bar(labels, values, color=colors)
    for x, v in enumerate(values):
        ax2.text(x, v, str(v), ha="center", va="bottom")
    ax2.set_title("What our detections add")
    ax2.tick_params(axis="x", labelsize=8)

    buckets = r["unique_reliability"]
    ax3.bar([f'{b["from"]:.1f}-{b["to"]:.1f}' for b in buckets], [b["servers"] for b in buckets], color="#117733")
    ax3.set_xlabel("reliability")
    ax3.set_ylabel("servers")
    ax3.set_title("Reliability of servers only we report")

    judged = r.get("judged_on", "")
    fig.suptitle(f"linesight assessment report (reliability judged at {judged})", fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
