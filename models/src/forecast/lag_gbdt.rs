//! `gbdt_lag`: one gradient-boosted tree model trained across every series of a model
//! (a "global" model), forecasting recursively from lagged values.
//!
//! Each training row predicts `y[t]` of one series from what was known at `t - 1`:
//! - the lags `y[t - l]` for `l` in [`LagLayout::lags`] (one season of lags, then whole seasons
//!   back to the longest season that fits), normalised by the series' recent window:
//!   `(y[t - l] - μ) / σ`, with `μ` and `σ` the mean and standard deviation of the last
//!   `window` values (σ floored so that a flat series does not divide by zero);
//! - the calendar of `t` (hour, weekday, day of month, month — each part finer than a year
//!   and coarser than the series' step) as categories, or for plain integer times the
//!   position of `t` in every season length;
//! - the exogenous columns' values at `t` (unnormalised).
//!
//! The target is `(y[t] - μ) / σ` (squared error), so one model serves series of any scale.
//! Multi-step forecasts are recursive: each step's prediction becomes a lag of the next; all
//! series advance one step per scoring pass. Missing lags (the start of a series) are NaN,
//! which the trees treat as missing values, so short series still train and forecast.
//!
//! Why own code: no Rust crate offers a global lag-feature forecaster (augurs and
//! anofox-forecast are per-series); the boosting itself is this crate's GBDT.

use chrono::{DateTime, Datelike, Timelike};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use crate::features::{DerivedColumn, Matrix};
use crate::gbdt::{Ensemble, Objective, TreeParams, train_boosted};

/// A part of the calendar used as a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarPart {
    /// 0..24.
    Hour,
    /// Monday = 0 .. Sunday = 6.
    Weekday,
    /// 0..31 (day of month − 1).
    MonthDay,
    /// 0..12.
    Month,
}

impl CalendarPart {
    fn categories(self) -> usize {
        match self {
            CalendarPart::Hour => 24,
            CalendarPart::Weekday => 7,
            CalendarPart::MonthDay => 31,
            CalendarPart::Month => 12,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CalendarPart::Hour => "hour",
            CalendarPart::Weekday => "weekday",
            CalendarPart::MonthDay => "day_of_month",
            CalendarPart::Month => "month",
        }
    }

    fn of(self, t: &DateTime<chrono::Utc>) -> f32 {
        (match self {
            CalendarPart::Hour => t.hour(),
            CalendarPart::Weekday => t.weekday().num_days_from_monday(),
            CalendarPart::MonthDay => t.day0(),
            CalendarPart::Month => t.month0(),
        }) as f32
    }
}

/// Which features a lag model reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagLayout {
    /// Lags, ascending.
    pub lags: Vec<usize>,
    /// Values the normalisation's mean and standard deviation are taken over.
    pub window: usize,
    /// Nanoseconds per time tick (0: integer times, no calendar).
    pub nanos: i64,
    /// Calendar parts (timestamps and dates).
    pub calendar: Vec<CalendarPart>,
    /// Season lengths whose position is a feature (integer times).
    pub positions: Vec<usize>,
    /// Exogenous column names, in the order their values are given.
    pub exogenous: Vec<String>,
}

