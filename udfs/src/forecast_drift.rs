//! `prognos_forecast_drift('m', time, id_1, ..., id_k, value)`: an aggregate over one
//! series' recent rows (a group of the model's id columns) that backtests the series' stored
//! method on them (`ForecastModel::backtest_drift`) and returns a list of one
//! `{method, observations, trained_mase, recent_mase, mase_ratio, trained_smape,
//! recent_smape}`.
//!
//! `FROM DRIFT('m', TABLE recent)` with a forecasting model is planned onto it with `GROUP BY`
//! the model's id columns (ids passed as text, the value as `DOUBLE`, both by name).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature};
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::ModelArtifact;
use prognos_models::forecast::stored::ForecastModel;
use prognos_models::forecast::time::times_as_i64;

use crate::models::{external, f64_list, list_scalar, model_error};
use crate::series::{list_of, literal_arg, null_list};

/// The aggregate's SQL name.
pub(crate) const NAME: &str = "prognos_forecast_drift";

/// Fields of one result item.
pub(crate) fn drift_fields() -> Fields {
    Fields::from(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("observations", DataType::Int64, false),
        Field::new("trained_mase", DataType::Float64, true),
        Field::new("recent_mase", DataType::Float64, true),
        Field::new("mase_ratio", DataType::Float64, true),
        Field::new("trained_smape", DataType::Float64, true),
        Field::new("recent_smape", DataType::Float64, false),
    ])
}

/// The aggregate.
#[derive(Debug)]
pub(crate) struct ForecastDrift {
    pub(crate) snapshot: Arc<ModelSnapshot>,
    pub(crate) signature: Signature,
}

impl PartialEq for ForecastDrift {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
    }
}
impl Eq for ForecastDrift {}
impl std::hash::Hash for ForecastDrift {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.snapshot) as usize).hash(state);
    }
}

fn forecast_model(model: &ModelArtifact) -> Result<&ForecastModel> {
    model.forecast_model().ok_or_else(|| {
        model_error(prognos_models::ModelError::InvalidInput(
            "not a forecasting model".into(),
        ))
    })
}

impl AggregateUDFImpl for ForecastDrift {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() < 3 {
            return plan_err!("{NAME}('model', time, ids..., value) takes at least 3 arguments");
        }
        let mut out = vec![DataType::Utf8];
        out.extend(arg_types[1..arg_types.len() - 1].iter().cloned());
        out.push(DataType::Float64);
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_of(drift_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_times", args.name),
                list(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_ids", args.name),
                list(DataType::Utf8),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_values", args.name),
                f64_list(),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let Some(ScalarValue::Utf8(Some(name))) = literal_arg(&args, 0) else {
            return plan_err!("{NAME}: the model name must be a string constant");
        };
        let (_, model) = self.snapshot.get(&name).map_err(external)?;
        let k = forecast_model(&model)?.ids.len();
        if args.exprs.len() != 3 + k {
            return plan_err!(
                "{NAME}: model \"{name}\" has {k} id column(s), got {} arguments",
                args.exprs.len()
            );
        }
        Ok(Box::new(DriftAccumulator {
            model,
            ids: None,
            times: vec![],
            values: vec![],
            n_ids: k,
        }))
    }
}

#[derive(Debug)]
struct DriftAccumulator {
    model: Arc<ModelArtifact>,
    /// The group's id values (as text), from its first row.
    ids: Option<Vec<Option<String>>>,
    times: Vec<i64>,
    values: Vec<Option<f64>>,
    n_ids: usize,
}

impl Accumulator for DriftAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let model_time = forecast_model(&self.model)?.time_type();
        let t = times_as_i64(&cast(&values[1], &model_time)?)?;
        let t = t.as_primitive::<Int64Type>();
        let ids: Vec<ArrayRef> = values[2..2 + self.n_ids]
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let v = cast(&values[2 + self.n_ids], &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
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
            self.values.push(v.is_valid(i).then(|| v.value(i)));
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let ids: Vec<Option<String>> = self.ids.clone().unwrap_or_default();
        Ok(vec![
            list_scalar(Int64Array::from(self.times.clone()), DataType::Int64),
            list_scalar(StringArray::from(ids), DataType::Utf8),
            list_scalar(Float64Array::from(self.values.clone()), DataType::Float64),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
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

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let fields = drift_fields();
        let Some(ids) = self.ids.clone() else {
            return Ok(null_list(fields));
        };
        let rows: Vec<(i64, Option<f64>)> = self
            .times
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        let d = forecast_model(&self.model)?
            .backtest_drift(&ids, rows)
            .map_err(|e| external(CatalogError::Model(e)))?;
        let ratio = match (d.recent_mase, d.trained_mase) {
            (Some(r), Some(t)) if t > 0.0 => Some(r / t),
            _ => None,
        };
        let structs = StructArray::new(
            fields.clone(),
            vec![
                Arc::new(StringArray::from(vec![d.method.name()])),
                Arc::new(Int64Array::from(vec![d.observations as i64])),
                Arc::new(Float64Array::from(vec![d.trained_mase])),
                Arc::new(Float64Array::from(vec![d.recent_mase])),
                Arc::new(Float64Array::from(vec![ratio])),
                Arc::new(Float64Array::from(vec![d.trained_smape])),
                Arc::new(Float64Array::from(vec![d.recent_smape])),
            ],
            None,
        );
        Ok(list_scalar(structs, DataType::Struct(fields)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.times.capacity() * 8 + self.values.capacity() * 16
    }
}
