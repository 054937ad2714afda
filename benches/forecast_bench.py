"""FORECAST over M4 Hourly against statsforecast in the same run (a benchmark, not a test).

Usage (statsforecast in the bench venv, which also sees psycopg / pyarrow):
    ~/.cache/prognos-bench-venv/bin/pip install statsforecast
    CARGO_TARGET_DIR=... ~/.cache/prognos-bench-venv/bin/python benches/forecast_bench.py [--series N]

Both sides forecast the same 414 M4 Hourly series (or the first N), horizon 48, 95 % intervals,
season length 24 (MSTL: 24 and 168), on 2 cores. prognos runs `SELECT * FROM FORECAST(TABLE
m4, ...)` over pgwire against the real server (the series read from a Parquet file) with
method auto, ets, theta, mstl, arima and optimized_theta, and the global model as
`CREATE MODEL ... USING gbdt_lag` + `SELECT * FROM FORECAST('m')` (both timed together);
statsforecast runs AutoETS, AutoTheta and MSTL (AutoETS on the trend) — and AutoARIMA with
`--statsforecast AutoETS,AutoTheta,MSTL,AutoARIMA` (slow) — with n_jobs=2, after a warm-up fit that compiles its numba code (compile time is not
counted). Accuracy: sMAPE and MASE (in-sample seasonal differences at lag 24) against the M4
test set, OWA against the official M4 Naive2 numbers (sMAPE 18.383, MASE 2.395), and the share
of test values inside the 95 % intervals.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Server  # noqa: E402

SHARED = next((p for p in [ROOT.parent / "shared" / "data", Path("/work/shared/data")] if p.exists()), None)
H = 48
NAIVE2_SMAPE, NAIVE2_MASE = 18.383, 2.395


def read_wide(path, limit):
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            parts = line.strip().split(",")
            vals = [float(v.strip('"')) for v in parts[1:] if v.strip('"') not in ("", "NA")]
            rows.append((parts[0].strip('"'), np.array(vals)))
            if limit and len(rows) >= limit:
                break
    return rows


def scores(train, test, fc, lo, hi):
    sm, ms, cov, n = [], [], 0, 0
    for uid, y in train:
        a = test[uid]
        f = fc[uid]
        sm.append(np.mean(200 * np.abs(a - f) / (np.abs(a) + np.abs(f))))
        scale = np.mean(np.abs(y[24:] - y[:-24]))
        ms.append(np.mean(np.abs(a - f)) / scale)
        cov += int(np.sum((lo[uid] <= a) & (a <= hi[uid])))
        n += len(a)
    s, m = float(np.mean(sm)), float(np.mean(ms))
    return s, m, 0.5 * (s / NAIVE2_SMAPE + m / NAIVE2_MASE), cov / n


def run_prognos(pg, method):
    season = "" if method == "mstl" else ", season_length => 24"
    sql = (f"SELECT unique_id, ds, forecast, lower, upper FROM FORECAST(TABLE m4, time => 'ds', value => 'y', "
           f"id => 'unique_id', horizon => {H}, level => 95, method => '{method}'{season}) ORDER BY unique_id, ds")
    t0 = time.perf_counter()
    rows = pg.execute(sql).fetchall()
    secs = time.perf_counter() - t0
    return (secs, *collect(rows))


def collect(rows):
    out = {}
    for uid, _, f, lo, hi in rows:
        out.setdefault(uid, ([], [], []))
        out[uid][0].append(f)
        out[uid][1].append(lo)
        out[uid][2].append(hi)
    return ({k: np.array(v[i]) for k, v in out.items()} for i in range(3))


def run_prognos_global(pg):
    t0 = time.perf_counter()
    pg.execute("CREATE OR REPLACE MODEL m4_gbdt FORECAST y TIME ds BY unique_id USING gbdt_lag "
               f"WITH (horizon = {H}, level = 95, season_length = 24) AS SELECT unique_id, ds, y FROM m4")
    rows = pg.execute("SELECT unique_id, ds, forecast, lower, upper FROM FORECAST('m4_gbdt') "
                      "ORDER BY unique_id, ds").fetchall()
    secs = time.perf_counter() - t0
    return (secs, *collect(rows))


def run_statsforecast(df, name):
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta

    make = {
        "AutoETS": lambda: AutoETS(season_length=24),
        "AutoTheta": lambda: AutoTheta(season_length=24),
        "AutoARIMA": lambda: AutoARIMA(season_length=24),
        "MSTL": lambda: MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN")),
    }[name]
    warm = df[df.unique_id.isin(df.unique_id.unique()[:2])]
    StatsForecast(models=[make()], freq="h", n_jobs=1).forecast(df=warm, h=H, level=[95])
    sf = StatsForecast(models=[make()], freq="h", n_jobs=2)
    t0 = time.perf_counter()
    res = sf.forecast(df=df, h=H, level=[95])
    secs = time.perf_counter() - t0
    res = res.reset_index() if "unique_id" not in res.columns else res
    col = [c for c in res.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
    fc, lo, hi = {}, {}, {}
    for uid, g in res.groupby("unique_id"):
        g = g.sort_values("ds")
        fc[uid] = g[col].to_numpy()
        lo[uid] = g[f"{col}-lo-95"].to_numpy()
        hi[uid] = g[f"{col}-hi-95"].to_numpy()
    return secs, fc, lo, hi


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=0, help="first N series only (0 = all 414)")
    ap.add_argument("--statsforecast", default="AutoETS,AutoTheta,MSTL",
                    help="statsforecast models to run (comma-separated; AutoARIMA is slow)")
    ap.add_argument("--methods", default="auto,ets,theta,mstl,arima,optimized_theta,gbdt_lag",
                    help="prognos methods to run")
    args = ap.parse_args()
    if SHARED is None:
        raise SystemExit("shared/data not found")
    train = read_wide(SHARED / "timeseries" / "m4_hourly_train.csv", args.series)
    test = {uid: y[:H] for uid, y in read_wide(SHARED / "timeseries" / "m4_hourly_test.csv", args.series)}
    start = pd.Timestamp("2020-01-01")
    frames = [pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=len(y), freq="h"), "y": y})
              for uid, y in train]
    df = pd.concat(frames, ignore_index=True)
    results = []
    server = Server(demo=False)
    try:
        with tempfile.TemporaryDirectory() as tmp, psycopg.connect(server.dsn, autocommit=True) as pg:
            path = os.path.join(tmp, "m4.parquet")
            pq.write_table(pa.Table.from_pandas(df.assign(ds=df.ds.astype("datetime64[us]")), preserve_index=False),
                           path)
            pg.execute(f"CREATE EXTERNAL TABLE m4 STORED AS PARQUET LOCATION '{path}'")
            for method in [m for m in args.methods.split(",") if m]:
                if method == "gbdt_lag":
                    secs, fc, lo, hi = run_prognos_global(pg)
                    label = "prognos CREATE MODEL ... USING gbdt_lag + FORECAST('m')"
                else:
                    secs, fc, lo, hi = run_prognos(pg, method)
                    label = f"prognos FORECAST method => '{method}'"
                results.append((label, secs, *scores(train, test, fc, lo, hi)))
                print(results[-1], flush=True)
    finally:
        server.close()
    for name in [n for n in args.statsforecast.split(",") if n]:
        secs, fc, lo, hi = run_statsforecast(df, name)
        results.append((f"statsforecast {name}", secs, *scores(train, test, fc, lo, hi)))
        print(results[-1], flush=True)

    print(f"\nM4 Hourly, {len(train)} series, h = {H}, 2 cores")
    print("| run | wall time | sMAPE | MASE | OWA | 95 % coverage |")
    print("|---|---|---|---|---|---|")
    for name, secs, s, m, owa, cov in results:
        print(f"| {name} | {secs:.1f} s | {s:.3f} | {m:.3f} | {owa:.3f} | {cov:.3f} |")


if __name__ == "__main__":
    main()