impl LagLayout {
    /// The layout for series stepping `step` ticks of `nanos` ns, with primary season `m`
    /// and candidate seasons `seasons`, whose typical length is `typical_len`.
    pub fn new(
        step: i64,
        nanos: i64,
        m: usize,
        seasons: &[usize],
        typical_len: usize,
        exogenous: Vec<String>,
    ) -> LagLayout {
        const HOUR: i64 = 3_600_000_000_000;
        const DAY: i64 = 24 * HOUR;
        let m = m.max(1);
        // One season of lags (at least 7), then whole seasons back to the longest candidate
        // season that leaves a third of a typical series to learn from.
        let first = m.clamp(7, 400);
        let mut lags: Vec<usize> = (1..=first).collect();
        let longest = seasons
            .iter()
            .copied()
            .filter(|&s| s <= typical_len / 3 && s <= 2_000)
            .max()
            .unwrap_or(first);
        let mut k = 2 * m;
        while m > 1 && k <= longest {
            lags.push(k);
            k += m;
        }
        lags.push(longest);
        lags.sort_unstable();
        lags.dedup();
        let span = step.saturating_mul(nanos);
        let calendar = if nanos == 0 {
            vec![]
        } else {
            let mut c = vec![];
            if span < DAY {
                c.push(CalendarPart::Hour);
            }
            if span < 7 * DAY {
                c.push(CalendarPart::Weekday);
            }
            if span < 28 * DAY {
                c.push(CalendarPart::MonthDay);
            }
            if span < 365 * DAY {
                c.push(CalendarPart::Month);
            }
            c
        };
        let positions = if nanos == 0 {
            let mut p: Vec<usize> = seasons
                .iter()
                .copied()
                .chain(std::iter::once(m))
                .filter(|&s| (2..=1_000).contains(&s))
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        } else {
            vec![]
        };
        LagLayout {
            lags,
            window: m.max(2),
            nanos,
            calendar,
            positions,
            exogenous,
        }
    }

    fn columns(&self) -> Vec<DerivedColumn> {
        let mut out: Vec<DerivedColumn> = self
            .lags
            .iter()
            .map(|l| DerivedColumn {
                feature: 0,
                name: format!("lag_{l}"),
                categories: None,
            })
            .collect();
        out.push(DerivedColumn {
            feature: 0,
            name: "window_cv".into(),
            categories: None,
        });
        out.extend(self.calendar.iter().map(|c| DerivedColumn {
            feature: 0,
            name: c.name().into(),
            categories: Some(c.categories()),
        }));
        out.extend(self.positions.iter().map(|&p| DerivedColumn {
            feature: 0,
            name: format!("position_{p}"),
            categories: Some(p),
        }));
        out.extend(self.exogenous.iter().map(|e| DerivedColumn {
            feature: 0,
            name: e.clone(),
            categories: None,
        }));
        out
    }

    /// μ and σ of the `window` values before `t` (fewer at the start of a series).
    fn norm(&self, y: &[f64], t: usize) -> (f64, f64) {
        let w = &y[t.saturating_sub(self.window)..t];
        let n = w.len().max(1) as f64;
        let mu = w.iter().sum::<f64>() / n;
        let sd = (w.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n).sqrt();
        (mu, sd.max(1e-3 * mu.abs()).max(1e-9))
    }

    /// Append the features of time index `t` of `s` (values known before `t` in `y`).
    fn push_row(
        &self,
        s: &SeriesInput<'_>,
        y: &[f64],
        t: usize,
        cols: &mut [Vec<f32>],
    ) -> (f64, f64) {
        let (mu, sd) = self.norm(y, t);
        let mut c = 0;
        for &l in &self.lags {
            cols[c].push(if l <= t {
                ((y[t - l] - mu) / sd) as f32
            } else {
                f32::NAN
            });
            c += 1;
        }
        cols[c].push(if mu != 0.0 {
            (sd / mu.abs()).min(1e3) as f32
        } else {
            f32::NAN
        });
        c += 1;
        let tick = s.start + s.step * t as i64;
        if !self.calendar.is_empty() {
            let at = DateTime::from_timestamp_nanos(tick.saturating_mul(self.nanos));
            for part in &self.calendar {
                cols[c].push(part.of(&at));
                c += 1;
            }
        }
        let slot = if s.step > 0 {
            tick.div_euclid(s.step)
        } else {
            t as i64
        };
        for &p in &self.positions {
            cols[c].push(slot.rem_euclid(p as i64) as f32);
            c += 1;
        }
        for e in s.exogenous {
            cols[c].push(e.get(t).map_or(f32::NAN, |v| *v as f32));
            c += 1;
        }
        (mu, sd)
    }
}

