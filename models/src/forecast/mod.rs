//! Forecasting one series: method choice by rolling-origin backtest, point forecasts,
//! conformal prediction intervals, and the M4 accuracy measures.
//!
//! A series arrives regular (one value per period, gaps already filled; see
//! [`regularize`]). With `auto`, every method that the series is long enough for is scored
//! on the last `windows` origins (each holds out `horizon` values; score = mean MASE) and the
//! forecast is the mean of the best ones: up to [`COMBINE_AT_MOST`] methods whose score is
//! within [`COMBINE_WITHIN`] of the best (see benches/README.md: on the Tourism and M4 Hourly
//! halves these defaults were chosen on, the mean beat the single best method on every
//! set). Intervals are conformal: for step `j` of the
//! horizon, the `level` quantile of the chosen forecast's absolute backtest errors at steps
//! `j-2..=j+2` of up to five windows (the selection's and more origins further back, as far
//! as the series allows); a series too short for any window gets intervals from its
//! one-step naive errors growing with √j, and a note says so.

pub mod global;
pub mod lag_gbdt;
pub mod methods;
pub mod nbeats;
pub mod regular;
pub mod seasonality;
pub mod stored;
pub mod time;
pub mod trainer;

pub use methods::{EtsForm, Method, point_forecast, point_forecast_with};
pub use regular::{Regularized, regularize};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};

/// What to forecast and how.
#[derive(Debug, Clone)]
pub struct ForecastSpec {
    /// `None` = auto.
    pub method: Option<Method>,
    /// Steps ahead.
    pub horizon: usize,
    /// Interval level in percent, in (0, 100).
    pub level: f64,
    /// Season length; `None` = detected among `season_candidates`.
    pub season_length: Option<usize>,
    /// Season lengths worth testing for the data's frequency (also MSTL's seasonalities).
    pub season_candidates: Vec<usize>,
    /// Backtest origins.
    pub windows: usize,
    /// When not empty: forecast the mean of these methods, unscored (a stored series'
    /// `auto` choice refitted, as DRIFT does); `method` is then not read.
    pub combine: Vec<Method>,
}

/// The forecast of one series.
#[derive(Debug, Clone)]
pub struct SeriesForecast {
    /// Point forecasts.
    pub point: Vec<f64>,
    /// Lower interval bounds.
    pub lower: Vec<f64>,
    /// Upper interval bounds.
    pub upper: Vec<f64>,
    /// The method that produced them: with several [`SeriesForecast::members`], the one
    /// with the best backtest.
    pub method: Method,
    /// The methods whose mean the forecast is, best backtest first (just `method` when one
    /// method forecasts).
    pub members: Vec<Method>,
    /// Season length used.
    pub season_length: usize,
    /// Backtest MASE of each method tried (empty without a backtest).
    pub scores: Vec<(Method, f64)>,
    /// What the intervals were made from (intervals at other levels come from it).
    pub calibration: Calibration,
    /// What fell back to what, for NOTICEs.
    pub notes: Vec<String>,
}

/// What a series' prediction intervals are made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Calibration {
    /// Absolute errors of the chosen method in each backtest window (`horizon` steps each).
    Backtest {
        /// One list per window.
        errors: Vec<Vec<f64>>,
    },
    /// No backtest window fitted: the standard deviation of the one-step changes, growing
    /// with √step.
    OneStep {
        /// Standard deviation of `y[t] - y[t-1]`.
        sd: f64,
    },
    /// A global model's backtest errors pooled across its series, each divided by its
    /// series' scale (the model keeps the pool; see [`stored::ForecastModel`]).
    Pooled {
        /// This series' scale (its in-sample mean absolute seasonal difference).
        scale: f64,
    },
}

