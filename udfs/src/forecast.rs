//! `prognos_forecast(time, value, horizon, level, method, season_length)`: an aggregate that
//! collects one series (a group) and returns its forecast as a list of
//! `{time, forecast, lower, upper, method}`. `FORECAST(TABLE t, time => ..., value => ...,
//! id => ...)` in `FROM` is rewritten onto it with `GROUP BY` the id columns, so series are
//! forecast in parallel by DataFusion's grouped aggregation and only one group's rows are
//! held per series.
//!
//! `time` may be a timestamp (any unit, with or without time zone), a date or an integer;
//! the forecast times have the same type. Season-length candidates follow the step: hourly
//! data tries 24 and 168, daily 7 and 365, ... (see [`season_candidates`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, StringArray, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Float64Type, Int64Type, TimeUnit,
};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datafusion::physical_expr::expressions::Literal;
use prognos_models::ModelError;
use prognos_models::forecast::{ForecastSpec, Method, forecast, regularize};

use crate::models::{external, f64_list, list_scalar};

/// Largest horizon accepted.
pub const MAX_HORIZON: i64 = 100_000;

/// The aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ForecastAgg {
    signature: Signature,
}

impl Default for ForecastAgg {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn item_fields(time: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("time", time.clone(), true),
        Field::new("forecast", DataType::Float64, true),
        Field::new("lower", DataType::Float64, true),
        Field::new("upper", DataType::Float64, true),
        Field::new("method", DataType::Utf8, true),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
}

fn i64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Int64, true)))
}

/// Nanoseconds in one unit of a time type (dates count days).
fn unit_nanos(t: &DataType) -> Option<i64> {
    Some(match t {
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date64 => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        DataType::Date32 => 86_400_000_000_000,
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::UInt32 => 0,
        _ => return None,
    })
}

/// Season lengths worth testing for a step of `step` units of a type whose unit is
/// `nanos` nanoseconds (0 = plain integers: the step is not a duration).
pub fn season_candidates(step: i64, nanos: i64) -> Vec<usize> {
    const HOUR: i64 = 3_600_000_000_000;
    const DAY: i64 = 24 * HOUR;
    if nanos == 0 || step <= 0 {
        return vec![4, 7, 12, 24];
    }
    let step_ns = step.saturating_mul(nanos);
    let per = |span: i64| (span / step_ns) as usize;
    let mut c: Vec<usize> = if step_ns < HOUR {
        vec![per(HOUR), per(DAY), per(7 * DAY)]
    } else if step_ns < DAY {
        vec![per(DAY), per(7 * DAY)]
    } else if step_ns < 7 * DAY {
        vec![per(7 * DAY), per(365 * DAY)]
    } else if step_ns < 28 * DAY {
        vec![52]
    } else if step_ns < 90 * DAY {
        vec![12]
    } else {
        vec![4]
    };
    c.retain(|&m| m >= 2);
    c
}