/// One series as the lag model sees it.
#[derive(Debug, Clone)]
pub struct SeriesInput<'a> {
    /// Regular values, oldest first.
    pub y: &'a [f64],
    /// Time (ticks) of `y[0]`.
    pub start: i64,
    /// Ticks per step.
    pub step: i64,
    /// Exogenous columns, each at every step of `y` and (for forecasting) the horizon after.
    pub exogenous: &'a [Vec<f64>],
}

/// A trained lag model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagModel {
    /// Its features.
    pub layout: LagLayout,
    /// The boosted trees (target: the normalised value).
    pub ensemble: Ensemble,
}

/// Most training rows; longer histories are thinned to every k-th time, newest kept.
const MAX_ROWS: usize = 2_000_000;

/// Bytes a fit over series with `values` values in all builds at its peak: per training row
/// (at most [`MAX_ROWS`]) and feature column a 4-byte value built per series and copied once
/// into the matrix, and a 1-byte bin; per row the target, gradients and row indices. Checked
/// against the server's peak resident memory: 300 hourly series of 2 000 values (34 columns)
/// grew it by 200 MB, this gives 203 MB.
pub fn fit_bytes(values: usize, layout: &LagLayout) -> usize {
    let rows = values.min(MAX_ROWS);
    rows * (layout.columns().len() * 9 + 32)
}

/// Boosting settings for lag models (`WITH (num_trees = .., learning_rate = ..)` overrides).
pub fn default_params() -> TreeParams {
    let mut p = TreeParams::gbdt_defaults();
    p.num_trees = 300;
    p.learning_rate = 0.05;
    p.grow.num_leaves = 63;
    p.grow.min_data_in_leaf = 50;
    p.early_stopping_rounds = 0;
    p
}

/// Train one model on every series.
pub fn fit(
    series: &[SeriesInput<'_>],
    layout: LagLayout,
    params: &TreeParams,
    cancel: &std::sync::atomic::AtomicBool,
) -> ModelResult<LagModel> {
    let start_t = layout.window.min(layout.lags[0].max(1)).max(2);
    let total: usize = series
        .iter()
        .map(|s| s.y.len().saturating_sub(start_t))
        .sum();
    if total < 10 {
        return Err(ModelError::BadTrainingData(format!(
            "gbdt_lag needs at least 10 values after the first {start_t} of the series, the \
             series have {total}"
        )));
    }
    let stride = total.div_ceil(MAX_ROWS).max(1);
    let derived = layout.columns();
    let per_series: Vec<(Vec<Vec<f32>>, Vec<f32>)> = series
        .par_iter()
        .map(|s| {
            let mut cols: Vec<Vec<f32>> = vec![vec![]; derived.len()];
            let mut target = vec![];
            let n = s.y.len();
            let mut t = n;
            while t > start_t {
                t -= stride;
                if t < start_t {
                    break;
                }
                let (mu, sd) = layout.push_row(s, s.y, t, &mut cols);
                target.push(((s.y[t] - mu) / sd) as f32);
            }
            (cols, target)
        })
        .collect();
    let mut cols: Vec<Vec<f32>> = vec![Vec::with_capacity(total / stride + 1); derived.len()];
    let mut y = Vec::with_capacity(total / stride + 1);
    for (c, t) in per_series {
        for (dst, src) in cols.iter_mut().zip(c) {
            dst.extend(src);
        }
        y.extend(t);
    }
    // Extreme normalised targets (a jump from a flat window) would dominate squared error.
    for v in &mut y {
        *v = v.clamp(-50.0, 50.0);
    }
    let x = Matrix {
        n_rows: y.len(),
        cols,
    };
    let mut hook = |_: usize, _: Option<f64>| -> ModelResult<()> {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            Err(ModelError::Cancelled)
        } else {
            Ok(())
        }
    };
    let (ensemble, _) = train_boosted(
        &x,
        &derived,
        &y,
        Objective::Regression,
        1,
        None,
        params,
        &mut hook,
    )?;
    Ok(LagModel { layout, ensemble })
}