impl Calibration {
    /// [`Calibration::OneStep`] from the standard deviation of `y`'s one-step changes.
    pub fn one_step(y: &[f64]) -> Calibration {
        let d: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
        let sd = if d.is_empty() {
            0.0
        } else {
            let mean = d.iter().sum::<f64>() / d.len() as f64;
            (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt()
        };
        Calibration::OneStep { sd }
    }

    /// Half-widths of the `level` % intervals (level in (0, 100)) for steps `1..=h`. Step `j`
    /// takes the conformal quantile of the backtest errors at steps `j-2..=j+2` of every
    /// window (steps past the windows' length use the last ones). `pooled` holds a global
    /// model's scaled errors per step (empty for per-series methods).
    pub fn widths(&self, h: usize, level: f64, pooled: &[Vec<f64>]) -> Vec<f64> {
        let q = level / 100.0;
        match self {
            Calibration::Pooled { scale } => {
                step_quantiles(h, q, pooled.len(), |lo, hi| pooled[lo..=hi].concat())
                    .into_iter()
                    .map(|w| scale * w)
                    .collect()
            }
            Calibration::Backtest { errors } => {
                let len = errors.iter().map(Vec::len).min().unwrap_or(0);
                step_quantiles(h, q, len, |lo, hi| {
                    errors
                        .iter()
                        .flat_map(|w| w[lo..=hi].iter().copied())
                        .collect()
                })
            }
            Calibration::OneStep { sd } => {
                let z = normal_quantile(0.5 + q / 2.0);
                (0..h).map(|j| z * sd * ((j + 1) as f64).sqrt()).collect()
            }
        }
    }
}

/// For steps `0..h`: the conformal `q` quantile of the errors `pool(lo, hi)` gathers at steps
/// `j-2..=j+2` (clipped to the `len` steps there are; steps past them use the last ones);
/// 0 without errors.
fn step_quantiles(
    h: usize,
    q: f64,
    len: usize,
    pool: impl Fn(usize, usize) -> Vec<f64>,
) -> Vec<f64> {
    (0..h)
        .map(|j| {
            if len == 0 {
                return 0.0;
            }
            let j = j.min(len - 1);
            let mut errors = pool(j.saturating_sub(2), (j + 2).min(len - 1));
            if errors.is_empty() {
                0.0
            } else {
                conformal_quantile(&mut errors, q)
            }
        })
        .collect()
}

/// sMAPE in percent (the M4 definition: 200·|y−ŷ|/(|y|+|ŷ|), a 0/0 step counts 0).
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len()).max(1) as f64;
    actual
        .iter()
        .zip(forecast)
        .map(|(y, f)| {
            let d = y.abs() + f.abs();
            if d == 0.0 {
                0.0
            } else {
                200.0 * (y - f).abs() / d
            }
        })
        .sum::<f64>()
        / n
}

/// MASE's scale: the mean absolute seasonal difference of `insample` at lag `m` (lag 1 when
/// the series is shorter than `m + 1`; 0 when there is no difference at all).
pub fn mase_scale(insample: &[f64], m: usize) -> f64 {
    let m = if insample.len() > m { m.max(1) } else { 1 };
    let diffs: Vec<f64> = insample
        .windows(m + 1)
        .map(|w| (w[m] - w[0]).abs())
        .collect();
    diffs.iter().sum::<f64>() / diffs.len().max(1) as f64
}

/// MASE: mean absolute error scaled by the in-sample mean absolute seasonal difference at
/// lag `m` (lag 1 when the series is shorter than `m + 1`). `NaN` when that scale is 0.
pub fn mase(insample: &[f64], actual: &[f64], forecast: &[f64], m: usize) -> f64 {
    let scale = mase_scale(insample, m);
    let mae = actual
        .iter()
        .zip(forecast)
        .map(|(y, f)| (y - f).abs())
        .sum::<f64>()
        / actual.len().max(1) as f64;
    if scale > 0.0 { mae / scale } else { f64::NAN }
}

/// Standard normal quantile (statrs' inverse CDF), `p` clamped to [1e-12, 1 - 1e-12].
pub fn normal_quantile(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().inverse_cdf(p.clamp(1e-12, 1.0 - 1e-12))
}

