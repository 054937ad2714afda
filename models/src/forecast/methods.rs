//! Point forecasts of one regular series (no missing values) by each method.
//!
//! Seasonal naive, Naive2 and Theta follow the M4 benchmark definitions (`Benchmarks and
//! Evaluation.R` of the M4 repository): seasonal adjustment by classical multiplicative
//! decomposition when the 90 % autocorrelation test says the series is seasonal. M4's series
//! are positive; a series with zeros or negative values is adjusted additively instead (as
//! statsforecast's Theta does), since a ratio cannot adjust it.
//!
//! `ets` on a seasonal series is seasonal AutoETS: anofox-forecast's state-space ETS models
//! ANA, ANN, MNM, MNN (multiplicative ones for positive series), the lowest AICc kept
//! ([`choose_ets`]). On other series, and where none fits, it is augurs' AutoETS (AICc) on the
//! seasonally adjusted series; augurs' own seasonal ETS path is not implemented (it panics)
//! and is never called. MSTL uses augurs, with its non-seasonal AutoETS on the trend.
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

use super::seasonality::{additive_indices, is_seasonal, multiplicative_indices};
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
    /// AutoETS by AICc: seasonal trend-free state-space models on a seasonal series,
    /// non-seasonal AutoETS on the seasonally adjusted series otherwise ([`choose_ets`]).
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
    /// One N-BEATS network across all series of a stored model ([`super::nbeats`]).
    Nbeats,
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

    /// Methods that train one model across all series of a stored model.
    pub const GLOBAL: [Method; 2] = [Method::GbdtLag, Method::Nbeats];

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
            Method::Nbeats => "nbeats",
        }
    }

    /// Parse a SQL name (any method, for `CREATE MODEL ... USING`).
    pub fn parse(s: &str) -> ModelResult<Method> {
        for global in Method::GLOBAL {
            if s.eq_ignore_ascii_case(global.name()) {
                return Ok(global);
            }
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
                    Method::GLOBAL.map(|m| m.name()).join(", ")
                ))
            })
    }

    /// Parse a method that forecasts each series on its own (the ad-hoc `FORECAST(TABLE ..)`).
    pub fn parse_local(s: &str) -> ModelResult<Method> {
        match Method::parse(s)? {
            m if m.is_global() => Err(ModelError::InvalidParameter(format!(
                "{0} is one model trained across all series: create it with CREATE MODEL m \
                 FORECAST v TIME t BY ids USING {0} AS ..., then SELECT * FROM FORECAST('m')",
                m.name()
            ))),
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
            Method::GbdtLag | Method::Nbeats => 3,
        }
    }

    /// One model across all series (not fitted per series).
    pub fn is_global(self) -> bool {
        Method::GLOBAL.contains(&self)
    }
}

/// A seasonal adjustment: per season position (counted from the first observation), an
/// index the series was divided by, or a term subtracted from it.
#[derive(Debug, Clone, PartialEq)]
enum Adjustment {
    /// Not seasonal (or too short): nothing removed.
    None,
    /// Classical multiplicative decomposition (a positive series).
    Multiplicative(Vec<f64>),
    /// Classical additive decomposition (a series with zeros or negative values).
    Additive(Vec<f64>),
}

/// Seasonally adjust `y` (period `m`) when the series is seasonal: multiplicatively when every
/// value is positive, else additively. Returns the adjusted series and the adjustment.
fn adjust(y: &[f64], m: usize) -> (Vec<f64>, Adjustment) {
    if m >= 2 && is_seasonal(y, m) {
        if let Some(idx) = multiplicative_indices(y, m) {
            let adjusted = y.iter().enumerate().map(|(t, v)| v / idx[t % m]).collect();
            return (adjusted, Adjustment::Multiplicative(idx));
        }
        if y.iter().any(|v| *v <= 0.0)
            && let Some(terms) = additive_indices(y, m)
        {
            let adjusted = y
                .iter()
                .enumerate()
                .map(|(t, v)| v - terms[t % m])
                .collect();
            return (adjusted, Adjustment::Additive(terms));
        }
    }
    (y.to_vec(), Adjustment::None)
}

