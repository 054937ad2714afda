//! A trained model as stored in the registry: its artifact format and its inference entry
//! points over Arrow arrays.
//!
//! ## Artifact format
//! A model version is one JSON document (UTF-8, `artifact.json` in the version's directory)
//! with a `format_version` field, beside the binary payload files it names. Version 1 holds:
//! `task`, `algorithm`, `features` (name, Arrow type, kind, categories), `target` (name, Arrow
//! type, class labels), `estimator` (`trees`: flat node arrays; `linear`: design + weights;
//! `kmeans`: design + centroids), `metrics`, `importance`, `trials`, `options`, row counts and
//! training time. Version 2 adds the `onnx` estimator (an imported graph: its ports, how
//! columns feed it, which outputs answer) whose graph is a payload file
//! ([`ModelArtifact::payload_files`]). Later estimators (`mlp`, `series_detector`: a series
//! detector's columns and settings) are read by the builds that know them. Readers accept
//! every version up to [`FORMAT_VERSION`]; a newer or unreadable document is reported as a
//! corrupted artifact, never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Serialize};

use crate::Task;
use crate::anomaly::stored::SeriesDetector;
use crate::error::{ModelError, ModelResult};
use crate::features::{FeatureSet, Matrix};
use crate::forecast::stored::ForecastModel;
use crate::gbdt::Ensemble;
use crate::isolation::IsolationForest;
use crate::linear::{KMeans, LinearModel};
use crate::metrics::{Metrics, argmax};
use crate::mlp::MlpModel;
use crate::onnx::device::DeviceRequest;
use crate::onnx::model::OnnxModel;
use crate::target::{Target, TargetKind};

/// Newest artifact format this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 2;

/// Training algorithm (`USING ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Try several and keep the best on the validation split.
    Auto,
    /// Gradient-boosted trees.
    Gbdt,
    /// Random forest.
    RandomForest,
    /// Ridge linear regression.
    Linear,
    /// L2 logistic regression.
    Logistic,
    /// k-means clustering.
    Kmeans,
    /// Per-series forecasting (`CREATE MODEL ... FORECAST`; the method is in the estimator).
    Forecast,
    /// Isolation forest (`CREATE MODEL ... DETECT ANOMALIES`).
    IsolationForest,
    /// A graph imported with `CREATE MODEL ... FROM 'model.onnx'`.
    Onnx,
    /// A multilayer perceptron trained with candle.
    Mlp,
    /// A series detector's settings (`CREATE MODEL ... DETECT ANOMALIES IN value TIME t`).
    SeriesDetector,
}

impl Algorithm {
    /// Parse a `USING` name.
    pub fn parse(s: &str) -> ModelResult<Algorithm> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" | "automl" => Algorithm::Auto,
            "gbdt" | "gbm" | "boosted_trees" | "xgboost" | "lightgbm" => Algorithm::Gbdt,
            "random_forest" | "rf" => Algorithm::RandomForest,
            "linear" | "linear_reg" | "ridge" => Algorithm::Linear,
            "logistic" | "logistic_reg" => Algorithm::Logistic,
            "kmeans" | "k_means" => Algorithm::Kmeans,
            "isolation_forest" | "iforest" => Algorithm::IsolationForest,
            "mlp" | "neural_network" | "dnn" => Algorithm::Mlp,
            other => {
                return Err(ModelError::InvalidParameter(format!(
                    "unknown algorithm \"{other}\" (use auto, gbdt, random_forest, linear, \
                     logistic, mlp, kmeans or isolation_forest)"
                )));
            }
        })
    }

    /// The name used in SQL and system tables.
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Gbdt => "gbdt",
            Algorithm::RandomForest => "random_forest",
            Algorithm::Linear => "linear",
            Algorithm::Logistic => "logistic",
            Algorithm::Kmeans => "kmeans",
            Algorithm::Forecast => "forecast",
            Algorithm::IsolationForest => "isolation_forest",
            Algorithm::Onnx => "onnx",
            Algorithm::Mlp => "mlp",
            Algorithm::SeriesDetector => "series_detector",
        }
    }
}