/// The `q` quantile (0..1) of `v` by the conformal rank `ceil((n+1) q)`, capped at the max.
fn conformal_quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let rank = (((n + 1) as f64) * q).ceil() as usize;
    v[rank.clamp(1, n) - 1]
}

/// |actual − forecast| step by step.
fn abs_errors(actual: &[f64], forecast: &[f64]) -> Vec<f64> {
    actual
        .iter()
        .zip(forecast)
        .map(|(a, b)| (a - b).abs())
        .collect()
}

/// Backtest origins whose errors make the chosen method's intervals.
const INTERVAL_WINDOWS: usize = 5;

/// Methods to fall back to, simplest last, when a series is too short for `method`.
fn fallbacks(method: Method) -> &'static [Method] {
    match method {
        Method::Mstl => &[Method::Ets, Method::Theta, Method::Naive2],
        Method::Ets | Method::Arima | Method::OptimizedTheta => &[Method::Theta, Method::Naive2],
        Method::SeasonalNaive => &[Method::Naive2],
        Method::Theta => &[Method::Naive2],
        Method::Naive2 | Method::GbdtLag | Method::Nbeats => &[],
    }
}

/// A series' forecasts by a method fitted elsewhere (`nbeats`, one network across the series
/// of a stored `auto` model), by origin: `auto` scores and averages it like its own methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Given {
    /// The method.
    pub method: Method,
    /// (values before the origin, the forecasts from there), at least `horizon` of them.
    pub at: Vec<(usize, Vec<f64>)>,
}

impl Given {
    /// The forecasts from the origin after `values` values.
    fn from(&self, values: usize) -> Option<&[f64]> {
        self.at
            .iter()
            .find(|(o, _)| *o == values)
            .map(|(_, f)| &f[..])
    }
}

/// Forecast one regular series (no NaN).
pub fn forecast(y: &[f64], spec: &ForecastSpec) -> ModelResult<SeriesForecast> {
    forecast_with(y, spec, &[])
}

