//! Forecast accuracy on the M4 Hourly set (414 series, horizon 48), in-process, against the
//! official M4 competition results (as benches/README.md uses them): Naive2 sMAPE 18.383 /
//! MASE 2.395 (OWA 1), seasonal naive 13.912 / 1.193, Theta 18.138 / 2.455, statsforecast ETS
//! MASE 1.61.
//! Skipped, with a message, when the shared data is not there.

use std::path::PathBuf;

use prognos_models::forecast::{ForecastSpec, Method, forecast, mase, smape};
use rayon::prelude::*;

const NAIVE2_SMAPE: f64 = 18.383;
const NAIVE2_MASE: f64 = 2.395;

mod common;

fn shared() -> Option<PathBuf> {
    common::shared_data("timeseries/m4_hourly_train.csv")
}

fn read(path: PathBuf) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).expect("read m4");
    text.lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .skip(1)
                .filter_map(|v| v.trim_matches('"').parse::<f64>().ok())
                .collect()
        })
        .collect()
}

struct Score {
    smape: f64,
    mase: f64,
    covered: usize,
    points: usize,
}

fn evaluate(train: &[Vec<f64>], test: &[Vec<f64>], method: Option<Method>) -> Score {
    let per: Vec<(f64, f64, usize)> = train
        .par_iter()
        .zip(test)
        .map(|(y, actual)| {
            let spec = ForecastSpec {
                method,
                horizon: 48,
                level: 95.0,
                season_length: Some(24),
                season_candidates: vec![24, 168],
                windows: 2,
                combine: vec![],
            };
            let f = forecast(y, &spec).expect("forecast");
            let covered = actual
                .iter()
                .zip(f.lower.iter().zip(&f.upper))
                .filter(|(a, (lo, hi))| *lo <= *a && *a <= *hi)
                .count();
            (
                smape(actual, &f.point),
                mase(y, actual, &f.point, 24),
                covered,
            )
        })
        .collect();
    let n = per.len() as f64;
    Score {
        smape: per.iter().map(|p| p.0).sum::<f64>() / n,
        mase: per.iter().map(|p| p.1).sum::<f64>() / n,
        covered: per.iter().map(|p| p.2).sum(),
        points: test.iter().map(Vec::len).sum(),
    }
}

#[test]
fn m4_hourly_accuracy_and_interval_coverage() {
    let Some(dir) = shared() else {
        eprintln!("SKIP: shared/data/timeseries/m4_hourly_*.csv not found");
        return;
    };
    let train = read(dir.join("timeseries/m4_hourly_train.csv"));
    let test = read(dir.join("timeseries/m4_hourly_test.csv"));
    assert_eq!(train.len(), 414);

    // Our Naive2 and seasonal naive reproduce the official benchmark numbers.
    let naive2 = evaluate(&train, &test, Some(Method::Naive2));
    eprintln!("naive2: sMAPE {:.3} MASE {:.3}", naive2.smape, naive2.mase);
    assert!(
        (naive2.smape - NAIVE2_SMAPE).abs() < 0.05,
        "{}",
        naive2.smape
    );
    assert!((naive2.mase - NAIVE2_MASE).abs() < 0.01, "{}", naive2.mase);
    let snaive = evaluate(&train, &test, Some(Method::SeasonalNaive));
    eprintln!("snaive: sMAPE {:.3} MASE {:.3}", snaive.smape, snaive.mase);
    assert!((snaive.smape - 13.912).abs() < 0.05 && (snaive.mase - 1.193).abs() < 0.01);

    // auto: per-series choice by backtest.
    let auto = evaluate(&train, &test, None);
    let owa = 0.5 * (auto.smape / NAIVE2_SMAPE + auto.mase / NAIVE2_MASE);
    let coverage = auto.covered as f64 / auto.points as f64;
    eprintln!(
        "auto: sMAPE {:.3} MASE {:.3} OWA {owa:.3}, 95% interval coverage {coverage:.3}",
        auto.smape, auto.mase
    );
    // Better than seasonal naive (OWA 0.628) and than statsforecast's ETS MASE (1.61).
    assert!(owa < 0.628, "OWA {owa}");
    assert!(auto.mase < 1.61, "MASE {}", auto.mase);
    assert!((0.85..=0.99).contains(&coverage), "coverage {coverage}");
}

#[test]
fn m4_hourly_global_gbdt_lag_model() {
    use prognos_models::forecast::lag_gbdt::{LagLayout, SeriesInput, default_params, fit};
    let Some(dir) = shared() else {
        eprintln!("SKIP: shared/data/timeseries/m4_hourly_*.csv not found");
        return;
    };
    let train = read(dir.join("timeseries/m4_hourly_train.csv"));
    let test = read(dir.join("timeseries/m4_hourly_test.csv"));
    let started = std::time::Instant::now();
    let inputs: Vec<SeriesInput<'_>> = train
        .iter()
        .map(|y| SeriesInput {
            y,
            start: 0,
            step: 1,
            exogenous: &[],
        })
        .collect();
    let mut lens: Vec<usize> = train.iter().map(Vec::len).collect();
    lens.sort_unstable();
    let layout = LagLayout::new(1, 0, 24, &[24, 168], lens[lens.len() / 2], vec![]);
    let model = fit(
        &inputs,
        layout,
        &default_params(),
        &std::sync::atomic::AtomicBool::new(false),
    )
    .expect("fit");
    let f = model.forecast(&inputs, 48);
    let n = train.len() as f64;
    let s = train
        .iter()
        .zip(&test)
        .zip(&f)
        .map(|((_, a), f)| smape(a, f))
        .sum::<f64>()
        / n;
    let m = train
        .iter()
        .zip(&test)
        .zip(&f)
        .map(|((y, a), f)| mase(y, a, f, 24))
        .sum::<f64>()
        / n;
    let owa = 0.5 * (s / NAIVE2_SMAPE + m / NAIVE2_MASE);
    eprintln!(
        "gbdt_lag: sMAPE {s:.3} MASE {m:.3} OWA {owa:.3} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Better than seasonal naive (OWA 0.628) and statsforecast MSTL (0.604, benches/README.md).
    assert!(owa < 0.604, "OWA {owa}");
}
