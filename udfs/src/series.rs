//! What the per-series aggregates (`prognos_forecast`, `prognos_anomaly`,
//! `prognos_forecast_future`, `prognos_forecast_drift`) share: the `(time, value)` rows of one group as they arrive,
//! their partial states, the checks and coercions of the time and value arguments, and the
//! reading of their constant arguments.

use std::ops::RangeInclusive;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::physical_expr::expressions::Literal;
use prognos_models::ModelError;
use prognos_models::forecast::stored::MAX_SEASON_LENGTH;
use prognos_models::forecast::time::{times_as_i64, unit_nanos};

use crate::models::{external, f64_list, list_scalar};

/// The value of an aggregate's `i`-th argument when it is a constant (`None`: absent or not a
/// constant).
pub(crate) fn literal_arg(args: &AccumulatorArgs, i: usize) -> Option<ScalarValue> {
    args.exprs
        .get(i)
        .and_then(|e| e.as_ref().downcast_ref::<Literal>())
        .map(|l| l.value().clone())
}

/// A whole number in `range` given as a `Float64` argument (the functions coerce their
/// integer settings to `Float64`, so that a bound query parameter of any numeric type reaches
/// them and `14.5` is refused rather than truncated).
pub(crate) fn whole_number(v: &ScalarValue, range: RangeInclusive<i64>) -> Option<i64> {
    match v {
        ScalarValue::Float64(Some(x))
            if x.fract() == 0.0 && *x >= *range.start() as f64 && *x <= *range.end() as f64 =>
        {
            Some(*x as i64)
        }
        _ => None,
    }
}

/// A `season_length` argument: 0 = detect (`None`), 1 = no season, up to 100 000 points; an
/// absent argument is 0.
pub(crate) fn season_length_arg(args: &AccumulatorArgs, i: usize) -> Result<Option<usize>> {
    if args.exprs.len() <= i {
        return Ok(None);
    }
    match literal_arg(args, i) {
        Some(v) => match whole_number(&v, 0..=MAX_SEASON_LENGTH as i64) {
            Some(0) => Ok(None),
            Some(s) => Ok(Some(s as usize)),
            None => Err(external(ModelError::InvalidParameter(format!(
                "season_length must be an integer in [1, {MAX_SEASON_LENGTH}] (0 = detect), got {v}"
            )))),
        },
        None => plan_err!("season_length must be a constant"),
    }
}

/// The rows of one series: time ticks and values (`None` = NULL), in arrival order.
#[derive(Debug, Default)]
pub(crate) struct SeriesRows {
    pub(crate) times: Vec<i64>,
    pub(crate) values: Vec<Option<f64>>,
}

impl SeriesRows {
    /// Add a batch of `[time, value]` columns; rows without a time cannot be placed in the
    /// series and are dropped.
    pub(crate) fn update(&mut self, columns: &[ArrayRef]) -> Result<()> {
        let t = times_as_i64(&columns[0])?;
        let t = t.as_primitive::<Int64Type>();
        let v = cast(&columns[1], &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        for i in 0..t.len() {
            if t.is_valid(i) {
                self.times.push(t.value(i));
                self.values.push(v.is_valid(i).then(|| v.value(i)));
            }
        }
        Ok(())
    }

    /// The partial state: the times and the values as two lists.
    pub(crate) fn state(&self) -> Vec<ScalarValue> {
        vec![
            list_scalar(Int64Array::from(self.times.clone()), DataType::Int64),
            list_scalar(Float64Array::from(self.values.clone()), DataType::Float64),
        ]
    }

    /// Merge partial states made by [`SeriesRows::state`].
    pub(crate) fn merge(&mut self, states: &[ArrayRef]) -> Result<()> {
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

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        self.times.capacity() * 8 + self.values.capacity() * 16
    }

    /// The rows as `(time, value)` pairs.
    pub(crate) fn pairs(&self) -> Vec<(i64, Option<f64>)> {
        self.times
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect()
    }
}

/// `List<Struct<fields>>`: the result type of a per-series aggregate (one item per row).
pub(crate) fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
}

/// The result of a per-series aggregate over a group without rows: a NULL
/// `List<Struct<fields>>`.
pub(crate) fn null_list(fields: Fields) -> ScalarValue {
    ScalarValue::List(Arc::new(ListArray::new_null(
        Arc::new(Field::new("item", DataType::Struct(fields), true)),
        1,
    )))
}

/// The state fields of [`SeriesRows::state`].
pub(crate) fn state_fields(name: &str) -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(
            format!("{name}_times"),
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        )),
        Arc::new(Field::new(format!("{name}_values"), f64_list(), true)),
    ]
}

/// Coercions of the `(time, value)` arguments: small integer times to `Int64`, numeric values
/// to `Float64`; other types are kept so [`check_series_types`] can report them (coercion
/// errors would reach the client as "no such function").
pub(crate) fn coerce_series_types(time: &DataType, value: &DataType) -> (DataType, DataType) {
    let time = match time {
        DataType::Int32 | DataType::Int16 | DataType::UInt32 => DataType::Int64,
        t => t.clone(),
    };
    let value = if value.is_numeric() {
        DataType::Float64
    } else {
        value.clone()
    };
    (time, value)
}

