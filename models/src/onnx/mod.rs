//! Models brought as ONNX files, run by ONNX Runtime through `ort`.
//!
//! [`OnnxGraph`] holds a graph's bytes, what its inputs and outputs are (read from the graph
//! when it is loaded), and a pool of ONNX Runtime sessions: `Session::run` takes `&mut self`,
//! so each concurrent scoring call takes a session from the pool (creating one when none is
//! free) and puts it back afterwards; many queries score the same model version in parallel.
//! The runtime library is loaded on first use ([`runtime`]).

pub mod device;
pub mod export;
pub mod external;
pub mod model;
pub mod proto;
pub mod runtime;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynMapValueType, DynValue, Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use device::{Device, DeviceRequest};

/// One input or output of a graph, as the graph declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    /// The name in the graph.
    pub name: String,
    /// Element type and shape (`-1` for a dynamic dimension), or the value kind.
    pub kind: PortKind,
}

/// What flows through a [`Port`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A tensor of `element` (ONNX's name: `float32`, `int64`, `string`, …) and `shape`.
    Tensor {
        /// Element type.
        element: String,
        /// Dimensions, `-1` where the graph leaves one open (the batch).
        shape: Vec<i64>,
    },
    /// Anything else (a sequence of maps from a scikit-learn ZipMap, a map, an optional),
    /// as ONNX Runtime describes it.
    Other(String),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PortKind::Tensor { element, shape } => {
                let dims: Vec<String> = shape
                    .iter()
                    .map(|d| {
                        if *d < 0 {
                            "?".to_string()
                        } else {
                            d.to_string()
                        }
                    })
                    .collect();
                write!(f, "{} {element}[{}]", self.name, dims.join(", "))
            }
            PortKind::Other(kind) => write!(f, "{} {kind}", self.name),
        }
    }
}

/// One output of a run, copied out of ONNX Runtime's buffers.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValue {
    /// A `float32` tensor.
    F32 {
        /// Its dimensions.
        shape: Vec<i64>,
        /// Its elements, row-major.
        data: Vec<f32>,
    },
    /// A `float64` tensor.
    F64 {
        /// Its dimensions.
        shape: Vec<i64>,
        /// Its elements, row-major.
        data: Vec<f64>,
    },
    /// An `int64` tensor.
    I64 {
        /// Its dimensions.
        shape: Vec<i64>,
        /// Its elements, row-major.
        data: Vec<i64>,
    },
    /// A `string` tensor.
    Strings {
        /// Its dimensions.
        shape: Vec<i64>,
        /// Its elements, row-major.
        data: Vec<String>,
    },
    /// A sequence of maps, one per row (scikit-learn's ZipMap: class label → probability);
    /// labels as text, in the map's key order.
    LabelMaps(Vec<Vec<(String, f32)>>),
}

/// One input of a run: a tensor of its shape, elements row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// `float32` elements.
    F32(Vec<i64>, Vec<f32>),
    /// `float64` elements.
    F64(Vec<i64>, Vec<f64>),
    /// `int64` elements.
    I64(Vec<i64>, Vec<i64>),
    /// `int32` elements.
    I32(Vec<i64>, Vec<i32>),
    /// `bool` elements.
    Bool(Vec<i64>, Vec<bool>),
    /// `string` elements.
    Strings(Vec<i64>, Vec<String>),
}

impl Feed {
    /// The tensor's dimensions.
    pub fn shape(&self) -> &[i64] {
        match self {
            Feed::F32(s, _)
            | Feed::F64(s, _)
            | Feed::I64(s, _)
            | Feed::I32(s, _)
            | Feed::Bool(s, _)
            | Feed::Strings(s, _) => s,
        }
    }

    fn into_value(self) -> ModelResult<DynValue> {
        fn check(shape: &[i64], len: usize) -> ModelResult<()> {
            let want: i64 = shape.iter().product();
            if want < 0 || want as usize != len {
                return Err(ModelError::InvalidInput(format!(
                    "{len} values do not fill a tensor of shape {shape:?}"
                )));
            }
            Ok(())
        }
        Ok(match self {
            Feed::F32(shape, data) => {
                check(&shape, data.len())?;
                Tensor::from_array((shape, data))
                    .map_err(runtime_error)?
                    .into_dyn()
            }
            Feed::F64(shape, data) => {
                check(&shape, data.len())?;
                Tensor::from_array((shape, data))
                    .map_err(runtime_error)?
                    .into_dyn()
            }
            Feed::I64(shape, data) => {
                check(&shape, data.len())?;
                Tensor::from_array((shape, data))
                    .map_err(runtime_error)?
                    .into_dyn()
            }
            Feed::I32(shape, data) => {
                check(&shape, data.len())?;
                Tensor::from_array((shape, data))
                    .map_err(runtime_error)?
                    .into_dyn()
            }
            Feed::Bool(shape, data) => {
                check(&shape, data.len())?;
                Tensor::from_array((shape, data))
                    .map_err(runtime_error)?
                    .into_dyn()
            }
            Feed::Strings(shape, data) => {
                check(&shape, data.len())?;
                Tensor::from_string_array((shape, data.as_slice()))
                    .map_err(runtime_error)?
                    .into_dyn()
            }
        })
    }
}

