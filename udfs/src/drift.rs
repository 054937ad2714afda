//! `model_drift('model', f1, ..., fn)`: an aggregate that counts rows into the bins of the
//! model's training profile (`prognos_models::drift`) and returns, per feature and for the
//! prediction, the population stability index against training, the NULL shares then and
//! now, and the share of unseen categories. `DRIFT('m', TABLE t)` in `FROM` is planned onto
//! it. Partial states are the bin counts, so it aggregates in parallel.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float32Array, Float64Array, Int64Array, StringArray, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature};
use datafusion::physical_expr::expressions::Literal;
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::drift::{Profile, Tally};
use prognos_models::{ModelArtifact, ModelError};

use crate::models::{external, f64_list, list_scalar};

/// The aggregate (see the module docs).
#[derive(Debug)]
pub(crate) struct ModelDrift {
    pub(crate) snapshot: Arc<ModelSnapshot>,
    pub(crate) signature: Signature,
}

impl PartialEq for ModelDrift {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
    }
}
impl Eq for ModelDrift {}
impl Hash for ModelDrift {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.snapshot) as usize).hash(state);
    }
}

/// Fields of one result row.
pub(crate) fn drift_fields() -> Fields {
    Fields::from(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("psi", DataType::Float64, true),
        Field::new("training_null_share", DataType::Float64, true),
        Field::new("null_share", DataType::Float64, true),
        Field::new("unseen_share", DataType::Float64, true),
        Field::new("rows", DataType::Int64, true),
    ])
}

fn drift_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(drift_fields()),
        true,
    )))
}

/// The profile of model `name`, or why it has none.
pub(crate) fn profile_of(model: &ModelArtifact, name: &str) -> Result<Profile> {
    model.profile.clone().ok_or_else(|| {
        external(CatalogError::Model(ModelError::InvalidInput(format!(
            "model \"{name}\" has no training profile to measure drift against (classifiers and \
             regressions trained by prognos store one; versions trained before profiles were \
             stored get one with RETRAIN MODEL {name})"
        ))))
    })
}

impl AggregateUDFImpl for ModelDrift {
    fn name(&self) -> &str {
        "model_drift"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(drift_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_counts", args.name),
            f64_list(),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let name = match args
            .exprs
            .first()
            .and_then(|e| e.as_ref().downcast_ref::<Literal>())
            .map(|l| l.value())
        {
            Some(ScalarValue::Utf8(Some(s))) | Some(ScalarValue::Utf8View(Some(s))) => s.clone(),
            _ => return plan_err!("model_drift takes the model name as a string literal first"),
        };
        let (_, model) = self.snapshot.get(&name).map_err(external)?;
        let profile = profile_of(&model, &name)?;
        Ok(Box::new(DriftAccumulator {
            tally: Tally::new(&profile),
            profile,
            model,
        }))
    }
}

#[derive(Debug)]
struct DriftAccumulator {
    model: Arc<ModelArtifact>,
    profile: Profile,
    tally: Tally,
}

impl Accumulator for DriftAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let features = values.get(1..).unwrap_or_default();
        let mut columns: Vec<ArrayRef> = features.to_vec();
        if self.profile.columns.len() > features.len() {
            // The prediction, as training profiled it (one number per row).
            let (out, k) = self
                .model
                .scores(features)
                .map_err(|e| external(CatalogError::Model(e)))?;
            if k == 1 {
                columns.push(Arc::new(Float32Array::from(out)));
            }
        }
        self.tally
            .add(&self.profile, &columns)
            .map_err(|e| external(CatalogError::Model(e)))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut counts = self.tally.counts.clone();
        counts.push(self.tally.rows);
        Ok(vec![list_scalar(
            Float64Array::from(counts),
            DataType::Float64,
        )])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first().map(|s| s.as_list::<i32>()) else {
            return Ok(());
        };
        for l in lists.iter().flatten() {
            let v: Vec<f64> = l.as_primitive::<Float64Type>().iter().flatten().collect();
            let Some((rows, counts)) = v.split_last() else {
                continue;
            };
            if counts.len() != self.tally.counts.len() {
                return plan_err!("model_drift: partial states of different profiles");
            }
            self.tally.merge(&Tally {
                counts: counts.to_vec(),
                rows: *rows,
            });
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let report = self.tally.report(&self.profile);
        let f64s = |f: &dyn Fn(&prognos_models::drift::Drift) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(report.iter().map(f)))
        };
        let rows = self.tally.rows;
        let structs = StructArray::new(
            drift_fields(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    report.iter().map(|d| d.column.as_str()),
                )),
                f64s(&|d| d.psi),
                f64s(&|d| d.training_null_share),
                f64s(&|d| d.null_share),
                f64s(&|d| d.unseen_share),
                Arc::new(Int64Array::from_iter_values(
                    report.iter().map(|_| rows as i64),
                )),
            ],
            None,
        );
        Ok(list_scalar(structs, DataType::Struct(drift_fields())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.tally.counts.len() * 8
    }
}
