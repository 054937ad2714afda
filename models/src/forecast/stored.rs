//! Stored forecasting models: `CREATE MODEL m FORECAST value TIME t [BY ids] [USING method]
//! [WITH (horizon = n, level = p, season_length = m)] AS <query>`.
//!
//! Training splits the query's rows into series (one per combination of id values),
//! regularises each one, and for each series
//! 1. holds out the last `horizon` values, runs the whole procedure (method choice, intervals)
//!    on the rest and scores it on them: sMAPE, MASE, RMSE and interval coverage — what
//!    `EVALUATE('m')` returns — and
//! 2. runs it again on the full series: the stored forecast, its method and the backtest errors
//!    its intervals come from.
//!
//! `FORECAST('m' [, horizon => n] [, level => p])` reads the stored forecast (the first `n`
//! steps; `n` may not exceed the trained horizon, as in BigQuery ML) and recomputes the
//! intervals at level `p` from the stored errors, so it costs no refitting. Series are fitted
//! in parallel (rayon); the training rows are held once, then each series' own values.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::global::{GlobalModel, GlobalParts, PreparedSeries};
use super::lag_gbdt;
use super::nbeats::NbeatsParams;
use super::regular::on_grid;
use super::time::{TimeAxis, times_from_i64, unit_nanos};
use super::trainer::ForecastTrainer;
use super::{
    Calibration, ForecastSpec, Given, Method, Regularized, forecast, forecast_with, mase,
    members_label, regularize, smape,
};
use crate::Task;
use crate::error::{ModelError, ModelResult};
use crate::features::FeatureSet;
use crate::metrics::Metrics;
use crate::model::{Algorithm, Estimator, FORMAT_VERSION, Importance, ModelArtifact, Trial};
use crate::train::{TrainContext, num};

/// A series' id values as text (`None` = NULL).
type SeriesKey = Vec<Option<String>>;
/// A series' (time ticks, value) rows as read.
type SeriesRows = Vec<(i64, Option<f64>)>;

/// Largest horizon a forecast may ask for.
pub const MAX_HORIZON: usize = 100_000;
/// Largest `season_length` (points) a forecast or an anomaly detector takes.
pub const MAX_SEASON_LENGTH: usize = 100_000;
/// Default horizon of a stored model.
pub const DEFAULT_HORIZON: usize = 10;
/// Default interval level (percent).
pub const DEFAULT_LEVEL: f64 = 95.0;

/// What `CREATE MODEL ... FORECAST` asks for.
#[derive(Debug, Clone)]
pub struct ForecastRequest {
    /// The value column (`FORECAST value`).
    pub value: String,
    /// The time column (`TIME t`).
    pub time: String,
    /// Series id columns (`BY a, b`).
    pub ids: Vec<String>,
    /// `USING` method; `None` = auto.
    pub method: Option<Method>,
    /// Steps ahead stored.
    pub horizon: usize,
    /// Default interval level of `FORECAST('m')`.
    pub level: f64,
    /// Season length; `None` = detected per series.
    pub season_length: Option<usize>,
    /// Boosting options of `gbdt_lag` (`num_trees`, `learning_rate`, ...).
    pub tree_options: BTreeMap<String, f64>,
    /// Network options of `nbeats` (`steps`, `width`, ...).
    pub nbeats: NbeatsParams,
}

impl ForecastRequest {
    /// Build from the statement's parts. `method` is the `USING` name (`auto` or absent =
    /// auto); options: `horizon` (default 10), `level` (95), `season_length` (detected).
    pub fn new(
        value: &str,
        time: &str,
        ids: &[String],
        method: Option<&str>,
        options: &BTreeMap<String, String>,
    ) -> ModelResult<ForecastRequest> {
        const KNOWN: [&str; 3] = ["horizon", "level", "season_length"];
        let method = match method {
            None => None,
            Some(m) if m.eq_ignore_ascii_case("auto") => None,
            Some(m) => Some(Method::parse(m)?),
        };
        let mut tree_options = BTreeMap::new();
        let mut scratch = lag_gbdt::default_params();
        let mut nbeats = NbeatsParams::default();
        for k in options.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            let known = match method {
                Some(Method::GbdtLag) => match num(options, k)? {
                    Some(v) if scratch.set(k, v)? => {
                        tree_options.insert(k.clone(), v);
                        true
                    }
                    _ => false,
                },
                // `auto`'s network candidate takes nbeats' options too.
                Some(Method::Nbeats) | None if NbeatsParams::OPTIONS.contains(&k.as_str()) => {
                    match num(options, k)? {
                        Some(v) => nbeats.set(k, v)?,
                        None => false,
                    }
                }
                _ => false,
            };
            if !known {
                return Err(ModelError::InvalidParameter(format!(
                    "unknown option \"{k}\" for a forecasting model (known: {}; gbdt_lag also \
                     takes the boosting options num_trees, learning_rate, num_leaves, ...; \
                     nbeats and auto take {})",
                    KNOWN.join(", "),
                    NbeatsParams::OPTIONS.join(", ")
                )));
            }
        }
        let horizon = num(options, "horizon")?.unwrap_or(DEFAULT_HORIZON as f64);
        if !(horizon >= 1.0 && horizon <= MAX_HORIZON as f64 && horizon.fract() == 0.0) {
            return Err(ModelError::InvalidParameter(format!(
                "horizon must be an integer in [1, {MAX_HORIZON}], got {horizon}"
            )));
        }
        let level = num(options, "level")?.unwrap_or(DEFAULT_LEVEL);
        check_level(level)?;
        let season_length = match num(options, "season_length")? {
            None => None,
            Some(s) if (1.0..=MAX_SEASON_LENGTH as f64).contains(&s) && s.fract() == 0.0 => {
                Some(s as usize)
            }
            Some(s) => {
                return Err(ModelError::InvalidParameter(format!(
                    "season_length must be an integer in [1, {MAX_SEASON_LENGTH}], got {s}"
                )));
            }
        };
        if ids.iter().any(|i| i == time || i == value) || time == value {
            return Err(ModelError::InvalidInput(
                "the value, time and id columns must be different columns".into(),
            ));
        }
        Ok(ForecastRequest {
            value: value.to_string(),
            time: time.to_string(),
            ids: ids.to_vec(),
            method,
            horizon: horizon as usize,
            level,
            season_length,
            tree_options,
            nbeats,
        })
    }
}

