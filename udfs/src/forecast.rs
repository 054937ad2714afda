//! `prognos_forecast(time, value, horizon, level, method, season_length)`: an aggregate that
//! collects one series (a group) and returns its forecast as a list of
//! `{time, forecast, lower, upper, method}`. `FORECAST(TABLE t, time => ..., value => ...,
//! id => ...)` in `FROM` is rewritten onto it with `GROUP BY` the id columns, so series are
//! forecast in parallel by DataFusion's grouped aggregation and only one group's rows are
//! held per series.
//!
//! `time` may be a timestamp (any unit, with or without time zone), a date or an integer;
//! the forecast times have the same type. Times on calendar months (monthly, quarterly,
//! yearly) are regularised by month ([`TimeAxis`]). Season-length candidates follow the step:
//! hourly data tries 24 and 168, daily 7 and 365, monthly 12, ... (see
//! [`prognos_models::forecast::time::season_candidates`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::forecast::time::{TimeAxis, times_from_i64, unit_nanos};
use prognos_models::forecast::{ForecastSpec, Method, forecast, members_label, regularize};
use prognos_models::{ModelArtifact, ModelError};

use crate::models::{external, list_scalar, literal_name};
use crate::series::{
    SeriesRows, check_series_types, coerce_series_types, list_of, literal_arg, null_list,
    season_length_arg, state_fields, whole_number,
};

/// Largest horizon accepted.
pub const MAX_HORIZON: i64 = prognos_models::forecast::stored::MAX_HORIZON as i64;

/// Receives the series notes (regularisation, fallbacks) as client messages.
pub type NoteSink = Arc<dyn Fn(String) + Send + Sync>;

/// The aggregate's SQL name.
pub const NAME: &str = "prognos_forecast";

/// The aggregate.
pub struct ForecastAgg {
    signature: Signature,
    notes: Option<NoteSink>,
}

impl std::fmt::Debug for ForecastAgg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForecastAgg").finish_non_exhaustive()
    }
}

impl PartialEq for ForecastAgg {
    fn eq(&self, other: &Self) -> bool {
        match (&self.notes, &other.notes) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
impl Eq for ForecastAgg {}
impl std::hash::Hash for ForecastAgg {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.notes
            .as_ref()
            .map(|n| Arc::as_ptr(n) as *const () as usize)
            .hash(state);
    }
}

impl Default for ForecastAgg {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            notes: None,
        }
    }
}

impl ForecastAgg {
    /// An instance whose series notes go to `notes` (a session's NOTICEs) as well as the log.
    pub fn with_notes(notes: NoteSink) -> Self {
        Self {
            notes: Some(notes),
            ..Self::default()
        }
    }
}

/// The fields of one forecast item: `time, forecast, lower, upper, method`.
pub(crate) fn item_fields(time: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("time", time.clone(), true),
        Field::new("forecast", DataType::Float64, true),
        Field::new("lower", DataType::Float64, true),
        Field::new("upper", DataType::Float64, true),
        Field::new("method", DataType::Utf8, true),
    ])
}

impl AggregateUDFImpl for ForecastAgg {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 6 {
            return plan_err!(
                "prognos_forecast(time, value, horizon, level, method, season_length) takes 6 arguments"
            );
        }
        let (time, value) = coerce_series_types(&arg_types[0], &arg_types[1]);
        Ok(vec![
            time,
            value,
            DataType::Float64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Float64,
        ])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let time = check_series_types(NAME, arg_types)?;
        Ok(list_of(item_fields(&time)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| literal_arg(&args, i);
        let horizon = match literal(2) {
            Some(v) => match whole_number(&v, 1..=MAX_HORIZON) {
                Some(h) => h as usize,
                None => {
                    return Err(external(ModelError::InvalidParameter(format!(
                        "horizon must be an integer in [1, {MAX_HORIZON}], got {v}"
                    ))));
                }
            },
            None => return plan_err!("horizon must be a constant"),
        };
        let level = match literal(3) {
            Some(ScalarValue::Float64(Some(l))) if l > 0.0 && l < 100.0 => l,
            Some(v) => {
                return Err(external(ModelError::InvalidParameter(format!(
                    "level must be in (0, 100), got {v}"
                ))));
            }
            None => return plan_err!("level must be a constant"),
        };
        let method = match literal(4) {
            Some(ScalarValue::Utf8(Some(m))) if m.eq_ignore_ascii_case("auto") => None,
            Some(ScalarValue::Utf8(Some(m))) => Some(Method::parse_local(&m).map_err(external)?),
            // A NULL bound as the method.
            Some(v) => {
                return Err(external(ModelError::InvalidParameter(format!(
                    "method must be a method name ('auto', 'ets', ...), got {v}"
                ))));
            }
            None => return plan_err!("method must be a constant string"),
        };
        let season_length = season_length_arg(&args, 5)?;
        let time_type = args.exprs[0].data_type(args.schema)?;
        Ok(Box::new(SeriesAccumulator {
            time_type,
            horizon,
            level,
            method,
            season_length,
            rows: SeriesRows::default(),
            notes: self.notes.clone(),
        }))
    }
}

struct SeriesAccumulator {
    time_type: DataType,
    horizon: usize,
    level: f64,
    method: Option<Method>,
    season_length: Option<usize>,
    rows: SeriesRows,
    notes: Option<NoteSink>,
}

impl std::fmt::Debug for SeriesAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesAccumulator")
            .field("rows", &self.rows.times.len())
            .finish_non_exhaustive()
    }
}