impl Algorithm {
    /// Where a model of this algorithm that asks for `requested` runs on this server, without
    /// loading it: perceptrons on candle's devices, imported graphs on ONNX Runtime's.
    pub fn effective_device(&self, requested: DeviceRequest) -> crate::onnx::device::Device {
        match self {
            Algorithm::Mlp => crate::mlp::device::effective(requested),
            _ => crate::onnx::device::effective(requested),
        }
    }
}

/// The fitted estimator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Estimator {
    /// Boosted trees or a forest.
    Trees(Ensemble),
    /// Linear or logistic regression.
    Linear(LinearModel),
    /// Clusters.
    Kmeans(KMeans),
    /// Per-series forecasts (no row-wise outputs: read with `FORECAST('m')`).
    Forecast(ForecastModel),
    /// Row-wise anomaly scores.
    IsolationForest(IsolationForest),
    /// An imported ONNX graph.
    Onnx(OnnxModel),
    /// A perceptron.
    Mlp(MlpModel),
    /// Per-series anomaly scores (no row-wise outputs: read with `ANOMALY('m', TABLE t)`).
    SeriesDetector(SeriesDetector),
}

impl Estimator {
    /// Raw outputs on an encoded matrix, row-major, and how many per row (see
    /// [`ModelArtifact::outputs`]; no calibration applied).
    pub fn outputs(&self, x: &Matrix) -> ModelResult<(Vec<f32>, usize)> {
        Ok(match self {
            Estimator::Trees(e) => (e.predict(x), e.n_outputs),
            Estimator::Linear(l) => (l.predict(x), l.weights.len()),
            Estimator::Kmeans(k) => (k.assign(x).iter().map(|a| a.0 as f32).collect(), 1),
            // Callers reject forecasting models first (`ModelArtifact::row_model`) and score
            // ONNX graphs from the columns (`ModelArtifact::scores`).
            Estimator::Forecast(_) | Estimator::Onnx(_) | Estimator::SeriesDetector(_) => {
                (vec![], 0)
            }
            Estimator::IsolationForest(f) => (f.score(x), 1),
            Estimator::Mlp(m) => m.predict(x)?,
        })
    }
}

/// One candidate tried by `auto` (or the single fit of a fixed algorithm).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trial {
    /// Algorithm tried.
    pub algorithm: Algorithm,
    /// Its settings, as `key=value` text.
    pub params: String,
    /// Selection metric name (`auc`, `log_loss`, `rmse`).
    pub metric: String,
    /// Its value on the validation split.
    pub value: f64,
    /// Training seconds.
    pub seconds: f64,
    /// Whether this trial became the model.
    pub chosen: bool,
}

/// Global importance of a feature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Importance {
    /// Feature name.
    pub feature: String,
    /// Share of the total (gain for trees, mean |contribution| for linear models).
    pub importance: f64,
}

/// A trained model version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// Artifact format version.
    pub format_version: u32,
    /// What it predicts.
    pub task: Task,
    /// The algorithm of the estimator (never `auto`).
    pub algorithm: Algorithm,
    /// Input columns.
    pub features: FeatureSet,
    /// Target column (supervised models).
    pub target: Option<Target>,
    /// The fitted estimator.
    pub estimator: Estimator,
    /// Metrics on the validation split (or the training rows when there is none).
    pub metrics: Metrics,
    /// Whether `metrics` come from held-out rows.
    pub metrics_on_validation: bool,
    /// Global feature importance, largest first.
    pub importance: Vec<Importance>,
    /// Candidates tried.
    pub trials: Vec<Trial>,
    /// `WITH (...)` options as given.
    pub options: BTreeMap<String, String>,
    /// Rows used for fitting.
    pub train_rows: usize,
    /// Rows held out for validation.
    pub validation_rows: usize,
    /// Wall-clock training time.
    pub train_seconds: f64,
    /// Platt scaling of a binary classifier's probability, when it lowered the validation
    /// log loss (absent in artifacts written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Platt>,
    /// The training distribution of the features and the prediction, for drift
    /// ([`crate::drift`]); absent for models without one (imports, forecasts, artifacts
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::drift::Profile>,
}

/// Platt scaling: `p' = sigmoid(a · logit(p) + b)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Platt {
    /// Slope on the log-odds.
    pub a: f64,
    /// Offset.
    pub b: f64,
}