/// Checks an interval level in percent.
pub fn check_level(level: f64) -> ModelResult<()> {
    if level > 0.0 && level < 100.0 {
        Ok(())
    } else {
        Err(ModelError::InvalidParameter(format!(
            "level must be in (0, 100), got {level}"
        )))
    }
}

/// A column of the training query kept by name and Arrow type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredColumn {
    /// Column name.
    pub name: String,
    /// Arrow type, as Arrow prints it.
    pub data_type: String,
}

impl StoredColumn {
    fn data_type(&self) -> DataType {
        DataType::from_str(&self.data_type).unwrap_or(DataType::Utf8)
    }
}

/// Scores of a series' forecast on its held-out last `horizon` values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holdout {
    /// sMAPE in percent.
    pub smape: f64,
    /// MASE (absent when the in-sample scale is 0, e.g. a constant series).
    pub mase: Option<f64>,
    /// Root mean squared error.
    pub rmse: f64,
    /// Share of held-out values inside the intervals at the model's level.
    pub coverage: f64,
    /// Method the procedure chose on the shortened series (the best of several it averaged).
    pub method: Method,
    /// The methods it averaged there, when more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub combined: Vec<Method>,
}

/// `members` when there are several (what a stored series keeps), else nothing.
fn several(members: &[Method]) -> Vec<Method> {
    if members.len() > 1 {
        members.to_vec()
    } else {
        vec![]
    }
}

/// One fitted series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FittedSeries {
    /// Its id values as text (cast back to the id columns' types on output); `None` = NULL.
    pub id: Vec<Option<String>>,
    /// How its times map onto its grid (`step` and `last` are points of this axis).
    #[serde(default, skip_serializing_if = "TimeAxis::is_ticks")]
    pub axis: TimeAxis,
    /// Step between observations, in points of `axis` (time ticks, or months).
    pub step: i64,
    /// Time of the last observation, as a point of `axis`.
    pub last: i64,
    /// Observations after regularisation.
    pub observations: usize,
    /// Method of the stored forecast (the best of several it averages).
    pub method: Method,
    /// The methods the stored forecast averages, when more than one (`auto`; see
    /// [`super::forecast`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub combined: Vec<Method>,
    /// Season length used.
    pub season_length: usize,
    /// Point forecasts, `horizon` of them.
    pub forecast: Vec<f64>,
    /// What the intervals are made from.
    pub calibration: Calibration,
    /// Held-out scores (absent when the series is too short to hold `horizon` values out).
    pub holdout: Option<Holdout>,
    /// Regularisation and fallback notes.
    pub notes: Vec<String>,
    /// A global model's last values, enough for its lags (forecasts from future exogenous
    /// values start from them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<f64>,
}

/// A series' backtest on recent data against its stored one ([`ForecastModel::backtest_drift`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestDrift {
    /// The method refitted (the best of several it averages).
    pub method: Method,
    /// The methods it averages, best first (just `method` when one).
    pub members: Vec<Method>,
    /// Observations of the recent series after regularisation.
    pub observations: usize,
    /// MASE of the stored holdout (absent for a series training never saw or could not hold
    /// out, and when its scale was 0).
    pub trained_mase: Option<f64>,
    /// sMAPE of the stored holdout.
    pub trained_smape: Option<f64>,
    /// MASE of the recent data's last `horizon` values (absent when its scale is 0).
    pub recent_mase: Option<f64>,
    /// sMAPE of the recent data's last `horizon` values.
    pub recent_smape: f64,
}

