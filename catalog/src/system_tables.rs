//! `system.models`, `system.model_versions` and `system.model_trials`: the registry as tables,
//! so `SHOW MODELS`, BI tools and ordinary SQL see it. Each scan reads the registry as it is at
//! that moment.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use prognos_models::Task;

use crate::models::{ModelRegistry, ModelVersion};

/// Which registry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemTable {
    /// One row per model (its deployed version; NULL version columns while none is).
    Models,
    /// One row per model version.
    ModelVersions,
    /// One row per training candidate of every version.
    ModelTrials,
}

impl SystemTable {
    /// Table name inside the `system` schema.
    pub fn name(&self) -> &'static str {
        match self {
            SystemTable::Models => "models",
            SystemTable::ModelVersions => "model_versions",
            SystemTable::ModelTrials => "model_trials",
        }
    }

    /// All of them.
    pub fn all() -> [SystemTable; 3] {
        [
            SystemTable::Models,
            SystemTable::ModelVersions,
            SystemTable::ModelTrials,
        ]
    }

    fn schema(&self) -> SchemaRef {
        let s = |n: &str| Field::new(n, DataType::Utf8, true);
        let i = |n: &str| Field::new(n, DataType::Int64, true);
        let f = |n: &str| Field::new(n, DataType::Float64, true);
        let fields = match self {
            SystemTable::Models => vec![
                s("name"),
                i("version"),
                i("versions"),
                s("task"),
                s("algorithm"),
                s("target"),
                s("features"),
                s("metric"),
                f("metric_value"),
                i("train_rows"),
                i("validation_rows"),
                f("train_seconds"),
                s("created_at"),
                s("device"),
                s("effective_device"),
                s("retrain_every"),
                s("retrain_at"),
                s("next_retrain"),
            ],
            SystemTable::ModelVersions => vec![
                s("name"),
                i("version"),
                Field::new("is_current", DataType::Boolean, false),
                s("state"),
                s("state_changed_at"),
                s("state_changed_by"),
                s("state_reason"),
                s("task"),
                s("algorithm"),
                s("target"),
                s("features"),
                s("metrics"),
                i("train_rows"),
                i("validation_rows"),
                f("train_seconds"),
                s("created_at"),
                s("query"),
                s("artifact"),
                s("definition"),
            ],
            SystemTable::ModelTrials => vec![
                s("name"),
                i("version"),
                i("trial"),
                s("algorithm"),
                s("params"),
                s("metric"),
                f("value"),
                f("seconds"),
                Field::new("chosen", DataType::Boolean, false),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// Where a model of `algorithm` asking for `requested` runs on this server (without
/// loading it).
fn effective_device(algorithm: &str, requested: &str) -> String {
    use prognos_models::onnx::device::DeviceRequest;
    // Only imported graphs and perceptrons record a device; anything else is read as a graph.
    let algorithm =
        prognos_models::Algorithm::parse(algorithm).unwrap_or(prognos_models::Algorithm::Onnx);
    DeviceRequest::parse(requested)
        .map(|r| algorithm.effective_device(r).to_string())
        .unwrap_or_else(|_| "cpu".to_string())
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Classification => "classification",
        Task::Regression => "regression",
        Task::Clustering => "clustering",
        Task::Forecasting => "forecasting",
        Task::AnomalyDetection => "anomaly_detection",
        Task::Embedding => "embedding",
    }
}

/// The metric a version is judged by (the chosen trial's) and its value.
fn headline(v: &ModelVersion) -> (Option<String>, Option<f64>) {
    match v.trials.iter().find(|t| t.chosen) {
        Some(t) => (
            Some(t.metric.clone()),
            v.metrics.values.get(&t.metric).copied().or(Some(t.value)),
        ),
        None => (None, None),
    }
}

fn metrics_json(v: &ModelVersion) -> String {
    serde_json::to_string(&v.metrics.values).unwrap_or_default()
}

/// A registry table.
pub struct RegistryTable {
    registry: Arc<ModelRegistry>,
    table: SystemTable,
    schema: SchemaRef,
}

impl fmt::Debug for RegistryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryTable")
            .field("table", &self.table)
            .finish()
    }
}

impl RegistryTable {
    /// The table `table` over `registry`.
    pub fn new(registry: Arc<ModelRegistry>, table: SystemTable) -> Self {
        Self {
            registry,
            schema: table.schema(),
            table,
        }
    }

