"""FORECAST against statsforecast in the same run (a benchmark, not a test).

Usage (statsforecast in the bench venv, which also sees psycopg / pyarrow):
    ~/.cache/prognos-bench-venv/bin/pip install statsforecast
    CARGO_TARGET_DIR=... ~/.cache/prognos-bench-venv/bin/python benches/forecast_bench.py \
        [--dataset m4_hourly|tourism_monthly|tourism_quarterly] [--half all|a|b] [--series N]

Datasets: M4 Hourly (414 series, horizon 48, season length 24; MSTL: 24 and 168), Tourism
monthly (366 series, horizon 24, season 12) and quarterly (427 series, horizon 8, season 4),
and daily bike-sharing rentals (one series, 12 origins 28 days apart, horizon 28, season 7;
`--half` does not apply there).
`--half a` / `--half b` keep the series at even / odd positions: defaults are chosen on one
half and reported on the other. Defaults below are for M4 Hourly; the Tourism sets differ
only in horizon, season and Naive2 reference.

Both sides forecast the same series (or the first N), 95 % intervals, on 2 cores. prognos runs `SELECT * FROM FORECAST(TABLE
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
# name: (file stem, horizon, season length, extra MSTL seasons, pandas frequency, Naive2 sMAPE,
# Naive2 MASE). Naive2: the official M4 Hourly numbers; Tourism's from its competition data
# (Naive2 forecasts scored as here).
DATASETS = {
    "m4_hourly": ("m4_hourly", 48, 24, [24, 168], "h", 18.383, 2.395),
    "tourism_monthly": ("tourism_monthly", 24, 12, [12], "MS", 22.932, 1.854),
    "tourism_quarterly": ("tourism_quarterly", 8, 4, [4], "QS", 16.992, 1.810),
    # Daily bike-sharing rentals (UCI, 2011-2012, the hourly counts summed per day): one
    # series forecast from BIKE_ORIGINS origins 28 days apart, each origin a "series" of its
    # own. No Naive2 reference: OWA is not reported.
    "bike_daily": ("bike_daily", 28, 7, [7, 365], "D", None, None),
}
BIKE_ORIGINS = 12


def bike_daily():
    """(train, test): the daily totals cut at each origin, and the 28 days after it."""
    hours = pd.read_csv(SHARED / "regression" / "bike_sharing_hour.csv")
    days = hours.groupby("dteday").cnt.sum().sort_index().to_numpy(dtype=float)
    train, test = [], {}
    for k in range(BIKE_ORIGINS):
        cut = len(days) - 28 * (k + 1)
        train.append((f"origin_{k:02d}", days[:cut]))
        test[f"origin_{k:02d}"] = days[cut:cut + 28]
    return train, test


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


def scores(ds, train, test, fc, lo, hi):
    _, _, season, _, _, naive2_smape, naive2_mase = ds
    sm, ms, cov, n = [], [], 0, 0
    for uid, y in train:
        a = test[uid]
        f = fc[uid]
        sm.append(np.mean(200 * np.abs(a - f) / (np.abs(a) + np.abs(f))))
        scale = np.mean(np.abs(y[season:] - y[:-season]))
        ms.append(np.mean(np.abs(a - f)) / scale)
        cov += int(np.sum((lo[uid] <= a) & (a <= hi[uid])))
        n += len(a)
    s, m = float(np.mean(sm)), float(np.mean(ms))
    owa = 0.5 * (s / naive2_smape + m / naive2_mase) if naive2_smape else float("nan")
    return s, m, owa, cov / n


def run_prognos(pg, ds, method):
    _, h, season, extra, _, _, _ = ds
    # MSTL finds its season lengths itself (24 and 168 on hourly data).
    season = "" if method == "mstl" and len(extra) > 1 else f", season_length => {season}"
    sql = (f"SELECT unique_id, ds, forecast, lower, upper FROM FORECAST(TABLE series, time => 'ds', "
           f"value => 'y', id => 'unique_id', horizon => {h}, level => 95, method => '{method}'{season}) "
           "ORDER BY unique_id, ds")
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


def run_prognos_model(pg, ds, using, options=""):
    """A stored model (`CREATE MODEL ... USING using WITH (..., options)`), then its forecast."""
    _, h, season, _, _, _, _ = ds
    extra = f", {options}" if options else ""
    t0 = time.perf_counter()
    # One model per method: a new version of one model would face the validation gate.
    name = f"series_{using}"
    pg.execute(f"CREATE OR REPLACE MODEL {name} FORECAST y TIME ds BY unique_id USING {using} "
               f"WITH (horizon = {h}, level = 95, season_length = {season}{extra}) "
               "AS SELECT unique_id, ds, y FROM series")
    rows = pg.execute(f"SELECT unique_id, ds, forecast, lower, upper FROM FORECAST('{name}') "
                      "ORDER BY unique_id, ds").fetchall()
    secs = time.perf_counter() - t0
    return (secs, *collect(rows))


def run_statsforecast(df, ds, name):
    from statsforecast import StatsForecast
    from statsforecast.models import (MSTL, AutoARIMA, AutoETS, AutoTheta, DynamicOptimizedTheta,
                                      SeasonalNaive)

    _, h, m, extra, freq, _, _ = ds
    make = {
        "AutoETS": lambda: AutoETS(season_length=m),
        "AutoTheta": lambda: AutoTheta(season_length=m),
        "DynamicOptimizedTheta": lambda: DynamicOptimizedTheta(season_length=m),
        "AutoARIMA": lambda: AutoARIMA(season_length=m),
        "SeasonalNaive": lambda: SeasonalNaive(season_length=m),
        "MSTL": lambda: MSTL(season_length=extra, trend_forecaster=AutoETS(model="ZZN")),
    }[name]
    warm = df[df.unique_id.isin(df.unique_id.unique()[:2])]
    StatsForecast(models=[make()], freq=freq, n_jobs=1).forecast(df=warm, h=h, level=[95])
    sf = StatsForecast(models=[make()], freq=freq, n_jobs=2)
    t0 = time.perf_counter()
    res = sf.forecast(df=df, h=h, level=[95])
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
    ap.add_argument("--dataset", default="m4_hourly", choices=sorted(DATASETS))
    ap.add_argument("--half", default="all", choices=["all", "a", "b"],
                    help="a / b: the series at even / odd positions only")
    ap.add_argument("--series", type=int, default=0, help="first N series only (0 = all)")
    ap.add_argument("--statsforecast", default="AutoETS,AutoTheta,MSTL",
                    help="statsforecast models to run (comma-separated; AutoARIMA is slow)")
    ap.add_argument("--methods", default="auto,ets,theta,mstl,arima,optimized_theta,gbdt_lag",
                    help="prognos methods to run (ad hoc FORECAST(TABLE ...); gbdt_lag, nbeats and "
                         "model:M are stored models USING M)")
    ap.add_argument("--options", default="",
                    help="more WITH options of the stored models, e.g. 'steps = 2000'")
    args = ap.parse_args()
    if SHARED is None:
        raise SystemExit("shared/data not found")
    ds = DATASETS[args.dataset]
    stem, h, _, _, freq, _, _ = ds
    if stem == "bike_daily":
        train, test = bike_daily()
    else:
        train = read_wide(SHARED / "timeseries" / f"{stem}_train.csv", args.series)
        test = {uid: y[:h] for uid, y in read_wide(SHARED / "timeseries" / f"{stem}_test.csv", args.series)}
    if args.half != "all":
        train = train[{"a": 0, "b": 1}[args.half]::2]
    start = pd.Timestamp("2011-01-01" if stem == "bike_daily" else "2000-01-01")
    frames = [pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=len(y), freq=freq), "y": y})
              for uid, y in train]
    df = pd.concat(frames, ignore_index=True)
    results = []
    server = Server(demo=False)
    try:
        with tempfile.TemporaryDirectory() as tmp, psycopg.connect(server.dsn, autocommit=True) as pg:
            path = os.path.join(tmp, "series.parquet")
            pq.write_table(pa.Table.from_pandas(df.assign(ds=df.ds.astype("datetime64[us]")), preserve_index=False),
                           path)
            pg.execute(f"CREATE EXTERNAL TABLE series STORED AS PARQUET LOCATION '{path}'")
            for method in [m for m in args.methods.split(",") if m]:
                if method in ("gbdt_lag", "nbeats") or method.startswith("model:"):
                    using = method.removeprefix("model:")
                    secs, fc, lo, hi = run_prognos_model(pg, ds, using, args.options)
                    label = f"prognos CREATE MODEL ... USING {using} + FORECAST('m')"
                else:
                    secs, fc, lo, hi = run_prognos(pg, ds, method)
                    label = f"prognos FORECAST method => '{method}'"
                results.append((label, secs, *scores(ds, train, test, fc, lo, hi)))
                print(results[-1], flush=True)
    finally:
        server.close()
    for name in [n for n in args.statsforecast.split(",") if n]:
        secs, fc, lo, hi = run_statsforecast(df, ds, name)
        results.append((f"statsforecast {name}", secs, *scores(ds, train, test, fc, lo, hi)))
        print(results[-1], flush=True)

    half = "" if args.half == "all" else f", half {args.half}"
    print(f"\n{args.dataset}, {len(train)} series{half}, h = {h}, 2 cores")
    print("| run | wall time | sMAPE | MASE | OWA | 95 % coverage |")
    print("|---|---|---|---|---|---|")
    for name, secs, s, m, owa, cov in results:
        print(f"| {name} | {secs:.1f} s | {s:.3f} | {m:.3f} | {owa:.3f} | {cov:.3f} |")


if __name__ == "__main__":
    main()
