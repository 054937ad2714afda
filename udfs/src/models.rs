//! Model functions: `PREDICT`, `PREDICT_PROBA` (scalar, batch-at-a-time) and
//! `FEATURE_IMPORTANCE` (table function).
//!
//! Each function instance holds a [`ModelSnapshot`]: the registry as it was when the session
//! last synchronised (before planning a statement). A plan keeps its instances, so a query that
//! started keeps the model version it started with even if `CREATE OR REPLACE MODEL` runs.
//!
//! `PREDICT('model', f1, f2, ...)` matches arguments to the model's features **by position**, in
//! the order of the training query's columns (without the target); `DESCRIBE MODEL` lists
//! them. The model name must be a string literal, so the output type and the argument check
//! happen at plan time, and the model is looked up once per batch, never per row.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use prognos_catalog::{CatalogError, ModelSnapshot};
use prognos_models::{ModelArtifact, ModelError};

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Which scalar model function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Predict,
    Proba,
}

#[derive(Debug)]
struct ModelFunction {
    kind: Kind,
    snapshot: Arc<ModelSnapshot>,
    signature: Signature,
}

impl PartialEq for ModelFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && Arc::ptr_eq(&self.snapshot, &other.snapshot)
    }
}
impl Eq for ModelFunction {}
impl Hash for ModelFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        (Arc::as_ptr(&self.snapshot) as usize).hash(state);
    }
}

fn model_name(fname: &str, arg: Option<&ScalarValue>) -> Result<String> {
    match arg {
        Some(ScalarValue::Utf8(Some(s)))
        | Some(ScalarValue::Utf8View(Some(s)))
        | Some(ScalarValue::LargeUtf8(Some(s))) => Ok(s.clone()),
        _ => Err(external(CatalogError::Model(ModelError::InvalidInput(
            format!(
                "the first argument of {fname} must be the model name as a string literal, \
             e.g. {fname}('churn', tenure, plan)"
            ),
        )))),
    }
}

impl ModelFunction {
    fn fname(&self) -> &'static str {
        match self.kind {
            Kind::Predict => "predict",
            Kind::Proba => "predict_proba",
        }
    }

    fn model(&self, name: &str) -> Result<Arc<ModelArtifact>> {
        self.snapshot.get(name).map(|(_, m)| m).map_err(external)
    }
}

impl ScalarUDFImpl for ModelFunction {
    fn name(&self) -> &str {
        self.fname()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() {
            return plan_err!("{} needs a model name and the feature values", self.fname());
        }
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{} resolves its type from the model", self.fname())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = model_name(
            self.fname(),
            args.scalar_arguments.first().copied().flatten(),
        )?;
        let model = self.model(&name)?;
        let types: Vec<DataType> = args.arg_fields[1..]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        model
            .features
            .check_argument_types(&types)
            .map_err(|e| external(CatalogError::Model(e)))?;
        let dt = match self.kind {
            Kind::Predict => model.output_type(),
            Kind::Proba => model.proba_type().ok_or_else(|| {
                external(CatalogError::Model(ModelError::InvalidInput(format!(
                    "PREDICT_PROBA needs a classifier; model \"{name}\" does {:?}",
                    model.task
                ))))
            })?,
        };
        Ok(Arc::new(Field::new(self.fname(), dt, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => model_name(self.fname(), Some(s))?,
            _ => return plan_err!("{}: the model name must be a literal", self.fname()),
        };
        let model = self.model(&name)?;
        let n = args.number_rows;
        let columns = args.args[1..]
            .iter()
            .map(|c| c.to_array(n))
            .collect::<Result<Vec<_>>>()?;
        let out = match self.kind {
            Kind::Predict => model.predict(&columns),
            Kind::Proba => model.predict_proba(&columns),
        }
        .map_err(|e| external(CatalogError::Model(e)))?;
        Ok(ColumnarValue::Array(out))
    }
}

/// `FEATURE_IMPORTANCE('model')`: feature, importance (share of the total), rank.
#[derive(Debug)]
struct FeatureImportance {
    snapshot: Arc<ModelSnapshot>,
}

fn literal_name(fname: &str, e: Option<&Expr>) -> Result<String> {
    match e {
        Some(Expr::Literal(s, _)) => model_name(fname, Some(s)),
        _ => Err(external(CatalogError::Model(ModelError::InvalidInput(
            format!("{fname} takes the model name as a string literal, e.g. {fname}('churn')"),
        )))),
    }
}

impl TableFunctionImpl for FeatureImportance {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = literal_name("feature_importance", args.exprs().first())?;
        if args.exprs().len() != 1 {
            return plan_err!("feature_importance takes exactly one argument, the model name");
        }
        let (_, model) = self.snapshot.get(&name).map_err(external)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("feature", DataType::Utf8, false),
            Field::new("importance", DataType::Float64, false),
            Field::new("rank", DataType::Int64, false),
        ]));
        let imp = &model.importance;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(
                    imp.iter().map(|i| i.feature.as_str()),
                )),
                Arc::new(Float64Array::from_iter_values(
                    imp.iter().map(|i| i.importance),
                )),
                Arc::new(Int64Array::from_iter_values(1..=imp.len() as i64)),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

/// Register the model functions of `snapshot` in a session (replacing earlier instances).
pub fn register_model_functions(ctx: &SessionContext, snapshot: Arc<ModelSnapshot>) {
    for kind in [Kind::Predict, Kind::Proba] {
        ctx.register_udf(ScalarUDF::new_from_impl(ModelFunction {
            kind,
            snapshot: Arc::clone(&snapshot),
            signature: Signature::user_defined(Volatility::Immutable),
        }));
    }
    ctx.register_udtf(
        "feature_importance",
        Arc::new(FeatureImportance { snapshot }),
    );
}
