//! Fitting a stored model whose method is global (`USING gbdt_lag`, `USING nbeats`): one model
//! across all series, scored like the per-series methods.
//!
//! 1. Holdout: a model trained on every series without its last `horizon` values forecasts
//!    them; sMAPE, MASE and RMSE per series are what `EVALUATE('m')` returns.
//! 2. Intervals: those holdout errors, divided by each series' scale (its in-sample mean
//!    absolute seasonal difference, the MASE scale), are pooled across series per step; a
//!    series' interval is its scale times the conformal quantile of the pool at steps
//!    `j-2..=j+2`. Held-out coverage is measured across two folds of series (even / odd
//!    position): a series' intervals come from the other fold's errors, so no series
//!    calibrates itself. With fewer than [`FEW_SERIES`] series the pool is small, so models
//!    trained without the last `2h` and `3h` values add their errors over the next `h`.
//! 3. The stored forecast: a model trained on the full series, with intervals from the whole
//!    pool.

use serde::{Deserialize, Serialize};

use super::lag_gbdt::{self, LagLayout, LagModel, SeriesInput};
use super::nbeats::{self, NbeatsModel, NbeatsParams};
use super::seasonality::detect_season_length;
use super::stored::{FittedSeries, ForecastRequest, Holdout};
use super::time::TimeAxis;
use super::{Calibration, Given, Method, Regularized, mase, mase_scale, smape};
use crate::error::ModelResult;
use crate::gbdt::TreeParams;
use crate::train::TrainContext;

/// Most scaled errors kept per step (evenly spaced order statistics beyond that).
const MAX_POOL: usize = 5_000;

/// Below this many series with a holdout, earlier origins add errors to the interval pool.
const FEW_SERIES: usize = 100;

/// How many earlier origins (2h and 3h before the end) a model with few series adds.
const EXTRA_ORIGINS: usize = 2;

/// The model a global method trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GlobalModel {
    /// `gbdt_lag`'s trees.
    Lag(LagModel),
    /// `nbeats`' network.
    Nbeats(NbeatsModel),
}

impl GlobalModel {
    /// The method that trained it.
    pub fn method(&self) -> Method {
        match self {
            GlobalModel::Lag(_) => Method::GbdtLag,
            GlobalModel::Nbeats(_) => Method::Nbeats,
        }
    }

    /// Exogenous columns it reads (their future values are needed to forecast).
    pub fn exogenous(&self) -> &[String] {
        match self {
            GlobalModel::Lag(m) => &m.layout.exogenous,
            GlobalModel::Nbeats(_) => &[],
        }
    }

    /// Each feature's share of the model's importance, largest first (none for a network).
    pub fn importance(&self) -> Vec<(String, f64)> {
        match self {
            GlobalModel::Lag(m) => m.importance(),
            GlobalModel::Nbeats(_) => vec![],
        }
    }

    /// Last values of a series it needs to forecast.
    pub fn history(&self) -> usize {
        match self {
            GlobalModel::Lag(m) => m.layout.lags.last().copied().unwrap_or(1) + m.layout.window,
            GlobalModel::Nbeats(m) => m.input_size,
        }
    }

    /// The next `h` values of every series.
    pub fn forecast(&self, series: &[SeriesInput<'_>], h: usize) -> ModelResult<Vec<Vec<f64>>> {
        match self {
            GlobalModel::Lag(m) => Ok(m.forecast(series, h)),
            GlobalModel::Nbeats(m) => {
                let values: Vec<&[f64]> = series.iter().map(|s| s.y).collect();
                m.forecast(&values, h)
            }
        }
    }

    /// The network, when the model is one (its weights are a payload of the artifact).
    pub fn network(&self) -> Option<&NbeatsModel> {
        match self {
            GlobalModel::Nbeats(m) => Some(m),
            GlobalModel::Lag(_) => None,
        }
    }
}

/// What a global model keeps beside its series: the model and the interval pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalParts {
    /// The trained model (full series).
    pub model: GlobalModel,
    /// Per step, the holdout errors of every series divided by its scale, ascending.
    pub pooled: Vec<Vec<f64>>,
}

