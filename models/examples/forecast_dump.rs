//! Every method's forecast of every series of an M4-layout CSV, with its backtest score, as
//! JSON lines: what `benches/forecast_rules.py` compares `auto`'s combination rules on.
//!
//! ```sh
//! cargo run --workspace --example forecast_dump -- TRAIN.csv HORIZON SEASON WINDOWS \
//!     METHODS [SEASONS] > dump.jsonl
//! ```
//! `METHODS` and `SEASONS` (MSTL's season lengths; default `SEASON`) are comma-separated.
//! Each series is forecast by each method alone through [`forecast`] (the function FORECAST
//! calls), so `score` is the method's mean backtest MASE over `WINDOWS` origins.

use std::io::Write;
use std::process::ExitCode;

use prognos_models::forecast::{ForecastSpec, Method, forecast};
use rayon::prelude::*;

mod m4;
use m4::read_series;

fn numbers(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|v| v.parse().map_err(|e| format!("{v}: {e}")))
        .collect()
}

fn run(args: &[String]) -> Result<(), String> {
    let [_, path, horizon, season, windows, methods, rest @ ..] = args else {
        return Err(
            "usage: forecast_dump TRAIN.csv HORIZON SEASON WINDOWS METHODS [SEASONS]".into(),
        );
    };
    let parse = |v: &str| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
    let (h, m, windows) = (parse(horizon)?, parse(season)?, parse(windows)?);
    let methods: Vec<Method> = methods
        .split(',')
        .map(|s| Method::parse_local(s).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let seasons = match rest.first() {
        Some(s) => numbers(s)?,
        None => vec![m],
    };
    let series = read_series(path)?;
    let lines: Vec<serde_json::Value> = series
        .par_iter()
        .flat_map(|(id, y)| {
            methods
                .iter()
                .map(|&method| {
                    let spec = ForecastSpec {
                        method: Some(method),
                        horizon: h,
                        level: 95.0,
                        season_length: Some(m),
                        season_candidates: seasons.clone(),
                        windows,
                        combine: vec![],
                    };
                    match forecast(y, &spec) {
                        Ok(f) => serde_json::json!({
                            "id": id,
                            "method": method.name(),
                            "used": f.method.name(),
                            "score": f.scores.first().map(|s| s.1).filter(|s| s.is_finite()),
                            "point": f.point,
                        }),
                        Err(e) => serde_json::json!({
                            "id": id, "method": method.name(), "error": e.to_string(),
                        }),
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forecast_dump: {e}");
            ExitCode::FAILURE
        }
    }
}
