//! An imported ONNX model as a registry estimator: how the arguments of `PREDICT` feed the
//! graph ([`Binding`]), which outputs answer `PREDICT` and `PREDICT_PROBA` ([`Answer`]), and
//! the graph itself, opened on first use from the version's artifact directory.
//!
//! What is stored (in `artifact.json`, beside the graph file) is everything `DESCRIBE MODEL`
//! and planning need: the graph's ports, the binding, the answer and the class labels. So a
//! server without the ONNX Runtime library still lists, describes and plans around the model;
//! only scoring it fails, with [`ModelError::RuntimeUnavailable`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};

use super::device::{self, Device, DeviceRequest, DeviceViews};
use super::external::ExternalFiles;
use super::{Feed, OnnxGraph, OutputValue, Port, PortKind};
use crate::Task;
use crate::error::{ModelError, ModelResult};
use crate::features::{Feature, FeatureKind, FeatureSet};
use crate::target::{Target, TargetKind};

/// `WITH (...)` options `CREATE MODEL ... FROM` understands.
pub const IMPORT_OPTIONS: [&str; 6] = ["task", "labels", "inputs", "outputs", "target", "device"];

/// Element type of a graph input that query columns feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Element {
    /// `float32` (NULL becomes NaN).
    Float32,
    /// `float64` (NULL becomes NaN).
    Float64,
    /// `int64` (NULL is an error).
    Int64,
    /// `int32` (NULL is an error).
    Int32,
    /// `bool` (NULL is an error).
    Bool,
    /// `string` (NULL is an error).
    String,
}

impl Element {
    fn parse(onnx_name: &str) -> Option<Element> {
        Some(match onnx_name {
            "float32" => Element::Float32,
            "float64" => Element::Float64,
            "int64" => Element::Int64,
            "int32" => Element::Int32,
            "bool" => Element::Bool,
            "string" => Element::String,
            _ => return None,
        })
    }

    /// The SQL-side type a column feeding this element is read as.
    fn data_type(&self) -> DataType {
        match self {
            Element::Float32 => DataType::Float32,
            Element::Float64 => DataType::Float64,
            Element::Int64 => DataType::Int64,
            Element::Int32 => DataType::Int32,
            Element::Bool => DataType::Boolean,
            Element::String => DataType::Utf8,
        }
    }

    fn accepts(&self, t: &DataType) -> bool {
        match self {
            Element::String => true,
            _ => t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null),
        }
    }
}

/// How the arguments of `PREDICT('m', ...)` feed the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binding {
    /// `k` columns become one `[N, k]` tensor (scikit-learn, LightGBM and XGBoost exports).
    Matrix {
        /// The graph input.
        input: String,
        /// Its element type.
        element: Element,
        /// Names of the `k` columns, in order.
        columns: Vec<String>,
    },
    /// One list column feeds a `[N, T, k]` sequence input (an LSTM or a transformer block
    /// exported from PyTorch): each row's list holds its `T · k` values, time-major.
    Sequence {
        /// The graph input (also the column's name).
        input: String,
        /// Its element type (`float32` or `float64`).
        element: Element,
        /// `T`, when the graph fixes it.
        steps: Option<usize>,
        /// `k`, values per step.
        width: usize,
    },
    /// Each column feeds the graph input at the same position, as `[N]` or `[N, 1]`.
    Columns {
        /// The graph inputs, in declaration order.
        inputs: Vec<ColumnInput>,
    },
}

/// One graph input fed by one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInput {
    /// Input name (also the column's name for `PREDICT('m', TABLE t)`).
    pub name: String,
    /// Element type.
    pub element: Element,
    /// 1 for `[N]`, 2 for `[N, 1]`.
    pub rank: usize,
}

/// Which outputs answer the model functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// A classifier.
    Classes {
        /// Output with the predicted label (`int64` or `string`), if the graph has one;
        /// otherwise `PREDICT` takes the most probable class.
        label: Option<String>,
        /// Output with the class probabilities (an `[N, k]` tensor, or a sequence of maps
        /// from label to probability), if the graph has one.
        probabilities: Option<String>,
    },
    /// A regression: one number per row.
    Value {
        /// The output.
        output: String,
    },
    /// An embedding: one vector (`[N, d]` output) per row.
    Vector {
        /// The output.
        output: String,
    },
}

/// An imported ONNX graph with how it is used (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnnxModel {
    /// The graph's file in the version's artifact directory.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// The graph's inputs, as declared.
    pub inputs: Vec<Port>,
    /// The graph's outputs, as declared.
    pub outputs: Vec<Port>,
    /// How arguments feed it.
    pub binding: Binding,
    /// Which outputs answer.
    pub answer: Answer,
    /// The batch size the graph demands when its first dimension is fixed: rows are scored
    /// in runs of exactly this many (the last run padded).
    pub fixed_batch: Option<usize>,
    /// The device it asks for (`device` option).
    #[serde(default)]
    pub device: DeviceRequest,
    /// Files beside the graph that hold some of its tensors (ONNX external data), relative
    /// to the graph's directory (see [`super::external`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_data: Vec<String>,
    #[serde(skip)]
    location: OnceLock<PathBuf>,
    #[serde(skip)]
    graph: OnceLock<Arc<OnnxGraph>>,
    /// The same model run on other devices (sessions asking for another device).
    #[serde(skip)]
    views: DeviceViews,
}

impl PartialEq for OnnxModel {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
            && self.size == other.size
            && self.inputs == other.inputs
            && self.outputs == other.outputs
            && self.binding == other.binding
            && self.answer == other.answer
            && self.fixed_batch == other.fixed_batch
            && self.device == other.device
            && self.external_data == other.external_data
    }
}