impl Platt {
    /// Apply to a probability.
    pub fn apply(&self, p: f32) -> f32 {
        let q = (p as f64).clamp(1e-12, 1.0 - 1e-12);
        let z = self.a * (q / (1.0 - q)).ln() + self.b;
        (1.0 / (1.0 + (-z).exp())) as f32
    }

    /// Fit by Newton's method on (probability, 0/1 label) pairs.
    pub fn fit(p: &[f32], y: &[f32]) -> Option<Platt> {
        let s: Vec<f64> = p
            .iter()
            .map(|&p| {
                let q = (p as f64).clamp(1e-12, 1.0 - 1e-12);
                (q / (1.0 - q)).ln()
            })
            .collect();
        let (mut a, mut b) = (1.0f64, 0.0f64);
        for _ in 0..50 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
            for (&si, &yi) in s.iter().zip(y) {
                let q = 1.0 / (1.0 + (-(a * si + b)).exp());
                let d = q - yi as f64;
                let w = (q * (1.0 - q)).max(1e-12);
                ga += d * si;
                gb += d;
                haa += w * si * si;
                hab += w * si;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-18 {
                return None;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            a -= da;
            b -= db;
            if !a.is_finite() || !b.is_finite() {
                return None;
            }
            if da.abs().max(db.abs()) < 1e-9 {
                break;
            }
        }
        Some(Platt { a, b })
    }
}

impl ModelArtifact {
    /// A series detector's columns and settings.
    pub fn series_detector(&self) -> Option<&SeriesDetector> {
        match &self.estimator {
            Estimator::SeriesDetector(d) => Some(d),
            _ => None,
        }
    }

    /// The stored forecasts of a forecasting model.
    pub fn forecast_model(&self) -> Option<&ForecastModel> {
        match &self.estimator {
            Estimator::Forecast(f) => Some(f),
            _ => None,
        }
    }

    /// Fails for models that do not score rows (forecasting models), naming what to use.
    pub fn row_model(&self, function: &str) -> ModelResult<()> {
        match &self.estimator {
            Estimator::Forecast(_) => Err(ModelError::InvalidInput(format!(
                "{function} scores rows with a tabular model; this is a forecasting model: \
                 read its forecast with SELECT * FROM FORECAST('model') and its backtest with \
                 SELECT * FROM EVALUATE('model')"
            ))),
            Estimator::SeriesDetector(_) => Err(ModelError::InvalidInput(format!(
                "{function} scores rows with a tabular model; this is a series detector: \
                 score a series with SELECT * FROM ANOMALY('model', TABLE t)"
            ))),
            _ => Ok(()),
        }
    }

    /// The method or algorithm shown in the registry (`auto`, `ets`, ... for forecasts).
    pub fn algorithm_label(&self) -> String {
        match &self.estimator {
            Estimator::Forecast(f) => f.method.map(|m| m.name()).unwrap_or("auto").to_string(),
            _ => self.algorithm.name().to_string(),
        }
    }

    /// The predicted column: the target, or a forecasting model's value column.
    pub fn target_name(&self) -> Option<String> {
        match &self.estimator {
            Estimator::Forecast(f) => Some(f.value.name.clone()),
            _ => self.target.as_ref().map(|t| t.name.clone()),
        }
    }

    /// `name type` of each input column, in argument order (forecasting models: time, value,
    /// ids, each marked).
    pub fn input_descriptions(&self) -> Vec<String> {
        match &self.estimator {
            Estimator::Forecast(f) => f.column_descriptions(),
            Estimator::SeriesDetector(d) => d.column_descriptions(),
            _ => self
                .features
                .features
                .iter()
                .map(|f| format!("{} {}", f.name, f.data_type))
                .collect(),
        }
    }

