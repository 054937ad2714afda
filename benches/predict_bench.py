"""In-query PREDICT throughput of a native GBDT against LightGBM, ONNX Runtime and lleaves on
the same trees' workload, at 1 and 2 threads (a benchmark, not a test).

Usage (the bench venv of models_bench.py, plus lleaves):
    ~/.cache/prognos-bench-venv/bin/pip install lightgbm scikit-learn pandas onnxmltools \
        onnxruntime==1.31.1 lleaves llvmlite==0.43.0
    CARGO_TARGET_DIR=... ~/.cache/prognos-bench-venv/bin/python benches/predict_bench.py [--rows N]

The data: N rows of 20 float32 columns (a Parquet file) and a binary label from a noisy
logistic function of them. prognos trains `USING gbdt` (300 trees, 31 leaves) on a quarter of
the rows and LightGBM trains the same settings on the same rows; then each scores all N rows:
prognos as `SELECT count(PREDICT(...)) FROM t` over pgwire (the Parquet scan and the query
around the model included), LightGBM `booster.predict`, ONNX Runtime on LightGBM's trees
converted by onnxmltools, and lleaves (LightGBM's trees compiled by LLVM). "1 thread" starts the
server with one DataFusion partition and one rayon thread; "2 threads" is the default on this
2-core machine. Best of 3.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))
from conftest import Server  # noqa: E402
from models_bench import fetch  # noqa: E402

FEATURES = [f"f{i}" for i in range(20)]
PARAMS = "num_trees = 300, learning_rate = 0.05, num_leaves = 31, validation_fraction = 0, early_stopping_rounds = 0"


def best_of(f, n=3):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic(path, n, seed=11):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    w = rng.normal(size=len(FEATURES))
    logit = x @ w * 0.5 + np.sin(x[:, 0] * 2) + x[:, 1] * x[:, 2] + rng.normal(size=n)
    cols = {f: x[:, i] for i, f in enumerate(FEATURES)}
    cols["y"] = logit > 0
    cols["part"] = np.arange(n) % 4
    pq.write_table(pa.table(cols), path, row_group_size=128 * 1024)
    return x


def threads_env(threads):
    return {"RAYON_NUM_THREADS": str(threads), "PROGNOS__ENGINE__TARGET_PARTITIONS": str(threads)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.rows
    ours = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "synth.parquet")
        x = synthetic(path, n)
        server = Server(demo=False, env=threads_env(2))
        try:
            with psycopg.connect(server.dsn, autocommit=True) as pg:
                pg.execute(f"CREATE EXTERNAL TABLE synth STORED AS PARQUET LOCATION '{path}'")
                t0 = time.perf_counter()
                pg.execute(f"CREATE MODEL m PREDICT y USING gbdt WITH ({PARAMS}) "
                           f"AS SELECT {', '.join(FEATURES)}, y FROM synth WHERE part = 0")
                print(f"prognos CREATE MODEL: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            train = fetch(server, f"SELECT {', '.join(FEATURES)}, y FROM synth WHERE part = 0")
            sql = f"SELECT count(PREDICT('m', {', '.join(FEATURES)})) FROM synth"
            for threads in (2, 1):
                server.stop()
                server.env.update(threads_env(threads))
                server.start()
                with psycopg.connect(server.dsn, autocommit=True) as pg:
                    assert pg.execute(sql).fetchone()[0] == n
                    ours[threads] = best_of(lambda: pg.execute(sql).fetchone())
        finally:
            server.close()

        df = train.to_pandas()
        y = df.pop("y").astype(np.int64)
        model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, n_jobs=2, verbose=-1)
        model.fit(df, y)
        booster = model.booster_
        lgb1 = best_of(lambda: booster.predict(x, num_threads=1))
        lgb2 = best_of(lambda: booster.predict(x, num_threads=2))

        import onnxmltools
        import onnxruntime as ort
        from onnxmltools.convert.common.data_types import FloatTensorType
        onx = onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
                                           zipmap=False, target_opset=15)
        ort_times = {}
        for t in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.log_severity_level = 3
            sess = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
            ort_times[t] = best_of(lambda: sess.run(None, {"input": x}))

        import lleaves
        model_file = os.path.join(tmp, "lgb.txt")
        booster.save_model(model_file)
        compiled = lleaves.Model(model_file=model_file)
        compiled.compile(cache=os.path.join(tmp, "lleaves.so"))
        xd = x.astype(np.float64)
        ll1 = best_of(lambda: compiled.predict(xd, n_jobs=1))
        ll2 = best_of(lambda: compiled.predict(xd, n_jobs=2))

    def rate(s):
        return "—" if s is None else f"{n / s:,.0f}"

    print(f"\nPREDICT over {n:,} rows × 20 float columns, 300 trees × 31 leaves, best of 3 (rows/s):")
    print("| engine | 1 thread | 2 threads |\n|---|---|---|")
    print(f"| prognos `SELECT count(PREDICT(...))` over pgwire (Parquet scan included) | {rate(ours[1])} | {rate(ours[2])} |")
    print(f"| LightGBM `booster.predict` | {rate(lgb1)} | {rate(lgb2)} |")
    print(f"| ONNX Runtime (LightGBM trees via onnxmltools) | {rate(ort_times[1])} | {rate(ort_times[2])} |")
    print(f"| lleaves (LightGBM trees compiled by LLVM) | {rate(ll1)} | {rate(ll2)} |")


if __name__ == "__main__":
    main()