/// [`forecast`], with `auto` also trying the methods `given` (their forecasts at the origins
/// it backtests and from the end of `y`; a method without one at some origin has no score).
pub fn forecast_with(
    y: &[f64],
    spec: &ForecastSpec,
    given: &[Given],
) -> ModelResult<SeriesForecast> {
    let n = y.len();
    let h = spec.horizon;
    if n == 0 {
        return Err(ModelError::BadTrainingData(
            "the series has no values".into(),
        ));
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::BadTrainingData(
            "the series has missing or infinite values after regularisation".into(),
        ));
    }
    let m = spec
        .season_length
        .unwrap_or_else(|| seasonality::detect_season_length(y, &spec.season_candidates));
    let mut notes = vec![];
    // `auto` leaves `ets` out for a seasonal series long enough for MSTL when the season is
    // longer than a year of months (seasonal AutoETS costs ~10 model fits per series there
    // and did not change M4 Hourly's result: OWA 0.523 with it, 0.522 without, 4.7x the
    // time; MSTL is the exponential-smoothing candidate). Up to 12 it is cheap, and on the
    // Tourism halves the defaults were chosen on it was the best single method.
    let mstl_covers_ets = spec.method.is_none()
        && m > 12
        && n >= Method::Mstl.min_len(m)
        && seasonality::is_seasonal(y, m);
    let feasible = |mt: &Method| n >= mt.min_len(m);
    let combining = !spec.combine.is_empty();
    let candidates: Vec<Method> = match spec.method {
        _ if combining => spec
            .combine
            .iter()
            .copied()
            .filter(|mt| !mt.is_global() && feasible(mt))
            .collect(),
        None => Method::ALL
            .into_iter()
            .filter(feasible)
            .filter(|mt| !(*mt == Method::Ets && mstl_covers_ets))
            .chain(
                given
                    .iter()
                    .filter(|g| g.from(n).is_some())
                    .map(|g| g.method),
            )
            .collect(),
        Some(mt) if feasible(&mt) => vec![mt],
        Some(mt) => {
            let fb = fallbacks(mt)
                .iter()
                .copied()
                .find(feasible)
                .unwrap_or(Method::Naive2);
            notes.push(format!(
                "{} needs {} observations, the series has {n}: {} used instead",
                mt.name(),
                mt.min_len(m),
                fb.name()
            ));
            vec![fb]
        }
    };
    let candidates = if candidates.is_empty() {
        vec![Method::Naive2]
    } else {
        candidates
    };
    // Rolling origins: each leaves `h` values out and keeps enough to fit every candidate.
    let need = candidates
        .iter()
        .map(|c| c.min_len(m))
        .max()
        .unwrap_or(2)
        .max(2 * m.max(1))
        .max(h);
    let origins: Vec<usize> = (1..=spec.windows)
        .map(|k| n.saturating_sub(k * h))
        .filter(|&o| o >= need && o + h <= n)
        .collect();
    // `ets` chooses its model once, on the whole series; backtests refit that model.
    let (ets_form, ets_forecast) = if candidates.contains(&Method::Ets) {
        let (form, f) = methods::choose_ets(y, h, m);
        (Some(form), f)
    } else {
        (None, None)
    };
    let fit = |c: Method, y: &[f64]| match given.iter().find(|g| g.method == c) {
        Some(g) => g
            .from(y.len())
            .filter(|f| f.len() >= h)
            .map(|f| f[..h].to_vec())
            .ok_or_else(|| {
                ModelError::BadTrainingData(format!(
                    "{} has no forecast from value {}",
                    c.name(),
                    y.len()
                ))
            }),
        None => point_forecast_with(c, y, h, m, &spec.season_candidates, ets_form),
    };
    // Each candidate's forecasts at the origins, and its score.
    let mut backtests: Vec<(Method, Vec<Vec<f64>>)> = vec![];
    let mut scores = vec![];
    if !origins.is_empty() {
        for &c in &candidates {
            let mut per_window = vec![];
            let mut total = 0.0;
            let mut ok = true;
            for &o in &origins {
                match fit(c, &y[..o]) {
                    Ok(f) => {
                        let s = mase(&y[..o], &y[o..o + h], &f, m);
                        total += if s.is_finite() {
                            s
                        } else {
                            smape(&y[o..o + h], &f)
                        };
                        per_window.push(f);
                    }
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                scores.push((c, total / origins.len() as f64));
                backtests.push((c, per_window));
            }
        }
    }
    let members = if combining {
        candidates.clone()
    } else {
        best_members(&scores, candidates[0])
    };
    let method = members[0];
    let full_fit = |c: Method| match (c, &ets_forecast) {
        (Method::Ets, Some(f)) => Ok(f.clone()),
        _ => fit(c, y),
    };
    let mut fitted: Vec<(Method, Vec<f64>)> = vec![];
    for &c in &members {
        match full_fit(c) {
            Ok(p) => fitted.push((c, p)),
            Err(e) => notes.push(format!("{}: {e}; left out", c.name())),
        }
    }
    let (members, point) = if fitted.is_empty() {
        notes.push(format!(
            "{}: no forecast; naive2 used instead",
            method.name()
        ));
        (
            vec![Method::Naive2],
            point_forecast(Method::Naive2, y, h, m, &[])?,
        )
    } else {
        let kept: Vec<Method> = fitted.iter().map(|f| f.0).collect();
        let forecasts: Vec<&[f64]> = fitted.iter().map(|f| &f.1[..]).collect();
        (kept, mean_of(&forecasts))
    };
    // The forecast's own backtest errors: the mean of its members' forecasts at each origin.
    let member_windows = |k: usize| -> Option<Vec<&[f64]>> {
        members
            .iter()
            .map(|c| backtests.iter().find(|b| b.0 == *c).map(|b| &b.1[k][..]))
            .collect()
    };
    let mut errors: Option<Vec<Vec<f64>>> = (0..origins.len())
        .map(|k| {
            member_windows(k).map(|f| abs_errors(&y[origins[k]..origins[k] + h], &mean_of(&f)))
        })
        .collect::<Option<Vec<_>>>()
        .filter(|e| !e.is_empty());
    // More origins for the interval errors than the selection used: two windows alone
    // under-cover (measured on M4 Hourly: 83 % for a nominal 95 %).
    if let Some(windows) = errors.as_mut() {
        for k in spec.windows + 1..=spec.windows.max(INTERVAL_WINDOWS) {
            let Some(o) = n.checked_sub(k * h).filter(|&o| o >= need) else {
                break;
            };
            let refits: Result<Vec<Vec<f64>>, _> =
                members.iter().map(|&c| fit(c, &y[..o])).collect();
            if let Ok(f) = refits {
                let f: Vec<&[f64]> = f.iter().map(|v| &v[..]).collect();
                windows.push(abs_errors(&y[o..o + h], &mean_of(&f)));
            }
        }
    }
    let calibration = match errors {
        Some(errors) => Calibration::Backtest { errors },
        None => {
            notes.push(
                "the series is too short for a backtest: intervals from its one-step changes"
                    .into(),
            );
            Calibration::one_step(y)
        }
    };
    let width = calibration.widths(h, spec.level, &[]);
    Ok(SeriesForecast {
        lower: point.iter().zip(&width).map(|(p, w)| p - w).collect(),
        upper: point.iter().zip(&width).map(|(p, w)| p + w).collect(),
        point,
        method: members[0],
        members,
        season_length: m,
        scores,
        calibration,
        notes,
    })
}

