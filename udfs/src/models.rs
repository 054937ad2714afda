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
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;
use prognos_catalog::{CatalogError, ModelSnapshot, PredictionLogging};
use prognos_models::onnx::device::DeviceRequest;
use prognos_models::{ModelArtifact, ModelError};

use crate::prediction_log::{LogSink, LoggedForm};

pub(crate) fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Which scalar model function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Predict,
    Proba,
    Contributions,
    Anomaly,
}

#[derive(Debug, Clone)]
struct ModelFunction {
    kind: Kind,
    snapshot: Arc<ModelSnapshot>,
    /// The session's `prognos.device`, when set.
    device: Option<DeviceRequest>,
    signature: Signature,
    /// Where logged predictions go.
    sink: Option<LogSink>,
    /// The logging form: the second argument is the key column (see [`crate::prediction_log`]).
    keyed: bool,
    /// Where the session's NOTICEs go (a fallback answering says so there).
    notes: Option<Notes>,
}

/// A session's NOTICE sink, sending at most one message a second.
#[derive(Clone)]
pub struct Notes {
    sink: crate::forecast::NoteSink,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notes")
    }
}

impl Notes {
    /// Notes that go to `sink`.
    pub fn new(sink: crate::forecast::NoteSink) -> Self {
        Self {
            sink,
            last: Arc::default(),
        }
    }

    fn say(&self, message: String) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        (self.sink)(message);
    }
}

impl PartialEq for ModelFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && Arc::ptr_eq(&self.snapshot, &other.snapshot)
            && self.device == other.device
            && self.keyed == other.keyed
    }
}
impl Eq for ModelFunction {}
impl Hash for ModelFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        (Arc::as_ptr(&self.snapshot) as usize).hash(state);
        self.device.hash(state);
        self.keyed.hash(state);
    }
}

/// A model error as a DataFusion error.
pub(crate) fn model_error(e: ModelError) -> DataFusionError {
    external(CatalogError::Model(e))
}

/// Whether `udf` scores rows with a model (`PREDICT`, `PREDICT_PROBA`, the contributions):
/// what [`crate::read_ahead`] overlaps with reading.
pub(crate) fn is_model_function(udf: &datafusion::logical_expr::ScalarUDF) -> bool {
    udf.inner().downcast_ref::<ModelFunction>().is_some()
}

/// Whether `call` is a `PREDICT` / `PREDICT_PROBA` call not yet in the logging form whose
/// model logs its predictions (what [`logging_form`] rewrites), without building that form.
pub(crate) fn is_logged_call(call: &ScalarFunction) -> bool {
    logged_call(call).is_some()
}

/// The model function of a call that [`logging_form`] rewrites, and its model's logging.
fn logged_call(call: &ScalarFunction) -> Option<(&ModelFunction, &PredictionLogging)> {
    let f = call.func.inner().downcast_ref::<ModelFunction>()?;
    if f.keyed || f.sink.is_none() || !matches!(f.kind, Kind::Predict | Kind::Proba) {
        return None;
    }
    let name = match call.args.first() {
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        )) => s.as_str(),
        _ => return None,
    };
    Some((f, f.snapshot.logging(name)?))
}

