#!/usr/bin/python3
"""Trains the c2-server detection model from the labelled captures in ../shared/data.

  scripts/train.py [--data DIR] [--bin build/ctrl/linesight] [--out detect/models]

1. `linesight replay CAPTURE --features-out` for each capture (fixed hash seed, default
   rules; no TI feeds: they are a label source here, as features they would leak it).
2. Labels: a row is positive when its server is a known C&C of that capture — the
   Stratosphere test-cc beacon hosts (named in the captures' descriptions) and the
   Emotet / TrickBot C&C servers that threat-intel feeds list around the captures' dates
   (executemalware, maltrail in ../shared/data/ti). Everything else is negative,
   including the 35 MB application mix (where the same C&C servers reappear, they are
   positive: the mix contains those captures).
3. Leave-one-capture-out: each capture is scored by a model trained without it (no
   capture in both train and test); precision, recall, ROC-AUC and a confusion table over
   the held-out rows, and per capture whether its C&C server is flagged.
4. The final model on every capture → OUT/c2-server.json and a model card
   OUT/c2-server.md (data, features, metrics, date).
5. Ablation of partner enriched features: each capture is also a partner sensor — it is
   replayed with the expert rule apps only (no model: nothing learnt from the labels) and
   its TI export (indicators.json) is what it shares. Every capture's rows then get the
   partner_* columns from the other captures' exports (a sensor never receives its own),
   and the same leave-one-capture-out evaluation runs with and without those columns.
   The model with them → OUT/c2-server-partner.json (for operators with partner feeds),
   the comparison in both model cards.
Uses Debian's python3-xgboost, python3-sklearn and python3-numpy.
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import xgboost as xgb
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# capture → its C&C servers (empty: negatives only)
CAPTURES = {
    "slips/test-cc-capture-1.pcap": {"141.193.213.21"},
    "slips/test-cc-capture-2.pcap": {"141.193.213.20"},
    "ndpi/emotet.pcap": {"138.197.147.101"},
    "ndpi/trickbot.pcap": {"82.118.225.196"},
    "ndpi/tor.pcap": set(),
    "slips/malicious-ssh-bruteforce.pcap": set(),
    "bench/ndpi-ether-concat.pcap": set(),
}
ALL_CC = set().union(*CAPTURES.values())

# Columns of docs/features.md the model reads (names must match detect/apps.cpp).
FEATURES = [
    "dport", "proto", "duration_s", "packets_fwd", "packets_rev", "bytes_fwd", "bytes_rev", "bytes_ratio",
    "size_mean", "pair_contacts", "pair_intervals", "pair_interval_mean_s", "pair_interval_cv",
    "pair_period_s", "pair_mode_share", "pair_periodicity", "sig_hit_count", "srv_clients",
    "srv_client_nets", "srv_ports", "srv_flows", "srv_failed_share", "srv_age_s", "cli_servers",
    "cli_periodic_servers",
]
PARAMS = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "subsample": 1.0,
          "min_child_weight": 2, "tree_method": "hist", "seed": 1, "nthread": 2}
ROUNDS = 60
THRESHOLD = 0.5
PARTNER_FEATURES = ["partner_reports", "partner_score", "partner_port_match", "partner_detections",
                    "partner_days_since_first", "partner_days_since_last"]
# The partner sensors' apps: expert rules only, so partner records carry no label knowledge.
PARTNER_APPS = ["beacon:server:rule:periodicity=0.8,contacts=10",
                "c2-signature:server:rule:sig=1401+1402+1501+1502+1503",
                "miner:server:rule:sig=1001+1002", "exploit:server:rule:sig=1101+1102+1201+1202+1203"]
RULES = os.path.join(ROOT, "features/rules/default.rules")


def value(row, name):
    if name == "sig_hit_count":
        return float(len([x for x in row["sig_hits"].split(";") if x]))
    v = row[name]
    return float(v) if v != "" else np.nan


def partner_export(binary, data, rel, tmp):
    """The capture as a partner sensor: expert apps, TI export; returns its indicators.json."""
    out = os.path.join(tmp, "partner", rel.replace("/", "_"))
    args = [binary, "replay", os.path.join(data, rel), "--quiet", "--hash-seed", "1", "--rules", RULES,
            "--detections-out", os.path.join(tmp, "partner.jsonl"), "--ti-export", out]
    for a in PARTNER_APPS:
        args += ["--app", a]
    subprocess.run(args, check=True)
    return os.path.join(out, "indicators.json")


def load(binary, data, rel, tmp, partners):
    out = os.path.join(tmp, rel.replace("/", "_") + ".csv")
    args = [binary, "replay", os.path.join(data, rel), "--quiet", "--hash-seed", "1", "--features-out", out,
            "--rules", RULES]
    for p in partners:
        args += ["--partner", p]
    subprocess.run(args, check=True)
    with open(out) as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    x = np.array([[value(r, n) for n in FEATURES + PARTNER_FEATURES] for r in rows], dtype=np.float32)
    cc = CAPTURES[rel] or ALL_CC
    y = np.array([1 if r["dst"] in cc else 0 for r in rows])
    servers = [r["dst"] for r in rows]
    return x, y, servers


def train(x, y, names=FEATURES):
    d = xgb.DMatrix(x, label=y, missing=np.nan, feature_names=names)
    pos = max(1, int(y.sum()))
    return xgb.train(dict(PARAMS, scale_pos_weight=float(len(y) - pos) / pos), d, num_boost_round=ROUNDS)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "ctrl", "linesight"))
    ap.add_argument("--out", default=os.path.join(ROOT, "detect", "models"))
    a = ap.parse_args()
    missing = [c for c in CAPTURES if not os.path.exists(os.path.join(a.data, c))]
    if missing:
        sys.exit(f"train.py: captures missing under {a.data}: {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        shared = {c: partner_export(a.bin, a.data, c, tmp) for c in CAPTURES}
        sets = {c: load(a.bin, a.data, c, tmp, [shared[o] for o in CAPTURES if o != c]) for c in CAPTURES}
    base_cols = list(range(len(FEATURES)))
    report, metrics = loco(sets, base_cols, FEATURES)
    report_p, metrics_p = loco(sets, None, FEATURES + PARTNER_FEATURES)
    final = train(np.vstack([s[0][:, base_cols] for s in sets.values()]), np.concatenate([s[1] for s in sets.values()]))
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "c2-server.json")
    final.save_model(path)
    final_p = train(np.vstack([s[0] for s in sets.values()]), np.concatenate([s[1] for s in sets.values()]),
                    FEATURES + PARTNER_FEATURES)
    path_p = os.path.join(a.out, "c2-server-partner.json")
    final_p.save_model(path_p)
    reach = {c: sum(1 for v in sets[c][0][:, len(FEATURES)] if v > 0) for c in CAPTURES}
    ablation = ["## Ablation: partner enriched features", "",
                "Each capture is also a partner sensor (expert rule apps only, its TI export shared); every "
                "capture's rows get partner_* columns from the other captures' exports. Leave-one-capture-out, "
                "threshold 0.5:", "",
                "| features | precision | recall | ROC-AUC | confusion |", "| --- | --- | --- | --- | --- |",
                f"| without partner_* (c2-server.json) | {metrics['precision']} | {metrics['recall']} | "
                f"{metrics['roc_auc']} | {metrics['confusion']} |",
                f"| with partner_* (c2-server-partner.json) | {metrics_p['precision']} | {metrics_p['recall']} | "
                f"{metrics_p['roc_auc']} | {metrics_p['confusion']} |", "",
                "| held-out capture | rows with a partner report | its C&C flagged without / with | "
                "unlabelled servers flagged without / with |", "| --- | --- | --- | --- |"]
    for r0, r1 in zip(report, report_p):
        held, cc = r0[0], r0[3]
        mine = lambda r: ", ".join(s for s in r[4] if s in cc) or ("—" if not cc else "MISSED")
        ablation.append(f"| {held} | {reach[held]} | {mine(r0)} / {mine(r1)} | {len(r0[5])} / {len(r1[5])} |")
    ablation.append("")
    lines = [
        "# Model card: c2-server", "",
        f"Trained {datetime.date.today().isoformat()} by `scripts/train.py` (python3-xgboost "
        f"{xgb.__version__}); reproduce with `/usr/bin/python3 scripts/train.py`.", "",
        "Entity: server endpoint (a flow record's responder). Scored per feature row; the "
        "app `c2-server:server:detect/models/c2-server.json:0.5` flags a server once per hour.", "",
        "## Data", "",
        "Feature rows of `linesight replay` (docs/features.md v2, default rules, no TI) of:", "",
        "| capture | rows | positive rows | C&C servers (label) |", "| --- | --- | --- | --- |",
    ]
    for held, n, npos, cc, _, _ in report:
        lines.append(f"| {held} | {n} | {npos} | {', '.join(cc) or '—'} |")
    lines += ["", "Labels: the beacon hosts of the Stratosphere test-cc captures; the Emotet and TrickBot "
              "C&C servers listed by threat-intel feeds in ../shared/data/ti around the captures' dates. "
              "Small: four positive captures — the model learns beacon timing and server shape, not "
              "a malware family.", "",
              "## Features", "", ", ".join(f"`{f}`" for f in FEATURES), "",
              f"XGBoost {json.dumps(PARAMS)}, {ROUNDS} rounds, scale_pos_weight = negatives / positives.", "",
              "## Leave-one-capture-out evaluation (threshold 0.5)", "",
              f"Rows: precision {metrics['precision']}, recall {metrics['recall']}, ROC-AUC "
              f"{metrics['roc_auc']}; confusion: {metrics['confusion']}.", "",
              "| held-out capture | its C&C flagged | other labelled C&C flagged | unlabelled servers flagged |",
              "| --- | --- | --- | --- |"]
    for held, n, npos, cc, hit_cc, other in report:
        mine = [s for s in hit_cc if s in cc]
        lines.append(f"| {held} | {', '.join(mine) or ('—' if not cc else 'MISSED')} | "
                     f"{', '.join(s for s in hit_cc if s not in cc) or '—'} | {len(other)} |")
    lines += [""] + ablation
    card = os.path.join(a.out, "c2-server.md")
    with open(card, "w") as f:
        f.write("\n".join(lines) + "\n")
    card_p = os.path.join(a.out, "c2-server-partner.md")
    with open(card_p, "w") as f:
        f.write("\n".join([
            "# Model card: c2-server-partner", "",
            f"Trained {datetime.date.today().isoformat()} by `scripts/train.py` with c2-server.json, on the same "
            "rows plus the partner_* columns (docs/features.md v3); reproduce with `/usr/bin/python3 "
            "scripts/train.py`. For sensors started with `--partner FILE`: "
            "`--app c2-server:server:detect/models/c2-server-partner.json:0.5`. Data, labels and "
            "parameters: c2-server.md.", "",
            "## Features", "", ", ".join(f"`{f}`" for f in FEATURES + PARTNER_FEATURES), ""] + ablation) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {path}, {card}, {path_p} and {card_p}")


def loco(sets, cols, names):
    """Leave-one-capture-out over the columns `cols` (None: all): per-capture report and metrics."""
    pick = (lambda x: x) if cols is None else (lambda x: x[:, cols])
    report, ys, ps = [], [], []
    for held in CAPTURES:
        rest = [c for c in CAPTURES if c != held]
        bst = train(np.vstack([pick(sets[c][0]) for c in rest]), np.concatenate([sets[c][1] for c in rest]), names)
        x, y, servers = sets[held]
        p = bst.predict(xgb.DMatrix(pick(x), missing=np.nan, feature_names=names))
        ys.append(y)
        ps.append(p)
        flagged = sorted({s for s, v in zip(servers, p) if v >= THRESHOLD})
        cc = CAPTURES[held]
        report.append((held, len(y), int(y.sum()), sorted(cc), [s for s in flagged if s in ALL_CC],
                       [s for s in flagged if s not in ALL_CC]))
    y, p = np.concatenate(ys), np.concatenate(ps)
    pred = (p >= THRESHOLD).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    metrics = {"rows": int(len(y)), "positives": int(y.sum()),
               "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
               "recall": round(float(recall_score(y, pred, zero_division=0)), 4),
               "roc_auc": round(float(roc_auc_score(y, p)), 4),
               "confusion": {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}}
    return report, metrics


if __name__ == "__main__":
    main()
