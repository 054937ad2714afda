//! `prognos_anomaly(time, value, sensitivity [, season_length [, cooldown [, novelty_window,
//! novelty_gate]]])`: an aggregate that collects one series (a group) and returns every row's
//! anomaly score as a list of `{time, value, expected, lower, upper, score, novelty,
//! is_anomaly}` in time order (see `prognos_models::anomaly` for the method).
//! `ANOMALY(TABLE t, time => ..., value => ..., id => ...)` in `FROM` is rewritten onto it
//! with `GROUP BY` the id columns, like `FORECAST`; so is `ANOMALY('m', TABLE t)` with a
//! series detector's columns and settings.
//!
//! Rows are sorted by time (rows with equal times by value); rows without a time are dropped; rows with a NULL value keep
//! NULL scores and are skipped by the detector (they are not interpolated: every output row
//! is an input row).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use prognos_models::ModelError;
use prognos_models::anomaly::stored::{MAX_COOLDOWN, MAX_NOVELTY_WINDOW, series_order};
use prognos_models::anomaly::{AnomalySpec, detect, season_phases};
use prognos_models::forecast::time::{times_from_i64, unit_nanos};

use crate::models::{external, list_scalar};
use crate::series::{
    SeriesRows, check_series_types, coerce_series_types, list_of, literal_arg, null_list,
    season_length_arg, state_fields, whole_number,
};

/// The aggregate's SQL name.
pub const NAME: &str = "prognos_anomaly";

/// The aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AnomalyAgg {
    signature: Signature,
}

impl Default for AnomalyAgg {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn item_fields(time: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("time", time.clone(), true),
        Field::new("value", DataType::Float64, true),
        Field::new("expected", DataType::Float64, true),
        Field::new("lower", DataType::Float64, true),
        Field::new("upper", DataType::Float64, true),
        Field::new("score", DataType::Float64, true),
        Field::new("novelty", DataType::Float64, true),
        Field::new("is_anomaly", DataType::Boolean, true),
    ])
}

impl AggregateUDFImpl for AnomalyAgg {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(3..=7).contains(&arg_types.len()) || arg_types.len() == 6 {
            return plan_err!(
                "prognos_anomaly(time, value, sensitivity [, season_length [, cooldown [, \
                 novelty_window, novelty_gate]]]) takes 3, 4, 5 or 7 arguments"
            );
        }
        let (time, value) = coerce_series_types(&arg_types[0], &arg_types[1]);
        let mut types = vec![time, value, DataType::Float64];
        types.extend(arg_types[3..].iter().map(|_| DataType::Float64));
        Ok(types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let time = check_series_types(NAME, arg_types)?;
        Ok(list_of(item_fields(&time)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let sensitivity = match literal_arg(&args, 2) {
            Some(ScalarValue::Float64(Some(s))) if s > 0.0 && s < 1.0 => s,
            Some(v) => {
                return Err(external(ModelError::InvalidParameter(format!(
                    "sensitivity must be in (0, 1), got {v}"
                ))));
            }
            None => return plan_err!("sensitivity must be a constant"),
        };
        // 0 (or absent) = the seasons the timestamps suggest, 1 = none, m ≥ 2 = that length.
        let season_length = season_length_arg(&args, 3)?;
        let defaults = AnomalySpec::default();
        let cooldown = count_arg(&args, 4, "cooldown", MAX_COOLDOWN)?.unwrap_or(defaults.cooldown);
        let novelty_window = count_arg(&args, 5, "novelty_window", MAX_NOVELTY_WINDOW)?
            .unwrap_or(defaults.novelty_window);
        let novelty_gate = match args.exprs.get(6).map(|_| literal_arg(&args, 6)) {
            None => defaults.novelty_gate,
            Some(Some(ScalarValue::Float64(Some(g)))) if g.is_finite() && g >= 0.0 => g,
            Some(Some(v)) => {
                return Err(external(ModelError::InvalidParameter(format!(
                    "novelty_gate must be a number ≥ 0, got {v}"
                ))));
            }
            Some(None) => return plan_err!("novelty_gate must be a constant"),
        };
        Ok(Box::new(SeriesAccumulator {
            time_type: args.exprs[0].data_type(args.schema)?,
            spec: AnomalySpec {
                sensitivity,
                cooldown,
                novelty_window,
                novelty_gate,
                ..defaults
            },
            season_length,
            rows: SeriesRows::default(),
        }))
    }
}

/// Argument `i`, a count of points in `[0, max]`, when given.
fn count_arg(args: &AccumulatorArgs, i: usize, name: &str, max: usize) -> Result<Option<usize>> {
    match args.exprs.get(i).map(|_| literal_arg(args, i)) {
        None => Ok(None),
        Some(Some(v)) => match whole_number(&v, 0..=max as i64) {
            Some(c) => Ok(Some(c as usize)),
            None => Err(external(ModelError::InvalidParameter(format!(
                "{name} must be an integer in [0, {max}], got {v}"
            )))),
        },
        Some(None) => plan_err!("{name} must be a constant"),
    }
}

#[derive(Debug)]
struct SeriesAccumulator {
    time_type: DataType,
    /// The detector's settings.
    spec: AnomalySpec,
    season_length: Option<usize>,
    rows: SeriesRows,
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
        // Equal times are taken in value order (NULLs last), so the scores do not depend on
        // the order in which partitions delivered the rows.
        let order = series_order(&self.rows.times, &self.rows.values);
        let y: Vec<f64> = order
            .iter()
            .map(|&i| self.rows.values[i].unwrap_or(f64::NAN))
            .collect();
        let times: Vec<i64> = order.iter().map(|&i| self.rows.times[i]).collect();
        let nanos = unit_nanos(&self.time_type).unwrap_or(0);
        let seasons = season_phases(&times, nanos, self.season_length);
        let s = detect(&y, &seasons, &self.spec);
        let missing: Vec<bool> = y.iter().map(|v| !v.is_finite()).collect();
        // A column of `v`: NULL on rows without a value and where `keep` rejects the value.
        let column = |v: &[f64], keep: fn(&f64) -> bool| {
            Float64Array::from(
                v.iter()
                    .zip(&missing)
                    .map(|(x, &m)| (!m && keep(x)).then_some(*x))
                    .collect::<Vec<_>>(),
            )
        };
        let opt = |v: &[f64]| column(v, |x| x.is_finite());
        let times = times_from_i64(times, &self.time_type)?;
        let structs = StructArray::new(
            fields.clone(),
            vec![
                times,
                Arc::new(Float64Array::from(
                    order
                        .iter()
                        .map(|&i| self.rows.values[i])
                        .collect::<Vec<_>>(),
                )),
                Arc::new(opt(&s.expected)),
                Arc::new(opt(&s.lower)),
                Arc::new(opt(&s.upper)),
                Arc::new(opt(&s.score)),
                // Infinite novelty (a change after exact repeats) is a value, not unknown.
                Arc::new(column(&s.novelty, |x| !x.is_nan())),
                Arc::new(BooleanArray::from(
                    s.is_anomaly
                        .iter()
                        .zip(&missing)
                        .map(|(&a, &m)| (!m).then_some(a))
                        .collect::<Vec<_>>(),
                )),
            ],
            None,
        );
        if self.rows.times.is_empty() {
            return Ok(null_list(fields));
        }
        Ok(list_scalar(structs, DataType::Struct(fields)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.rows.size()
    }
}