    /// A model version for the ONNX graph at `path`, to be stored as payload `file` beside
    /// its `external` data files (see [`OnnxModel::import`] for them and `options`). It has
    /// no metrics: it was not trained here.
    pub fn import_onnx(
        path: &std::path::Path,
        file: &str,
        external: &crate::onnx::external::ExternalFiles,
        options: &BTreeMap<String, String>,
    ) -> ModelResult<ModelArtifact> {
        let (model, task, features, target) = OnnxModel::import(path, file, external, options)?;
        Ok(ModelArtifact {
            format_version: FORMAT_VERSION,
            task,
            algorithm: Algorithm::Onnx,
            features,
            target: Some(target),
            estimator: Estimator::Onnx(model),
            metrics: Metrics::default(),
            metrics_on_validation: false,
            importance: vec![],
            trials: vec![],
            options: options.clone(),
            train_rows: 0,
            validation_rows: 0,
            train_seconds: 0.0,
            calibration: None,
            profile: None,
        })
    }

    /// The model as an ONNX-ML graph (`EXPORT MODEL`; see [`crate::onnx::export`]).
    pub fn to_onnx(&self) -> ModelResult<Vec<u8>> {
        crate::onnx::export::export(self)
    }

    /// The model as a session that asks for `request` runs it (`SET prognos.device`): an
    /// imported graph opened on the device the request gets (its own sessions, pooled and
    /// kept), a perceptron with its weights loaded there; `self` when that is where it runs
    /// already, and for the other native models, which run on the CPU.
    pub fn on_device(self: &Arc<Self>, request: DeviceRequest) -> Arc<ModelArtifact> {
        match &self.estimator {
            Estimator::Onnx(o) => o.view_on(self, request),
            Estimator::Mlp(m) => m.view_on(self, request),
            _ => Arc::clone(self),
        }
    }

    /// The imported ONNX graph, if this is one.
    pub fn onnx(&self) -> Option<&OnnxModel> {
        match &self.estimator {
            Estimator::Onnx(o) => Some(o),
            _ => None,
        }
    }

    /// What `DESCRIBE MODEL` lists besides the columns, one `key value` line each: an
    /// imported graph's inputs and outputs (`input x float32[?, 4]`), a series detector's
    /// settings (`cooldown 100`).
    pub fn port_descriptions(&self) -> Vec<String> {
        match &self.estimator {
            Estimator::SeriesDetector(d) => d.setting_lines(),
            Estimator::Onnx(o) => o
                .inputs
                .iter()
                .map(|p| format!("input {p}"))
                .chain(o.outputs.iter().map(|p| format!("output {p}")))
                .collect(),
            _ => vec![],
        }
    }

    /// The device an imported graph or a perceptron asks for and the one it runs on here
    /// (`None` for the other models prognos trains, which run on the CPU).
    pub fn devices(&self) -> Option<(String, String)> {
        match &self.estimator {
            Estimator::Onnx(o) => Some((o.device.to_string(), o.effective_device().to_string())),
            Estimator::Mlp(m) => Some((m.device.to_string(), m.effective_device().to_string())),
            _ => None,
        }
    }

    /// The score from which a row is an anomaly, for an anomaly model trained with labelled
    /// rows (`WITH (labels = 'col')`).
    pub fn anomaly_threshold(&self) -> Option<f32> {
        match &self.estimator {
            Estimator::IsolationForest(f) => f.threshold,
            _ => None,
        }
    }

    /// Payload files stored beside `artifact.json`, by name: relative paths (an imported
    /// graph's external-data files keep the names the graph gives them).
    pub fn payload_files(&self) -> Vec<String> {
        match &self.estimator {
            Estimator::Onnx(o) => std::iter::once(&o.file)
                .chain(&o.external_data)
                .cloned()
                .collect(),
            Estimator::Mlp(m) => vec![m.file.clone()],
            Estimator::Forecast(f) => f.network().map(|n| n.file.clone()).into_iter().collect(),
            _ => vec![],
        }
    }

    /// Payloads this artifact holds in memory (a network trained in this process), by name:
    /// what the registry writes beside `artifact.json` besides the files it is given.
    pub fn held_payloads(&self) -> Vec<(String, Arc<Vec<u8>>)> {
        match &self.estimator {
            Estimator::Mlp(m) => m
                .held_payload()
                .map(|bytes| (m.file.clone(), bytes))
                .into_iter()
                .collect(),
            Estimator::Forecast(f) => f
                .network()
                .and_then(|n| n.held_payload().map(|bytes| (n.file.clone(), bytes)))
                .into_iter()
                .collect(),
            _ => vec![],
        }
    }