/// Where sessions of a graph are made from.
enum Source {
    /// The graph's bytes (external-data files cannot be resolved).
    Memory(Arc<[u8]>),
    /// A file; external-data files are found beside it.
    File(PathBuf),
}

/// A loaded ONNX graph (see the module docs).
pub struct OnnxGraph {
    source: Source,
    device: Device,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    pool: Mutex<Vec<Session>>,
}

impl fmt::Debug for OnnxGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Memory(b) => format!("{} bytes in memory", b.len()),
            Source::File(p) => p.display().to_string(),
        };
        f.debug_struct("OnnxGraph")
            .field("source", &source)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl OnnxGraph {
    /// Load a graph from its bytes: ONNX Runtime parses and checks it (a file that is not
    /// ONNX, a truncated one, or an opset the runtime cannot run is an error here).
    pub fn load(bytes: impl Into<Arc<[u8]>>) -> ModelResult<OnnxGraph> {
        Self::from_source(Source::Memory(bytes.into()), Device::Cpu)
    }

    /// Load a graph from a file (external-data files are read from its directory), to run on
    /// the device `request` gets here ([`device::effective`]).
    pub fn load_file(path: impl Into<PathBuf>, request: DeviceRequest) -> ModelResult<OnnxGraph> {
        Self::from_source(Source::File(path.into()), device::effective(request))
    }

    fn from_source(source: Source, wanted: Device) -> ModelResult<OnnxGraph> {
        let (session, device) = match new_session(&source, wanted) {
            Ok(s) => (s, wanted),
            // The GPU refused the graph (out of memory, an operator it lacks): the CPU runs it.
            Err(e) if wanted != Device::Cpu => {
                tracing::warn!(%e, "the CUDA execution provider refused a graph; using the CPU");
                (new_session(&source, Device::Cpu)?, Device::Cpu)
            }
            Err(e) => return Err(e),
        };
        let inputs = session
            .inputs()
            .iter()
            .map(|o| port(o.name(), o.dtype()))
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| port(o.name(), o.dtype()))
            .collect();
        Ok(OnnxGraph {
            source,
            device,
            inputs,
            outputs,
            pool: Mutex::new(vec![session]),
        })
    }

    /// The device the graph runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The graph's inputs, in declaration order.
    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    /// The graph's outputs, in declaration order.
    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// Run the graph on one `float32` input of `rows × cols` values (row-major): the
    /// `[N, k]` matrix scikit-learn, LightGBM and XGBoost exports take. Every output is
    /// returned, in declaration order.
    pub fn run_matrix(
        &self,
        input: &str,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> ModelResult<Vec<OutputValue>> {
        if data.len() != rows * cols {
            return Err(ModelError::InvalidInput(format!(
                "{} values do not make a {rows} x {cols} matrix",
                data.len()
            )));
        }
        let feed = Feed::F32(vec![rows as i64, cols as i64], data.to_vec());
        self.run(vec![(input.to_string(), feed)])
    }

    /// Run the graph on named inputs; every output is returned, in declaration order.
    pub fn run(&self, feeds: Vec<(String, Feed)>) -> ModelResult<Vec<OutputValue>> {
        let rows = feeds
            .first()
            .and_then(|(_, f)| f.shape().first().copied())
            .unwrap_or(0)
            .max(0) as usize;
        let values = feeds
            .into_iter()
            .map(|(name, feed)| Ok((name, feed.into_value()?)))
            .collect::<ModelResult<Vec<(String, DynValue)>>>()?;
        let mut session = self.take_session()?;
        let result = (|| {
            let outputs = session.run(values).map_err(runtime_error)?;
            self.outputs
                .iter()
                .map(|port| {
                    let value = outputs.get(port.name.as_str()).ok_or_else(|| {
                        ModelError::Runtime(format!("the run returned no output {}", port.name))
                    })?;
                    copy_output(value)
                })
                .collect::<ModelResult<Vec<_>>>()
        })();
        self.give_back(session);
        if result.is_ok() {
            device::count(self.device, rows);
        }
        result
    }

    fn take_session(&self) -> ModelResult<Session> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => new_session(&self.source, self.device),
        }
    }

    fn give_back(&self, session: Session) {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(session);
    }
}