/// The logging form of a `PREDICT` / `PREDICT_PROBA` call whose model logs its predictions
/// (`None` for any other call, or one in that form already).
pub(crate) fn logging_form(call: &ScalarFunction) -> Option<LoggedForm> {
    let (f, logging) = logged_call(call)?;
    Some(LoggedForm {
        udf: Arc::new(ScalarUDF::new_from_impl(ModelFunction {
            keyed: true,
            ..f.clone()
        })),
        key: logging.key.clone(),
    })
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
            Kind::Contributions => "predict_contributions",
            Kind::Anomaly => "anomaly",
        }
    }

    fn model(&self, name: &str) -> Result<(u32, Arc<ModelArtifact>)> {
        let (version, model) = self.snapshot.get(name).map_err(external)?;
        Ok((version, on_session_device(&model, self.device)))
    }

    /// The model `name` stands for at plan time, or its fallback's deployed version when it
    /// cannot be loaded and has one.
    fn planned_model(&self, name: &str) -> Result<Arc<ModelArtifact>> {
        match self.model(name) {
            Ok((_, m)) => Ok(m),
            Err(e) => match self.snapshot.fallback(name).map(|f| self.model(f)) {
                Some(Ok((_, m))) => Ok(m),
                _ => Err(e),
            },
        }
    }

    /// Score `columns` with model `name` (its answer from the prediction cache when it has
    /// one for them), counting the call: `(version, model, answer)`.
    fn score(
        &self,
        name: &str,
        columns: &[ArrayRef],
    ) -> Result<(u32, Arc<ModelArtifact>, ArrayRef)> {
        let started = Instant::now();
        let (version, stored) = match self.snapshot.get(name) {
            Ok(found) => found,
            Err(e) => {
                crate::call_metrics::failed(name, 0);
                return Err(external(e));
            }
        };
        let model = on_session_device(&stored, self.device);
        let cache = self.snapshot.cache_entries(name).and_then(|entries| {
            Some((
                entries,
                crate::prediction_cache::key(self.kind as u8, columns)?,
            ))
        });
        if let Some((_, key)) = &cache
            && let Some(answer) = crate::prediction_cache::get(&stored, key)
        {
            crate::call_metrics::cache_hit(name, version);
            crate::call_metrics::scored(name, version, answer.len(), started);
            return Ok((version, model, answer));
        }
        let out = match self.kind {
            Kind::Predict | Kind::Anomaly => model.predict(columns),
            Kind::Proba => model.predict_proba(columns),
            Kind::Contributions => contributions_array(&model, columns),
        };
        match out {
            Ok(out) => {
                crate::call_metrics::scored(name, version, out.len(), started);
                if let Some((entries, key)) = cache {
                    crate::prediction_cache::put(&stored, entries, key, Arc::clone(&out));
                }
                Ok((version, model, out))
            }
            Err(e) => {
                crate::call_metrics::failed(name, version);
                Err(model_error(e))
            }
        }
    }

    /// After model `name` failed with `failure`: its fallback's answer (of the type the call
    /// was planned with), or `failure` when it has none or the fallback fails too.
    fn fall_back(
        &self,
        name: &str,
        columns: &[ArrayRef],
        answers: &DataType,
        failure: DataFusionError,
    ) -> Result<ArrayRef> {
        let Some(fallback) = self.snapshot.fallback(name) else {
            return Err(failure);
        };
        let types: Vec<DataType> = columns.iter().map(|c| c.data_type().clone()).collect();
        let answer = self.snapshot.get(fallback).ok().and_then(|(_, m)| {
            m.check_argument_types(&types).ok()?;
            self.score(fallback, columns).ok()
        });
        match answer {
            Some((version, _, out)) if out.data_type() == answers => {
                crate::call_metrics::fell_back(name, fallback);
                if let Some(notes) = &self.notes {
                    notes.say(format!(
                        "model \"{name}\" failed ({failure}); model \"{fallback}\" version \
                         {version} answered instead"
                    ));
                }
                tracing::warn!(model = name, fallback, error = %failure, "fallback model answered");
                Ok(out)
            }
            _ => Err(failure),
        }
    }

    /// Index of the first feature argument (after the name, and the key in the logging form).
    fn first_feature(&self) -> usize {
        if self.keyed { 2 } else { 1 }
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
        let model = self.planned_model(&name)?;
        model
            .row_model(&self.fname().to_ascii_uppercase())
            .map_err(|e| external(CatalogError::Model(e)))?;
        let types: Vec<DataType> = args.arg_fields
            [self.first_feature().min(args.arg_fields.len())..]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        model
            .check_argument_types(&types)
            .map_err(|e| external(CatalogError::Model(e)))?;
        let dt = match self.kind {
            Kind::Contributions => DataType::Struct(contribution_fields(&model)),
            Kind::Predict => model.output_type(),
            Kind::Anomaly if model.task != prognos_models::Task::AnomalyDetection => {
                return Err(external(CatalogError::Model(ModelError::InvalidInput(
                    format!(
                        "ANOMALY('{name}', ...) needs a model made with CREATE MODEL ... DETECT \
                     ANOMALIES; \"{name}\" does {:?} (use PREDICT)",
                        model.task
                    ),
                ))));
            }
            Kind::Anomaly => DataType::Float64,
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
        let n = args.number_rows;
        let columns = args.args[self.first_feature().min(args.args.len())..]
            .iter()
            .map(|c| c.to_array(n))
            .collect::<Result<Vec<_>>>()?;
        let (version, model, out) = match self.score(&name, &columns) {
            Ok(scored) => scored,
            // A fallback's answers are not logged: they are not this model's predictions.
            Err(e) => {
                let answers = args.return_field.data_type();
                return Ok(ColumnarValue::Array(
                    self.fall_back(&name, &columns, answers, e)?,
                ));
            }
        };
        if self.keyed
            && let (Some(sink), Some(logging)) = (&self.sink, self.snapshot.logging(&name))
        {
            let key = args.args[1].to_array(n)?;
            let prediction = (self.kind == Kind::Predict).then_some(&out);
            let sampled = crate::prediction_log::sample_rows(
                &name, version, &model, logging, &key, &columns, prediction,
            );
            match sampled {
                Ok(Some(rows)) => sink.offer(rows),
                Ok(None) => {}
                // Logging never fails the query that scores.
                Err(e) => tracing::warn!(model = %name, error = %e, "prediction not logged"),
            }
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// Name of the base-value field of `predict_contributions`.
pub const BASE_VALUE_FIELD: &str = "__base_value";

/// Fields of `predict_contributions`: one per feature, then the base value.
fn contribution_fields(model: &ModelArtifact) -> Fields {
    model
        .features
        .features
        .iter()
        .map(|f| f.name.as_str())
        .chain([BASE_VALUE_FIELD])
        .map(|n| Field::new(n, DataType::Float64, false))
        .collect()
}

/// `predict_contributions('m', f...)`: per-row contributions as a struct (one field per
/// feature plus the base value); `EXPLAIN_PREDICT(...)` in `FROM` is rewritten onto it.
fn contributions_array(
    model: &ModelArtifact,
    columns: &[ArrayRef],
) -> prognos_models::ModelResult<ArrayRef> {
    let c = model.contributions(columns)?;
    let fields = contribution_fields(model);
    let w = fields.len();
    let n = columns.first().map(|a| a.len()).unwrap_or(0);
    let arrays: Vec<ArrayRef> = (0..w)
        .map(|j| Arc::new(Float64Array::from_iter_values((0..n).map(|r| c[r * w + j]))) as ArrayRef)
        .collect();
    Ok(Arc::new(StructArray::new(fields, arrays, None)))
}

/// `FEATURE_IMPORTANCE('model')`: feature, importance (share of the total), rank.
#[derive(Debug)]
struct FeatureImportance {
    snapshot: Arc<ModelSnapshot>,
}

pub(crate) fn literal_name(fname: &str, e: Option<&Expr>) -> Result<String> {
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

/// The model snapshot a model function (`predict` & co.) was registered with; `None` for any
/// other function.
pub(crate) fn snapshot_of(udf: &ScalarUDF) -> Option<Arc<ModelSnapshot>> {
    udf.inner()
        .downcast_ref::<ModelFunction>()
        .map(|f| Arc::clone(&f.snapshot))
}

/// `model` as a session that set `prognos.device` runs it (the model's own device when the
/// session did not).
fn on_session_device(
    model: &Arc<ModelArtifact>,
    device: Option<DeviceRequest>,
) -> Arc<ModelArtifact> {
    match device {
        Some(d) => model.on_device(d),
        None => Arc::clone(model),
    }
}

/// Register the model functions of `snapshot` in a session (replacing earlier instances);
/// `device` is the session's `prognos.device` when it set one, `sink` where logged
/// predictions go, `notes` where the session's NOTICEs go.
pub fn register_model_functions(
    ctx: &SessionContext,
    snapshot: Arc<ModelSnapshot>,
    device: Option<DeviceRequest>,
    sink: Option<LogSink>,
    notes: Option<Notes>,
) {
    for kind in [
        Kind::Predict,
        Kind::Proba,
        Kind::Contributions,
        Kind::Anomaly,
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(ModelFunction {
            kind,
            snapshot: Arc::clone(&snapshot),
            device,
            signature: Signature::user_defined(Volatility::Immutable),
            sink: sink.clone(),
            keyed: false,
            notes: notes.clone(),
        }));
    }
    ctx.register_udaf(AggregateUDF::new_from_impl(
        crate::forecast_future::FutureForecast {
            snapshot: Arc::clone(&snapshot),
            signature: Signature::user_defined(Volatility::Immutable),
        },
    ));
    for live in [false, true] {
        ctx.register_udaf(AggregateUDF::new_from_impl(ModelMetrics {
            snapshot: Arc::clone(&snapshot),
            device,
            signature: Signature::user_defined(Volatility::Immutable),
            live,
        }));
    }
    ctx.register_udaf(AggregateUDF::new_from_impl(
        crate::forecast_drift::ForecastDrift {
            snapshot: Arc::clone(&snapshot),
            signature: Signature::user_defined(Volatility::Immutable),
        },
    ));
    ctx.register_udaf(AggregateUDF::new_from_impl(crate::drift::ModelDrift {
        snapshot: Arc::clone(&snapshot),
        signature: Signature::user_defined(Volatility::Immutable),
    }));
    ctx.register_udtf(
        "prognos_forecast_model",
        Arc::new(crate::forecast::StoredForecast {
            snapshot: Arc::clone(&snapshot),
        }),
    );
    ctx.register_udtf(
        "prognos_forecast_evaluation",
        Arc::new(crate::forecast::StoredEvaluation {
            snapshot: Arc::clone(&snapshot),
        }),
    );
    ctx.register_udtf(
        "feature_importance",
        Arc::new(FeatureImportance { snapshot }),
    );
}

/// `model_metrics('model', target, f1, ..., fn)`: an aggregate that scores every row and
/// returns the model's metrics on them as a list of `{metric, value}`. `EVALUATE(...)` in
/// `FROM` is rewritten onto it. Partial states carry model outputs and true values, so it
/// aggregates in parallel like any other aggregate.
///
/// With `live`, it is `model_live_metrics('model', actual, scores)`: the same metrics from
/// logged model outputs (the prediction log's `scores` lists) instead of features, as
/// `MODEL_MONITOR` computes them.
#[derive(Debug)]
struct ModelMetrics {
    snapshot: Arc<ModelSnapshot>,
    /// The session's `prognos.device`, when set.
    device: Option<DeviceRequest>,
    signature: Signature,
    live: bool,
}

impl PartialEq for ModelMetrics {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
            && self.device == other.device
            && self.live == other.live
    }
}
impl Eq for ModelMetrics {}
impl Hash for ModelMetrics {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.snapshot) as usize).hash(state);
        self.device.hash(state);
        self.live.hash(state);
    }
}

