//! `prognos_forecast_future('m', level, time, id_1, ..., id_k, x_1, ..., x_e)`: an aggregate
//! over one series' future rows (a group of the id columns) that forecasts it with a global
//! (`gbdt_lag`) model from the future values of its exogenous columns `x_*`, returning a list
//! of `{time, forecast, lower, upper, method}`.
//!
//! `FROM FORECAST('m', TABLE future)` is rewritten onto it with `GROUP BY` the model's id
//! columns (ids passed as text, exogenous columns as `DOUBLE`, both by name).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, StructArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature};
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::forecast::Method;
use prognos_models::forecast::stored::ForecastModel;
use prognos_models::forecast::time::times_from_i64;
use prognos_models::{ModelArtifact, ModelError};

use crate::forecast::item_fields;
use crate::models::{external, list_scalar};
use crate::series::{KeyedRows, coerce_series_types, list_of, literal_arg, null_list};

/// The aggregate's SQL name.
pub(crate) const NAME: &str = "prognos_forecast_future";

/// The aggregate.
#[derive(Debug)]
pub(crate) struct FutureForecast {
    pub(crate) snapshot: Arc<ModelSnapshot>,
    pub(crate) signature: Signature,
}

impl PartialEq for FutureForecast {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
    }
}
impl Eq for FutureForecast {}
impl std::hash::Hash for FutureForecast {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.snapshot) as usize).hash(state);
    }
}

fn model_error(e: ModelError) -> DataFusionError {
    external(CatalogError::Model(e))
}

impl AggregateUDFImpl for FutureForecast {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() < 3 {
            return plan_err!(
                "prognos_forecast_future('model', level, time, ids..., exogenous...) takes at \
                 least 3 arguments"
            );
        }
        let mut out = vec![DataType::Utf8, DataType::Float64];
        out.push(coerce_series_types(&arg_types[2], &DataType::Float64).0);
        out.extend(arg_types[3..].iter().cloned());
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_of(item_fields(&arg_types[2])))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(KeyedRows::state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| literal_arg(&args, i);
        let Some(ScalarValue::Utf8(Some(name))) = literal(0) else {
            return plan_err!("prognos_forecast_future: the model name must be a string constant");
        };
        let Some(ScalarValue::Float64(Some(level))) = literal(1) else {
            return plan_err!("prognos_forecast_future: the level must be a constant");
        };
        let (_, model) = self.snapshot.get(&name).map_err(external)?;
        let f = future_model(&name, &model)?;
        let (k, e) = (f.ids.len(), f.exogenous().len());
        if args.exprs.len() != 3 + k + e {
            return plan_err!(
                "prognos_forecast_future: model \"{name}\" takes {k} id and {e} exogenous \
                 columns, got {} arguments",
                args.exprs.len()
            );
        }
        Ok(Box::new(FutureAccumulator {
            model,
            level,
            time_type: args.exprs[2].data_type(args.schema)?,
            rows: KeyedRows::new(e),
            n_ids: k,
        }))
    }
}

fn future_model<'a>(name: &str, model: &'a ModelArtifact) -> Result<&'a ForecastModel> {
    model.forecast_model().ok_or_else(|| {
        model_error(ModelError::InvalidInput(format!(
            "\"{name}\" is not a forecasting model"
        )))
    })
}

#[derive(Debug)]
struct FutureAccumulator {
    model: Arc<ModelArtifact>,
    level: f64,
    time_type: DataType,
    /// The group's rows, with its exogenous values.
    rows: KeyedRows,
    n_ids: usize,
}

impl FutureAccumulator {
    fn model(&self) -> Result<&ForecastModel> {
        future_model("model", &self.model)
    }
}

impl Accumulator for FutureAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let model_time = self.model()?.time_type();
        let ids = &values[3..3 + self.n_ids];
        self.rows
            .update(&model_time, &values[2], ids, &values[3 + self.n_ids..])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.rows.state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.rows.merge(states)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let fields = item_fields(&self.time_type);
        let Some(ids) = self.rows.ids.clone() else {
            return Ok(null_list(fields));
        };
        let rows: Vec<(i64, Vec<Option<f64>>)> =
            self.rows.rows().map(|(t, v)| (t, v.to_vec())).collect();
        let model = self.model()?;
        let level = if self.level == 0.0 {
            model.level
        } else {
            self.level
        };
        let (times, point, lower, upper) = model
            .forecast_future(&ids, &rows, level)
            .map_err(model_error)?;
        let h = times.len();
        let times = cast(&times_from_i64(times, &model.time_type())?, &self.time_type)?;
        let structs = StructArray::new(
            fields.clone(),
            vec![
                times,
                Arc::new(Float64Array::from(point)),
                Arc::new(Float64Array::from(lower)),
                Arc::new(Float64Array::from(upper)),
                Arc::new(StringArray::from(vec![Method::GbdtLag.name(); h])),
            ],
            None,
        );
        Ok(list_scalar(structs, DataType::Struct(fields)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.rows.size()
    }
}