/// The row-major `rows × columns.len()` matrix of `columns`, transposed eight rows at a time:
/// each column gives a fixed-size run of eight values, which the compiler copies into their
/// strided cells with the bounds checked once per run. Measured over 20 columns × 8192 rows:
/// a third faster than copying column by column into 64-row blocks, which cost 8 % of a
/// cheap model's query in a profile (benches/README.md, imported ONNX models). A column
/// shorter than `rows` leaves zeros where it ends.
fn row_major(columns: &[&[f32]], rows: usize) -> Vec<f32> {
    /// Rows per run.
    const RUN: usize = 8;
    let k = columns.len();
    let mut data = vec![0f32; rows * k];
    if k == 0 {
        return data;
    }
    for (b, block) in data.chunks_mut(RUN * k).enumerate() {
        let first = b * RUN;
        let n = block.len() / k;
        for (j, column) in columns.iter().enumerate() {
            let run = column
                .get(first..first + RUN)
                .filter(|_| n == RUN)
                .and_then(|run| <&[f32; RUN]>::try_from(run).ok());
            if let Some(run) = run {
                for (r, v) in run.iter().enumerate() {
                    block[r * k + j] = *v;
                }
            } else {
                for (r, v) in column.iter().skip(first).take(n).enumerate() {
                    block[r * k + j] = *v;
                }
            }
        }
    }
    data
}

/// Predicted labels as a label output gives them.
enum Labels {
    /// An `int64` output.
    Ints(Vec<i64>),
    /// A `string` output.
    Texts(Vec<String>),
}

impl Labels {
    fn truncate(&mut self, n: usize) {
        match self {
            Labels::Ints(v) => v.truncate(n),
            Labels::Texts(v) => v.truncate(n),
        }
    }

    fn texts(self) -> Vec<String> {
        match self {
            Labels::Ints(v) => v.iter().map(i64::to_string).collect(),
            Labels::Texts(v) => v,
        }
    }

    /// Append the first `keep` labels of `other` (one output gives one element type, so both
    /// are the same kind).
    fn append(&mut self, other: Labels, keep: usize) {
        match (self, other) {
            (Labels::Ints(a), Labels::Ints(b)) => a.extend(b.into_iter().take(keep)),
            (Labels::Texts(a), Labels::Texts(b)) => a.extend(b.into_iter().take(keep)),
            (a, b) => {
                let mut texts = std::mem::replace(a, Labels::Texts(vec![])).texts();
                texts.extend(b.texts().into_iter().take(keep));
                *a = Labels::Texts(texts);
            }
        }
    }
}

/// Append the answers for the first `keep` of `batch` rows in `part` (each row's answer is
/// `part.len() / batch` values) to `all`.
fn keep_rows<T: Clone>(all: &mut Option<Vec<T>>, part: Option<Vec<T>>, batch: usize, keep: usize) {
    if let Some(part) = part {
        let width = part.len() / batch;
        all.get_or_insert_with(Vec::new)
            .extend_from_slice(&part[..keep * width]);
    }
}

/// What a run answered for a batch of rows.
struct Answered {
    /// Predicted labels as text (classifiers with a label output).
    labels: Option<Labels>,
    /// Probabilities, `rows × classes` row-major (classifiers with a probability output).
    probabilities: Option<Vec<f32>>,
    /// One value per row (regressions).
    values: Option<Vec<f64>>,
    /// One vector per row, `rows × d` row-major (embeddings).
    vectors: Option<Vec<f32>>,
}

fn invalid(msg: impl Into<String>) -> ModelError {
    ModelError::InvalidInput(msg.into())
}