fn metric_struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ])
}

fn metrics_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(metric_struct_fields()),
        true,
    )))
}

/// `List<Float64>`, the type of aggregate states that carry numbers.
pub(crate) fn f64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

impl AggregateUDFImpl for ModelMetrics {
    fn name(&self) -> &str {
        if self.live {
            "model_live_metrics"
        } else {
            "model_metrics"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(metrics_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_outputs", args.name),
                f64_list(),
                true,
            )),
            Arc::new(Field::new(format!("{}_truth", args.name), f64_list(), true)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let name = args
            .exprs
            .first()
            .and_then(|e| e.as_ref().downcast_ref::<Literal>())
            .map(|l| model_name("evaluate", Some(l.value())))
            .unwrap_or_else(|| model_name("evaluate", None))?;
        let (_, model) = self.snapshot.get(&name).map_err(external)?;
        Ok(Box::new(MetricsAccumulator {
            model: on_session_device(&model, self.device),
            outputs: vec![],
            truth: vec![],
            live: self.live,
            k: None,
        }))
    }
}

#[derive(Debug)]
struct MetricsAccumulator {
    model: Arc<ModelArtifact>,
    /// Model outputs, `k` per row (see `ModelArtifact::outputs`).
    outputs: Vec<f64>,
    truth: Vec<f64>,
    /// Outputs come from logged `scores` lists, not from scoring features.
    live: bool,
    /// Outputs per row of the logged lists seen so far (rows of another width are skipped).
    k: Option<usize>,
}

/// One list value holding every element of `values` (of type `item`).
pub(crate) fn list_scalar<T: datafusion::arrow::array::Array + 'static>(
    values: T,
    item: DataType,
) -> ScalarValue {
    let n = values.len();
    ScalarValue::List(Arc::new(ListArray::new(
        Arc::new(Field::new("item", item, true)),
        OffsetBuffer::from_lengths([n]),
        Arc::new(values),
        None,
    )))
}