impl Accumulator for SeriesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.rows.update(values)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.rows.state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.rows.merge(states)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let fields = item_fields(&self.time_type);
        if self.rows.times.is_empty() {
            return Ok(null_list(fields));
        }
        let nanos = unit_nanos(&self.time_type).unwrap_or(0);
        // Monthly, quarterly and yearly times are regularised by calendar month.
        let axis = TimeAxis::detect(self.rows.times.iter().copied(), nanos);
        let rows = axis.rows_on_axis(self.rows.pairs(), nanos);
        let series = regularize(&rows, None).map_err(external)?;
        let spec = ForecastSpec {
            method: self.method,
            horizon: self.horizon,
            level: self.level,
            season_length: self.season_length,
            season_candidates: axis.season_candidates(series.step, nanos),
            windows: 2,
            combine: vec![],
        };
        let f = forecast(&series.values, &spec).map_err(external)?;
        let last = series.start + series.step * (series.values.len() as i64 - 1);
        for note in series.notes.iter().chain(&f.notes) {
            let message = format!(
                "FORECAST: series of {} values ending at tick {}: {note}",
                series.values.len(),
                axis.to_tick(last, nanos)
            );
            tracing::info!("{message}");
            if let Some(sink) = &self.notes {
                sink(message);
            }
        }
        let step = series.step.max(1);
        let times = times_from_i64(
            (1..=self.horizon as i64)
                .map(|j| axis.to_tick(last + j * step, nanos))
                .collect(),
            &self.time_type,
        )?;
        let h = self.horizon;
        let structs = StructArray::new(
            fields.clone(),
            vec![
                times,
                Arc::new(Float64Array::from(f.point)),
                Arc::new(Float64Array::from(f.lower)),
                Arc::new(Float64Array::from(f.upper)),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    members_label(f.method, &f.members),
                    h,
                ))),
            ],
            None,
        );
        if structs.len() != h {
            return exec_err!("forecast produced {} rows for horizon {h}", structs.len());
        }
        Ok(list_scalar(structs, DataType::Struct(fields)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.rows.size()
    }
}

/// `prognos_forecast_model('m', horizon, level)`: the stored forecast of a forecasting model
/// (`horizon` 0 = the trained horizon, `level` 0 = the model's level). `FROM FORECAST('m'
/// [, horizon => n] [, level => p])` is rewritten onto it.
#[derive(Debug)]
pub(crate) struct StoredForecast {
    pub(crate) snapshot: Arc<ModelSnapshot>,
}

/// `prognos_forecast_evaluation('m')`: a forecasting model's held-out scores per series.
/// `FROM EVALUATE('m')` is rewritten onto it.
#[derive(Debug)]
pub(crate) struct StoredEvaluation {
    pub(crate) snapshot: Arc<ModelSnapshot>,
}

fn forecasting_model(
    snapshot: &ModelSnapshot,
    fname: &str,
    args: &TableFunctionArgs,
) -> Result<Arc<ModelArtifact>> {
    let name = literal_name(fname, args.exprs().first())?;
    let (_, model) = snapshot.get(&name).map_err(external)?;
    if model.forecast_model().is_none() {
        return Err(external(CatalogError::Model(ModelError::InvalidInput(
            format!(
                "\"{name}\" is a {} model, not a forecasting model (CREATE MODEL ... FORECAST \
                 value TIME t ...)",
                format!("{:?}", model.task).to_ascii_lowercase()
            ),
        ))));
    }
    Ok(model)
}

fn literal_number(args: &TableFunctionArgs, i: usize) -> Result<f64> {
    match args.exprs().get(i) {
        Some(Expr::Literal(v, _)) => match v.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(x)) => Ok(x),
            _ => plan_err!("argument {} must be a number", i + 1),
        },
        _ => plan_err!("argument {} must be a constant number", i + 1),
    }
}

fn one_batch(batch: RecordBatch) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

impl TableFunctionImpl for StoredForecast {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        if args.exprs().len() != 3 {
            return plan_err!("prognos_forecast_model takes a model name, a horizon and a level");
        }
        let model = forecasting_model(&self.snapshot, "forecast", &args)?;
        let horizon = literal_number(&args, 1)?;
        let level = literal_number(&args, 2)?;
        let f = model
            .forecast_model()
            .ok_or_else(|| DataFusionError::Internal("forecasting model checked above".into()))?;
        let batch = f
            .forecast_batch(
                (horizon > 0.0).then_some(horizon as usize),
                (level != 0.0).then_some(level),
            )
            .map_err(|e| external(CatalogError::Model(e)))?;
        one_batch(batch)
    }
}

impl TableFunctionImpl for StoredEvaluation {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        if args.exprs().len() != 1 {
            return plan_err!("prognos_forecast_evaluation takes the model name");
        }
        let model = forecasting_model(&self.snapshot, "evaluate", &args)?;
        let f = model
            .forecast_model()
            .ok_or_else(|| DataFusionError::Internal("forecasting model checked above".into()))?;
        let batch = f
            .evaluation_batch()
            .map_err(|e| external(CatalogError::Model(e)))?;
        one_batch(batch)
    }
}
