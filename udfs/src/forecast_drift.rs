//! `prognos_forecast_drift('m', time, id_1, ..., id_k, value)`: an aggregate over one
//! series' recent rows (a group of the model's id columns) that backtests the series' stored
//! method on them (`ForecastModel::backtest_drift`) and returns a list of one
//! `{method, observations, trained_mase, recent_mase, mase_ratio, trained_smape,
//! recent_smape}`.
//!
//! `FROM DRIFT('m', TABLE recent)` with a forecasting model is planned onto it with `GROUP BY`
//! the model's id columns (ids passed as text, the value as `DOUBLE`, both by name).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature};
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::ModelArtifact;
use prognos_models::forecast::members_label;
use prognos_models::forecast::stored::ForecastModel;

use crate::models::{external, list_scalar, model_error};
use crate::series::{KeyedRows, list_of, literal_arg, null_list};

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
        Ok(KeyedRows::state_fields(args.name))
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
            rows: KeyedRows::new(1),
            n_ids: k,
        }))
    }
}

#[derive(Debug)]
struct DriftAccumulator {
    model: Arc<ModelArtifact>,
    /// The group's rows, with their value.
    rows: KeyedRows,
    n_ids: usize,
}

impl Accumulator for DriftAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let model_time = forecast_model(&self.model)?.time_type();
        let ids = &values[2..2 + self.n_ids];
        self.rows
            .update(&model_time, &values[1], ids, &values[2 + self.n_ids..])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.rows.state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.rows.merge(states)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let fields = drift_fields();
        let Some(ids) = self.rows.ids.clone() else {
            return Ok(null_list(fields));
        };
        let rows: Vec<(i64, Option<f64>)> = self
            .rows
            .rows()
            .map(|(t, v)| (t, v.first().copied().flatten()))
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
                Arc::new(StringArray::from(vec![members_label(d.method, &d.members)])),
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
        std::mem::size_of_val(self) + self.rows.size()
    }
}
