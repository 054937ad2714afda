"""Imported ONNX models scored inside a query against Python onnxruntime alone on the same
graph and batch size, at 1 and 2 threads (a benchmark, not a test).

Usage (the bench venv of predict_bench.py, plus skl2onnx):
    ~/.cache/prognos-bench-venv/bin/pip install lightgbm scikit-learn onnxmltools skl2onnx \
        onnxruntime==1.31.1
    CARGO_TARGET_DIR=... ~/.cache/prognos-bench-venv/bin/python benches/onnx_bench.py [--rows N]

The data: N rows of 20 float32 columns (a Parquet file). Two graphs: LightGBM's 300 trees × 31
leaves converted by onnxmltools (label + probabilities), and a scikit-learn MLP (20 → 64 → 64 →
2, label + probabilities) converted by skl2onnx. Each is imported with `CREATE MODEL m FROM`,
then scored as `SELECT count(PREDICT_PROBA(...)) FROM t` over pgwire (the Parquet scan, the
column-to-tensor copy and the query around the graph included); onnxruntime runs the same
graph in Python over the same rows in batches of the server's batch size (8192). "1 thread":
one DataFusion partition (prognos) and one intra-op thread (onnxruntime); "2 threads": two
partitions each running its own single-threaded session, and two intra-op threads. Best of 3.
The server loads the onnxruntime library of this venv (ORT_DYLIB_PATH), so both sides run the
same build.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))
from conftest import Server  # noqa: E402
from predict_bench import FEATURES, best_of  # noqa: E402

BATCH = 8192


def synthetic(path, n, seed=11):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    w = rng.normal(size=len(FEATURES))
    y = (x @ w * 0.5 + np.sin(x[:, 0] * 2) + x[:, 1] * x[:, 2] + rng.normal(size=n)) > 0
    pq.write_table(pa.table({f: x[:, i] for i, f in enumerate(FEATURES)}), path,
                   row_group_size=128 * 1024)
    return x, y.astype(np.int64)


def graphs(x, y, tmp):
    """The two graphs as files: (name, path)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    fit_rows = slice(0, 50_000)
    trees = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, verbose=-1)
    trees.fit(x[fit_rows], y[fit_rows])
    onx = onnxmltools.convert_lightgbm(trees, initial_types=[("input", MlFloat([None, x.shape[1]]))],
                                       zipmap=False, target_opset=15)
    out = []
    path = os.path.join(tmp, "lightgbm.onnx")
    Path(path).write_bytes(onx.SerializeToString())
    out.append(("lightgbm_300x31", path))
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=20, random_state=0)
    mlp.fit(x[fit_rows], y[fit_rows])
    onx = to_onnx(mlp, x[:1], options={id(mlp): {"zipmap": False}}, target_opset=17)
    path = os.path.join(tmp, "mlp.onnx")
    Path(path).write_bytes(onx.SerializeToString())
    out.append(("mlp_20_64_64_2", path))
    return out


def threads_env(threads):
    return {"PROGNOS__ENGINE__TARGET_PARTITIONS": str(threads)}


def onnxruntime_alone(path, x, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run():
        for start in range(0, len(x), BATCH):
            sess.run(None, {name: x[start:start + BATCH]})

    return best_of(run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.rows
    lib = Path(ort.__file__).parent / "capi" / f"libonnxruntime.so.{ort.__version__}"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "synth.parquet")
        x, y = synthetic(path, n)
        models = graphs(x, y, tmp)
        server = Server(demo=False, env={"ORT_DYLIB_PATH": str(lib), **threads_env(2)})
        try:
            with psycopg.connect(server.dsn, autocommit=True) as pg:
                pg.execute(f"CREATE EXTERNAL TABLE synth STORED AS PARQUET LOCATION '{path}'")
                for name, graph in models:
                    pg.execute(f"CREATE MODEL {name} FROM '{graph}'")
            ours = {}
            # The query around the graph: the scan and the columns' trip through the plan.
            scan = f"SELECT count({' + '.join(FEATURES)}) FROM synth"
            for threads in (2, 1):
                server.stop()
                server.env.update(threads_env(threads))
                server.start()
                with psycopg.connect(server.dsn, autocommit=True) as pg:
                    ours[("scan", threads)] = best_of(lambda: pg.execute(scan).fetchone())
                    for name, _ in models:
                        sql = f"SELECT count(PREDICT_PROBA('{name}', {', '.join(FEATURES)})) FROM synth"
                        assert pg.execute(sql).fetchone()[0] == n
                        ours[(name, threads)] = best_of(lambda: pg.execute(sql).fetchone())
        finally:
            server.close()
        for name, graph in models:
            for threads in (1, 2):
                alone = onnxruntime_alone(graph, x, threads)
                results.append((name, threads, ours[(name, threads)], alone))
        results.sort(key=lambda r: (r[0], r[1]))

    print(f"\nImported ONNX models over {n:,} rows × 20 float columns, batches of {BATCH}, "
          "best of 3 (rows/s):")
    print("| graph | threads | prognos `SELECT count(PREDICT_PROBA(...))` | onnxruntime alone | ratio |")
    print("|---|---|---|---|---|")
    for name, threads, ours_s, alone_s in results:
        print(f"| {name} | {threads} | {n / ours_s:,.0f} | {n / alone_s:,.0f} | {alone_s / ours_s:.2f}× |")
    for threads in (1, 2):
        print(f"| (no model: `SELECT count(f0 + … + f19)`) | {threads} | {n / ours[('scan', threads)]:,.0f} | | |")


if __name__ == "__main__":
    main()