    fn batch(&self, role: Option<&crate::grants::SessionRole>) -> DfResult<RecordBatch> {
        let mut entries = self.registry.entries();
        if let Some(p) = role.map(|r| r.privileges()) {
            entries.retain(|e| p.sees(&crate::Securable::Model(e.name.clone())));
        }
        let cols: Vec<ArrayRef> = match self.table {
            SystemTable::Models => {
                // One row per model; the version columns describe the deployed version and
                // are NULL while none is.
                let cur: Vec<(&str, Option<&ModelVersion>, usize)> = entries
                    .iter()
                    .map(|e| (e.name.as_str(), e.current_version(), e.versions.len()))
                    .collect();
                let heads: Vec<(Option<String>, Option<f64>)> = cur
                    .iter()
                    .map(|(_, v, _)| v.map(headline).unwrap_or((None, None)))
                    .collect();
                let with = |f: &dyn Fn(&ModelVersion) -> Option<String>| -> ArrayRef {
                    Arc::new(StringArray::from_iter(cur.iter().map(|c| c.1.and_then(f))))
                };
                let int = |f: &dyn Fn(&ModelVersion) -> i64| -> ArrayRef {
                    Arc::new(Int64Array::from_iter(cur.iter().map(|c| c.1.map(f))))
                };
                vec![
                    Arc::new(StringArray::from_iter_values(cur.iter().map(|c| c.0))),
                    int(&|v| v.version as i64),
                    Arc::new(Int64Array::from_iter_values(cur.iter().map(|c| c.2 as i64))),
                    with(&|v| Some(task_name(v.task).to_string())),
                    with(&|v| Some(v.algorithm.clone())),
                    with(&|v| v.target.clone()),
                    with(&|v| Some(v.features.join(", "))),
                    Arc::new(StringArray::from_iter(heads.iter().map(|h| h.0.as_deref()))),
                    Arc::new(Float64Array::from_iter(heads.iter().map(|h| h.1))),
                    int(&|v| v.train_rows as i64),
                    int(&|v| v.validation_rows as i64),
                    Arc::new(Float64Array::from_iter(
                        cur.iter().map(|c| c.1.map(|v| v.train_seconds)),
                    )),
                    with(&|v| Some(v.created_at.clone())),
                    with(&|v| v.device.clone()),
                    with(&|v| {
                        v.device
                            .as_deref()
                            .map(|d| effective_device(&v.algorithm, d))
                    }),
                    Arc::new(StringArray::from_iter(
                        entries
                            .iter()
                            .map(|e| e.retrain.as_ref().map(|r| r.every.clone())),
                    )),
                    Arc::new(StringArray::from_iter(
                        entries
                            .iter()
                            .map(|e| e.retrain.as_ref().and_then(|r| r.at.clone())),
                    )),
                    Arc::new(StringArray::from_iter(
                        entries
                            .iter()
                            .map(|e| e.retrain.as_ref().map(|r| r.next_run.clone())),
                    )),
                ]
            }
            SystemTable::ModelVersions => {
                // Stored versions, then those being trained now.
                let mut training = self.registry.training();
                if let Some(p) = role.map(|r| r.privileges()) {
                    training.retain(|(name, _)| p.sees(&crate::Securable::Model(name.clone())));
                }
                let all: Vec<(&str, &ModelVersion, bool)> = entries
                    .iter()
                    .flat_map(|e| {
                        e.versions
                            .iter()
                            .map(move |v| (e.name.as_str(), v, v.version == e.current))
                    })
                    .chain(training.iter().map(|(n, v)| (n.as_str(), v, false)))
                    .collect();
                vec![
                    Arc::new(StringArray::from_iter_values(all.iter().map(|c| c.0))),
                    Arc::new(Int64Array::from_iter_values(
                        all.iter().map(|c| c.1.version as i64),
                    )),
                    Arc::new(BooleanArray::from(
                        all.iter().map(|c| c.2).collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.state.name()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.state_changed_at.as_str()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.state_changed_by.as_str()),
                    )),
                    Arc::new(StringArray::from_iter(
                        all.iter().map(|c| c.1.state_reason.as_deref()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| task_name(c.1.task)),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.algorithm.as_str()),
                    )),
                    Arc::new(StringArray::from_iter(
                        all.iter().map(|c| c.1.target.as_deref()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.features.join(", ")),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| metrics_json(c.1)),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        all.iter().map(|c| c.1.train_rows as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        all.iter().map(|c| c.1.validation_rows as i64),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        all.iter().map(|c| c.1.train_seconds),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.created_at.as_str()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.query.as_str()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        all.iter().map(|c| c.1.artifact.as_str()),
                    )),
                    Arc::new(StringArray::from_iter(
                        all.iter().map(|c| c.1.definition.as_deref()),
                    )),
                ]
            }
            SystemTable::ModelTrials => {
                let rows: Vec<(&str, u32, usize, &prognos_models::model::Trial)> = entries
                    .iter()
                    .flat_map(|e| {
                        e.versions.iter().flat_map(move |v| {
                            v.trials
                                .iter()
                                .enumerate()
                                .map(move |(i, t)| (e.name.as_str(), v.version, i + 1, t))
                        })
                    })
                    .collect();
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.1 as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.2 as i64),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.3.algorithm.name()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.3.params.as_str()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.3.metric.as_str()),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        rows.iter().map(|r| r.3.value),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        rows.iter().map(|r| r.3.seconds),
                    )),
                    Arc::new(BooleanArray::from(
                        rows.iter().map(|r| r.3.chosen).collect::<Vec<_>>(),
                    )),
                ]
            }
        };
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

#[async_trait]
impl TableProvider for RegistryTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // A session lists the models its role may use.
        let role = state.config().get_extension::<crate::grants::SessionRole>();
        let batch = self.batch(role.as_deref())?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}
