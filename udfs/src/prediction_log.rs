//! Prediction logging (`ALTER MODEL m SET LOGGING (sample = 0.1, key = 'customer_id')`): a
//! sample of the rows each `PREDICT` / `PREDICT_PROBA` call scores leaves the query through a
//! bounded channel ([`LogSink`]), with the inputs, the prediction, the raw scores, the version,
//! the time and the key; the engine's writer appends them to the model's log table.
//!
//! The key column is not a model input, so a call does not pass it. [`LogPredictions`], an
//! analyzer rule, finds the calls of logged models and gives each the key column of the
//! relation it reads (by name, when exactly one column has it; NULL otherwise), keeping the
//! call's output name. Scoring never waits for logging: when the channel is full, the rows are
//! counted as dropped instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, ListBuilder, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};
use datafusion::optimizer::AnalyzerRule;
use prognos_catalog::PredictionLogging;
use prognos_models::ModelArtifact;
use rand::{Rng, SeedableRng};

/// Column of the log time.
pub const TS_COLUMN: &str = "ts";
/// Column of the version that scored the row.
pub const VERSION_COLUMN: &str = "version";
/// Column of the key value (as text).
pub const KEY_COLUMN: &str = "key";
/// Column of the prediction (`PREDICT`'s output).
pub const PREDICTION_COLUMN: &str = "prediction";
/// Column of the raw model outputs (a probability per class, or the regression value), from
/// which `MODEL_MONITOR` computes live metrics.
pub const SCORES_COLUMN: &str = "scores";

/// The rows logged from one batch of one call.
#[derive(Debug)]
pub struct LoggedRows {
    /// The model (without a version pin).
    pub model: String,
    /// Where they go.
    pub logging: PredictionLogging,
    /// `ts, version, key, <feature columns>, prediction, scores` (feature columns as the call
    /// passed them; the writer casts them to the table's types).
    pub batch: RecordBatch,
}

/// The sending end of the prediction log (cheap to clone).
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: tokio::sync::mpsc::Sender<LoggedRows>,
    logged: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    /// A sink holding at most `capacity` batches in flight, and the writer's receiving end.
    pub fn new(capacity: usize) -> (LogSink, tokio::sync::mpsc::Receiver<LoggedRows>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            LogSink {
                tx,
                logged: Arc::default(),
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// Hand rows to the writer without waiting; when it is behind they are dropped and counted.
    pub fn offer(&self, rows: LoggedRows) {
        let n = rows.batch.num_rows() as u64;
        match self.tx.try_send(rows) {
            Ok(()) => self.logged.fetch_add(n, Ordering::Relaxed),
            Err(_) => self.dropped.fetch_add(n, Ordering::Relaxed),
        };
    }

    /// Rows handed to the writer since start.
    pub fn logged(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }

    /// Rows dropped since start because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The columns of a model's log table: `ts, version, key`, one per feature (its training
/// type), `prediction` (`PREDICT`'s type) and `scores`.
pub fn log_schema(model: &ModelArtifact) -> Schema {
    let mut fields = head_fields();
    for f in &model.features.features {
        let dt = f.data_type.parse::<DataType>().unwrap_or(DataType::Utf8);
        fields.push(Field::new(&f.name, dt, true));
    }
    fields.push(Field::new(PREDICTION_COLUMN, model.output_type(), true));
    fields.push(Field::new(SCORES_COLUMN, scores_type(), true));
    Schema::new(fields)
}

/// The columns every log row starts with: `ts, version, key`.
fn head_fields() -> Vec<Field> {
    vec![
        Field::new(
            TS_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(VERSION_COLUMN, DataType::Int64, false),
        Field::new(KEY_COLUMN, DataType::Utf8, true),
    ]
}

fn scores_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

/// The rows of one scored batch that `logging` samples, as [`LoggedRows`]; `None` when the
/// sample is empty. `key` is the key column's values (or NULLs), `columns` the features,
/// `prediction` the call's `PREDICT` output for every row (`None` to compute it for the
/// sampled rows).
pub(crate) fn sample_rows(
    model_name: &str,
    version: u32,
    model: &ModelArtifact,
    logging: &PredictionLogging,
    key: &ArrayRef,
    columns: &[ArrayRef],
    prediction: Option<&ArrayRef>,
) -> Result<Option<LoggedRows>> {
    let n = key.len();
    let picked: Vec<u32> = if logging.sample >= 1.0 {
        (0..n as u32).collect()
    } else {
        // Seeded from the clock and a counter: the sample need not be reproducible, only
        // cheap and independent between calls.
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let seed = CALLS.fetch_add(1, Ordering::Relaxed)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n as u32)
            .filter(|_| rng.random::<f64>() < logging.sample)
            .collect()
    };
    if picked.is_empty() {
        return Ok(None);
    }
    let idx = UInt32Array::from(picked);
    let m = idx.len();
    let now = chrono_micros();
    let mut out: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![now; m]).with_timezone("UTC")),
        Arc::new(datafusion::arrow::array::Int64Array::from(vec![
            version
                as i64;
            m
        ])),
        cast(&take(key, &idx, None)?, &DataType::Utf8)?,
    ];
    let mut fields = head_fields();
    let taken: Vec<ArrayRef> = columns
        .iter()
        .map(|c| take(c, &idx, None))
        .collect::<std::result::Result<_, _>>()?;
    for (f, c) in model.features.features.iter().zip(&taken) {
        fields.push(Field::new(&f.name, c.data_type().clone(), true));
        out.push(Arc::clone(c));
    }
    let predicted = match prediction {
        Some(p) => take(p, &idx, None)?,
        None => model.predict(&taken).map_err(crate::models::model_error)?,
    };
    fields.push(Field::new(
        PREDICTION_COLUMN,
        predicted.data_type().clone(),
        true,
    ));
    out.push(predicted);
    let mut scores = ListBuilder::new(Float64Builder::new());
    match model.scores(&taken) {
        Ok((s, k)) if k > 0 && s.len() == m * k => {
            for row in s.chunks(k) {
                scores
                    .values()
                    .append_slice(&row.iter().map(|&v| v as f64).collect::<Vec<_>>());
                scores.append(true);
            }
        }
        // A model without raw scores (a clustering) logs none.
        _ => (0..m).for_each(|_| scores.append(false)),
    }
    fields.push(Field::new(SCORES_COLUMN, scores_type(), true));
    out.push(Arc::new(scores.finish()));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), out)?;
    Ok(Some(LoggedRows {
        model: prognos_catalog::model_snapshot::split_pin(model_name)
            .0
            .to_string(),
        logging: logging.clone(),
        batch,
    }))
}