impl AggregateUDFImpl for ForecastAgg {
    fn name(&self) -> &str {
        "prognos_forecast"
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
        // Wrong column types are left for `return_type` to report (as 42804); coercion
        // errors would reach the client as "no such function".
        let time = match &arg_types[0] {
            DataType::Int32 | DataType::Int16 | DataType::UInt32 => DataType::Int64,
            t => t.clone(),
        };
        let value = if arg_types[1].is_numeric() {
            DataType::Float64
        } else {
            arg_types[1].clone()
        };
        Ok(vec![
            time,
            value,
            DataType::Int64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Int64,
        ])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let time = arg_types.first().cloned().unwrap_or(DataType::Int64);
        if unit_nanos(&time).is_none() {
            return Err(external(ModelError::WrongType(format!(
                "the time column must be a timestamp, a date or an integer, not {time}"
            ))));
        }
        match arg_types.get(1) {
            Some(v) if v.is_numeric() || *v == DataType::Null => {}
            Some(v) => {
                return Err(external(ModelError::WrongType(format!(
                    "the value column must be numeric, not {v}"
                ))));
            }
            None => return plan_err!("prognos_forecast needs a value column"),
        }
        Ok(list_of(item_fields(&time)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}_times", args.name), i64_list(), true)),
            Arc::new(Field::new(
                format!("{}_values", args.name),
                f64_list(),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| -> Option<ScalarValue> {
            args.exprs
                .get(i)
                .and_then(|e| e.as_ref().downcast_ref::<Literal>())
                .map(|l| l.value().clone())
        };
        let horizon = match literal(2) {
            Some(ScalarValue::Int64(Some(h))) if (1..=MAX_HORIZON).contains(&h) => h as usize,
            Some(v) => {
                return Err(external(ModelError::InvalidParameter(format!(
                    "horizon must be an integer in [1, {MAX_HORIZON}], got {v}"
                ))));
            }
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
            Some(ScalarValue::Utf8(Some(m))) => Some(Method::parse(&m).map_err(external)?),
            _ => return plan_err!("method must be a constant string"),
        };
        let season_length = match literal(5) {
            Some(ScalarValue::Int64(Some(0))) => None,
            Some(ScalarValue::Int64(Some(s))) if (1..=100_000).contains(&s) => Some(s as usize),
            Some(v) => {
                return Err(external(ModelError::InvalidParameter(format!(
                    "season_length must be an integer in [1, 100000] (0 = detect), got {v}"
                ))));
            }
            None => return plan_err!("season_length must be a constant"),
        };
        let time_type = args.exprs[0].data_type(args.schema)?;
        Ok(Box::new(SeriesAccumulator {
            time_type,
            horizon,
            level,
            method,
            season_length,
            times: vec![],
            values: vec![],
        }))
    }
}

#[derive(Debug)]
struct SeriesAccumulator {
    time_type: DataType,
    horizon: usize,
    level: f64,
    method: Option<Method>,
    season_length: Option<usize>,
    times: Vec<i64>,
    values: Vec<Option<f64>>,
}

fn times_as_i64(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(match a.data_type() {
        DataType::Date32 => cast(&cast(a, &DataType::Int32)?, &DataType::Int64)?,
        _ => cast(a, &DataType::Int64)?,
    })
}

impl Accumulator for SeriesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let t = times_as_i64(&values[0])?;
        let t = t.as_primitive::<Int64Type>();
        let v = cast(&values[1], &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        for i in 0..t.len() {
            // Rows without a time cannot be placed in the series.
            if t.is_valid(i) {
                self.times.push(t.value(i));
                self.values.push(v.is_valid(i).then(|| v.value(i)));
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            list_scalar(Int64Array::from(self.times.clone()), DataType::Int64),
            list_scalar(Float64Array::from(self.values.clone()), DataType::Float64),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let times = states[0].as_list::<i32>();
        let values = states[1].as_list::<i32>();
        for (t, v) in times.iter().zip(values.iter()) {
            if let (Some(t), Some(v)) = (t, v) {
                let t = t.as_primitive::<Int64Type>();
                let v = v.as_primitive::<Float64Type>();
                self.times.extend(t.iter().map(|x| x.unwrap_or_default()));
                self.values.extend(v.iter());
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let fields = item_fields(&self.time_type);
        if self.times.is_empty() {
            return Ok(ScalarValue::List(Arc::new(ListArray::new_null(
                Arc::new(Field::new("item", DataType::Struct(fields), true)),
                1,
            ))));
        }
        let rows: Vec<(i64, Option<f64>)> = self
            .times
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        let series = regularize(&rows, None).map_err(external)?;
        for note in &series.notes {
            tracing::info!("forecast: {note}");
        }
        let nanos = unit_nanos(&self.time_type).unwrap_or(0);
        let spec = ForecastSpec {
            method: self.method,
            horizon: self.horizon,
            level: self.level,
            season_length: self.season_length,
            season_candidates: season_candidates(series.step, nanos),
            windows: 2,
        };
        let f = forecast(&series.values, &spec).map_err(external)?;
        let last = series.start + series.step * (series.values.len() as i64 - 1);
        let step = series.step.max(1);
        let times =
            Int64Array::from_iter_values((1..=self.horizon as i64).map(|j| last + j * step));
        let times: ArrayRef = match &self.time_type {
            DataType::Date32 => cast(&cast(&times, &DataType::Int32)?, &DataType::Date32)?,
            t => cast(&times, t)?,
        };
        let h = self.horizon;
        let structs = StructArray::new(
            fields.clone(),
            vec![
                times,
                Arc::new(Float64Array::from(f.point)),
                Arc::new(Float64Array::from(f.lower)),
                Arc::new(Float64Array::from(f.upper)),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    f.method.name(),
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
        std::mem::size_of_val(self) + self.times.capacity() * 8 + self.values.capacity() * 16
    }
}
