//! Point forecasts of one regular series (no missing values) by each method.
//!
//! Seasonal naive, Naive2 and Theta follow the M4 benchmark definitions (`Benchmarks and
//! Evaluation.R` of the M4 repository): seasonal adjustment by classical multiplicative
//! decomposition when the 90 % autocorrelation test says the series is seasonal. ETS and MSTL
//! use augurs: its AutoETS (model selection by AICc) is used only non-seasonally — on the
//! seasonally adjusted series (`ets`) or on the MSTL trend (`mstl`) — because its seasonal
//! ETS path is not implemented (it panics), so that path is never called.
//!
//! `arima` and `optimized_theta` use anofox-forecast (a port of R's `forecast::auto.arima`,
//! and the Theta family of Fiorucci et al.: STM, OTM, DSTM, DOTM chosen by in-sample MSE),
//! both on the seasonally adjusted series like `ets`. Its seasonal AutoARIMA search is not
//! used: measured on M4 Hourly (season 24, dev build at opt-level 3) it took about 100 s per
//! series, against 0.2 s for the non-seasonal search on the adjusted series.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::prelude::*;

use anofox_forecast::core::TimeSeries;
use anofox_forecast::models::Forecaster;
use anofox_forecast::models::arima::AutoARIMA;
use anofox_forecast::models::theta::AutoTheta;

use super::seasonality::{is_seasonal, multiplicative_indices};
use crate::error::{ModelError, ModelResult};

/// A forecasting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The last season repeated.
    SeasonalNaive,
    /// The last seasonally adjusted value, re-seasonalised (the M4 reference).
    Naive2,
    /// The Theta method (M4's `Theta`: lines θ=0 and θ=2, SES on the latter).
    Theta,
    /// AutoETS (AICc) on the seasonally adjusted series.
    Ets,
    /// MSTL over every season length that fits, AutoETS on the trend.
    Mstl,
    /// AutoARIMA (stepwise order search by AICc) on the seasonally adjusted series.
    Arima,
    /// The best of the standard / optimised / dynamic Theta models (in-sample MSE) on the
    /// seasonally adjusted series.
    OptimizedTheta,
    /// One gradient-boosted model on lags across all series of a stored model
    /// ([`super::lag_gbdt`]); never chosen by `auto`, which works per series.
    GbdtLag,
}

impl Method {
    /// The methods `auto` tries, in order.
    pub const ALL: [Method; 5] = [
        Method::SeasonalNaive,
        Method::Naive2,
        Method::Theta,
        Method::Ets,
        Method::Mstl,
    ];

    /// Per-series methods only asked for by name (`auto` leaves them out: on M4 Hourly they
    /// add fitting time without beating what `auto` picks; see benches/README.md).
    pub const BY_NAME: [Method; 2] = [Method::Arima, Method::OptimizedTheta];

    /// SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Method::SeasonalNaive => "seasonal_naive",
            Method::Naive2 => "naive2",
            Method::Theta => "theta",
            Method::Ets => "ets",
            Method::Mstl => "mstl",
            Method::Arima => "arima",
            Method::OptimizedTheta => "optimized_theta",
            Method::GbdtLag => "gbdt_lag",
        }
    }

    /// Parse a SQL name (any method, for `CREATE MODEL ... USING`).
    pub fn parse(s: &str) -> ModelResult<Method> {
        if s.eq_ignore_ascii_case(Method::GbdtLag.name()) {
            return Ok(Method::GbdtLag);
        }
        Method::ALL
            .into_iter()
            .chain(Method::BY_NAME)
            .find(|m| {
                m.name().eq_ignore_ascii_case(s) || (s == "snaive" && *m == Method::SeasonalNaive)
            })
            .ok_or_else(|| {
                ModelError::InvalidParameter(format!(
                    "unknown forecasting method \"{s}\" (known: auto, {}, {}, {})",
                    Method::ALL.map(|m| m.name()).join(", "),
                    Method::BY_NAME.map(|m| m.name()).join(", "),
                    Method::GbdtLag.name()
                ))
            })
    }

    /// Parse a method that forecasts each series on its own (the ad-hoc `FORECAST(TABLE ..)`).
    pub fn parse_local(s: &str) -> ModelResult<Method> {
        match Method::parse(s)? {
            Method::GbdtLag => Err(ModelError::InvalidParameter(
                "gbdt_lag is one model trained across all series: create it with CREATE MODEL \
                 m FORECAST v TIME t BY ids USING gbdt_lag AS ..., then SELECT * FROM \
                 FORECAST('m')"
                    .into(),
            )),
            m => Ok(m),
        }
    }

    /// Fewest observations the method needs for season length `m`.
    pub fn min_len(self, m: usize) -> usize {
        match self {
            Method::SeasonalNaive => m.max(1),
            Method::Naive2 | Method::Theta => 2,
            Method::Ets | Method::OptimizedTheta => 4,
            Method::Arima => 10,
            Method::Mstl => 2 * m.max(2) + 1,
            Method::GbdtLag => 3,
        }
    }
}

