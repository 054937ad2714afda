"""Compare `auto`'s ways of turning backtest scores into a forecast (a benchmark, not a test).

Reads a per-series dump of every method's forecast and backtest score
(`models/examples/forecast_dump.rs`) and scores rules on one half of the series: the single
best method, the mean of the best k, and the mean of up to 3 whose score is within a ratio of
the best (the rule `auto` uses: ratio 1.5). Defaults were chosen on half a; half b is
reported through the server by forecast_bench.py.

    cargo build --workspace --example forecast_dump
    $CARGO_TARGET_DIR/debug/examples/forecast_dump \\
        ../shared/data/timeseries/tourism_quarterly_train.csv 8 4 2 \\
        seasonal_naive,naive2,theta,ets,mstl,arima,optimized_theta > /tmp/quarterly.jsonl
    python benches/forecast_rules.py --dataset tourism_quarterly --dump /tmp/quarterly.jsonl --half a
(M4 Hourly: horizon 48, season 24, and a last argument 24,168 for MSTL's seasons.)
"""

import argparse
import json

import numpy as np

from forecast_bench import DATASETS, SHARED, read_wide

AUTO_POOL = ["seasonal_naive", "naive2", "theta", "ets", "mstl"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="tourism_quarterly", choices=sorted(DATASETS))
    ap.add_argument("--dump", required=True, help="forecast_dump's JSON lines")
    ap.add_argument("--half", default="a", choices=["all", "a", "b"])
    args = ap.parse_args()
    stem, h, m, _, _, naive2_smape, naive2_mase = DATASETS[args.dataset]
    train = read_wide(SHARED / "timeseries" / f"{stem}_train.csv", 0)
    if args.half != "all":
        train = train[{"a": 0, "b": 1}[args.half]::2]
    test = {uid: y[:h] for uid, y in read_wide(SHARED / "timeseries" / f"{stem}_test.csv", 0)}
    dump = {}
    with open(args.dump) as f:
        for line in f:
            r = json.loads(line)
            dump.setdefault(r["id"], {})[r["method"]] = r
    methods = sorted({mt for rows in dump.values() for mt in rows})

    def owa(forecasts):
        sm, ms = [], []
        for uid, y in train:
            a, fc = test[uid], np.asarray(forecasts[uid])
            sm.append(np.mean(200 * np.abs(a - fc) / (np.abs(a) + np.abs(fc))))
            ms.append(np.mean(np.abs(a - fc)) / np.mean(np.abs(y[m:] - y[:-m])))
        s, q = float(np.mean(sm)), float(np.mean(ms))
        return f"{s:.3f} / {q:.3f} / {0.5 * (s / naive2_smape + q / naive2_mase):.4f}"

    def score(uid, mt):
        s = dump[uid].get(mt, {}).get("score")
        return np.inf if s is None else s

    def rule(pool, ratio, cap):
        out = {}
        for uid, _ in train:
            ranked = sorted((mt for mt in pool if "point" in dump[uid].get(mt, {})),
                            key=lambda mt: score(uid, mt))
            best = score(uid, ranked[0])
            keep = [mt for mt in ranked if score(uid, mt) <= best * ratio][:cap] or ranked[:1]
            out[uid] = np.mean([dump[uid][mt]["point"] for mt in keep], axis=0)
        return out

    print(f"{args.dataset}, half {args.half}, {len(train)} series: sMAPE / MASE / OWA")
    for mt in methods:
        print(f"| {mt} alone | {owa({uid: dump[uid][mt]['point'] for uid, _ in train})} |")
    for pool_name, pool in [("auto's pool", [p for p in AUTO_POOL if p in methods]), ("every method", methods)]:
        print(f"| {pool_name}: best single method | {owa(rule(pool, 1.0, 1))} |")
        for k in (2, 3):
            print(f"| {pool_name}: mean of the best {k} | {owa(rule(pool, np.inf, k))} |")
        for ratio in (1.2, 1.5, 2.0):
            print(f"| {pool_name}: mean of up to 3 within {ratio}x the best | {owa(rule(pool, ratio, 3))} |")


if __name__ == "__main__":
    main()