    /// Tell the artifact the local directory where its payload files are.
    pub fn attach_payloads(&self, dir: &std::path::Path) {
        match &self.estimator {
            Estimator::Onnx(o) => o.set_location(dir.join(&o.file)),
            Estimator::Mlp(m) => m.set_location(dir.join(&m.file)),
            Estimator::Forecast(f) => {
                if let Some(n) = f.network() {
                    n.set_location(dir.join(&n.file));
                }
            }
            _ => {}
        }
    }

    /// Check that arguments of these types can feed the model (plan-time check).
    pub fn check_argument_types(&self, types: &[DataType]) -> ModelResult<()> {
        match &self.estimator {
            Estimator::Onnx(o) => o.check_argument_types(types),
            _ => self.features.check_argument_types(types),
        }
    }

    /// Outputs of the model on feature arrays, `k` per row as [`ModelArtifact::outputs`]
    /// gives them (binary → P(second class); multiclass → probabilities; regression →
    /// values).
    pub fn scores(&self, columns: &[ArrayRef]) -> ModelResult<(Vec<f32>, usize)> {
        if self.task == Task::Embedding {
            return Err(ModelError::InvalidInput(
                "an embedding model has no metrics to evaluate (it answers vectors)".into(),
            ));
        }
        match (&self.estimator, &self.target) {
            (Estimator::Onnx(o), Some(t)) => match &t.kind {
                TargetKind::Classes { labels } => {
                    let p = o.probabilities(t, columns)?;
                    if labels.len() == 2 {
                        Ok((p.chunks(2).map(|r| r[1]).collect(), 1))
                    } else {
                        Ok((p, labels.len()))
                    }
                }
                TargetKind::Real => {
                    let v = o.predict(t, columns)?;
                    let v = v.as_any().downcast_ref::<Float64Array>().ok_or_else(|| {
                        ModelError::Runtime("a regression answered no numbers".into())
                    })?;
                    Ok((v.values().iter().map(|&x| x as f32).collect(), 1))
                }
            },
            _ => {
                let x = self.features.encode(columns)?;
                self.outputs(&x)
            }
        }
    }

    /// The model's metrics on labelled rows: `target` holds the true values and `features` the
    /// feature columns in the model's order. Rows whose target is NULL (or a class the model
    /// does not know) are skipped. Returns the metrics and the number of rows they cover.
    pub fn evaluate(
        &self,
        target: &ArrayRef,
        features: &[ArrayRef],
    ) -> ModelResult<(Metrics, usize)> {
        let Some(t) = &self.target else {
            return Err(ModelError::InvalidInput(
                "only a model with a target (classification or regression) can be evaluated".into(),
            ));
        };
        let truth = t.encode(target)?;
        let (out, k) = self.scores(features)?;
        let (mut outputs, mut labels) = (vec![], vec![]);
        for (i, y) in truth.iter().enumerate() {
            if let Some(y) = y {
                labels.push(*y);
                outputs.extend_from_slice(&out[i * k..(i + 1) * k]);
            }
        }
        let classes = (self.task == Task::Classification).then(|| t.n_classes());
        Ok((
            crate::metrics::of_outputs(classes, &outputs, k, &labels),
            labels.len(),
        ))
    }

    /// The metric a version is judged by when nothing else is said (the one `auto` selects
    /// on) and whether higher is better: AUC for a binary classifier, log loss for a
    /// multiclass one, RMSE for a regression, the backtest's MASE (or sMAPE) for a forecast.
    /// `None` for models with no such measure (clustering, anomaly detection, embeddings).
    pub fn headline_metric(&self) -> Option<(&'static str, bool)> {
        match self.task {
            Task::Classification => match self.target.as_ref().map(|t| t.n_classes()) {
                Some(2) => Some(("auc", true)),
                _ => Some(("log_loss", false)),
            },
            Task::Regression => Some(("rmse", false)),
            Task::Forecasting => {
                if self.metrics.values.contains_key("mase") {
                    Some(("mase", false))
                } else {
                    Some(("smape", false))
                }
            }
            Task::Clustering | Task::AnomalyDetection | Task::Embedding => None,
        }
    }

