//! Models brought as ONNX files, run by ONNX Runtime through `ort`.
//!
//! [`OnnxGraph`] holds a graph's bytes, what its inputs and outputs are (read from the graph
//! when it is loaded), and a pool of ONNX Runtime sessions: `Session::run` takes `&mut self`,
//! so each concurrent scoring call takes a session from the pool (creating one when none is
//! free) and puts it back afterwards; many queries score the same model version in parallel.
//! The runtime library is loaded on first use ([`runtime`]).

pub mod runtime;

use std::fmt;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynMapValueType, DynValue, TensorElementType, TensorRef, ValueType};

use crate::error::{ModelError, ModelResult};

/// One input or output of a graph, as the graph declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// The name in the graph.
    pub name: String,
    /// Element type and shape (`-1` for a dynamic dimension), or the value kind.
    pub kind: PortKind,
}

/// What flows through a [`Port`].
#[derive(Debug, Clone, PartialEq)]
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

/// A loaded ONNX graph (see the module docs).
pub struct OnnxGraph {
    bytes: Arc<[u8]>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    pool: Mutex<Vec<Session>>,
}

impl fmt::Debug for OnnxGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxGraph")
            .field("bytes", &self.bytes.len())
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl OnnxGraph {
    /// Load a graph from its bytes: ONNX Runtime parses and checks it (a file that is not
    /// ONNX, a truncated one, or an opset the runtime cannot run is an error here).
    pub fn load(bytes: impl Into<Arc<[u8]>>) -> ModelResult<OnnxGraph> {
        let bytes = bytes.into();
        let session = new_session(&bytes)?;
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
            bytes,
            inputs,
            outputs,
            pool: Mutex::new(vec![session]),
        })
    }

    /// The graph's bytes (as stored in the registry).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
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
        let tensor = TensorRef::from_array_view(([rows, cols], data)).map_err(runtime_error)?;
        let mut session = self.take_session()?;
        let result = (|| {
            let outputs = session
                .run(ort::inputs![input => tensor])
                .map_err(runtime_error)?;
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
        result
    }

    fn take_session(&self) -> ModelResult<Session> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => new_session(&self.bytes),
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
fn new_session(bytes: &[u8]) -> ModelResult<Session> {
    let env = runtime::environment()?;
    let builder = Session::builder(env).map_err(runtime_error)?;
    let builder = builder
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(runtime_error)?;
    let builder = builder.with_intra_threads(1).map_err(runtime_error)?;
    let mut builder = builder.with_inter_threads(1).map_err(runtime_error)?;
    builder
        .commit_from_memory(bytes)
        .map_err(|e| ModelError::InvalidInput(format!("not a model ONNX Runtime can load: {e}")))
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