/// A stored forecasting model: the columns it was trained on and every series' forecast.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForecastModel {
    /// The time column.
    pub time: StoredColumn,
    /// The value column.
    pub value: StoredColumn,
    /// Series id columns.
    pub ids: Vec<StoredColumn>,
    /// Requested method (`None` = auto).
    pub method: Option<Method>,
    /// Trained horizon.
    pub horizon: usize,
    /// Default interval level.
    pub level: f64,
    /// Requested season length (`None` = detected).
    pub season_length: Option<usize>,
    /// Every series, ordered by id.
    pub series: Vec<FittedSeries>,
    /// A global model's trees and interval pool (`gbdt_lag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Box<GlobalParts>>,
}

/// How a series is named in messages: `series store=3` (or `the series` without ids).
pub(super) fn label(id: &[Option<String>], ids: &[StoredColumn]) -> String {
    if ids.is_empty() {
        return "the series".into();
    }
    let parts: Vec<String> = ids
        .iter()
        .zip(id)
        .map(|(c, v)| format!("{}={}", c.name, v.as_deref().unwrap_or("NULL")))
        .collect();
    format!("series {}", parts.join(", "))
}

/// Train a forecasting model from the training query's columns (in any row order); see
/// [`ForecastTrainer`] for batches read one at a time.
pub fn train_forecast(
    names: &[String],
    columns: &[ArrayRef],
    req: &ForecastRequest,
    ctx: &mut TrainContext,
) -> ModelResult<ModelArtifact> {
    let schema = Schema::new(
        names
            .iter()
            .zip(columns)
            .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let mut trainer = ForecastTrainer::new(&schema, req)?;
    if let Some(first) = columns.first() {
        let options = RecordBatchOptions::new().with_row_count(Some(first.len()));
        let batch =
            RecordBatch::try_new_with_options(Arc::new(schema), columns.to_vec(), &options)?;
        trainer.push(&batch, ctx)?;
    }
    trainer.finish(ctx)
}

/// The artifact of a trained model: reports the series' notes and the methods chosen, and
/// scores it by its series' holdouts.
pub(super) fn model_artifact(
    model: ForecastModel,
    req: &ForecastRequest,
    started: Instant,
    ctx: &mut TrainContext,
) -> ModelArtifact {
    let mut notes = 0usize;
    let mut methods: BTreeMap<String, usize> = BTreeMap::new();
    for s in &model.series {
        *methods
            .entry(members_label(s.method, &s.combined))
            .or_default() += 1;
        for n in &s.notes {
            notes += 1;
            if notes <= 20 {
                (ctx.progress)(format!("{}: {n}", label(&s.id, &model.ids)));
            }
        }
    }
    if notes > 20 {
        (ctx.progress)(format!("... and {} more series note(s)", notes - 20));
    }
    let chosen: Vec<String> = methods.iter().map(|(m, c)| format!("{m} {c}")).collect();
    (ctx.progress)(format!("methods chosen: {}", chosen.join(", ")));
    let metrics = model.holdout_metrics();
    let importance: Vec<Importance> = model
        .global
        .as_ref()
        .map(|g| {
            g.model
                .importance()
                .into_iter()
                .map(|(feature, importance)| Importance {
                    feature,
                    importance,
                })
                .collect()
        })
        .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let trials = metrics
        .values
        .get("mase")
        .or_else(|| metrics.values.get("smape"))
        .map(|&v| Trial {
            algorithm: Algorithm::Forecast,
            params: format!("method={}", req.method.map(|m| m.name()).unwrap_or("auto")),
            metric: if metrics.values.contains_key("mase") {
                "mase".into()
            } else {
                "smape".into()
            },
            value: v,
            seconds,
            chosen: true,
        })
        .into_iter()
        .collect();
    let mut options = BTreeMap::new();
    options.insert("horizon".to_string(), req.horizon.to_string());
    options.insert("level".to_string(), req.level.to_string());
    if let Some(m) = req.season_length {
        options.insert("season_length".to_string(), m.to_string());
    }
    let train_rows = model.series.iter().map(|s| s.observations).sum();
    let validation_rows = model.series.iter().filter(|s| s.holdout.is_some()).count() * req.horizon;
    ModelArtifact {
        format_version: FORMAT_VERSION,
        task: Task::Forecasting,
        algorithm: Algorithm::Forecast,
        features: FeatureSet::default(),
        target: None,
        estimator: Estimator::Forecast(model),
        metrics,
        metrics_on_validation: true,
        importance,
        trials,
        options,
        train_rows,
        validation_rows,
        train_seconds: seconds,
        calibration: None,
        profile: None,
    }
}

/// Fit every series on its own (the per-series methods), in parallel.
pub(super) fn fit_each(
    groups: Vec<(SeriesKey, SeriesRows)>,
    req: &ForecastRequest,
    nanos: i64,
    ids: &[StoredColumn],
    cancel: &std::sync::atomic::AtomicBool,
) -> ModelResult<Vec<FittedSeries>> {
    let fitted: Vec<ModelResult<FittedSeries>> = groups
        .into_par_iter()
        .map(|(id, rows)| {
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            let name = label(&id, ids);
            fit_series(id, rows, req, nanos).map_err(|e| match e {
                ModelError::Cancelled => e,
                other => ModelError::BadTrainingData(format!("{name}: {other}")),
            })
        })
        .collect();
    fitted.into_iter().collect()
}

/// Fit regular series on their own, in parallel; `auto` also weighs each one's `given`
/// forecasts (one per series, or none at all).
pub(super) fn fit_prepared_each(
    series: Vec<PreparedSeries>,
    given: Vec<Given>,
    req: &ForecastRequest,
    nanos: i64,
    ids: &[StoredColumn],
    cancel: &std::sync::atomic::AtomicBool,
) -> ModelResult<Vec<FittedSeries>> {
    let mut given: Vec<Option<Given>> = given.into_iter().map(Some).collect();
    given.resize(series.len(), None);
    let fitted: Vec<ModelResult<FittedSeries>> = series
        .into_par_iter()
        .zip(given)
        .map(|(p, g)| {
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            let name = label(&p.id, ids);
            fit_regular(p.id, p.axis, p.series, req, nanos, g.as_slice()).map_err(|e| match e {
                ModelError::Cancelled => e,
                other => ModelError::BadTrainingData(format!("{name}: {other}")),
            })
        })
        .collect();
    fitted.into_iter().collect()
}

fn fit_series(
    id: Vec<Option<String>>,
    rows: SeriesRows,
    req: &ForecastRequest,
    nanos: i64,
) -> ModelResult<FittedSeries> {
    let axis = TimeAxis::detect(rows.iter().map(|r| r.0), nanos);
    let series = regularize(&axis.rows_on_axis(rows, nanos), None)?;
    fit_regular(id, axis, series, req, nanos, &[])
}

/// Fit one regular series as `req` asks; `auto` also weighs the forecasts `given` (a global
/// model's).
pub(super) fn fit_regular(
    id: Vec<Option<String>>,
    axis: TimeAxis,
    series: Regularized,
    req: &ForecastRequest,
    nanos: i64,
    given: &[Given],
) -> ModelResult<FittedSeries> {
    let spec = ForecastSpec {
        method: req.method,
        horizon: req.horizon,
        level: req.level,
        season_length: req.season_length,
        season_candidates: axis.season_candidates(series.step, nanos),
        windows: 2,
        combine: vec![],
    };
    let y = &series.values;
    let n = y.len();
    let h = req.horizon;
    let holdout = if n >= h + 2 {
        let f = forecast_with(&y[..n - h], &spec, given)?;
        let actual = &y[n - h..];
        let rmse = (actual
            .iter()
            .zip(&f.point)
            .map(|(a, p)| (a - p).powi(2))
            .sum::<f64>()
            / h as f64)
            .sqrt();
        let inside = (0..h)
            .filter(|&j| f.lower[j] <= actual[j] && actual[j] <= f.upper[j])
            .count();
        let m = mase(&y[..n - h], actual, &f.point, f.season_length);
        Some(Holdout {
            smape: smape(actual, &f.point),
            mase: m.is_finite().then_some(m),
            rmse,
            coverage: inside as f64 / h as f64,
            method: f.method,
            combined: several(&f.members),
        })
    } else {
        None
    };
    let f = forecast_with(y, &spec, given)?;
    if f.point.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::BadTrainingData(format!(
            "{} produced a non-finite forecast",
            f.method.name()
        )));
    }
    let mut notes = series.notes.clone();
    notes.extend(f.notes.iter().cloned());
    if holdout.is_none() {
        notes.push(format!(
            "{n} observation(s): too few to hold {h} out, so EVALUATE has no scores for it"
        ));
    }
    Ok(FittedSeries {
        id,
        axis,
        step: series.step.max(1),
        last: series.start + series.step * (n as i64 - 1),
        observations: n,
        method: f.method,
        combined: several(&f.members),
        season_length: f.season_length,
        forecast: f.point,
        calibration: f.calibration,
        holdout,
        notes,
        history: vec![],
    })
}