impl LagModel {
    /// Each feature's share of the trees' total split gain, largest first.
    pub fn importance(&self) -> Vec<(String, f64)> {
        let names = self.layout.columns();
        let gain = self.ensemble.gain_per_column(names.len());
        let total: f64 = gain.iter().sum();
        let mut out: Vec<(String, f64)> = names
            .into_iter()
            .zip(gain)
            .map(|(c, g)| (c.name, if total > 0.0 { g / total } else { 0.0 }))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    /// `h` recursive forecasts of every series (exogenous values must cover the horizon;
    /// missing ones are NaN).
    pub fn forecast(&self, series: &[SeriesInput<'_>], h: usize) -> Vec<Vec<f64>> {
        let width = self.layout.columns().len();
        let mut ext: Vec<Vec<f64>> = series.iter().map(|s| s.y.to_vec()).collect();
        for _ in 0..h {
            let mut cols: Vec<Vec<f32>> = vec![Vec::with_capacity(series.len()); width];
            let norms: Vec<(f64, f64)> = series
                .iter()
                .zip(&ext)
                .map(|(s, y)| self.layout.push_row(s, y, y.len(), &mut cols))
                .collect();
            let x = Matrix {
                n_rows: series.len(),
                cols,
            };
            let pred = self.ensemble.predict(&x);
            for ((y, (mu, sd)), p) in ext.iter_mut().zip(norms).zip(pred) {
                y.push(mu + sd * p as f64);
            }
        }
        ext.into_iter()
            .zip(series)
            .map(|(y, s)| y[s.y.len()..].to_vec())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Forecasts `f` of [`daily_shapes`] cut after 28 days hit each series' last 48 values
    /// with a mean absolute percentage error under 5 %.
    pub(crate) fn assert_the_last_two_days_within_5_percent(data: &[Vec<f64>], f: &[Vec<f64>]) {
        for (y, f) in data.iter().zip(f) {
            let actual = &y[24 * 28..];
            let mape = actual
                .iter()
                .zip(f)
                .map(|(a, p)| (a - p).abs() / a)
                .sum::<f64>()
                / 48.0;
            assert!(mape < 0.05, "MAPE {mape}");
        }
    }

    /// Hourly series with a daily shape at scales 1 to 1000, a little noise.
    pub(crate) fn daily_shapes() -> Vec<Vec<f64>> {
        (0..12)
            .map(|i| {
                let scale = 10f64.powi(i % 4);
                (0..24 * 30)
                    .map(|t| {
                        let noise = ((t as f64 * 12.9898 + i as f64).sin() * 43_758.545).fract();
                        scale
                            * (10.0
                                + 3.0 * (2.0 * std::f64::consts::PI * (t % 24) as f64 / 24.0).sin()
                                + 0.3 * noise)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn one_model_forecasts_series_of_different_scales() {
        let data = daily_shapes();
        let hour = 3_600_000_000_000i64;
        let inputs: Vec<SeriesInput<'_>> = data
            .iter()
            .map(|y| SeriesInput {
                y: &y[..24 * 28],
                start: 1_700_000_000_000_000_000 / hour,
                step: 1,
                exogenous: &[],
            })
            .collect();
        let layout = LagLayout::new(1, hour, 24, &[24, 168], 24 * 28, vec![]);
        assert!(layout.calendar.contains(&CalendarPart::Hour));
        let mut params = default_params();
        params.num_trees = 100;
        params.learning_rate = 0.1;
        let model = fit(&inputs, layout, &params, &AtomicBool::new(false)).expect("fit");
        let f = model.forecast(&inputs, 48);
        assert_the_last_two_days_within_5_percent(&data, &f);
    }
}