fn list_option(options: &BTreeMap<String, String>, key: &str) -> Option<Vec<String>> {
    options.get(key).map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn tensor(port: &Port) -> Option<(&str, &[i64])> {
    match &port.kind {
        PortKind::Tensor { element, shape } => Some((element.as_str(), shape.as_slice())),
        PortKind::Other(_) => None,
    }
}

impl OnnxModel {
    /// Read a graph file and decide how it is used: the binding from its inputs, the answer
    /// from its outputs and `options` (`task`, `labels`, `inputs`, `outputs`, `target`,
    /// `device`), the class labels from `labels` or a trial run on one row of zeros. `file` is
    /// the name the graph will have in the artifact directory; `external` are the
    /// external-data files the graph names (read from it with
    /// [`super::external::external_files`] before ONNX Runtime opens it, since opening reads
    /// them). Returns the model with its task, features and target.
    pub fn import(
        path: &Path,
        file: &str,
        external: &ExternalFiles,
        options: &BTreeMap<String, String>,
    ) -> ModelResult<(OnnxModel, Task, FeatureSet, Target)> {
        if let Some(key) = options
            .keys()
            .find(|k| !IMPORT_OPTIONS.contains(&k.as_str()))
        {
            return Err(ModelError::InvalidParameter(format!(
                "unknown option \"{key}\" for CREATE MODEL ... FROM (use {})",
                IMPORT_OPTIONS.join(", ")
            )));
        }
        let device = match options.get("device") {
            Some(d) => DeviceRequest::parse(d)?,
            None => DeviceRequest::Auto,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?
            .len();
        let graph = Arc::new(OnnxGraph::load_file(path, device)?);
        let inputs = graph.inputs().to_vec();
        let outputs = graph.outputs().to_vec();
        let (binding, fixed_batch) = binding_for(&inputs, list_option(options, "inputs"))?;
        let task = match options
            .get("task")
            .map(|t| t.to_ascii_lowercase())
            .as_deref()
        {
            None => None,
            Some("classification") => Some(Task::Classification),
            Some("regression") => Some(Task::Regression),
            Some("embedding") => Some(Task::Embedding),
            Some(other) => {
                return Err(ModelError::InvalidParameter(format!(
                    "task \"{other}\" is not supported for ONNX models (use classification, \
                     regression or embedding)"
                )));
            }
        };
        let answer = answer_for(&outputs, task, list_option(options, "outputs"))?;
        let model = OnnxModel {
            file: file.to_string(),
            size,
            inputs,
            outputs,
            binding,
            answer,
            fixed_batch,
            device,
            external_data: external.names().to_vec(),
            location: OnceLock::new(),
            graph: OnceLock::new(),
            views: DeviceViews::default(),
        };
        let _ = model.graph.set(graph);
        let task = match model.answer {
            Answer::Classes { .. } => Task::Classification,
            Answer::Value { .. } => Task::Regression,
            Answer::Vector { .. } => Task::Embedding,
        };
        // The name of the predicted column (`PREDICT('m', TABLE t)` calls it
        // `predicted_<name>`).
        let name = options.get("target").cloned().unwrap_or_else(|| {
            match task {
                Task::Classification => "label",
                Task::Embedding => "embedding",
                _ => "value",
            }
            .to_string()
        });
        let target = match &model.answer {
            Answer::Value { .. } | Answer::Vector { .. } => Target {
                name,
                data_type: DataType::Float64.to_string(),
                kind: TargetKind::Real,
            },
            Answer::Classes { .. } => {
                let (labels, data_type) = model.discover_labels(list_option(options, "labels"))?;
                Target {
                    name,
                    data_type: data_type.to_string(),
                    kind: TargetKind::Classes { labels },
                }
            }
        };
        let features = model.feature_set();
        Ok((model, task, features, target))
    }

    /// Where the graph file is on local disk (set when the version is loaded).
    pub fn set_location(&self, path: PathBuf) {
        let _ = self.location.set(path);
    }

    /// The graph, opened on first use.
    fn graph(&self) -> ModelResult<Arc<OnnxGraph>> {
        if let Some(g) = self.graph.get() {
            return Ok(Arc::clone(g));
        }
        let path = self.location.get().ok_or_else(|| {
            ModelError::Corrupt(format!("the location of {} is not known", self.file))
        })?;
        let graph = Arc::new(OnnxGraph::load_file(path, self.device)?);
        Ok(Arc::clone(self.graph.get_or_init(|| graph)))
    }

    /// The artifact `whole` (whose estimator is this model) as run on the device `request`
    /// gets here: `whole` itself when that is the device it runs on already, else a copy
    /// that asks for `request`, made once per device and kept.
    pub(crate) fn view_on(
        &self,
        whole: &Arc<crate::ModelArtifact>,
        request: DeviceRequest,
    ) -> Arc<crate::ModelArtifact> {
        let (current, wanted) = (self.effective_device(), device::effective(request));
        self.views.view(whole, current, wanted, || {
            crate::model::Estimator::Onnx(OnnxModel {
                device: request,
                graph: OnceLock::new(),
                ..self.clone()
            })
        })
    }

    /// The device the graph runs on here: where its sessions run once opened, else where
    /// they would.
    pub fn effective_device(&self) -> Device {
        match self.graph.get() {
            Some(g) => g.device(),
            None => device::effective(self.device),
        }
    }

    /// The columns `PREDICT` takes, in order, as features.
    pub fn feature_set(&self) -> FeatureSet {
        let feature = |name: &str, e: Element| {
            let kind = match e {
                Element::String => FeatureKind::Categorical { categories: vec![] },
                Element::Bool => FeatureKind::Boolean,
                _ => FeatureKind::Numeric,
            };
            Feature::new(name, &e.data_type(), kind)
        };
        let features = match &self.binding {
            Binding::Matrix {
                element, columns, ..
            } => columns.iter().map(|c| feature(c, *element)).collect(),
            Binding::Columns { inputs } => {
                inputs.iter().map(|i| feature(&i.name, i.element)).collect()
            }
            Binding::Sequence { input, element, .. } => {
                let list = DataType::new_list(element.data_type(), true);
                vec![Feature::new(input, &list, FeatureKind::Numeric)]
            }
        };
        FeatureSet { features }
    }

    fn elements(&self) -> Vec<(&str, Element)> {
        match &self.binding {
            Binding::Matrix {
                element, columns, ..
            } => columns.iter().map(|c| (c.as_str(), *element)).collect(),
            Binding::Columns { inputs } => inputs
                .iter()
                .map(|i| (i.name.as_str(), i.element))
                .collect(),
            Binding::Sequence { input, element, .. } => vec![(input.as_str(), *element)],
        }
    }

    /// Check that arguments of these types can feed the graph (plan-time check).
    pub fn check_argument_types(&self, types: &[DataType]) -> ModelResult<()> {
        let elements = self.elements();
        if types.len() != elements.len() {
            let names: Vec<&str> = elements.iter().map(|e| e.0).collect();
            return Err(invalid(format!(
                "the model takes {} argument(s) after its name ({}), got {}",
                elements.len(),
                names.join(", "),
                types.len()
            )));
        }
        let sequence = matches!(self.binding, Binding::Sequence { .. });
        for ((name, e), t) in elements.iter().zip(types) {
            if sequence {
                let inner = match t {
                    DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                        Some(f.data_type())
                    }
                    DataType::Null => Some(&DataType::Null),
                    _ => None,
                };
                if !inner.is_some_and(|i| e.accepts(i) && *i != DataType::Boolean) {
                    return Err(ModelError::WrongType(format!(
                        "\"{name}\" feeds a sequence input of the graph: it takes a list of \
                         numbers per row (T · k values, time-major); the argument has type {t}"
                    )));
                }
                continue;
            }
            if !e.accepts(t) {
                return Err(ModelError::WrongType(format!(
                    "\"{name}\" feeds a {} input of the graph; the argument has type {t}",
                    e.data_type()
                )));
            }
        }
        Ok(())
    }

    /// `PREDICT`: the label (classifiers) or the value (regressions) of each row.
    pub fn predict(&self, target: &Target, columns: &[ArrayRef]) -> ModelResult<ArrayRef> {
        let answered = self.answer_rows(columns, target, true)?;
        if let Some(values) = answered.values {
            return Ok(Arc::new(Float64Array::from(values)));
        }
        if let Some(vectors) = answered.vectors {
            let rows = columns.first().map(|c| c.len()).unwrap_or(0);
            let d = vectors.len().checked_div(rows).unwrap_or(0);
            return Ok(Arc::new(ListArray::try_new(
                Arc::new(Field::new("item", DataType::Float32, true)),
                OffsetBuffer::from_lengths(std::iter::repeat_n(d, rows)),
                Arc::new(datafusion::arrow::array::Float32Array::from(vectors)),
                None,
            )?));
        }
        let output_type = target.output_type();
        let labels = match (answered.labels, answered.probabilities, &target.kind) {
            (Some(Labels::Ints(l)), _, _) if output_type == DataType::Int64 => {
                return Ok(Arc::new(Int64Array::from(l)));
            }
            (Some(l), _, _) => l.texts(),
            (None, Some(p), TargetKind::Classes { labels }) => p
                .chunks(labels.len().max(1))
                .map(|row| labels[crate::metrics::argmax(row)].clone())
                .collect(),
            _ => return Err(ModelError::Runtime("the graph answered no label".into())),
        };
        let text: ArrayRef = Arc::new(StringArray::from(labels));
        Ok(cast(&text, &output_type)?)
    }

    /// Class probabilities, `rows × classes` row-major, in label order.
    pub fn probabilities(&self, target: &Target, columns: &[ArrayRef]) -> ModelResult<Vec<f32>> {
        let answered = self.answer_rows(columns, target, !self.has_probabilities())?;
        if let Some(p) = answered.probabilities {
            return Ok(p);
        }
        // A classifier without a probability output: its label, one-hot.
        let (Some(labels), TargetKind::Classes { labels: classes }) =
            (answered.labels, &target.kind)
        else {
            return Err(invalid("the model answers no class probabilities"));
        };
        let labels = labels.texts();
        let mut out = vec![0.0; labels.len() * classes.len()];
        for (r, l) in labels.iter().enumerate() {
            if let Some(c) = classes.iter().position(|c| c == l) {
                out[r * classes.len() + c] = 1.0;
            }
        }
        Ok(out)
    }

    /// Whether `PREDICT_PROBA` has a probability output to read.
    pub fn has_probabilities(&self) -> bool {
        matches!(
            self.answer,
            Answer::Classes {
                probabilities: Some(_),
                ..
            }
        )
    }

    /// The graph's answers for every row, run in batches of `fixed_batch` when it has one.
    /// `labels`: whether the label output is wanted (else it is not copied out).
    fn answer_rows(
        &self,
        columns: &[ArrayRef],
        target: &Target,
        labels: bool,
    ) -> ModelResult<Answered> {
        let rows = columns.first().map(|c| c.len()).unwrap_or(0);
        let batch = match self.fixed_batch {
            Some(batch) if rows > 0 => batch,
            _ => return self.answer_batch(columns, rows, target, labels),
        };
        let mut all = Answered {
            labels: None,
            probabilities: None,
            values: None,
            vectors: None,
        };
        let mut start = 0;
        while start < rows {
            let end = (start + batch).min(rows);
            // Pad a short last run by repeating its last row; the padding's answers are cut.
            let idx = datafusion::arrow::array::UInt32Array::from_iter_values(
                (start..start + batch).map(|i| i.min(end - 1) as u32),
            );
            let part = columns
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect::<Result<Vec<_>, _>>()?;
            let got = self.answer_batch(&part, batch, target, labels)?;
            let keep = end - start;
            match (&mut all.labels, got.labels) {
                (Some(a), Some(l)) => a.append(l, keep),
                (a, Some(mut l)) => {
                    l.truncate(keep);
                    *a = Some(l);
                }
                (_, None) => {}
            }
            keep_rows(&mut all.probabilities, got.probabilities, batch, keep);
            keep_rows(&mut all.values, got.values, batch, keep);
            keep_rows(&mut all.vectors, got.vectors, batch, keep);
            start = end;
        }
        Ok(all)
    }

    fn answer_batch(
        &self,
        columns: &[ArrayRef],
        rows: usize,
        target: &Target,
        want_labels: bool,
    ) -> ModelResult<Answered> {
        if rows == 0 {
            return Ok(Answered {
                labels: Some(Labels::Texts(vec![])),
                probabilities: Some(vec![]),
                values: Some(vec![]).filter(|_| matches!(self.answer, Answer::Value { .. })),
                vectors: Some(vec![]).filter(|_| matches!(self.answer, Answer::Vector { .. })),
            });
        }
        let feeds = self.feeds(columns, rows)?;
        let outputs = self.graph()?.run(feeds)?;
        let output = |name: &str| -> ModelResult<&OutputValue> {
            self.outputs
                .iter()
                .position(|p| p.name == name)
                .and_then(|i| outputs.get(i))
                .ok_or_else(|| ModelError::Runtime(format!("the graph has no output {name}")))
        };
        match &self.answer {
            Answer::Value { output: name } => {
                let values = per_row_numbers(output(name)?, rows, name)?;
                Ok(Answered {
                    labels: None,
                    probabilities: None,
                    values: Some(values),
                    vectors: None,
                })
            }
            Answer::Vector { output: name } => {
                let vectors = match output(name)? {
                    OutputValue::F32 { shape, data }
                        if shape.len() == 2 && shape[0] as usize == rows =>
                    {
                        data.clone()
                    }
                    OutputValue::F64 { shape, data }
                        if shape.len() == 2 && shape[0] as usize == rows =>
                    {
                        data.iter().map(|&v| v as f32).collect()
                    }
                    OutputValue::F32 { shape, .. } | OutputValue::F64 { shape, .. } => {
                        return Err(shape_mismatch(name, shape, rows));
                    }
                    _ => {
                        return Err(ModelError::Runtime(format!(
                            "output {name} is not a float tensor"
                        )));
                    }
                };
                Ok(Answered {
                    labels: None,
                    probabilities: None,
                    values: None,
                    vectors: Some(vectors),
                })
            }
            Answer::Classes {
                label,
                probabilities,
            } => {
                let classes = match &target.kind {
                    TargetKind::Classes { labels } => labels.as_slice(),
                    TargetKind::Real => &[],
                };
                let labels = match label {
                    Some(name) if want_labels => Some(label_column(output(name)?, rows, name)?),
                    _ => None,
                };
                let probabilities = match probabilities {
                    Some(name) => Some(probability_matrix(output(name)?, rows, classes, name)?),
                    None => None,
                };
                Ok(Answered {
                    labels,
                    probabilities,
                    values: None,
                    vectors: None,
                })
            }
        }
    }

    /// The graph's inputs for `rows` rows of `columns`.
    fn feeds(&self, columns: &[ArrayRef], rows: usize) -> ModelResult<Vec<(String, Feed)>> {
        let elements = self.elements();
        if columns.len() != elements.len() {
            return Err(invalid(format!(
                "the model takes {} argument(s) after its name, got {}",
                elements.len(),
                columns.len()
            )));
        }
        match &self.binding {
            Binding::Matrix {
                input,
                element,
                columns: names,
            } => {
                let k = names.len();
                let shape = vec![rows as i64, k as i64];
                let feed = match element {
                    Element::Float32 => {
                        // Columns without NULLs are read straight from their Arrow buffers;
                        // a column with NULLs is copied once with NaN in their place.
                        let cast = columns
                            .iter()
                            .map(|c| cast(c, &DataType::Float32))
                            .collect::<Result<Vec<_>, _>>()?;
                        let with_nan: Vec<Option<Vec<f32>>> = cast
                            .iter()
                            .map(|c| {
                                let c = c.as_primitive::<Float32Type>();
                                (c.null_count() > 0)
                                    .then(|| c.iter().map(|v| v.unwrap_or(f32::NAN)).collect())
                            })
                            .collect();
                        let sources: Vec<&[f32]> = cast
                            .iter()
                            .zip(&with_nan)
                            .map(|(c, nan)| match nan {
                                Some(v) => v.as_slice(),
                                None => c.as_primitive::<Float32Type>().values().as_ref(),
                            })
                            .collect();
                        Feed::F32(shape, row_major(&sources, rows))
                    }
                    Element::Float64 => {
                        let mut data = vec![0f64; rows * k];
                        for (j, (col, name)) in columns.iter().zip(names).enumerate() {
                            for (i, v) in floats64(col, name)?.into_iter().enumerate() {
                                data[i * k + j] = v;
                            }
                        }
                        Feed::F64(shape, data)
                    }
                    Element::Int64 | Element::Int32 => {
                        let mut data = vec![0i64; rows * k];
                        for (j, (col, name)) in columns.iter().zip(names).enumerate() {
                            for (i, v) in ints64(col, name)?.into_iter().enumerate() {
                                data[i * k + j] = v;
                            }
                        }
                        if *element == Element::Int32 {
                            Feed::I32(shape, data.into_iter().map(|v| v as i32).collect())
                        } else {
                            Feed::I64(shape, data)
                        }
                    }
                    Element::Bool | Element::String => {
                        return Err(invalid(format!(
                            "[N, k] inputs of {element:?} elements are not supported"
                        )));
                    }
                };
                Ok(vec![(input.clone(), feed)])
            }
            Binding::Sequence {
                input,
                element,
                steps,
                width,
            } => {
                let (shape, data) = sequences(&columns[0], input, *steps, *width)?;
                let feed = match element {
                    Element::Float64 => Feed::F64(shape, data),
                    _ => Feed::F32(shape, data.into_iter().map(|v| v as f32).collect()),
                };
                Ok(vec![(input.clone(), feed)])
            }
            Binding::Columns { inputs } => inputs
                .iter()
                .zip(columns)
                .map(|(input, col)| {
                    let shape = if input.rank == 1 {
                        vec![rows as i64]
                    } else {
                        vec![rows as i64, 1]
                    };
                    let name = &input.name;
                    let feed = match input.element {
                        Element::Float32 => Feed::F32(shape, floats32(col, name)?),
                        Element::Float64 => Feed::F64(shape, floats64(col, name)?),
                        Element::Int64 => Feed::I64(shape, ints64(col, name)?),
                        Element::Int32 => Feed::I32(
                            shape,
                            ints64(col, name)?.into_iter().map(|v| v as i32).collect(),
                        ),
                        Element::Bool => Feed::Bool(shape, bools(col, name)?),
                        Element::String => Feed::Strings(shape, strings(col, name)?),
                    };
                    Ok((name.clone(), feed))
                })
                .collect(),
        }
    }

    /// The class labels and the type `PREDICT` returns them in: from the `labels` option,
    /// else from a trial run on one row (the keys of a label → probability map, or `0..k-1`
    /// for an `int64` label output beside a `[N, k]` probability tensor).
    fn discover_labels(&self, given: Option<Vec<String>>) -> ModelResult<(Vec<String>, DataType)> {
        let Answer::Classes {
            label,
            probabilities,
        } = &self.answer
        else {
            return Err(invalid("not a classifier"));
        };
        let label_element = label.as_ref().and_then(|l| {
            self.outputs
                .iter()
                .find(|p| &p.name == l)
                .and_then(tensor)
                .map(|t| t.0.to_string())
        });
        let data_type = match label_element.as_deref() {
            Some("int64") | Some("int32") => DataType::Int64,
            Some(_) => DataType::Utf8,
            None if given.is_some() => DataType::Utf8,
            None => DataType::Int64,
        };
        if let Some(labels) = given {
            if labels.len() < 2 {
                return Err(ModelError::InvalidParameter(
                    "labels lists the classes in the order of the probability output: \
                     at least two"
                        .into(),
                ));
            }
            return Ok((labels, data_type));
        }
        let Some(proba) = probabilities else {
            return Err(ModelError::InvalidParameter(
                "the graph has no probability output, so its classes cannot be read from it: \
                 list them with WITH (labels = 'a, b, ...')"
                    .into(),
            ));
        };
        // A trial run on one row of zeros (empty strings) shows the probability output.
        let rows = self.fixed_batch.unwrap_or(1);
        let zero_columns: Vec<ArrayRef> = self
            .elements()
            .iter()
            .map(|(_, e)| match (&self.binding, e) {
                (Binding::Sequence { steps, width, .. }, _) => {
                    let length = steps.unwrap_or(1) * width;
                    zero_lists(rows, length)
                }
                (_, Element::String) => Arc::new(StringArray::from(vec![""; rows])) as ArrayRef,
                _ => Arc::new(Int64Array::from(vec![0; rows])) as ArrayRef,
            })
            .collect();
        let feeds = self.feeds(&zero_columns, rows)?;
        let outputs = self.graph()?.run(feeds).map_err(|e| {
            invalid(format!(
                "a trial run of the graph on a row of zeros failed, so its classes are not \
                 known ({e}); list them with WITH (labels = 'a, b, ...')"
            ))
        })?;
        let at = self
            .outputs
            .iter()
            .position(|p| &p.name == proba)
            .and_then(|i| outputs.get(i));
        let labels: Vec<String> = match at {
            Some(OutputValue::LabelMaps(maps)) => maps
                .first()
                .map(|m| m.iter().map(|(k, _)| k.clone()).collect())
                .unwrap_or_default(),
            Some(OutputValue::F32 { shape, .. }) | Some(OutputValue::F64 { shape, .. })
                if shape.len() == 2 && data_type == DataType::Int64 =>
            {
                (0..shape[1].max(0)).map(|c| c.to_string()).collect()
            }
            _ => {
                return Err(ModelError::InvalidParameter(format!(
                    "the classes of output {proba} cannot be read from the graph: list them \
                     with WITH (labels = 'a, b, ...')"
                )));
            }
        };
        if labels.len() < 2 {
            return Err(ModelError::InvalidParameter(format!(
                "output {proba} has {} class(es); a classifier needs two or more",
                labels.len()
            )));
        }
        Ok((labels, data_type))
    }
}

/// The binding for a graph's inputs, and the batch size a fixed first dimension demands.
fn binding_for(
    inputs: &[Port],
    names: Option<Vec<String>>,
) -> ModelResult<(Binding, Option<usize>)> {
    let shape_err = |p: &Port| {
        invalid(format!(
            "graph input {p} cannot be fed from columns: prognos feeds one [N, k] tensor from k \
             columns or one [N] / [N, 1] tensor per column"
        ))
    };
    let mut fixed = None;
    let mut described = vec![];
    for p in inputs {
        let (element, shape) = tensor(p).ok_or_else(|| shape_err(p))?;
        let element = Element::parse(element).ok_or_else(|| shape_err(p))?;
        if shape.is_empty() || shape.len() > 3 {
            return Err(shape_err(p));
        }
        if shape[0] > 0 {
            fixed = Some(shape[0] as usize);
        }
        described.push((p, element, shape));
    }
    if let [(p, element, shape)] = described.as_slice()
        && shape.len() == 3
    {
        if !matches!(element, Element::Float32 | Element::Float64) || shape[2] <= 0 {
            return Err(invalid(format!(
                "graph input {p} cannot be fed from columns: a sequence input [N, T, k] must \
                 hold float32 or float64 values and fix k"
            )));
        }
        if names.is_some() {
            return Err(ModelError::InvalidParameter(
                "inputs names the columns of a graph with one [N, k] input; this graph takes \
                 one sequence column, named after its input"
                    .into(),
            ));
        }
        return Ok((
            Binding::Sequence {
                input: p.name.clone(),
                element: *element,
                steps: (shape[1] > 0).then_some(shape[1] as usize),
                width: shape[2] as usize,
            },
            fixed,
        ));
    }
    if let [(p, element, shape)] = described.as_slice()
        && shape.len() == 2
        && shape[1] != 1
    {
        let columns = match (names, shape[1]) {
            (Some(names), k) if k < 0 || names.len() == k as usize => names,
            (Some(names), k) => {
                return Err(ModelError::InvalidParameter(format!(
                    "inputs names {} column(s); graph input {p} takes {k}",
                    names.len()
                )));
            }
            (None, k) if k > 0 => (0..k).map(|i| format!("f{i}")).collect(),
            (None, _) => {
                return Err(ModelError::InvalidParameter(format!(
                    "graph input {p} leaves the number of columns open: name them with \
                     WITH (inputs = 'a, b, c')"
                )));
            }
        };
        return Ok((
            Binding::Matrix {
                input: p.name.clone(),
                element: *element,
                columns,
            },
            fixed,
        ));
    }
    if names.is_some() {
        return Err(ModelError::InvalidParameter(
            "inputs names the columns of a graph with one [N, k] input; this graph takes one \
             input per column, named in the graph"
                .into(),
        ));
    }
    let inputs = described
        .into_iter()
        .map(|(p, element, shape)| {
            if shape.len() == 3 || (shape.len() == 2 && shape[1] != 1) {
                return Err(shape_err(p));
            }
            Ok(ColumnInput {
                name: p.name.clone(),
                element,
                rank: shape.len(),
            })
        })
        .collect::<ModelResult<Vec<_>>>()?;
    if inputs.is_empty() {
        return Err(invalid("the graph has no inputs"));
    }
    Ok((Binding::Columns { inputs }, fixed))
}

/// Which outputs answer, from the task and the `outputs` option or the outputs' types.
fn answer_for(
    outputs: &[Port],
    task: Option<Task>,
    names: Option<Vec<String>>,
) -> ModelResult<Answer> {
    let find = |name: &str| {
        outputs.iter().find(|p| p.name == name).ok_or_else(|| {
            let all: Vec<String> = outputs.iter().map(|p| p.to_string()).collect();
            ModelError::InvalidParameter(format!(
                "the graph has no output \"{name}\" (it has {})",
                all.join("; ")
            ))
        })
    };
    let is_label = |p: &Port| matches!(tensor(p), Some((e, s)) if matches!(e, "int64" | "int32" | "string") && s.len() <= 2);
    let is_proba = |p: &Port| match tensor(p) {
        Some((e, s)) => matches!(e, "float32" | "float64") && s.len() == 2,
        None => matches!(&p.kind, PortKind::Other(k) if k.contains("Map")),
    };
    let is_value = |p: &Port| matches!(tensor(p), Some((e, s)) if matches!(e, "float32" | "float64") && (s.len() == 1 || (s.len() == 2 && s[1] <= 1)));
    let is_vector = |p: &Port| matches!(tensor(p), Some((e, s)) if matches!(e, "float32" | "float64") && s.len() == 2);
    if task == Some(Task::Embedding) {
        let chosen = match names.as_deref() {
            Some([name]) => Some(find(name)?),
            Some(_) => {
                return Err(ModelError::InvalidParameter(
                    "outputs names one output for an embedding".into(),
                ));
            }
            None => outputs.iter().find(|p| is_vector(p)),
        };
        return match chosen {
            Some(p) if is_vector(p) => Ok(Answer::Vector {
                output: p.name.clone(),
            }),
            _ => Err(ModelError::InvalidParameter(
                "an embedding is read from a float [N, d] output; the graph has none (or the \
                 one named is not)"
                    .into(),
            )),
        };
    }
    if let Some(names) = names {
        let ports = names
            .iter()
            .map(|n| find(n))
            .collect::<ModelResult<Vec<_>>>()?;
        return match (task, ports.as_slice()) {
            (Some(Task::Regression) | None, [v]) if is_value(v) => Ok(Answer::Value {
                output: v.name.clone(),
            }),
            (Some(Task::Classification) | None, [l, p]) if is_label(l) && is_proba(p) => {
                Ok(Answer::Classes {
                    label: Some(l.name.clone()),
                    probabilities: Some(p.name.clone()),
                })
            }
            (Some(Task::Classification), [x]) if is_label(x) => Ok(Answer::Classes {
                label: Some(x.name.clone()),
                probabilities: None,
            }),
            (Some(Task::Classification), [x]) if is_proba(x) => Ok(Answer::Classes {
                label: None,
                probabilities: Some(x.name.clone()),
            }),
            _ => Err(ModelError::InvalidParameter(
                "outputs names one value output (regression), or a label output and a \
                 probability output (classification), in that order"
                    .into(),
            )),
        };
    }
    let label = outputs.iter().find(|p| is_label(p));
    let proba = outputs.iter().find(|p| is_proba(p));
    let task = task.unwrap_or(if label.is_some() {
        Task::Classification
    } else {
        Task::Regression
    });
    match task {
        Task::Classification if label.is_some() || proba.is_some() => Ok(Answer::Classes {
            label: label.map(|p| p.name.clone()),
            probabilities: proba.map(|p| p.name.clone()),
        }),
        Task::Classification => Err(ModelError::InvalidParameter(
            "the graph has no label output (int64 or string) and no probability output: it is \
             not a classifier"
                .into(),
        )),
        _ => outputs
            .iter()
            .find(|p| is_value(p))
            .map(|p| Answer::Value {
                output: p.name.clone(),
            })
            .ok_or_else(|| match proba {
                Some(p) => ModelError::InvalidParameter(format!(
                    "the graph has no output of one value per row; its output {p} has several: \
                     if it holds class probabilities, import it with WITH (task = \
                     'classification', labels = 'a, b, ...')"
                )),
                None => ModelError::InvalidParameter(
                    "the graph has no float output of one value per row ([N] or [N, 1]): name \
                     the output with WITH (outputs = '...')"
                        .into(),
                ),
            }),
    }
}

fn null_error(name: &str, element: &str) -> ModelError {
    invalid(format!(
        "\"{name}\" is NULL in some row, and it feeds an {element} input of the graph, which \
         has no missing value (only float inputs take NULL, as NaN)"
    ))
}

fn floats32(col: &ArrayRef, _name: &str) -> ModelResult<Vec<f32>> {
    let c = cast(col, &DataType::Float32)?;
    let c = c.as_primitive::<Float32Type>();
    if c.null_count() == 0 {
        return Ok(c.values().to_vec());
    }
    Ok((0..c.len())
        .map(|i| if c.is_null(i) { f32::NAN } else { c.value(i) })
        .collect())
}

fn floats64(col: &ArrayRef, _name: &str) -> ModelResult<Vec<f64>> {
    let c = cast(col, &DataType::Float64)?;
    let c = c.as_primitive::<Float64Type>();
    if c.null_count() == 0 {
        return Ok(c.values().to_vec());
    }
    Ok((0..c.len())
        .map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) })
        .collect())
}