/// Put the season removed by [`adjust`] back into forecasts `f` of steps `n, n+1, …`.
fn reseasonalise(f: &mut [f64], n: usize, m: usize, adjustment: &Adjustment) {
    for (j, v) in f.iter_mut().enumerate() {
        match adjustment {
            Adjustment::None => {}
            Adjustment::Multiplicative(idx) => *v *= idx[(n + j) % m],
            Adjustment::Additive(terms) => *v += terms[(n + j) % m],
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
/// only read the values) and forecast `h` steps; returns the forecast and the fitted model.
fn anofox<F: Forecaster>(
    method: Method,
    y: &[f64],
    h: usize,
    mut model: F,
) -> ModelResult<(Vec<f64>, F)> {
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
        Ok((point, model))
    })
}

/// The trend-free ETS models `ets` chooses from for a seasonal series: additive error with
/// additive season (ANA) or none (ANN), and, for positive series, multiplicative error with
/// multiplicative season (MNM) or none (MNN).
///
/// Trended models are left out: with anofox-forecast's estimation, AAdA alone scored MASE 3.12
/// on M4 Hourly (ANA: 1.33), and adding it to the pool took AICc's choice from 1.55 to 2.68.
/// A series' trend is what `theta` / `mstl` follow, and `auto` chooses between them.
const SEASONAL_ETS: [&str; 4] = ["ANA", "ANN", "MNM", "MNN"];

/// How `ets` fits a series: decided once on the whole series ([`choose_ets`]) and kept at
/// every backtest origin, so a backtest refits one model instead of repeating the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtsForm {
    /// A seasonal state-space model, one of [`SEASONAL_ETS`] (ETS notation).
    Seasonal(&'static str),
    /// Non-seasonal AutoETS (augurs, by AICc) on the seasonally adjusted series: for a series
    /// that is not seasonal, too short for two seasons, or that no seasonal model fits.
    Adjusted,
}

/// Seasonal AutoETS: anofox-forecast's state-space ETS (smoothing parameters and initial
/// states by maximum likelihood) for each model of [`SEASONAL_ETS`], the lowest AICc kept.
/// Returns the form and, for a seasonal form, its forecast of `h` steps.
pub fn choose_ets(y: &[f64], h: usize, m: usize) -> (EtsForm, Option<Vec<f64>>) {
    if m < 2 || y.len() < 2 * m + 2 || !is_seasonal(y, m) {
        return (EtsForm::Adjusted, None);
    }
    let positive = y.iter().all(|v| *v > 0.0);
    let mut best: Option<(f64, &'static str, Vec<f64>)> = None;
    for name in SEASONAL_ETS {
        if name.starts_with('M') && !positive {
            continue;
        }
        if let Ok((f, model)) = seasonal_ets(name, y, h, m)
            && let Some(aicc) = model.aicc().filter(|a| a.is_finite())
            && best.as_ref().is_none_or(|b| aicc < b.0)
        {
            best = Some((aicc, name, f));
        }
    }
    match best {
        Some((_, name, f)) => (EtsForm::Seasonal(name), Some(f)),
        None => (EtsForm::Adjusted, None),
    }
}

/// Fit one seasonal ETS model (ETS notation, e.g. "ANA") and forecast `h` steps.
fn seasonal_ets(
    name: &str,
    y: &[f64],
    h: usize,
    m: usize,
) -> ModelResult<(Vec<f64>, anofox_forecast::models::exponential::ETS)> {
    use anofox_forecast::models::exponential::{ETS, ETSSpec};
    let spec = ETSSpec::from_notation(name)
        .map_err(|e| ModelError::InvalidParameter(format!("ets model {name}: {e}")))?;
    anofox(Method::Ets, y, h, ETS::new(spec, m))
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
    point_forecast_with(method, y, h, m, seasons, None)
}

/// [`point_forecast`] with `ets`'s form already chosen ([`choose_ets`]; `None`: choose it
/// on `y`).
pub fn point_forecast_with(
    method: Method,
    y: &[f64],
    h: usize,
    m: usize,
    seasons: &[usize],
    ets: Option<EtsForm>,
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
        Method::GbdtLag | Method::Nbeats => {
            return Err(ModelError::InvalidParameter(format!(
                "{} forecasts all series of a model together, not one series",
                method.name()
            )));
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
            let form = match ets {
                Some(form) => form,
                None => match choose_ets(y, h, m) {
                    (_, Some(f)) => return Ok(f),
                    (form, None) => form,
                },
            };
            if let EtsForm::Seasonal(name) = form {
                return Ok(seasonal_ets(name, y, h, m)?.0);
            }
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
                Method::Arima => anofox(method, &adj, h, AutoARIMA::new())?.0,
                _ => anofox(method, &adj, h, AutoTheta::new())?.0,
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
    fn a_seasonal_series_with_zeros_is_adjusted_additively() {
        // Monthly counts that drop to zero every winter: a ratio cannot adjust them.
        let y: Vec<f64> = (0..12 * 12)
            .map(|t| {
                let s = (2.0 * std::f64::consts::PI * (t % 12) as f64 / 12.0).sin();
                (30.0 * s + 10.0 + 0.1 * t as f64).max(0.0)
            })
            .collect();
        assert!(y.contains(&0.0));
        let (train, test) = y.split_at(12 * 10);
        let (_, adjustment) = adjust(train, 12);
        assert!(
            matches!(adjustment, Adjustment::Additive(_)),
            "{adjustment:?}"
        );
        for method in [Method::Theta, Method::Naive2, Method::OptimizedTheta] {
            let f = point_forecast(method, train, 24, 12, &[12]).expect("forecast");
            let mae = f.iter().zip(test).map(|(a, b)| (a - b).abs()).sum::<f64>() / 24.0;
            // The season's swing is 60; without the adjustment the forecast is nearly flat
            // and misses by about 20 on average.
            assert!(mae < 5.0, "{method:?}: MAE {mae}");
        }
    }

    #[test]
    fn seasonal_ets_follows_a_season_below_zero() {
        // 30 days of hourly data below zero; the daily swing is 5 for 20 days, then 15.
        let y: Vec<f64> = (0..24 * 32)
            .map(|t| {
                let swing = if t < 24 * 20 { 5.0 } else { 15.0 };
                let phase = 2.0 * std::f64::consts::PI * (t % 24) as f64 / 24.0;
                let noise = ((t as f64 * 12.9898).sin() * 43_758.545).fract() - 0.5;
                -100.0 + swing * phase.sin() + noise
            })
            .collect();
        let (train, test) = y.split_at(24 * 30);
        let (form, f) = choose_ets(train, 48, 24);
        // Negative values: only additive-error models are tried.
        assert!(matches!(form, EtsForm::Seasonal("ANA")), "{form:?}");
        let f = f.expect("a seasonal forecast");
        let mae = |f: &[f64]| f.iter().zip(test).map(|(a, b)| (a - b).abs()).sum::<f64>() / 48.0;
        // Against the last day's mean, which ignores the season (MAE about 9.5).
        let flat = vec![train[train.len() - 24..].iter().sum::<f64>() / 24.0; 48];
        assert!(
            mae(&f) < 0.5 * mae(&flat),
            "seasonal {} vs flat {}",
            mae(&f),
            mae(&flat)
        );
        // The adjusted path (an additive decomposition over the whole series, since the
        // values are negative) follows the season too: measured 4.26 against ANA's 4.24
        // here, so the state-space model's update of the season is no better on this series.
        let adjusted =
            point_forecast_with(Method::Ets, train, 48, 24, &[], Some(EtsForm::Adjusted))
                .expect("adjusted");
        assert!(
            mae(&adjusted) < 0.5 * mae(&flat),
            "adjusted {}",
            mae(&adjusted)
        );
    }

    #[test]
    fn too_short_series_are_refused() {
        assert!(point_forecast(Method::Mstl, &[1.0, 2.0], 3, 12, &[]).is_err());
        assert!(point_forecast(Method::SeasonalNaive, &[1.0; 5], 3, 12, &[]).is_err());
    }
}