/// A series ready for a global fit.
#[derive(Debug, Clone)]
pub struct PreparedSeries {
    /// Id values.
    pub id: Vec<Option<String>>,
    /// How its times map onto its grid.
    pub axis: TimeAxis,
    /// Its regular values (on `axis`).
    pub series: Regularized,
    /// Exogenous columns on the same grid.
    pub exogenous: Vec<Vec<f64>>,
}

/// The MASE scale of `y` at lag `m` (lag 1 when `y` is too short; then the mean absolute
/// value; then 1), so every series has a positive scale.
fn scale(y: &[f64], m: usize) -> f64 {
    let s = mase_scale(y, m);
    if s > 0.0 {
        return s;
    }
    let mean_abs = y.iter().map(|v| v.abs()).sum::<f64>() / y.len().max(1) as f64;
    if mean_abs > 0.0 { mean_abs } else { 1.0 }
}

fn input<'a>(p: &'a PreparedSeries, len: usize) -> SeriesInput<'a> {
    SeriesInput {
        y: &p.series.values[..len],
        start: p.series.start,
        step: p.series.step.max(1),
        exogenous: &p.exogenous,
    }
}

fn thin(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    if v.len() <= MAX_POOL {
        return v;
    }
    let n = v.len();
    (0..MAX_POOL)
        .map(|i| v[i * (n - 1) / (MAX_POOL - 1)])
        .collect()
}

/// What a global fit will train.
#[derive(Debug, Clone)]
pub enum GlobalKind {
    /// `gbdt_lag`: lags, calendar and exogenous columns, and the boosting settings.
    Lag {
        /// The features.
        layout: LagLayout,
        /// Boosting settings.
        params: TreeParams,
    },
    /// `nbeats`: the window it reads and the network's settings.
    Nbeats {
        /// Values read.
        input: usize,
        /// Network and training settings.
        params: NbeatsParams,
    },
}

/// What a global fit will use: the season and the model's settings.
#[derive(Debug, Clone)]
pub struct GlobalPlan {
    /// Season length (the one most series show, unless the request names one).
    pub season: usize,
    /// The model and its settings.
    pub kind: GlobalKind,
}

impl GlobalPlan {
    /// Choose the season and the model's settings for `series` (ordered by id) as `req`
    /// asks, with the exogenous columns `exogenous` (`gbdt_lag`; their values are in each
    /// series' [`PreparedSeries::exogenous`]).
    pub fn new(
        series: &[PreparedSeries],
        req: &ForecastRequest,
        exogenous: Vec<String>,
        nanos: i64,
    ) -> ModelResult<GlobalPlan> {
        let step = series.first().map_or(1, |s| s.series.step.max(1));
        // Series on calendar months have no calendar features; a 12-month season gives the
        // month of the year.
        let axis = series.first().map_or(TimeAxis::Ticks, |s| s.axis);
        let candidates = axis.season_candidates(step, nanos);
        let nanos = axis.calendar_nanos(nanos);
        let season = match req.season_length {
            Some(m) => m,
            None => {
                // The season most series show.
                let mut votes: Vec<usize> = series
                    .iter()
                    .map(|s| detect_season_length(&s.series.values, &candidates))
                    .collect();
                votes.sort_unstable();
                let mut best = (1usize, 0usize);
                for chunk in votes.chunk_by(|a, b| a == b) {
                    if chunk.len() > best.1 {
                        best = (chunk[0], chunk.len());
                    }
                }
                best.0
            }
        };
        if req.method == Some(Method::Nbeats) {
            let input = req.nbeats.input_size_for(req.horizon, season);
            return Ok(GlobalPlan {
                season,
                kind: GlobalKind::Nbeats {
                    input,
                    params: req.nbeats.clone(),
                },
            });
        }
        let mut lens: Vec<usize> = series.iter().map(|s| s.series.values.len()).collect();
        lens.sort_unstable();
        let typical = lens.get(lens.len() / 2).copied().unwrap_or(0);
        let layout = LagLayout::new(step, nanos, season, &candidates, typical, exogenous);
        let mut params = lag_gbdt::default_params();
        for (k, v) in &req.tree_options {
            params.set(k, *v)?;
        }
        Ok(GlobalPlan {
            season,
            kind: GlobalKind::Lag { layout, params },
        })
    }