fn chrono_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The analyzer rule that passes the key column to the calls of logged models (see the
/// module docs).
#[derive(Debug, Default)]
pub struct LogPredictions;

impl AnalyzerRule for LogPredictions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // Most plans call no logged model: find out without rewriting (or naming) anything.
        let mut logged = false;
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|e| {
                e.apply(|e| {
                    if matches!(e, Expr::ScalarFunction(call)
                        if crate::models::is_logged_call(call))
                    {
                        logged = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        if !logged {
            return Ok(plan);
        }
        plan.transform_up_with_subqueries(rewrite_node).data()
    }

    fn name(&self) -> &str {
        "log_predictions"
    }
}

fn rewrite_node(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    // The columns a node's expressions read: its input's (its own for a leaf or a join).
    let schema = match node.inputs().as_slice() {
        [input] => Arc::clone(input.schema()),
        _ => Arc::clone(node.schema()),
    };
    let names = NamePreserver::new(&node);
    let t = node.map_expressions(|e| {
        let saved = names.save(&e);
        let t = e.transform_up(|e| keyed_call(e, &schema))?;
        Ok(t.update_data(|e| saved.restore(e)))
    })?;
    if t.transformed {
        t.map_data(|p| p.recompute_schema())
    } else {
        Ok(t)
    }
}

/// `predict('m', f…)` of a logged model → the logging form `predict('m', key, f…)`.
fn keyed_call(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(call) = &e else {
        return Ok(Transformed::no(e));
    };
    let Some(logged) = crate::models::logging_form(call) else {
        return Ok(Transformed::no(e));
    };
    let key = logged
        .key
        .as_deref()
        .and_then(|k| key_column(schema, k))
        .unwrap_or(Expr::Literal(ScalarValue::Utf8(None), None));
    let mut args = call.args.clone();
    args.insert(1, key);
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(logged.udf, args),
    )))
}

/// The one column of `schema` named `key` (exactly, else ignoring case).
fn key_column(schema: &DFSchema, key: &str) -> Option<Expr> {
    let exact = schema.qualified_fields_with_unqualified_name(key);
    let found = if exact.is_empty() {
        schema
            .iter()
            .filter(|(_, f)| f.name().eq_ignore_ascii_case(key))
            .collect::<Vec<_>>()
    } else {
        exact
    };
    match found.as_slice() {
        [(q, f)] => Some(Expr::Column(Column::new(q.cloned(), f.name()))),
        _ => None,
    }
}

/// What [`crate::models::logging_form`] gives: the logging form of a call's function.
pub(crate) struct LoggedForm {
    /// The function taking the key as its second argument.
    pub(crate) udf: Arc<ScalarUDF>,
    /// The key column's name.
    pub(crate) key: Option<String>,
}
