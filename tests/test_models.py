#!/usr/bin/env python3
"""Tree-ensemble engine against XGBoost itself (Debian's python3-xgboost): models trained
here (binary:logistic, multi:softprob, multi:softmax, reg:squarederror; shallow and deep;
features with missing values), saved as JSON, scored by `linesight model predict` on
thousands of vectors including missing ones; every prediction within 1e-6 of
Booster.predict. Bad model files are refused with a message naming what is wrong."""
import json
import os
import subprocess
import sys
import tempfile

from lsdata import BIN, check, finish, skip

try:
    import numpy as np
    import xgboost as xgb
except ImportError as e:
    skip(f"{e.name} missing: install python3-xgboost python3-numpy (scripts/setup.sh does)")


def data(rng, n, f, missing):
    x = rng.normal(size=(n, f)).astype(np.float32)
    x[:, 0] = np.round(x[:, 0], 1)  # ties at split thresholds: the `<` must match XGBoost's
    if missing:
        x[rng.random(size=x.shape) < missing] = np.nan
    return x


def ours(model, x, names=None, engine_env=None):
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        if names:
            f.write(",".join(names) + "\n")
        for row in x:
            f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n")
        path = f.name
    env = dict(os.environ, **(engine_env or {}))
    r = subprocess.run([BIN, "model", "predict", model, path], capture_output=True, text=True, env=env)
    os.unlink(path)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])


def main():
    rng = np.random.default_rng(7)
    cases = [
        ("binary:logistic", dict(objective="binary:logistic", n_estimators=100, max_depth=6), 2, 0.1),
        ("binary:logistic deep", dict(objective="binary:logistic", n_estimators=300, max_depth=8,
                                      base_score=0.3), 2, 0.3),
        ("multi:softprob", dict(objective="multi:softprob", n_estimators=60, max_depth=5), 4, 0.1),
        ("multi:softmax", dict(objective="multi:softmax", n_estimators=30, max_depth=4), 3, 0.0),
        ("reg:squarederror", dict(objective="reg:squarederror", n_estimators=80, max_depth=6), 0, 0.2),
    ]
    with tempfile.TemporaryDirectory() as d:
        for name, params, classes, missing in cases:
            x = data(rng, 6000, 12, missing)
            v = np.nan_to_num(x)
            score = v[:, 0] * 2 + v[:, 1] - v[:, 2] ** 2
            if classes == 0:
                y = score
            elif classes == 2:
                y = (score + rng.normal(size=len(score)) > 0).astype(int)
            else:
                y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
            p = dict(params, tree_method="hist", random_state=1)
            obj = p.pop("objective")
            n_est = p.pop("n_estimators")
            train = {"objective": obj, "max_depth": p["max_depth"], "tree_method": "hist", "seed": 1}
            if "base_score" in p:
                train["base_score"] = p["base_score"]
            if classes > 2:
                train["num_class"] = classes
            names = [f"feat_{i}" for i in range(x.shape[1])]
            dtrain = xgb.DMatrix(x[:4000], label=y[:4000], missing=np.nan, feature_names=names)
            bst = xgb.train(train, dtrain, num_boost_round=n_est)
            path = os.path.join(d, name.replace(":", "_").replace(" ", "_") + ".json")
            bst.save_model(path)
            test = x[4000:]
            want = bst.predict(xgb.DMatrix(test, missing=np.nan, feature_names=names))
            want = want.reshape(len(test), -1)
            nmiss = int(np.isnan(test).any(axis=1).sum())
            trees = len(bst.get_dump())
            # `model predict` scores through the batch kernel: the best the CPU runs, then
            # each lesser one (LINESIGHT_BATCH_ENGINE caps it), as `model check` names it.
            checked = []
            for cap in ("avx512bins", "avx512", "avx2bins", "avx2", "scalar"):
                env = {"LINESIGHT_BATCH_ENGINE": cap}
                engine = subprocess.run([BIN, "model", "check", path], capture_output=True, text=True,
                                        env={**os.environ, **env}).stdout
                engine = engine.rsplit("batch engine ", 1)[-1].strip()
                if engine != cap:  # the CPU lacks it, or the model keeps the walk: a lower cap runs it
                    continue
                got = ours(path, test, names, env)
                err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
                check(err <= 1e-6, f"{name}: {len(test)} vectors ({nmiss} with missing values), {trees} trees, "
                                   f"{engine} engine: max |ours - XGBoost| = {err:.2g}")
                checked.append(engine)
            # Every CPU runs the scalar walk: a `model check` whose engine line went
            # missing would otherwise skip every comparison above.
            check("scalar" in checked, f"{name}: engines compared with XGBoost: {checked}")
        # Columns by name: a header in another order gives the same predictions.
        perm = list(reversed(range(12)))
        got2 = ours(path, test[:, perm], [names[i] for i in perm])
        check(np.max(np.abs(got2 - got)) == 0, "CSV columns matched to the model's feature names by header")

        bad = {
            "not json": ("{", "not JSON"),
            "no learner": ("{}", "missing 'learner'"),
            # found by fuzz_model: a number out of double range, a value of the wrong type
            "huge number": ('{"learner": {"x": 1e99999}}', "not JSON"),
            "wrong type": ('{"learner": {"learner_model_param": {"base_score": "0.5", "num_feature": "3"}, '
                           '"objective": {"name": 7}}}', "type_error"),
            "objective": (None, "unsupported objective 'rank:pairwise'"),
            "short array": (None, "left_children: expected"),
            "feature range": (None, "split feature"),
            "cycle": (None, "reached twice"),
            # found by fuzz_model: a float where an index belongs, out of int64 range (UB to convert)
            "float index": (None, "not an integer in range"),
        }
        base = json.load(open(os.path.join(d, "binary_logistic.json")))
        for what, (text, want) in bad.items():
            j = json.loads(json.dumps(base))
            tree = j["learner"]["gradient_booster"]["model"]["trees"][0]
            if what == "objective":
                j["learner"]["objective"]["name"] = "rank:pairwise"
            elif what == "short array":
                tree["left_children"] = tree["left_children"][:-1]
            elif what == "feature range":
                tree["split_indices"][0] = 99
            elif what == "float index":
                tree["left_children"][0] = 1e30
            elif what == "cycle":
                tree["left_children"][1] = 0 if tree["left_children"][1] != -1 else tree["left_children"][1]
                tree["left_children"][0], tree["right_children"][0] = 1, 1
            p = os.path.join(d, "bad.json")
            with open(p, "w") as f:
                f.write(text if text is not None else json.dumps(j))
            r = subprocess.run([BIN, "model", "check", p], capture_output=True, text=True)
            check(r.returncode == 2 and want in r.stderr, f"bad model ({what}) refused: {r.stderr.strip()[:110]}")
    finish()


if __name__ == "__main__":
    main()