/// Seasonally adjust `y` (period `m`) when the series is seasonal; returns the adjusted
/// series and the indices (position `i % m` from the first observation), if any.
fn adjust(y: &[f64], m: usize) -> (Vec<f64>, Option<Vec<f64>>) {
    if m >= 2
        && is_seasonal(y, m)
        && let Some(idx) = multiplicative_indices(y, m)
    {
        let adjusted = y.iter().enumerate().map(|(t, v)| v / idx[t % m]).collect();
        return (adjusted, Some(idx));
    }
    (y.to_vec(), None)
}

fn reseasonalise(f: &mut [f64], n: usize, m: usize, idx: &Option<Vec<f64>>) {
    if let Some(idx) = idx {
        for (j, v) in f.iter_mut().enumerate() {
            *v *= idx[(n + j) % m];
        }
    }
}

/// Simple exponential smoothing with `alpha` chosen by least squares on a grid (the
/// initial level is the first observation); returns (alpha, final level).
fn ses(y: &[f64]) -> (f64, f64) {
    let run = |alpha: f64| -> (f64, f64) {
        let mut level = y[0];
        let mut sse = 0.0;
        for &v in &y[1..] {
            let e = v - level;
            sse += e * e;
            level += alpha * e;
        }
        (sse, level)
    };
    let mut best = (f64::INFINITY, 0.5, y[0]);
    for i in 1..100 {
        let alpha = i as f64 / 100.0;
        let (sse, level) = run(alpha);
        if sse < best.0 {
            best = (sse, alpha, level);
        }
    }
    (best.1, best.2)
}

/// Catch a panic inside a third-party fit (augurs) and turn it into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> ModelResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ModelError::BadTrainingData(format!("{what}: {e}"))),
        Err(_) => Err(ModelError::BadTrainingData(format!(
            "{what}: the model could not be fitted to this series"
        ))),
    }
}