/// Most methods `auto` averages.
pub const COMBINE_AT_MOST: usize = 3;

/// `auto` averages the methods whose backtest score is at most this much above the best
/// (0.5: within 1.5 times the best score).
pub const COMBINE_WITHIN: f64 = 0.5;

/// The methods `auto` averages, best first: up to [`COMBINE_AT_MOST`] whose backtest score
/// is within [`COMBINE_WITHIN`] of the best; `fallback` alone without scores.
fn best_members(scores: &[(Method, f64)], fallback: Method) -> Vec<Method> {
    let mut ranked: Vec<(Method, f64)> = scores.to_vec();
    // A stable sort: ties keep the candidates' order.
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    match ranked.first() {
        None => vec![fallback],
        Some(&(_, best)) => ranked
            .iter()
            .take_while(|(_, s)| *s <= best * (1.0 + COMBINE_WITHIN))
            .take(COMBINE_AT_MOST)
            .map(|(c, _)| *c)
            .collect(),
    }
}

/// Step-by-step mean of forecasts of equal length.
fn mean_of(forecasts: &[&[f64]]) -> Vec<f64> {
    let k = forecasts.len().max(1) as f64;
    let h = forecasts.first().map_or(0, |f| f.len());
    (0..h)
        .map(|j| forecasts.iter().map(|f| f[j]).sum::<f64>() / k)
        .collect()
}

