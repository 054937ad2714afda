"""`USING mlp` against scikit-learn's MLP in the same run (a benchmark, not a test).

Usage (scikit-learn in the bench venv, which also sees psycopg / pyarrow / adbc):
    ~/.cache/prognos-bench-venv/bin/pip install scikit-learn pandas
    CARGO_TARGET_DIR=... ~/.cache/prognos-bench-venv/bin/python benches/mlp_bench.py

Both sides train on the same rows and are scored on the same held-out rows: the split is made in
SQL (a hash of the row, 13/16 train), and the training table is read back through Flight SQL
for scikit-learn. Same network on both sides: hidden layers 64 and 32, ReLU, Adam at learning
rate 1e-3, early stopping on a fifth of the training rows, seed fixed. scikit-learn's
preprocessing is what prognos does inside the model: numbers standardised, NULLs imputed at
the mean, categories one-hot (prognos learns embeddings instead), a regression's target
standardised. Two threads on both sides.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import psycopg
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Server  # noqa: E402
from models_bench import BANK_COLUMNS, SHARED, TELCO_CHURN_SQL, create_tables, fetch  # noqa: E402

SPLIT = "strpos('0123456789abcdef', substr(md5({key}), 1, 1)) - 1"


def frame(table, target):
    df = table.to_pandas()
    y = df.pop(target)
    cats = [f.name for f in table.schema if f.name != target
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type))]
    for c in cats:
        df[c] = df[c].fillna("(null)")
    return df, y, cats


def sklearn_mlp(task, cats, columns):
    nums = [c for c in columns if c not in cats]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), nums),
        ("cat", OneHotEncoder(handle_unknown="ignore"), cats),
    ])
    cls = MLPClassifier if task == "classification" else MLPRegressor
    net = cls(hidden_layer_sizes=(64, 32), learning_rate_init=1e-3, batch_size=128, max_iter=200,
              early_stopping=True, validation_fraction=0.2, n_iter_no_change=12, random_state=7)
    if task == "regression":
        # prognos standardises the target inside the model; so does this.
        net = TransformedTargetRegressor(regressor=net, transformer=StandardScaler())
    return make_pipeline(pre, net)


def run_case(server, pg, name, source_sql, target, task, positive=None):
    cur = pg.execute(f"SELECT * FROM ({source_sql}) s LIMIT 0")
    cols = ", ".join(f'"{d.name}"' for d in cur.description if d.name != "__split")
    pg.execute(f"CREATE TABLE {name}_train AS SELECT {cols} FROM ({source_sql}) s WHERE __split < 13")
    pg.execute(f"CREATE TABLE {name}_test AS SELECT {cols} FROM ({source_sql}) s WHERE __split >= 13")
    t0 = time.perf_counter()
    pg.execute(f"CREATE MODEL {name} PREDICT \"{target}\" USING mlp WITH (seed = 7) AS SELECT * FROM {name}_train")
    ours_fit = time.perf_counter() - t0
    rows = dict(pg.execute(f"SELECT metric, value FROM evaluate('{name}', TABLE {name}_test)").fetchall())
    metric = "auc" if task == "classification" else "r2"
    ours = rows.get(metric)
    if ours is None:
        raise SystemExit(f"{name}: EVALUATE gave {rows}")
    epochs = pg.execute(f"SELECT params FROM system.model_trials WHERE name = '{name}' AND chosen").fetchone()

    xtr, ytr, cats = frame(fetch(server, f"SELECT * FROM {name}_train"), target)
    xte, yte, _ = frame(fetch(server, f"SELECT * FROM {name}_test"), target)
    model = sklearn_mlp(task, cats, list(xtr.columns))
    if task == "classification":
        ytr = (ytr.astype(str) == positive).astype(int)
        yte = (yte.astype(str) == positive).astype(int)
    t0 = time.perf_counter()
    model.fit(xtr, ytr)
    sk_fit = time.perf_counter() - t0
    if task == "classification":
        theirs = roc_auc_score(yte, model.predict_proba(xte)[:, 1])
    else:
        theirs = r2_score(yte, model.predict(xte))
    return dict(case=name, metric=metric, train=len(xtr), test=len(xte), ours_fit=ours_fit, sk_fit=sk_fit,
                ours=ours, theirs=theirs, sk_iters=getattr(model[-1], "regressor_", model[-1]).n_iter_,
                params=epochs[0] if epochs else "")


def main():
    server = Server(demo=False)
    results = []
    try:
        with psycopg.connect(server.dsn, autocommit=True) as pg:
            has_bank = create_tables(pg)
            results.append(run_case(server, pg, "churn", TELCO_CHURN_SQL, "churn", "classification", "Yes"))
            if has_bank:
                cols = BANK_COLUMNS
                key = f"concat_ws(',', {cols}, duration)"
                results.append(run_case(server, pg, "bank", f"SELECT {cols}, y, {SPLIT.format(key=key)} AS __split FROM bank",
                                        "y", "classification", "yes"))
                housing = SHARED / "regression" / "california_housing.csv"
                pg.execute(f"CREATE EXTERNAL TABLE housing STORED AS CSV LOCATION '{housing}' OPTIONS ('format.has_header' 'true')")
                key = "concat_ws(',', longitude, latitude, housing_median_age, total_rooms, population, median_income)"
                results.append(run_case(server, pg, "housing", f"SELECT *, {SPLIT.format(key=key)} AS __split FROM housing",
                                        "median_house_value", "regression"))
    finally:
        server.close()

    print("\n| case | train rows | test rows | metric | prognos `USING mlp` | scikit-learn MLP | Δ | prognos fit | "
          "scikit-learn fit | time ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['train']:,} | {r['test']:,} | {r['metric']} | {r['ours']:.4f} | {r['theirs']:.4f} | "
              f"{r['ours'] - r['theirs']:+.4f} | {r['ours_fit']:.1f} s | {r['sk_fit']:.1f} s | "
              f"{r['ours_fit'] / r['sk_fit']:.2f}× |")
    for r in results:
        print(f"{r['case']}: prognos {r['params']}; scikit-learn stopped after {r['sk_iters']} epochs")


if __name__ == "__main__":
    main()