/// Fit an anofox-forecast model to `y` (given hourly times from the epoch: the models here
/// only read the values) and forecast `h` steps.
fn anofox(
    method: Method,
    y: &[f64],
    h: usize,
    mut model: impl Forecaster,
) -> ModelResult<Vec<f64>> {
    guarded(method.name(), || {
        let times = (0..y.len() as i64)
            .map(|i| {
                chrono::DateTime::from_timestamp(i * 3600, 0)
                    .ok_or_else(|| "series too long".to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let series = TimeSeries::univariate(times, y.to_vec()).map_err(|e| e.to_string())?;
        model.fit(&series).map_err(|e| e.to_string())?;
        let f = model.predict(h).map_err(|e| e.to_string())?;
        let point = f.primary().to_vec();
        if point.len() != h || point.iter().any(|v| !v.is_finite()) {
            return Err("the fitted model gave no finite forecast".into());
        }
        Ok(point)
    })
}

/// `h` point forecasts of `y` (regular, no NaN) with season length `m` (1 = none).
/// `seasons` are the extra season lengths MSTL may use (e.g. 24 and 168 for hourly data).
pub fn point_forecast(
    method: Method,
    y: &[f64],
    h: usize,
    m: usize,
    seasons: &[usize],
) -> ModelResult<Vec<f64>> {
    let n = y.len();
    if n < method.min_len(m) {
        return Err(ModelError::BadTrainingData(format!(
            "{} needs at least {} observations, the series has {n}",
            method.name(),
            method.min_len(m)
        )));
    }
    Ok(match method {
        Method::GbdtLag => {
            return Err(ModelError::InvalidParameter(
                "gbdt_lag forecasts all series of a model together, not one series".into(),
            ));
        }
        Method::SeasonalNaive => {
            let m = m.max(1);
            (0..h).map(|j| y[n - m + j % m]).collect()
        }
        Method::Naive2 => {
            let (adj, idx) = adjust(y, m);
            let mut f = vec![adj[n - 1]; h];
            reseasonalise(&mut f, n, m, &idx);
            f
        }
        Method::Theta => {
            let (adj, idx) = adjust(y, m);
            // θ=0: the least-squares line; θ=2: twice the data minus the line, by SES.
            let nf = n as f64;
            let tm = (nf - 1.0) / 2.0;
            let ym = adj.iter().sum::<f64>() / nf;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (t, v) in adj.iter().enumerate() {
                sxy += (t as f64 - tm) * (v - ym);
                sxx += (t as f64 - tm).powi(2);
            }
            let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            let a = ym - b * tm;
            let theta2: Vec<f64> = adj
                .iter()
                .enumerate()
                .map(|(t, v)| 2.0 * v - (a + b * t as f64))
                .collect();
            let (_, level) = ses(&theta2);
            let mut f: Vec<f64> = (0..h)
                .map(|j| ((a + b * (n + j) as f64) + level) / 2.0)
                .collect();
            reseasonalise(&mut f, n, m, &idx);
            f
        }
        Method::Ets => {
            let (adj, idx) = adjust(y, m);
            let mut f = guarded("ets", || {
                let fitted = AutoETS::non_seasonal()
                    .fit(&adj)
                    .map_err(|e| e.to_string())?;
                let fc = fitted.predict(h, None).map_err(|e| e.to_string())?;
                Ok(fc.point)
            })?;
            reseasonalise(&mut f, n, m, &idx);
            f
        }
        Method::Arima | Method::OptimizedTheta => {
            let (adj, idx) = adjust(y, m);
            let mut f = match method {
                Method::Arima => anofox(method, &adj, h, AutoARIMA::new())?,
                _ => anofox(method, &adj, h, AutoTheta::new())?,
            };
            reseasonalise(&mut f, n, m, &idx);
            f
        }
        Method::Mstl => {
            let mut periods: Vec<usize> = seasons
                .iter()
                .chain(std::iter::once(&m))
                .copied()
                .filter(|&p| p >= 2 && n > 2 * p)
                .collect();
            periods.sort_unstable();
            periods.dedup();
            if periods.is_empty() {
                return point_forecast(Method::Ets, y, h, 1, &[]);
            }
            guarded("mstl", || {
                let model = MSTLModel::new(periods, AutoETS::non_seasonal().into_trend_model());
                let fitted = model.fit(y).map_err(|e| e.to_string())?;
                let fc = fitted.predict(h, None).map_err(|e| e.to_string())?;
                Ok(fc.point)
            })?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seasonal(n: usize) -> Vec<f64> {
        (0..n)
            .map(|t| {
                (100.0 + 0.5 * t as f64)
                    * (1.0 + 0.3 * (2.0 * std::f64::consts::PI * (t % 12) as f64 / 12.0).sin())
            })
            .collect()
    }

    #[test]
    fn every_method_forecasts_a_clean_seasonal_series_closely() {
        let y = seasonal(12 * 12);
        let (train, test) = y.split_at(12 * 10);
        for method in Method::ALL.into_iter().chain(Method::BY_NAME) {
            let f = point_forecast(method, train, 24, 12, &[12]).expect("forecast");
            assert_eq!(f.len(), 24);
            let mape = f
                .iter()
                .zip(test)
                .map(|(a, b)| (a - b).abs() / b)
                .sum::<f64>()
                / 24.0;
            // Seasonal naive misses the trend; the others follow it.
            let limit = if method == Method::SeasonalNaive {
                0.12
            } else {
                0.05
            };
            assert!(mape < limit, "{method:?}: MAPE {mape}");
        }
    }

    #[test]
    fn too_short_series_are_refused() {
        assert!(point_forecast(Method::Mstl, &[1.0, 2.0], 3, 12, &[]).is_err());
        assert!(point_forecast(Method::SeasonalNaive, &[1.0; 5], 3, 12, &[]).is_err());
    }
}