impl ForecastModel {
    /// Means over the series with held-out scores: `smape`, `mase`, `rmse`, `coverage`; and
    /// `series`, the number of series.
    pub fn holdout_metrics(&self) -> Metrics {
        let scored: Vec<&Holdout> = self
            .series
            .iter()
            .filter_map(|s| s.holdout.as_ref())
            .collect();
        let mut m = Metrics::default();
        m.values.insert("series".into(), self.series.len() as f64);
        if scored.is_empty() {
            return m;
        }
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let put = |m: &mut Metrics, k: &str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.values.insert(k.into(), v);
            }
        };
        put(
            &mut m,
            "smape",
            mean(scored.iter().map(|h| h.smape).collect()),
        );
        put(
            &mut m,
            "mase",
            mean(scored.iter().filter_map(|h| h.mase).collect()),
        );
        put(
            &mut m,
            "rmse",
            mean(scored.iter().map(|h| h.rmse).collect()),
        );
        put(
            &mut m,
            "coverage",
            mean(scored.iter().map(|h| h.coverage).collect()),
        );
        m
    }

    fn id_arrays(
        &self,
        rows_per_series: impl Fn(&FittedSeries) -> usize,
    ) -> ModelResult<Vec<ArrayRef>> {
        self.ids
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let values: Vec<Option<String>> = self
                    .series
                    .iter()
                    .flat_map(|s| {
                        std::iter::repeat_n(s.id.get(k).cloned().flatten(), rows_per_series(s))
                    })
                    .collect();
                let text = StringArray::from(values);
                Ok(cast(&text, &c.data_type())?)
            })
            .collect()
    }

    fn id_fields(&self) -> Vec<Field> {
        self.ids
            .iter()
            .map(|c| Field::new(&c.name, c.data_type(), true))
            .collect()
    }

    /// Columns of `FORECAST('m')`: the id columns, the time column, `forecast`, `lower`,
    /// `upper`, `method`.
    pub fn forecast_schema(&self) -> SchemaRef {
        let mut fields = self.id_fields();
        fields.push(Field::new(&self.time.name, self.time.data_type(), true));
        for f in ["forecast", "lower", "upper"] {
            fields.push(Field::new(f, DataType::Float64, true));
        }
        fields.push(Field::new("method", DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }

    /// The stored forecast: the first `horizon` steps (default: all) with intervals at `level`
    /// (default: the model's).
    pub fn forecast_batch(
        &self,
        horizon: Option<usize>,
        level: Option<f64>,
    ) -> ModelResult<RecordBatch> {
        let h = horizon.unwrap_or(self.horizon);
        if h == 0 || h > self.horizon {
            return Err(ModelError::InvalidParameter(format!(
                "horizon must be in [1, {}] (the horizon the model was trained for; retrain \
                 with WITH (horizon = {h}) for more), got {h}",
                self.horizon
            )));
        }
        let level = level.unwrap_or(self.level);
        check_level(level)?;
        if let Some(g) = self
            .global
            .as_ref()
            .filter(|g| !g.model.exogenous().is_empty())
        {
            return Err(ModelError::InvalidParameter(format!(
                "the model reads exogenous columns ({}): give their future values with \
                 FORECAST('model', TABLE future) where future has the time, id and those columns",
                g.model.exogenous().join(", ")
            )));
        }
        let mut columns = self.id_arrays(|_| h)?;
        let mut times = Vec::with_capacity(self.series.len() * h);
        let (mut point, mut lower, mut upper) = (vec![], vec![], vec![]);
        let pooled = self.global.as_ref().map_or(&[][..], |g| &g.pooled[..]);
        let nanos = self.nanos();
        for s in &self.series {
            let w = s.calibration.widths(h, level, pooled);
            for (j, w) in w.iter().enumerate() {
                times.push(s.axis.to_tick(s.last + (j as i64 + 1) * s.step, nanos));
                let p = s.forecast.get(j).copied().unwrap_or(f64::NAN);
                point.push(p);
                lower.push(p - w);
                upper.push(p + w);
            }
        }
        columns.push(times_from_i64(times, &self.time.data_type())?);
        columns.push(Arc::new(Float64Array::from(point)));
        columns.push(Arc::new(Float64Array::from(lower)));
        columns.push(Arc::new(Float64Array::from(upper)));
        let methods: Vec<String> = self
            .series
            .iter()
            .flat_map(|s| std::iter::repeat_n(members_label(s.method, &s.combined), h))
            .collect();
        columns.push(Arc::new(StringArray::from(methods)));
        Ok(RecordBatch::try_new(self.forecast_schema(), columns)?)
    }

    /// The time column's Arrow type.
    pub fn time_type(&self) -> DataType {
        self.time.data_type()
    }

    /// Nanoseconds per tick of the time column (0 for integer times).
    fn nanos(&self) -> i64 {
        unit_nanos(&self.time.data_type()).unwrap_or(0)
    }

    /// How well a series' stored method forecasts newer data (`DRIFT('m', TABLE recent)`):
    /// `rows` (time ticks and values of the series `id` in the recent data) are regularised
    /// as in training, their last `horizon` values held out and forecast from the rest by
    /// the method and season length stored for the series, and scored as the stored holdout
    /// was. A series training never saw is fitted as the model's `USING` asks.
    pub fn backtest_drift(
        &self,
        id: &[Option<String>],
        rows: Vec<(i64, Option<f64>)>,
    ) -> ModelResult<BacktestDrift> {
        if self.global.is_some() {
            return Err(ModelError::InvalidInput(
                "DRIFT of a global forecasting model (gbdt_lag, nbeats) is not supported: it has no per-series \
                 method to refit; compare EVALUATE of a retrained version instead"
                    .into(),
            ));
        }
        let stored = self.series.iter().find(|s| s.id == id);
        let nanos = self.nanos();
        let axis = match stored {
            Some(s) => s.axis,
            None => TimeAxis::detect(rows.iter().map(|r| r.0), nanos),
        };
        let series = regularize(&axis.rows_on_axis(rows, nanos), stored.map(|s| s.step))?;
        let y = &series.values;
        let (n, h) = (y.len(), self.horizon);
        if n < h + 2 {
            return Err(ModelError::InvalidInput(format!(
                "{}: {n} observation(s) in the recent data, too few to hold {h} out",
                label(id, &self.ids)
            )));
        }
        let spec = ForecastSpec {
            method: stored.map(|s| s.method).or(self.method),
            horizon: h,
            level: self.level,
            season_length: stored.map(|s| s.season_length).or(self.season_length),
            season_candidates: axis.season_candidates(series.step.max(1), nanos),
            windows: 0,
            combine: stored.map(|s| s.combined.clone()).unwrap_or_default(),
        };
        let f = forecast(&y[..n - h], &spec)?;
        let actual = &y[n - h..];
        let recent_mase = mase(&y[..n - h], actual, &f.point, f.season_length);
        let holdout = stored.and_then(|s| s.holdout.as_ref());
        Ok(BacktestDrift {
            method: f.method,
            members: f.members,
            observations: n,
            trained_mase: holdout.and_then(|h| h.mase),
            trained_smape: holdout.map(|h| h.smape),
            recent_mase: recent_mase.is_finite().then_some(recent_mase),
            recent_smape: smape(actual, &f.point),
        })
    }

    /// The network of an `nbeats` model (its weights are a payload of the artifact).
    pub fn network(&self) -> Option<&super::nbeats::NbeatsModel> {
        self.global.as_ref().and_then(|g| g.model.network())
    }

    /// Exogenous columns of a global model (empty otherwise).
    pub fn exogenous(&self) -> &[String] {
        self.global
            .as_ref()
            .map_or(&[][..], |g| g.model.exogenous())
    }

    /// Forecast series `id` (id values as text) from future exogenous values: `future` holds
    /// `(time tick, one value per exogenous column)` rows. Rows at or before the series' last
    /// observation are ignored; the others are placed on its grid (averaged / interpolated
    /// like the training data) and the forecast runs to the last of them, at most the trained
    /// horizon. Returns (times, point, lower, upper).
    #[allow(clippy::type_complexity)]
    pub fn forecast_future(
        &self,
        id: &[Option<String>],
        future: &[(i64, Vec<Option<f64>>)],
        level: f64,
    ) -> ModelResult<(Vec<i64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        check_level(level)?;
        let Some(g) = self
            .global
            .as_ref()
            .filter(|g| matches!(g.model, GlobalModel::Lag(_)))
        else {
            return Err(ModelError::InvalidParameter(
                "future values are read by gbdt_lag models only; this model forecasts without \
                 them: FORECAST('model')"
                    .into(),
            ));
        };
        let s = self.series.iter().find(|s| s.id == id).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "{} is not a series of the model (it was trained on {} series)",
                label(id, &self.ids),
                self.series.len()
            ))
        })?;
        if s.history.is_empty() {
            return Err(ModelError::InvalidInput(
                "the model was stored without its series' last values (made by an older \
                 version): retrain it with CREATE OR REPLACE MODEL"
                    .into(),
            ));
        }
        let step = s.step.max(1);
        // The future rows' times as points of the series' axis.
        let nanos = self.nanos();
        let future: Vec<(i64, Vec<Option<f64>>)> = future
            .iter()
            .map(|(t, v)| (s.axis.to_axis(*t, nanos), v.clone()))
            .collect();
        let ahead: Vec<&(i64, Vec<Option<f64>>)> =
            future.iter().filter(|(t, _)| *t > s.last).collect();
        let Some(h) = ahead
            .iter()
            .map(|(t, _)| ((t - s.last) as i128 + step as i128 / 2) / step as i128)
            .max()
        else {
            return Ok((vec![], vec![], vec![], vec![]));
        };
        if h > self.horizon as i128 {
            return Err(ModelError::InvalidParameter(format!(
                "{}: the future values reach {h} steps past the last observation; the model \
                 was trained for horizon {} (retrain WITH (horizon = {h}) to go further)",
                label(id, &self.ids),
                self.horizon
            )));
        }
        let h = h as usize;
        let n = s.history.len();
        let start = s.last - step * (n as i64 - 1);
        let exogenous: Vec<Vec<f64>> = (0..g.model.exogenous().len())
            .map(|k| {
                let rows: Vec<(i64, Option<f64>)> = ahead
                    .iter()
                    .map(|(t, v)| (*t, v.get(k).copied().flatten()))
                    .collect();
                let mut col = vec![f64::NAN; n];
                col.extend(on_grid(&rows, s.last + step, step, h));
                col
            })
            .collect();
        let input = lag_gbdt::SeriesInput {
            y: &s.history,
            start,
            step,
            exogenous: &exogenous,
        };
        let point = g
            .model
            .forecast(std::slice::from_ref(&input), h)?
            .pop()
            .unwrap_or_default();
        let w = s.calibration.widths(h, level, &g.pooled);
        let times = (1..=h as i64)
            .map(|j| s.axis.to_tick(s.last + j * step, nanos))
            .collect();
        let lower = point.iter().zip(&w).map(|(p, w)| p - w).collect();
        let upper = point.iter().zip(&w).map(|(p, w)| p + w).collect();
        Ok((times, point, lower, upper))
    }

    /// Columns of `EVALUATE('m')`: the id columns, `method` (chosen on the shortened series),
    /// `observations`, `horizon`, `smape`, `mase`, `rmse`, `coverage`, `level`.
    pub fn evaluation_schema(&self) -> SchemaRef {
        let mut fields = self.id_fields();
        fields.push(Field::new("method", DataType::Utf8, true));
        fields.push(Field::new("observations", DataType::Int64, false));
        fields.push(Field::new("horizon", DataType::Int64, false));
        for f in ["smape", "mase", "rmse", "coverage", "level"] {
            fields.push(Field::new(f, DataType::Float64, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// Held-out scores, one row per series (NULL scores where the series was too short).
    pub fn evaluation_batch(&self) -> ModelResult<RecordBatch> {
        let mut columns = self.id_arrays(|_| 1)?;
        let ho = |f: fn(&Holdout) -> Option<f64>| {
            Arc::new(Float64Array::from_iter(
                self.series.iter().map(|s| s.holdout.as_ref().and_then(f)),
            )) as ArrayRef
        };
        columns.push(Arc::new(StringArray::from_iter(self.series.iter().map(
            |s| {
                s.holdout
                    .as_ref()
                    .map(|h| members_label(h.method, &h.combined))
            },
        ))));
        columns.push(Arc::new(Int64Array::from_iter_values(
            self.series.iter().map(|s| s.observations as i64),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            self.series.iter().map(|_| self.horizon as i64),
        )));
        columns.push(ho(|h| Some(h.smape)));
        columns.push(ho(|h| h.mase));
        columns.push(ho(|h| Some(h.rmse)));
        columns.push(ho(|h| Some(h.coverage)));
        columns.push(Arc::new(Float64Array::from_iter_values(
            self.series.iter().map(|_| self.level),
        )));
        Ok(RecordBatch::try_new(self.evaluation_schema(), columns)?)
    }

    /// `name type` of the columns the model was trained on, for the registry.
    pub fn column_descriptions(&self) -> Vec<String> {
        let mut out = vec![
            format!("{} {} (time)", self.time.name, self.time.data_type),
            format!("{} {} (value)", self.value.name, self.value.data_type),
        ];
        out.extend(
            self.ids
                .iter()
                .map(|c| format!("{} {} (id)", c.name, c.data_type)),
        );
        out
    }
}

#[cfg(test)]
mod tests {

    use datafusion::arrow::array::{AsArray, StringArray, TimestampSecondArray};
    use datafusion::arrow::datatypes::Float64Type;

    use super::*;

    fn ctx_run<T>(f: impl FnOnce(&mut TrainContext) -> T) -> (T, Vec<String>) {
        TrainContext::collecting(f)
    }

    #[test]
    fn trains_per_series_and_reads_back_the_stored_forecast() {
        // Two daily series with a weekly pattern, rows shuffled; one short series.
        let mut t = vec![];
        let mut v = vec![];
        let mut id = vec![];
        for (s, scale) in [("a", 10.0), ("b", 100.0)] {
            for d in 0..140i64 {
                t.push(1_700_006_400 + d * 86_400);
                v.push(scale * (5.0 + [0.0, 1.0, 2.0, 3.0, 2.0, 1.0, 4.0][(d % 7) as usize]));
                id.push(s);
            }
        }
        for d in 0..5i64 {
            t.push(1_700_006_400 + d * 86_400);
            v.push(1.0 + d as f64);
            id.push("c");
        }
        let order: Vec<usize> = (0..t.len()).rev().collect();
        let names = vec!["day".to_string(), "sales".to_string(), "store".to_string()];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampSecondArray::from(
                order.iter().map(|&i| t[i]).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                order.iter().map(|&i| v[i]).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                order.iter().map(|&i| id[i]).collect::<Vec<_>>(),
            )),
        ];
        let req = ForecastRequest::new(
            "sales",
            "day",
            &["store".to_string()],
            None,
            &BTreeMap::from([("horizon".to_string(), "14".to_string())]),
        )
        .expect("request");
        let (artifact, lines) = ctx_run(|ctx| train_forecast(&names, &columns, &req, ctx));
        let artifact = artifact.expect("trained");
        assert!(
            lines.iter().any(|l| l.contains("fitting 3 series")),
            "{lines:?}"
        );
        let Estimator::Forecast(model) = &artifact.estimator else {
            panic!("not a forecast model")
        };
        assert_eq!(model.series.len(), 3);
        assert!(
            model.series[2].holdout.is_none(),
            "c is too short to hold 14 out"
        );
        let ho = model.series[0].holdout.as_ref().expect("a has a holdout");
        assert!(ho.smape < 1.0, "a clean weekly pattern: {ho:?}");
        // The artifact survives its byte format.
        let back = ModelArtifact::from_bytes(&artifact.to_bytes().expect("bytes")).expect("read");
        let Estimator::Forecast(back) = &back.estimator else {
            panic!("not a forecast model")
        };
        let batch = back.forecast_batch(Some(7), Some(80.0)).expect("forecast");
        assert_eq!(batch.num_rows(), 21);
        assert_eq!(batch.schema().field(0).name(), "store");
        assert_eq!(batch.column(1).data_type(), columns[0].data_type());
        let wide = back.forecast_batch(Some(7), Some(99.0)).expect("forecast");
        let width = |b: &RecordBatch| {
            let lo = b.column(3).as_primitive::<Float64Type>();
            let hi = b.column(4).as_primitive::<Float64Type>();
            (0..b.num_rows())
                .map(|i| hi.value(i) - lo.value(i))
                .sum::<f64>()
        };
        assert!(width(&wide) >= width(&batch));
        assert!(back.forecast_batch(Some(15), None).is_err());
        assert!(back.forecast_batch(None, Some(100.0)).is_err());
        let eval = back.evaluation_batch().expect("evaluation");
        assert_eq!(eval.num_rows(), 3);
        assert!(eval.column(4).is_null(2), "no sMAPE for the short series");
    }

    #[test]
    fn gbdt_lag_on_series_too_short_for_a_backtest_still_has_intervals() {
        // Two daily series of 12 values, horizon 10: nothing can be held out.
        let (mut t, mut v, mut id) = (vec![], vec![], vec![]);
        for (s, base) in [("a", 10.0), ("b", 50.0)] {
            for d in 0..12i64 {
                t.push(1_700_006_400 + d * 86_400);
                v.push(base + (d % 3) as f64);
                id.push(s);
            }
        }
        let names = vec!["day".to_string(), "sales".to_string(), "store".to_string()];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampSecondArray::from(t)),
            Arc::new(Float64Array::from(v)),
            Arc::new(StringArray::from(id)),
        ];
        let req = ForecastRequest::new(
            "sales",
            "day",
            &["store".to_string()],
            Some("gbdt_lag"),
            &BTreeMap::from([("horizon".to_string(), "10".to_string())]),
        )
        .expect("request");
        let (artifact, lines) = ctx_run(|ctx| train_forecast(&names, &columns, &req, ctx));
        let artifact = artifact.expect("trained");
        assert!(
            lines.iter().any(|l| l.contains("one-step changes")),
            "{lines:?}"
        );
        let Estimator::Forecast(model) = &artifact.estimator else {
            panic!("not a forecast model")
        };
        let batch = model.forecast_batch(None, None).expect("forecast");
        assert_eq!(batch.num_rows(), 20);
        let lo = batch.column(3).as_primitive::<Float64Type>();
        let hi = batch.column(4).as_primitive::<Float64Type>();
        assert!((0..20).all(|i| hi.value(i) > lo.value(i)));
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let none = BTreeMap::new();
        assert!(matches!(
            ForecastRequest::new("v", "t", &[], Some("prophet"), &none),
            Err(ModelError::InvalidParameter(_))
        ));
        for (k, v) in [
            ("horizon", "0"),
            ("horizon", "1.5"),
            ("level", "100"),
            ("foo", "1"),
        ] {
            let o = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert!(
                matches!(
                    ForecastRequest::new("v", "t", &[], None, &o),
                    Err(ModelError::InvalidParameter(_))
                ),
                "{k}={v}"
            );
        }
        let req = ForecastRequest::new("v", "t", &[], None, &none).expect("request");
        let names = vec!["t".to_string(), "v".to_string()];
        let text: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(Float64Array::from(vec![1.0])),
        ];
        let (r, _) = ctx_run(|ctx| train_forecast(&names, &text, &req, ctx));
        assert!(matches!(r, Err(ModelError::WrongType(_))));
        let (r, _) = ctx_run(|ctx| train_forecast(&["x".to_string()], &text[..1], &req, ctx));
        assert!(matches!(r, Err(ModelError::UnknownColumn(_))));
    }
}
