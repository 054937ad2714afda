"""CREATE MODEL / PREDICT against LightGBM in the same run (a benchmark, not a test).

Usage (LightGBM and scikit-learn in a venv that also sees psycopg / pyarrow / adbc):
    python3 -m venv --system-site-packages ~/.cache/prognos-bench-venv
    ~/.cache/prognos-bench-venv/bin/pip install lightgbm scikit-learn pandas onnxmltools onnxruntime
    CARGO_TARGET_DIR=... ~/.cache/prognos-bench-venv/bin/python benches/models_bench.py [--rows N]

Both sides train on the same rows and are scored on the same held-out rows: the split is made
in SQL (a hash of the row), the training table is read back through Flight SQL for LightGBM.
Settings on both sides: 300 trees, learning rate 0.05, 31 leaves, no early stopping, 2 threads.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import psycopg
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Server  # noqa: E402

SHARED = next((p for p in [ROOT.parent / "shared" / "data", Path("/work/shared/data")] if p.exists()), None)
PARAMS = "num_trees = 300, learning_rate = 0.05, num_leaves = 31, validation_fraction = 0, early_stopping_rounds = 0"


# The churn rows (TotalCharges parsed) with a hash split column, and bank marketing's
# features without the leaky `duration`; shared with mlp_bench.py.
TELCO_CHURN_SQL = (
    "SELECT gender, \"SeniorCitizen\", \"Partner\", \"Dependents\", tenure, \"PhoneService\", "
    "\"MultipleLines\", \"InternetService\", \"OnlineSecurity\", \"OnlineBackup\", \"DeviceProtection\", "
    "\"TechSupport\", \"StreamingTV\", \"StreamingMovies\", \"Contract\", \"PaperlessBilling\", "
    "\"PaymentMethod\", \"MonthlyCharges\", CAST(NULLIF(TRIM(\"TotalCharges\"), '') AS DOUBLE) AS total_charges, "
    "\"Churn\" AS churn, strpos('0123456789abcdef', substr(md5(\"customerID\"), 1, 1)) - 1 AS __split FROM telco")
BANK_COLUMNS = ("age, job, marital, education, \"default\", housing, loan, contact, month, day_of_week, campaign, "
                "pdays, previous, poutcome, \"emp.var.rate\", \"cons.price.idx\", \"cons.conf.idx\", euribor3m, \"nr.employed\"")


def create_tables(pg):
    """External tables `telco` (the repository's churn CSV) and, where the shared datasets
    are, `bank`; returns whether `bank` was created."""
    telco = ROOT / "tests" / "data" / "telco_customer_churn.csv"
    pg.execute(f"CREATE EXTERNAL TABLE telco STORED AS CSV LOCATION '{telco}' OPTIONS ('format.has_header' 'true')")
    if not SHARED:
        return False
    bank = SHARED / "classification" / "bank_additional_full.csv"
    pg.execute(f"CREATE EXTERNAL TABLE bank STORED AS CSV LOCATION '{bank}' OPTIONS ('format.has_header' 'true', "
               "'format.delimiter' ';', 'format.schema_infer_max_rec' '100000')")
    return True


def fetch(server, sql):
    with flightsql.connect(server.flight_uri) as conn:
        cur = conn.cursor()
        cur.execute(sql)
        t = cur.fetch_arrow_table()
        cur.close()
    return t


def to_frame(table, target):
    df = table.to_pandas()
    y = df.pop(target)
    for f in table.schema:
        if f.name != target and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                                 or pa.types.is_string_view(f.type)):
            df[f.name] = df[f.name].astype("category")
    return df, y


def run_case(server, pg, name, source_sql, target, positive):
    cur = pg.execute(f"SELECT * FROM ({source_sql}) s LIMIT 0")
    cols = ", ".join(f'"{d.name}"' for d in cur.description if d.name != "__split")
    pg.execute(f"CREATE TABLE {name}_train AS SELECT {cols} FROM ({source_sql}) s WHERE __split < 13")
    pg.execute(f"CREATE TABLE {name}_test AS SELECT {cols} FROM ({source_sql}) s WHERE __split >= 13")
    for t in ("train", "test"):
        pg.execute(f"CREATE VIEW {name}_{t}_v AS SELECT * FROM {name}_{t}")
    t0 = time.perf_counter()
    pg.execute(f"CREATE MODEL {name} PREDICT {target} USING gbdt WITH ({PARAMS}) AS SELECT * FROM {name}_train_v")
    ours_fit = time.perf_counter() - t0
    rows = pg.execute(f"SELECT metric, value FROM evaluate('{name}', TABLE {name}_test_v)").fetchall()
    ours_auc = dict(rows).get("auc")
    if ours_auc is None:
        raise SystemExit(f"{name}: EVALUATE gave {rows}")

    train = fetch(server, f"SELECT * FROM {name}_train_v")
    test = fetch(server, f"SELECT * FROM {name}_test_v")
    xtr, ytr = to_frame(train, target)
    xte, yte = to_frame(test, target)
    cats = {c: xtr[c].cat.categories for c in xtr.columns if str(xtr[c].dtype) == "category"}
    for c, cat in cats.items():
        xte[c] = xte[c].astype(pd_categorical(cat))
    ytr = (ytr.astype(str) == positive).astype(int)
    yte = (yte.astype(str) == positive).astype(int)
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, n_jobs=2, verbose=-1)
    t0 = time.perf_counter()
    model.fit(xtr, ytr)
    lgb_fit = time.perf_counter() - t0
    lgb_auc = roc_auc_score(yte, model.predict_proba(xte)[:, 1])
    return dict(case=name, train_rows=len(xtr), test_rows=len(xte), ours_fit=ours_fit, lgb_fit=lgb_fit,
                ours_auc=ours_auc, lgb_auc=lgb_auc, model=model, xte=xte)


def pd_categorical(categories):
    import pandas as pd
    return pd.CategoricalDtype(categories=categories)


def synthetic(path, n):
    rng = np.random.default_rng(42)
    cols = {f"f{i}": rng.normal(size=n).astype(np.float64) for i in range(18)}
    cols["c0"] = rng.choice(["a", "b", "c", "d", "e", "f"], size=n)
    cols["c1"] = rng.choice([f"k{i}" for i in range(40)], size=n)
    logit = (cols["f0"] * 1.2 - cols["f1"] ** 2 + np.sin(3 * cols["f2"]) + 0.5 * cols["f3"] * cols["f4"]
             + np.where(np.isin(cols["c0"], ["a", "c"]), 1.0, -0.5) + 0.03 * np.char.str_len(cols["c1"].astype(str))
             + rng.normal(scale=1.0, size=n))
    cols["y"] = logit > 0
    cols["__split"] = rng.integers(0, 16, size=n)
    pq.write_table(pa.table(cols), path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    server = Server(demo=False)
    results = []
    try:
        with psycopg.connect(server.dsn, autocommit=True) as pg:
            has_bank = create_tables(pg)
            results.append(run_case(server, pg, "churn", TELCO_CHURN_SQL, "churn", "Yes"))
            if has_bank:
                cols = BANK_COLUMNS
                results.append(run_case(server, pg, "bank",
                    f"SELECT {cols}, y, strpos('0123456789abcdef', substr(md5(concat_ws(',', {cols}, duration)), 1, 1)) - 1 AS __split FROM bank", "y", "yes"))
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "synth.parquet")
                synthetic(path, args.rows)
                pg.execute(f"CREATE EXTERNAL TABLE synth STORED AS PARQUET LOCATION '{path}'")
                synth = run_case(server, pg, "synth", "SELECT * FROM synth", "y", "True")
                results.append(synth)

                feats = ", ".join([f"f{i}" for i in range(18)] + ["c0", "c1"])
                n = pg.execute("SELECT count(*) FROM synth").fetchone()[0]
                best_ours = min(_timed(lambda: pg.execute(f"SELECT count(PREDICT('synth', {feats})) FROM synth").fetchone())
                                for _ in range(3))
                xall = fetch(server, f"SELECT {feats} FROM synth").to_pandas()
                for c in ("c0", "c1"):
                    xall[c] = xall[c].astype(pd_categorical(synth["model"].booster_.pandas_categorical[["c0", "c1"].index(c)]))
                best_lgb = min(_timed(lambda: synth["model"].booster_.predict(xall, num_threads=2)) for _ in range(3))
                best_onnx, onnx_gap = onnx_predict(synth["model"], xall)

            # Point PREDICT latency: a prepared single-row query over pgwire.
            args_sql = ", ".join(["%s"] * 19)
            row = ("Female", 0, "Yes", "No", 12, "Yes", "No", "Fiber optic", "No", "No", "No", "No", "Yes", "Yes",
                   "Month-to-month", "Yes", "Electronic check", 85.5, 1020.0)
            q = f"SELECT PREDICT_PROBA('churn', {args_sql})"
            lat = []
            for i in range(600):
                t0 = time.perf_counter()
                pg.execute(q, row, prepare=True).fetchone()
                if i >= 100:
                    lat.append((time.perf_counter() - t0) * 1000)
            lat.sort()
    finally:
        server.close()

    print("\n| case | train rows | test rows | CREATE MODEL gbdt | LightGBM fit | time ratio | AUC prognos | AUC LightGBM | ΔAUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['train_rows']:,} | {r['test_rows']:,} | {r['ours_fit']:.2f} s | {r['lgb_fit']:.2f} s | "
              f"{r['ours_fit'] / r['lgb_fit']:.2f}× | {r['ours_auc']:.4f} | {r['lgb_auc']:.4f} | {r['ours_auc'] - r['lgb_auc']:+.4f} |")
    print(f"\nPREDICT over {n:,} rows (300 trees × 31 leaves, 20 features incl. 2 categorical), best of 3:")
    print(f"| engine | seconds | rows/s |\n|---|---|---|")
    print(f"| prognos `SELECT count(PREDICT(...))` over pgwire | {best_ours:.2f} | {n / best_ours:,.0f} |")
    print(f"| LightGBM `booster.predict` (2 threads) | {best_lgb:.2f} | {n / best_lgb:,.0f} |")
    print(f"| ONNX Runtime, the LightGBM trees via onnxmltools (2 threads) | {best_onnx:.2f} | {n / best_onnx:,.0f} |")
    print(f"(ONNX vs LightGBM probabilities: largest difference {onnx_gap:.2g})")
    print(f"\nPoint PREDICT_PROBA over pgwire (psycopg, prepared, 500 calls): p50 {statistics.median(lat):.2f} ms, "
          f"p99 {lat[int(len(lat) * 0.99)]:.2f} ms")


def onnx_predict(model, x):
    """The same LightGBM trees converted to ONNX (onnxmltools) and run by ONNX Runtime on 2
    threads: best of 3 seconds, and the largest |P(ONNX) - P(LightGBM)| over the rows (ONNX
    keeps float32 thresholds where LightGBM compares doubles)."""
    import onnxmltools
    import onnxruntime as ort
    from onnxmltools.convert.common.data_types import FloatTensorType
    onx = onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
                                       zipmap=False, target_opset=15)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xf = x.copy()
    for c in xf.columns:
        if str(xf[c].dtype) == "category":
            xf[c] = xf[c].cat.codes.astype(np.float32).where(xf[c].cat.codes >= 0, np.nan)
    xf = xf.to_numpy(np.float32)
    best = min(_timed(lambda: sess.run(None, {"input": xf})) for _ in range(3))
    p_onnx = sess.run(None, {"input": xf})[1][:, 1]
    p_lgb = model.booster_.predict(x, num_threads=2)
    return best, float(np.abs(p_onnx - p_lgb).max())


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