/// How a forecast names the methods it averages: `ets`, or `ets+mstl+theta`.
pub fn members_label(method: Method, members: &[Method]) -> String {
    if members.len() <= 1 {
        return method.name().to_string();
    }
    members
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_measures_follow_the_m4_definitions() {
        assert!((smape(&[100.0, 0.0], &[110.0, 0.0]) - 200.0 * 10.0 / 210.0 / 2.0).abs() < 1e-12);
        // In-sample seasonal differences at lag 2: |3-1| = 2, |4-2| = 2 -> scale 2.
        let m = mase(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0], &[6.0, 6.0], 2);
        assert!((m - 0.25).abs() < 1e-12, "{m}");
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.05) + 1.644854).abs() < 1e-5);
    }

    #[test]
    fn auto_picks_a_method_and_intervals_contain_the_point() {
        let y: Vec<f64> = (0..24 * 20)
            .map(|t| {
                50.0 + 10.0 * (2.0 * std::f64::consts::PI * (t % 24) as f64 / 24.0).sin()
                    + ((t as f64 * 12.9898).sin() * 43_758.545).fract()
            })
            .collect();
        let spec = ForecastSpec {
            method: None,
            horizon: 48,
            level: 90.0,
            season_length: None,
            season_candidates: vec![24, 168],
            windows: 2,
            combine: vec![],
        };
        let f = forecast(&y, &spec).expect("forecast");
        assert_eq!(f.season_length, 24);
        assert_eq!(f.point.len(), 48);
        assert!(f.scores.len() >= 4, "{:?}", f.scores);
        for j in 0..48 {
            assert!(f.lower[j] <= f.point[j] && f.point[j] <= f.upper[j]);
        }
    }

    #[test]
    fn auto_averages_the_methods_close_to_the_best() {
        use Method::*;
        assert_eq!(
            best_members(
                &[(Theta, 1.0), (Naive2, 1.4), (Mstl, 1.6), (Ets, 1.2)],
                Naive2
            ),
            vec![Theta, Ets, Naive2]
        );
        assert_eq!(best_members(&[(Ets, 1.0), (Theta, 2.0)], Naive2), vec![Ets]);
        assert_eq!(
            best_members(
                &[(Ets, 1.0), (Theta, 1.0), (Mstl, 1.1), (Naive2, 1.2)],
                Naive2
            ),
            vec![Ets, Theta, Mstl],
            "at most three, ties in candidate order"
        );
        assert_eq!(best_members(&[], Naive2), vec![Naive2]);
        assert_eq!(members_label(Ets, &[Ets, Mstl]), "ets+mstl");
        assert_eq!(members_label(Ets, &[Ets]), "ets");
    }

    #[test]
    fn a_combination_is_the_mean_of_its_members_with_its_own_backtest_errors() {
        let y: Vec<f64> = (0..12 * 12)
            .map(|t| {
                100.0
                    + t as f64 * 0.5
                    + 20.0 * (2.0 * std::f64::consts::PI * (t % 12) as f64 / 12.0).sin()
                    + 3.0 * ((t as f64 * 12.9898).sin() * 43_758.545).fract()
            })
            .collect();
        let spec = |method: Option<Method>, combine: Vec<Method>| ForecastSpec {
            method,
            horizon: 12,
            level: 80.0,
            season_length: Some(12),
            season_candidates: vec![12],
            windows: 2,
            combine,
        };
        let one = |m: Method| forecast(&y, &spec(Some(m), vec![])).expect("forecast");
        let (snaive, theta) = (one(Method::SeasonalNaive), one(Method::Theta));
        let both = forecast(&y, &spec(None, vec![Method::SeasonalNaive, Method::Theta]))
            .expect("combination");
        assert_eq!(both.members, vec![Method::SeasonalNaive, Method::Theta]);
        for j in 0..12 {
            assert!((both.point[j] - (snaive.point[j] + theta.point[j]) / 2.0).abs() < 1e-9);
        }
        // Its interval errors are the combination's own: the first window's, recomputed.
        let o = y.len() - 12;
        let at_origin = |m: Method| point_forecast(m, &y[..o], 12, 12, &[12]).expect("refit");
        let (a, b) = (at_origin(Method::SeasonalNaive), at_origin(Method::Theta));
        let Calibration::Backtest { errors } = &both.calibration else {
            panic!("no backtest: {:?}", both.calibration);
        };
        assert_eq!(errors.len(), 5);
        for j in 0..12 {
            let e = (y[o + j] - (a[j] + b[j]) / 2.0).abs();
            assert!((errors[0][j] - e).abs() < 1e-9, "step {j}");
        }
        // auto's choice is among its scored candidates and names what it averages.
        let auto = forecast(&y, &spec(None, vec![])).expect("auto");
        assert!(!auto.members.is_empty() && auto.members.len() <= COMBINE_AT_MOST);
        assert_eq!(auto.method, auto.members[0]);
        assert!(
            auto.members
                .iter()
                .all(|m| auto.scores.iter().any(|s| s.0 == *m))
        );
    }
}