    /// The method the plan trains.
    pub fn method(&self) -> Method {
        match self.kind {
            GlobalKind::Lag { .. } => Method::GbdtLag,
            GlobalKind::Nbeats { .. } => Method::Nbeats,
        }
    }

    /// Bytes the fits will need at their peak (one model is trained at a time).
    pub fn fit_bytes(&self, series: &[PreparedSeries], horizon: usize) -> usize {
        match &self.kind {
            GlobalKind::Lag { layout, .. } => {
                let values = series.iter().map(|s| s.series.values.len()).sum();
                lag_gbdt::fit_bytes(values, layout)
            }
            GlobalKind::Nbeats { input, params } => params.working_memory(*input, horizon),
        }
    }

    /// A line saying what will be trained.
    fn describe(&self) -> String {
        let m = self.season;
        match &self.kind {
            GlobalKind::Lag { layout, .. } => format!(
                "gbdt_lag: season {m}, lags {}, {} calendar part(s), {} exogenous column(s)",
                layout
                    .lags
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                layout.calendar.len() + layout.positions.len(),
                layout.exogenous.len()
            ),
            GlobalKind::Nbeats { input, params } => format!(
                "nbeats: season {m}, reads the last {input} values, {} block(s) of {} layer(s) \
                 × {} units, {} steps of {} windows",
                params.blocks, params.layers, params.width, params.steps, params.batch_size
            ),
        }
    }