fn ints64(col: &ArrayRef, name: &str) -> ModelResult<Vec<i64>> {
    if col.null_count() > 0 {
        return Err(null_error(name, "integer"));
    }
    let c = cast(col, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().values().to_vec())
}

fn bools(col: &ArrayRef, name: &str) -> ModelResult<Vec<bool>> {
    if col.null_count() > 0 {
        return Err(null_error(name, "bool"));
    }
    let c = cast(col, &DataType::Boolean)?;
    Ok(c.as_boolean().values().iter().collect())
}

fn strings(col: &ArrayRef, name: &str) -> ModelResult<Vec<String>> {
    if col.null_count() > 0 {
        return Err(null_error(name, "string"));
    }
    let c = cast(col, &DataType::Utf8)?;
    Ok(c.as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect())
}

/// `rows` lists of `length` zeros.
fn zero_lists(rows: usize, length: usize) -> ArrayRef {
    let values = Float64Array::from(vec![0.0; rows * length]);
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Float64, true)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(length, rows)),
        Arc::new(values),
        None,
    ))
}

/// `[N, T, k]` values from a list column: each row's list holds `T · k` values, time-major;
/// every row has the same `T` (the graph's, when it fixes one).
fn sequences(
    col: &ArrayRef,
    name: &str,
    steps: Option<usize>,
    width: usize,
) -> ModelResult<(Vec<i64>, Vec<f64>)> {
    let list_type = DataType::new_list(DataType::Float64, true);
    let cast_col = cast(col, &list_type).map_err(|e| {
        ModelError::WrongType(format!("\"{name}\" must be a list of numbers per row: {e}"))
    })?;
    let lists = cast_col.as_list::<i32>();
    let rows = lists.len();
    let mut data = Vec::new();
    let mut length = steps.map(|t| t * width);
    for r in 0..rows {
        if lists.is_null(r) {
            return Err(invalid(format!(
                "\"{name}\" is NULL in some row; a sequence input needs every row's values"
            )));
        }
        let values = lists.value(r);
        let values = values.as_primitive::<Float64Type>();
        let want = *length.get_or_insert(values.len());
        if values.len() != want || want == 0 || !want.is_multiple_of(width) {
            let expected = match steps {
                Some(t) => format!("{}", t * width),
                None => format!("a multiple of {width}, the same in every row"),
            };
            return Err(invalid(format!(
                "\"{name}\" holds {} values in some row; the sequence input takes {expected} \
                 (T steps of {width} values, time-major)",
                values.len()
            )));
        }
        data.extend((0..values.len()).map(|i| {
            if values.is_null(i) {
                f64::NAN
            } else {
                values.value(i)
            }
        }));
    }
    let t = length.map(|l| l / width).unwrap_or(steps.unwrap_or(1));
    Ok((vec![rows as i64, t as i64, width as i64], data))
}

