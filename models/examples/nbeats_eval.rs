//! `nbeats` alone on an M4-layout train / test pair: one network over one half of the series,
//! scored by sMAPE, MASE and OWA (against Naive2) on their test values. What the defaults of
//! `USING nbeats` were tried on (benches/README.md).
//!
//! ```sh
//! cargo run --workspace --example nbeats_eval -- TRAIN.csv TEST.csv HORIZON SEASON a|b \
//!     [option=value ...]
//! ```
//! Options are `USING nbeats`'s (`width=128 steps=2000 ...`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use prognos_models::forecast::nbeats::{NbeatsParams, fit};
use prognos_models::forecast::{Method, mase, point_forecast, smape};

mod m4;

/// The values of each series of an M4-layout CSV.
fn read_series(path: &str) -> Result<Vec<Vec<f64>>, String> {
    Ok(m4::read_series(path)?.into_iter().map(|(_, y)| y).collect())
}

fn run(args: &[String]) -> Result<(), String> {
    let [_, train, test, horizon, season, half, options @ ..] = args else {
        return Err("usage: nbeats_eval TRAIN.csv TEST.csv HORIZON SEASON a|b [k=v ...]".into());
    };
    let parse = |v: &str| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
    let (h, m) = (parse(horizon)?, parse(season)?);
    let first = match half.as_str() {
        "a" => 0,
        "b" => 1,
        _ => return Err(format!("half must be a or b, got {half}")),
    };
    let mut p = NbeatsParams::default();
    for o in options {
        let (k, v) = o
            .split_once('=')
            .ok_or(format!("{o}: expected key=value"))?;
        let v: f64 = v.parse().map_err(|e| format!("{o}: {e}"))?;
        if !p.set(k, v).map_err(|e| e.to_string())? {
            return Err(format!("unknown option {k}"));
        }
    }
    let pick =
        |all: Vec<Vec<f64>>| -> Vec<Vec<f64>> { all.into_iter().skip(first).step_by(2).collect() };
    let (train, test) = (pick(read_series(train)?), pick(read_series(test)?));
    let views: Vec<&[f64]> = train.iter().map(|y| &y[..]).collect();
    let input = p.input_size_for(h, m);
    let started = Instant::now();
    let model = fit(
        &views,
        h,
        input,
        &p,
        &AtomicBool::new(false),
        &mut |s, l| eprintln!("step {s}: loss {l:.4}"),
    )
    .map_err(|e| e.to_string())?;
    let fitted = started.elapsed().as_secs_f64();
    let forecasts = model.forecast(&views, h).map_err(|e| e.to_string())?;
    let (mut s, mut ms, mut s2, mut ms2) = (0.0, 0.0, 0.0, 0.0);
    for ((y, actual), f) in train.iter().zip(&test).zip(&forecasts) {
        let actual = &actual[..h];
        let naive = point_forecast(Method::Naive2, y, h, m, &[]).map_err(|e| e.to_string())?;
        s += smape(actual, f);
        ms += mase(y, actual, f, m);
        s2 += smape(actual, &naive);
        ms2 += mase(y, actual, &naive, m);
    }
    let n = train.len() as f64;
    let (s, ms, s2, ms2) = (s / n, ms / n, s2 / n, ms2 / n);
    println!(
        "{} series, input {input}: sMAPE {s:.3} MASE {ms:.3} OWA {:.3} (fit {fitted:.1} s)",
        train.len(),
        0.5 * (s / s2 + ms / ms2)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