impl MetricsAccumulator {
    /// Add logged rows: `truth` (encoded actual values) and `scores` (a list of outputs per
    /// row). Rows without an actual value or scores, or with scores of another width than
    /// the first row's, are skipped.
    fn update_live(&mut self, truth: &[Option<f32>], scores: &ArrayRef) -> Result<()> {
        let Some(lists) = scores.as_list_opt::<i32>() else {
            return plan_err!("model_live_metrics takes the logged scores as a list of numbers");
        };
        for (t, l) in truth.iter().zip(lists.iter()) {
            let (Some(t), Some(l)) = (t, l) else {
                continue;
            };
            let v = datafusion::arrow::compute::cast(&l, &DataType::Float64)?;
            let v = v.as_primitive::<Float64Type>();
            if v.is_empty()
                || datafusion::arrow::array::Array::null_count(v) > 0
                || *self.k.get_or_insert(v.len()) != v.len()
            {
                continue;
            }
            self.truth.push(*t as f64);
            self.outputs.extend(v.values().iter());
        }
        Ok(())
    }
}

impl Accumulator for MetricsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(target) = self.model.target.as_ref() else {
            return Err(external(CatalogError::Model(ModelError::InvalidInput(
                "EVALUATE needs a model with a target (classification or regression)".into(),
            ))));
        };
        if values.len() < 2 {
            return plan_err!("model_metrics needs the model name, the target and the features");
        }
        let truth = target
            .encode(&values[1])
            .map_err(|e| external(CatalogError::Model(e)))?;
        if self.live {
            return self.update_live(&truth, &values[2]);
        }
        let (out, k) = self
            .model
            .scores(&values[2..])
            .map_err(|e| external(CatalogError::Model(e)))?;
        for (i, t) in truth.iter().enumerate() {
            if let Some(t) = t {
                self.truth.push(*t as f64);
                self.outputs
                    .extend(out[i * k..(i + 1) * k].iter().map(|&v| v as f64));
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            list_scalar(Float64Array::from(self.outputs.clone()), DataType::Float64),
            list_scalar(Float64Array::from(self.truth.clone()), DataType::Float64),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for (i, dst) in [&mut self.outputs, &mut self.truth].into_iter().enumerate() {
            let lists = states[i].as_list::<i32>();
            for l in lists.iter().flatten() {
                let v = l.as_primitive::<Float64Type>();
                dst.extend(v.iter().flatten());
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let n = self.truth.len();
        let k = self.outputs.len().checked_div(n).unwrap_or(1).max(1);
        let classes = (self.model.task == prognos_models::Task::Classification).then(|| {
            self.model
                .target
                .as_ref()
                .map(|t| t.n_classes())
                .unwrap_or(2)
        });
        let out: Vec<f32> = self.outputs.iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = self.truth.iter().map(|&v| v as f32).collect();
        // No scored row (no outcome yet): only the count.
        let mut rows: Vec<(String, f64)> = if n == 0 {
            vec![]
        } else {
            prognos_models::metrics::of_outputs(classes, &out, k, &y)
                .values
                .into_iter()
                .collect()
        };
        rows.push(("rows".into(), n as f64));
        let structs = StructArray::new(
            metric_struct_fields(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
            None,
        );
        Ok(ScalarValue::List(Arc::new(ListArray::new(
            Arc::new(Field::new(
                "item",
                DataType::Struct(metric_struct_fields()),
                true,
            )),
            OffsetBuffer::from_lengths([rows.len()]),
            Arc::new(structs),
            None,
        ))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + (self.outputs.capacity() + self.truth.capacity()) * 8
    }
}