    /// Train the plan's model on `inputs` (forecasting `h` values); `what` names the fit in
    /// progress lines.
    fn fit(
        &self,
        inputs: &[SeriesInput<'_>],
        h: usize,
        what: &str,
        ctx: &mut TrainContext,
    ) -> ModelResult<GlobalModel> {
        match &self.kind {
            GlobalKind::Lag { layout, params } => Ok(GlobalModel::Lag(lag_gbdt::fit(
                inputs,
                layout.clone(),
                params,
                ctx.cancel,
            )?)),
            GlobalKind::Nbeats { input, params } => {
                let values: Vec<&[f64]> = inputs.iter().map(|s| s.y).collect();
                let steps = params.steps;
                let progress = &mut *ctx.progress;
                let model = nbeats::fit(&values, h, *input, params, ctx.cancel, &mut |s, l| {
                    progress(format!(
                        "nbeats, {what}: step {s} of {steps}, training loss {l:.4}"
                    ))
                })?;
                Ok(GlobalModel::Nbeats(model))
            }
        }
    }
}

/// Fit a global model over `series` (ordered by id) as `req` and `plan` say.
pub fn fit_global(
    series: Vec<PreparedSeries>,
    req: &ForecastRequest,
    plan: GlobalPlan,
    ctx: &mut TrainContext,
) -> ModelResult<(Vec<FittedSeries>, GlobalParts)> {
    let h = req.horizon;
    let m = plan.season;
    let method = plan.method();
    (ctx.progress)(plan.describe());

    // 1. Holdout model on the series long enough to lose `h` values.
    let scored: Vec<usize> = (0..series.len())
        .filter(|&i| series[i].series.values.len() >= h + 3)
        .collect();
    // A model trained on `members` without their last `k · h` values, and its forecasts of
    // the next `h` values of each.
    let mut forecast_from_origin = |series: &[PreparedSeries], members: &[usize], k: usize| {
        let inputs: Vec<SeriesInput<'_>> = members
            .iter()
            .map(|&i| input(&series[i], series[i].series.values.len() - k * h))
            .collect();
        let what = if k == 1 {
            "holdout model".to_string()
        } else {
            format!("model without the last {k}·{h} values")
        };
        plan.fit(&inputs, h, &what, ctx)?.forecast(&inputs, h)
    };
    let mut holdout: Vec<Option<Holdout>> = vec![None; series.len()];
    let mut pooled: Vec<Vec<f64>> = vec![vec![]; h];
    if !scored.is_empty() {
        let forecasts = forecast_from_origin(&series, &scored, 1)?;
        // Scaled errors per fold and step.
        let mut folds: [Vec<Vec<f64>>; 2] = [vec![vec![]; h], vec![vec![]; h]];
        let mut scales = vec![];
        for (k, (&i, f)) in scored.iter().zip(&forecasts).enumerate() {
            let y = &series[i].series.values;
            let (train, actual) = y.split_at(y.len() - h);
            let s = scale(train, m);
            scales.push(s);
            for j in 0..h {
                folds[k % 2][j].push((actual[j] - f[j]).abs() / s);
            }
        }
        // Few series give a small pool per step, and its quantiles under-cover: then models
        // trained without each series' last 2h and 3h values add their errors (over the next
        // h values) to the pool. They do not change EVALUATE's scores.
        if scored.len() < FEW_SERIES {
            for k in 2..=1 + EXTRA_ORIGINS {
                let (positions, earlier): (Vec<usize>, Vec<usize>) = scored
                    .iter()
                    .enumerate()
                    .filter(|&(_, &i)| series[i].series.values.len() >= (k + 1) * h + 3)
                    .unzip();
                if earlier.is_empty() {
                    break;
                }
                let forecasts = forecast_from_origin(&series, &earlier, k)?;
                for ((&pos, &i), f) in positions.iter().zip(&earlier).zip(forecasts) {
                    let y = &series[i].series.values;
                    let origin = y.len() - k * h;
                    let s = scale(&y[..origin], m);
                    for j in 0..h {
                        folds[pos % 2][j].push((y[origin + j] - f[j]).abs() / s);
                    }
                }
            }
        }
        for j in 0..h {
            pooled[j] = thin([folds[0][j].clone(), folds[1][j].clone()].concat());
        }
        let fold_pools: Vec<Vec<Vec<f64>>> = (0..2)
            .map(|k| {
                let other = &folds[1 - k];
                if other.iter().all(Vec::is_empty) {
                    pooled.clone()
                } else {
                    other.iter().map(|v| thin(v.clone())).collect()
                }
            })
            .collect();
        for (k, (&i, f)) in scored.iter().zip(&forecasts).enumerate() {
            let y = &series[i].series.values;
            let (train, actual) = y.split_at(y.len() - h);
            let w =
                Calibration::Pooled { scale: scales[k] }.widths(h, req.level, &fold_pools[k % 2]);
            let inside = (0..h).filter(|&j| (actual[j] - f[j]).abs() <= w[j]).count();
            let rmse = (actual
                .iter()
                .zip(f)
                .map(|(a, p)| (a - p).powi(2))
                .sum::<f64>()
                / h as f64)
                .sqrt();
            let ms = mase(train, actual, f, m);
            holdout[i] = Some(Holdout {
                smape: smape(actual, f),
                mase: ms.is_finite().then_some(ms),
                rmse,
                coverage: inside as f64 / h as f64,
                method,
                combined: vec![],
            });
        }
    }

    // 2. The stored model on the full series.
    let inputs: Vec<SeriesInput<'_>> = series
        .iter()
        .map(|s| input(s, s.series.values.len()))
        .collect();
    // No series could hold `h` values out: no pooled errors, so each series' intervals come
    // from its one-step changes (as for a per-series method without a backtest).
    let no_pool = pooled.iter().all(Vec::is_empty);
    let model = plan.fit(&inputs, h, "full model", ctx)?;
    let keep = model.history();
    // With exogenous columns the forecast needs their future values: it is made when they
    // are given (`FORECAST('m', TABLE future)`), not stored.
    let forecasts = if model.exogenous().is_empty() {
        model.forecast(&inputs, h)?
    } else {
        vec![vec![]; inputs.len()]
    };
    let fitted = series
        .into_iter()
        .zip(forecasts)
        .zip(holdout)
        .map(|((p, forecast), holdout)| {
            let y = &p.series.values;
            let n = y.len();
            let mut notes = p.series.notes.clone();
            if holdout.is_none() {
                notes.push(format!(
                    "{n} observation(s): too few to hold {h} out, so EVALUATE has no scores for it"
                ));
            }
            let calibration = if no_pool {
                notes.push(
                    "no series is long enough for a backtest: intervals from its one-step changes"
                        .into(),
                );
                Calibration::one_step(y)
            } else {
                Calibration::Pooled { scale: scale(y, m) }
            };
            FittedSeries {
                id: p.id,
                axis: p.axis,
                step: p.series.step.max(1),
                last: p.series.start + p.series.step * (n as i64 - 1),
                observations: n,
                method,
                combined: vec![],
                season_length: m,
                forecast,
                calibration,
                holdout,
                notes,
                history: y[n.saturating_sub(keep)..].to_vec(),
            }
        })
        .collect();
    Ok((fitted, GlobalParts { model, pooled }))
}

/// `auto` trains an nbeats network across its series when they hold at least this many
/// values in all ...
pub const NETWORK_MIN_VALUES: usize = 50_000;
/// ... in at least this many series long enough for the network's backtests.
pub const NETWORK_MIN_SERIES: usize = 10;
/// `auto`'s network backtests from origins up to this many horizons before each series' end.
const NETWORK_ORIGINS: usize = 4;

/// Whether `auto` tries an nbeats network on `series` (see [`NETWORK_MIN_VALUES`]).
fn network_worthwhile(series: &[PreparedSeries], h: usize) -> bool {
    let values: usize = series.iter().map(|s| s.series.values.len()).sum();
    let long = series
        .iter()
        .filter(|s| s.series.values.len() > (NETWORK_ORIGINS + 1) * h)
        .count();
    values >= NETWORK_MIN_VALUES && long >= NETWORK_MIN_SERIES
}

/// The network `auto` will train across `series` (ordered by id), when they are worth one
/// (see [`NETWORK_MIN_VALUES`]); its [`GlobalPlan::fit_bytes`] is what the fits will reserve.
pub fn network_plan(
    series: &[PreparedSeries],
    req: &ForecastRequest,
    nanos: i64,
) -> ModelResult<Option<GlobalPlan>> {
    if !network_worthwhile(series, req.horizon) {
        return Ok(None);
    }
    let as_network = ForecastRequest {
        method: Some(Method::Nbeats),
        ..req.clone()
    };
    GlobalPlan::new(series, &as_network, vec![], nanos).map(Some)
}

/// `auto`'s nbeats candidate (as [`network_plan`] planned it): per series of `series` (in order), the forecasts of one network
/// trained on every series without its last [`NETWORK_ORIGINS`] horizons, from each origin
/// between there and the last horizon (the values after the cut are inputs, never targets,
/// so these backtests do not see what they forecast), and of one network trained on the
/// whole series, from the end. Two fits, whatever the number of origins.
pub fn network_candidates(
    series: &[PreparedSeries],
    plan: &GlobalPlan,
    h: usize,
    ctx: &mut TrainContext,
) -> ModelResult<Vec<Given>> {
    (ctx.progress)(format!(
        "auto: one network across the series as a candidate method ({})",
        plan.describe()
    ));
    let values = |s: &PreparedSeries, k: usize| -> Option<usize> {
        s.series.values.len().checked_sub(k * h).filter(|&o| o >= 2)
    };
    // The backtest network, on the series long enough to lose NETWORK_ORIGINS horizons.
    let cut: Vec<SeriesInput<'_>> = series
        .iter()
        .filter_map(|s| values(s, NETWORK_ORIGINS).map(|o| input(s, o)))
        .collect();
    let mut given: Vec<Given> = series
        .iter()
        .map(|_| Given {
            method: Method::Nbeats,
            at: vec![],
        })
        .collect();
    if cut.iter().any(|s| s.y.len() > h) {
        let backtest = plan.fit(&cut, h, "backtest model", ctx)?;
        for k in 1..=NETWORK_ORIGINS {
            let at: Vec<(usize, usize)> = series
                .iter()
                .enumerate()
                .filter_map(|(i, s)| values(s, NETWORK_ORIGINS).and(values(s, k)).map(|o| (i, o)))
                .collect();
            let inputs: Vec<SeriesInput<'_>> =
                at.iter().map(|&(i, o)| input(&series[i], o)).collect();
            for (&(i, o), f) in at.iter().zip(backtest.forecast(&inputs, h)?) {
                given[i].at.push((o, f));
            }
        }
    }
    let full: Vec<SeriesInput<'_>> = series
        .iter()
        .map(|s| input(s, s.series.values.len()))
        .collect();
    let model = plan.fit(&full, h, "full model", ctx)?;
    for (g, (s, f)) in given
        .iter_mut()
        .zip(series.iter().zip(model.forecast(&full, h)?))
    {
        g.at.push((s.series.values.len(), f));
    }
    Ok(given)
}