/// Checks the `(time, value)` argument types (`42804` when wrong); returns the time type.
pub(crate) fn check_series_types(fname: &str, arg_types: &[DataType]) -> Result<DataType> {
    let time = arg_types.first().cloned().unwrap_or(DataType::Int64);
    if unit_nanos(&time).is_none() {
        return Err(external(ModelError::WrongType(format!(
            "the time column must be a timestamp, a date or an integer, not {time}"
        ))));
    }
    match arg_types.get(1) {
        Some(v) if v.is_numeric() || *v == DataType::Null => Ok(time),
        Some(v) => Err(external(ModelError::WrongType(format!(
            "the value column must be numeric, not {v}"
        )))),
        None => plan_err!("{fname} needs a value column"),
    }
}

/// One group's rows for an aggregate over a stored model's series (`prognos_forecast_future`,
/// `prognos_forecast_drift`): the group's id values as text (from its first row), and each
/// row's time (in ticks of the model's time column) with `width` values, row-major.
#[derive(Debug)]
pub(crate) struct KeyedRows {
    /// The id values, once a row arrived.
    pub(crate) ids: Option<Vec<Option<String>>>,
    /// Time of each row.
    pub(crate) times: Vec<i64>,
    /// `width` values per row.
    values: Vec<Option<f64>>,
    width: usize,
}

impl KeyedRows {
    /// No rows yet, `width` values per row.
    pub(crate) fn new(width: usize) -> Self {
        Self {
            ids: None,
            times: vec![],
            values: vec![],
            width,
        }
    }

    /// Add a batch: `time` (cast to `model_time`), the id columns (as text) and `width` value
    /// columns (as `DOUBLE`); rows without a time are skipped.
    pub(crate) fn update(
        &mut self,
        model_time: &DataType,
        time: &ArrayRef,
        ids: &[ArrayRef],
        values: &[ArrayRef],
    ) -> Result<()> {
        let t = times_as_i64(&cast(time, model_time)?)?;
        let t = t.as_primitive::<Int64Type>();
        let ids: Vec<ArrayRef> = ids
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let values: Vec<ArrayRef> = values
            .iter()
            .map(|c| cast(c, &DataType::Float64))
            .collect::<std::result::Result<_, _>>()?;
        for i in 0..t.len() {
            if !t.is_valid(i) {
                continue;
            }
            if self.ids.is_none() {
                self.ids = Some(
                    ids.iter()
                        .map(|c| {
                            let s = c.as_string::<i32>();
                            s.is_valid(i).then(|| s.value(i).to_string())
                        })
                        .collect(),
                );
            }
            self.times.push(t.value(i));
            for c in &values {
                let c = c.as_primitive::<Float64Type>();
                self.values.push(c.is_valid(i).then(|| c.value(i)));
            }
        }
        Ok(())
    }

    /// The partial state's fields, named after the aggregate `name`.
    pub(crate) fn state_fields(name: &str) -> Vec<FieldRef> {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        vec![
            Arc::new(Field::new(
                format!("{name}_times"),
                list(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format!("{name}_ids"),
                list(DataType::Utf8),
                true,
            )),
            Arc::new(Field::new(format!("{name}_values"), f64_list(), true)),
        ]
    }

    /// The partial state: times, ids and values as lists.
    pub(crate) fn state(&self) -> Vec<ScalarValue> {
        let ids: Vec<Option<String>> = self.ids.clone().unwrap_or_default();
        vec![
            list_scalar(Int64Array::from(self.times.clone()), DataType::Int64),
            list_scalar(
                datafusion::arrow::array::StringArray::from(ids),
                DataType::Utf8,
            ),
            list_scalar(Float64Array::from(self.values.clone()), DataType::Float64),
        ]
    }

    /// Add partial states of the same group.
    pub(crate) fn merge(&mut self, states: &[ArrayRef]) -> Result<()> {
        let times = states[0].as_list::<i32>();
        let ids = states[1].as_list::<i32>();
        let values = states[2].as_list::<i32>();
        for r in 0..times.len() {
            if times.is_null(r) {
                continue;
            }
            let t = times.value(r);
            let t = t.as_primitive::<Int64Type>();
            if t.is_empty() {
                continue;
            }
            if self.ids.is_none() && ids.is_valid(r) {
                let i = ids.value(r);
                let i = i.as_string::<i32>();
                self.ids = Some(i.iter().map(|v| v.map(str::to_string)).collect());
            }
            self.times.extend(t.iter().map(|x| x.unwrap_or_default()));
            let v = values.value(r);
            self.values.extend(v.as_primitive::<Float64Type>().iter());
        }
        Ok(())
    }

    /// Each row's time and values.
    pub(crate) fn rows(&self) -> impl Iterator<Item = (i64, &[Option<f64>])> {
        let w = self.width;
        (0..self.times.len()).map(move |r| (self.times[r], &self.values[r * w..(r + 1) * w]))
    }

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        self.times.capacity() * 8 + self.values.capacity() * 16
    }
}