fn shape_mismatch(name: &str, shape: &[i64], rows: usize) -> ModelError {
    ModelError::Runtime(format!(
        "output {name} has shape {shape:?}, which is not one answer per row for {rows} rows"
    ))
}

/// One number per row from an `[N]` or `[N, 1]` output.
fn per_row_numbers(v: &OutputValue, rows: usize, name: &str) -> ModelResult<Vec<f64>> {
    let (shape, data): (&[i64], Vec<f64>) = match v {
        OutputValue::F32 { shape, data } => (shape, data.iter().map(|&x| x as f64).collect()),
        OutputValue::F64 { shape, data } => (shape, data.clone()),
        OutputValue::I64 { shape, data } => (shape, data.iter().map(|&x| x as f64).collect()),
        _ => {
            return Err(ModelError::Runtime(format!(
                "output {name} is not a number tensor"
            )));
        }
    };
    if data.len() != rows {
        return Err(shape_mismatch(name, shape, rows));
    }
    Ok(data)
}

/// One label per row from an `int64` or `string` output.
fn label_column(v: &OutputValue, rows: usize, name: &str) -> ModelResult<Labels> {
    let (shape, labels, len): (&[i64], Labels, usize) = match v {
        OutputValue::I64 { shape, data } => (shape, Labels::Ints(data.clone()), data.len()),
        OutputValue::Strings { shape, data } => (shape, Labels::Texts(data.clone()), data.len()),
        _ => {
            return Err(ModelError::Runtime(format!(
                "output {name} is not an int64 or string label tensor"
            )));
        }
    };
    if len != rows {
        return Err(shape_mismatch(name, shape, rows));
    }
    Ok(labels)
}