    /// Serialise to the artifact format.
    pub fn to_bytes(&self) -> ModelResult<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| ModelError::Corrupt(e.to_string()))
    }

    /// Read an artifact; a newer format or a damaged document is [`ModelError::Corrupt`].
    pub fn from_bytes(bytes: &[u8]) -> ModelResult<ModelArtifact> {
        #[derive(Deserialize)]
        struct Header {
            format_version: u32,
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Corrupt(e.to_string()))?;
        if header.format_version == 0 || header.format_version > FORMAT_VERSION {
            return Err(ModelError::Corrupt(format!(
                "artifact format version {} is not supported by this build (newest: {})",
                header.format_version, FORMAT_VERSION
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| ModelError::Corrupt(e.to_string()))
    }

    /// Arrow type of `PREDICT`.
    pub fn output_type(&self) -> DataType {
        match (&self.task, &self.target) {
            (Task::Clustering, _) => DataType::Int32,
            (Task::Embedding, _) => {
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
            }
            (_, Some(t)) => t.output_type(),
            _ => DataType::Float64,
        }
    }

    /// Arrow type of `PREDICT_PROBA` (`None` when the model has no probabilities).
    pub fn proba_type(&self) -> Option<DataType> {
        if let Estimator::Onnx(o) = &self.estimator
            && !o.has_probabilities()
        {
            return None;
        }
        match self.target.as_ref().map(|t| &t.kind) {
            Some(TargetKind::Classes { labels }) if labels.len() == 2 => Some(DataType::Float64),
            Some(TargetKind::Classes { .. }) => Some(DataType::List(Arc::new(Field::new(
                "item",
                DataType::Float64,
                true,
            )))),
            _ => None,
        }
    }

    /// Raw outputs of the estimator on an encoded matrix, row-major:
    /// binary → P(second class); multiclass → probabilities; regression → values;
    /// clustering → cluster ids.
    pub fn outputs(&self, x: &Matrix) -> ModelResult<(Vec<f32>, usize)> {
        let (mut out, k) = self.estimator.outputs(x)?;
        if let (Some(c), 1, Task::Classification) = (&self.calibration, k, self.task) {
            out.iter_mut().for_each(|p| *p = c.apply(*p));
        }
        Ok((out, k))
    }

    /// Class probabilities row-major `n × classes` (binary models give both columns).
    pub fn class_probabilities(&self, x: &Matrix) -> ModelResult<(Vec<f32>, usize)> {
        let (out, k) = self.outputs(x)?;
        Ok(if k == 1 {
            (crate::metrics::both_classes(&out), 2)
        } else {
            (out, k)
        })
    }

    /// Per-row feature contributions, row-major `n × (features + 1)`; the last slot is the base
    /// value. Trees: TreeSHAP in raw-score space (log-odds for binary models); linear models:
    /// coefficient × standardised value, base = intercept; a Platt calibration scales them
    /// into calibrated log-odds. For multiclass models the
    /// contributions explain each row's predicted class. Each row sums to its raw score.
    pub fn contributions(&self, columns: &[ArrayRef]) -> ModelResult<Vec<f64>> {
        self.row_model("EXPLAIN_PREDICT")?;
        let x = self.features.encode(columns)?;
        let derived = self.features.derived();
        let n_features = self.features.features.len();
        let (out, k) = self.outputs(&x)?;
        let chosen: Vec<usize> = if k > 1 {
            out.chunks(k).map(argmax).collect()
        } else {
            vec![0; x.n_rows]
        };
        let per_column: Vec<f64> = match &self.estimator {
            Estimator::Trees(e) => e.contributions(&x, &chosen),
            Estimator::Linear(l) => {
                let w = derived.len() + 1;
                let mut all = vec![0.0; x.n_rows * w];
                for o in 0..l.weights.len() {
                    let c = l.contributions(&x, o);
                    for (r, &ch) in chosen.iter().enumerate() {
                        if ch == o || l.weights.len() == 1 {
                            all[r * w..(r + 1) * w].copy_from_slice(&c[r * w..(r + 1) * w]);
                        }
                    }
                }
                all
            }
            Estimator::Mlp(m) => m.contributions(&x, &chosen)?,
            Estimator::Kmeans(_)
            | Estimator::Forecast(_)
            | Estimator::IsolationForest(_)
            | Estimator::SeriesDetector(_) => {
                return Err(ModelError::InvalidInput(
                    "EXPLAIN_PREDICT needs a supervised model (classification or regression)"
                        .into(),
                ));
            }
            Estimator::Onnx(_) => {
                return Err(ModelError::InvalidInput(
                    "EXPLAIN_PREDICT explains models trained by prognos; this one was imported                      from ONNX"
                        .into(),
                ));
            }
        };
        let w = derived.len() + 1;
        // Calibrated log-odds are a · log-odds + b: scale the contributions, shift the base.
        let (scale, shift) = match (&self.calibration, k) {
            (Some(c), 1) => (c.a, c.b),
            _ => (1.0, 0.0),
        };
        let mut result = vec![0.0; x.n_rows * (n_features + 1)];
        for r in 0..x.n_rows {
            let src = &per_column[r * w..(r + 1) * w];
            let dst = &mut result[r * (n_features + 1)..(r + 1) * (n_features + 1)];
            for (c, d) in derived.iter().enumerate() {
                dst[d.feature] += scale * src[c];
            }
            dst[n_features] = scale * src[w - 1] + shift;
        }
        Ok(result)
    }

    /// `PREDICT` over feature arrays (one per feature, in order).
    pub fn predict(&self, columns: &[ArrayRef]) -> ModelResult<ArrayRef> {
        self.row_model("PREDICT")?;
        if let (Estimator::Onnx(o), Some(t)) = (&self.estimator, &self.target) {
            return o.predict(t, columns);
        }
        let x = self.features.encode(columns)?;
        match (&self.task, &self.target) {
            (Task::Clustering, _) => {
                let (ids, _) = self.outputs(&x)?;
                Ok(Arc::new(Int32Array::from_iter_values(
                    ids.iter().map(|&v| v as i32),
                )))
            }
            (Task::Classification, Some(t)) => {
                let (p, k) = self.class_probabilities(&x)?;
                let codes: Vec<Option<usize>> = p.chunks(k).map(|row| Some(argmax(row))).collect();
                t.labels_array(&codes)
            }
            _ => {
                let (v, _) = self.outputs(&x)?;
                Ok(Arc::new(Float64Array::from_iter_values(
                    v.iter().map(|&v| v as f64),
                )))
            }
        }
    }

    /// `PREDICT_PROBA`: P(positive class) for binary models, the list of class probabilities
    /// (in label order) for multiclass ones.
    pub fn predict_proba(&self, columns: &[ArrayRef]) -> ModelResult<ArrayRef> {
        let Some(dt) = self.proba_type() else {
            return Err(ModelError::InvalidInput(format!(
                "PREDICT_PROBA needs a classifier; this model does {:?}",
                self.task
            )));
        };
        let (p, k, n_rows) = match (&self.estimator, &self.target) {
            (Estimator::Onnx(o), Some(t)) => {
                let p = o.probabilities(t, columns)?;
                let k = t.n_classes();
                let n = p.len() / k.max(1);
                (p, k, n)
            }
            _ => {
                let x = self.features.encode(columns)?;
                let (p, k) = self.class_probabilities(&x)?;
                (p, k, x.n_rows)
            }
        };
        if dt == DataType::Float64 {
            return Ok(Arc::new(Float64Array::from_iter_values(
                p.chunks(2).map(|r| r[1] as f64),
            )));
        }
        let values = Float64Array::from_iter_values(p.iter().map(|&v| v as f64));
        let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(k, n_rows));
        Ok(Arc::new(ListArray::try_new(
            Arc::new(Field::new("item", DataType::Float64, true)),
            offsets,
            Arc::new(values),
            None,
        )?))
    }
}

/// The bytes of payload `file` of a stored version, at `location` (set when the version was
/// loaded); `what` names it in errors.
pub(crate) fn read_payload(
    location: Option<&std::path::PathBuf>,
    file: &str,
    what: &str,
) -> ModelResult<Vec<u8>> {
    let path = location
        .ok_or_else(|| ModelError::Corrupt(format!("the location of {file} is not known")))?;
    std::fs::read(path).map_err(|e| ModelError::Corrupt(format!("{what} {}: {e}", path.display())))
}