/// A session on one intra-op thread: a query already scores its partitions in parallel.
fn new_session(source: &Source, device: Device) -> ModelResult<Session> {
    let env = runtime::environment()?;
    let builder = Session::builder(env).map_err(runtime_error)?;
    let builder = builder
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(runtime_error)?;
    let builder = builder.with_intra_threads(1).map_err(runtime_error)?;
    let builder = builder.with_inter_threads(1).map_err(runtime_error)?;
    // ONNX Runtime warns on every run of graphs that declare a wrong output shape (LightGBM
    // exports declare their label as [1]); errors still surface as errors.
    let builder = builder
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(runtime_error)?;
    let mut builder = with_device(builder, device)?;
    match source {
        Source::Memory(bytes) => builder.commit_from_memory(bytes),
        Source::File(path) => builder.commit_from_file(path),
    }
    .map_err(|e| ModelError::InvalidInput(format!("not a model ONNX Runtime can load: {e}")))
}

#[cfg(feature = "cuda")]
fn with_device(
    builder: ort::session::builder::SessionBuilder,
    device: Device,
) -> ModelResult<ort::session::builder::SessionBuilder> {
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(n) => builder
            .with_execution_providers([ort::ep::CUDA::default()
                .with_device_id(n)
                .build()
                .error_on_failure()])
            .map_err(runtime_error),
    }
}

#[cfg(not(feature = "cuda"))]
fn with_device(
    builder: ort::session::builder::SessionBuilder,
    _device: Device,
) -> ModelResult<ort::session::builder::SessionBuilder> {
    Ok(builder)
}

fn runtime_error(e: impl fmt::Display) -> ModelError {
    ModelError::Runtime(e.to_string())
}

fn port(name: &str, dtype: &ValueType) -> Port {
    let kind = match dtype {
        ValueType::Tensor { ty, shape, .. } => PortKind::Tensor {
            element: element_name(*ty),
            shape: shape.iter().copied().collect(),
        },
        other => PortKind::Other(other.to_string()),
    };
    Port {
        name: name.to_string(),
        kind,
    }
}

/// ONNX's name of an element type.
fn element_name(ty: TensorElementType) -> String {
    match ty {
        TensorElementType::Float32 => "float32".into(),
        TensorElementType::Float64 => "float64".into(),
        TensorElementType::Int64 => "int64".into(),
        TensorElementType::Int32 => "int32".into(),
        TensorElementType::String => "string".into(),
        TensorElementType::Bool => "bool".into(),
        other => other.to_string(),
    }
}

fn copy_output(value: &DynValue) -> ModelResult<OutputValue> {
    match value.dtype() {
        ValueType::Tensor { ty, .. } => match ty {
            TensorElementType::Float32 => {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(runtime_error)?;
                Ok(OutputValue::F32 {
                    shape: shape.iter().copied().collect(),
                    data: data.to_vec(),
                })
            }
            TensorElementType::Float64 => {
                let (shape, data) = value.try_extract_tensor::<f64>().map_err(runtime_error)?;
                Ok(OutputValue::F64 {
                    shape: shape.iter().copied().collect(),
                    data: data.to_vec(),
                })
            }
            TensorElementType::Int64 => {
                let (shape, data) = value.try_extract_tensor::<i64>().map_err(runtime_error)?;
                Ok(OutputValue::I64 {
                    shape: shape.iter().copied().collect(),
                    data: data.to_vec(),
                })
            }
            TensorElementType::String => {
                let (shape, data) = value.try_extract_strings().map_err(runtime_error)?;
                Ok(OutputValue::Strings {
                    shape: shape.iter().copied().collect(),
                    data,
                })
            }
            other => Err(ModelError::Runtime(format!(
                "outputs of element type {other} are not supported"
            ))),
        },
        ValueType::Sequence(inner) if inner.is_map() => {
            let maps = value
                .try_extract_sequence::<DynMapValueType>()
                .map_err(runtime_error)?;
            let mut rows = Vec::with_capacity(maps.len());
            for map in &maps {
                let mut row: Vec<(String, f32)> = match map.dtype() {
                    ValueType::Map {
                        key: TensorElementType::Int64,
                        ..
                    } => map
                        .try_extract_map::<i64, f32>()
                        .map_err(runtime_error)?
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    _ => map
                        .try_extract_map::<String, f32>()
                        .map_err(runtime_error)?
                        .into_iter()
                        .collect(),
                };
                // A map has no order; labels sort as numbers when they are numbers.
                row.sort_by(|a, b| label_order(&a.0, &b.0));
                rows.push(row);
            }
            Ok(OutputValue::LabelMaps(rows))
        }
        other => Err(ModelError::Runtime(format!(
            "outputs of kind {other} are not supported"
        ))),
    }
}

fn label_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}