/// Probabilities `rows × classes` in the order of `classes`, from an `[N, k]` tensor or a
/// sequence of label → probability maps.
fn probability_matrix(
    v: &OutputValue,
    rows: usize,
    classes: &[String],
    name: &str,
) -> ModelResult<Vec<f32>> {
    let k = classes.len();
    match v {
        OutputValue::F32 { data, .. } if data.len() == rows * k => Ok(data.clone()),
        OutputValue::F64 { data, .. } if data.len() == rows * k => {
            Ok(data.iter().map(|&x| x as f32).collect())
        }
        OutputValue::LabelMaps(maps) if maps.len() == rows => {
            let mut out = vec![0f32; rows * k];
            for (r, map) in maps.iter().enumerate() {
                for (label, p) in map {
                    let c = classes.iter().position(|c| c == label).ok_or_else(|| {
                        ModelError::Runtime(format!(
                            "output {name} has class {label}, which is not among the model's \
                             labels ({})",
                            classes.join(", ")
                        ))
                    })?;
                    out[r * k + c] = *p;
                }
            }
            Ok(out)
        }
        OutputValue::F32 { shape, .. } | OutputValue::F64 { shape, .. } => {
            Err(ModelError::Runtime(format!(
                "output {name} has shape {shape:?}; {rows} rows of {k} classes were expected"
            )))
        }
        _ => Err(ModelError::Runtime(format!(
            "output {name} holds no class probabilities"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::row_major;

    #[test]
    fn row_major_transposes_across_blocks() {
        for (rows, k) in [
            (0, 3),
            (1, 1),
            (3, 2),
            (8, 4),
            (64, 5),
            (200, 7),
            (8197, 20),
        ] {
            let columns: Vec<Vec<f32>> = (0..k)
                .map(|j| (0..rows).map(|r| (r * 100 + j) as f32).collect())
                .collect();
            let slices: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
            let got = row_major(&slices, rows);
            let want: Vec<f32> = (0..rows)
                .flat_map(|r| (0..k).map(move |j| (r * 100 + j) as f32))
                .collect();
            assert_eq!(got, want, "{rows} x {k}");
        }
        assert!(row_major(&[], 5).is_empty());
        // A short column ends in zeros.
        let short = [1f32, 2.0, 3.0];
        let long: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let got = row_major(&[&short, &long], 10);
        for r in 0..10 {
            assert_eq!(
                got[r * 2],
                if r < 3 { (r + 1) as f32 } else { 0.0 },
                "row {r}"
            );
            assert_eq!(got[r * 2 + 1], r as f32, "row {r}");
        }
    }
}
