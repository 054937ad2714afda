//! The network's tensors (category embeddings, dense layers) and its forward pass, on candle.
//!
//! Input vector of a row: every number column's standardised value (and its missing indicator
//! where training saw NULLs), then every category column's embedding. Hidden layers are dense +
//! ReLU; the last layer is linear (logits or a standardised value).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::InputColumn;
use crate::error::{ModelError, ModelResult};
use crate::features::Matrix;

/// A candle error as a model error.
pub(crate) fn candle_error(e: candle_core::Error) -> ModelError {
    ModelError::Network(e.to_string())
}

/// One dense layer: `y = x · wᵀ + b`.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    /// `[out, in]`.
    pub(crate) w: Tensor,
    /// `[out]`.
    pub(crate) b: Tensor,
}

/// The network's parameters.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    /// One `[categories + 1, dim]` table per category column (the last row: NULL / unseen).
    pub(crate) embeddings: Vec<Tensor>,
    /// Hidden layers, then the output layer.
    pub(crate) layers: Vec<Dense>,
}

/// A block of rows encoded for the network: the number part row-major, one code vector per
/// category column.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// Rows.
    pub(crate) n_rows: usize,
    /// `n_rows × number_width(layout)` values.
    pub(crate) numbers: Vec<f32>,
    /// Per category column, the embedding row of each row.
    pub(crate) codes: Vec<Vec<u32>>,
}

/// Width of the number part of the input vector.
pub(crate) fn number_width(layout: &[InputColumn]) -> usize {
    layout
        .iter()
        .map(|c| match c {
            InputColumn::Number { missing, .. } => 1 + usize::from(*missing),
            InputColumn::Category { .. } => 0,
        })
        .sum()
}

/// Width of the whole input vector.
pub(crate) fn input_width(layout: &[InputColumn]) -> usize {
    number_width(layout)
        + layout
            .iter()
            .map(|c| match c {
                InputColumn::Category { dim, .. } => *dim,
                InputColumn::Number { .. } => 0,
            })
            .sum::<usize>()
}

/// The matrix column each input dimension comes from, in input order.
pub(crate) fn input_owners(layout: &[InputColumn]) -> Vec<usize> {
    let mut owners = vec![];
    for (c, col) in layout.iter().enumerate() {
        if let InputColumn::Number { missing, .. } = col {
            owners.extend(std::iter::repeat_n(c, 1 + usize::from(*missing)));
        }
    }
    for (c, col) in layout.iter().enumerate() {
        if let InputColumn::Category { dim, .. } = col {
            owners.extend(std::iter::repeat_n(c, *dim));
        }
    }
    owners
}

/// Encode rows `rows` of `x` (matrix columns in layout order).
pub(crate) fn encode(layout: &[InputColumn], x: &Matrix, rows: std::ops::Range<usize>) -> Encoded {
    let n = rows.len();
    let width = number_width(layout);
    let mut numbers = vec![0f32; n * width];
    let mut codes = vec![];
    let mut j = 0;
    for (c, col) in layout.iter().enumerate() {
        let values = &x.cols[c][rows.clone()];
        match col {
            InputColumn::Number { mean, std, missing } => {
                let (mean, scale) = (*mean as f32, (1.0 / *std) as f32);
                for (r, &v) in values.iter().enumerate() {
                    let slot = &mut numbers[r * width + j..];
                    // NULL (NaN) and infinite values are missing: an infinity would make
                    // every output of the row NaN.
                    if !v.is_finite() {
                        slot[0] = 0.0;
                        if *missing {
                            slot[1] = 1.0;
                        }
                    } else {
                        slot[0] = (v - mean) * scale;
                    }
                }
                j += 1 + usize::from(*missing);
            }
            InputColumn::Category { n: k, .. } => {
                let k = *k;
                codes.push(
                    values
                        .iter()
                        .map(|&v| {
                            if !v.is_finite() || v < 0.0 || v as usize >= k {
                                k as u32
                            } else {
                                v as u32
                            }
                        })
                        .collect(),
                );
            }
        }
    }
    Encoded {
        n_rows: n,
        numbers,
        codes,
    }
}

/// Encoded rows as tensors: the number block and one code vector per category column.
#[derive(Debug)]
pub(crate) struct EncodedTensors {
    numbers: Option<Tensor>,
    codes: Vec<Tensor>,
}

impl EncodedTensors {
    /// Move encoded rows onto `device`.
    pub(crate) fn new(e: &Encoded, width: usize, device: &Device) -> ModelResult<Self> {
        let numbers = if width > 0 {
            Some(Tensor::from_slice(&e.numbers, (e.n_rows, width), device).map_err(candle_error)?)
        } else {
            None
        };
        let codes = e
            .codes
            .iter()
            .map(|c| Tensor::from_slice(c, (e.n_rows,), device))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(candle_error)?;
        Ok(Self { numbers, codes })
    }

    /// The rows at `idx` (a u32 vector).
    pub(crate) fn rows(&self, idx: &Tensor) -> candle_core::Result<EncodedTensors> {
        Ok(EncodedTensors {
            numbers: self
                .numbers
                .as_ref()
                .map(|t| t.index_select(idx, 0))
                .transpose()?,
            codes: self
                .codes
                .iter()
                .map(|t| t.index_select(idx, 0))
                .collect::<candle_core::Result<_>>()?,
        })
    }
}

impl Network {
    /// The device the parameters are on.
    pub(crate) fn device(&self) -> Device {
        self.layers
            .first()
            .map(|l| l.w.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// Fresh parameters: dense layers as PyTorch initialises them (uniform in ±1/√fan-in),
    /// embeddings uniform with unit variance, all drawn from `rng`.
    pub(crate) fn init(
        layout: &[InputColumn],
        hidden: &[usize],
        outputs: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> ModelResult<Network> {
        let mut uniform = |n: usize, bound: f32| -> Vec<f32> {
            (0..n)
                .map(|_| rng.random_range(-bound..=bound))
                .collect::<Vec<f32>>()
        };
        let mut embeddings = vec![];
        for col in layout {
            if let InputColumn::Category { n, dim } = col {
                let values = uniform((n + 1) * dim, 3f32.sqrt());
                embeddings
                    .push(Tensor::from_vec(values, (n + 1, *dim), device).map_err(candle_error)?);
            }
        }
        let mut layers = vec![];
        let mut fan_in = input_width(layout);
        for &out in hidden.iter().chain(std::iter::once(&outputs)) {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let w = Tensor::from_vec(uniform(out * fan_in, bound), (out, fan_in), device)
                .map_err(candle_error)?;
            let b = Tensor::from_vec(uniform(out, bound), (out,), device).map_err(candle_error)?;
            layers.push(Dense { w, b });
            fan_in = out;
        }
        Ok(Network { embeddings, layers })
    }

    /// Every parameter tensor, named as in the safetensors payload.
    pub(crate) fn named(&self) -> Vec<(String, &Tensor)> {
        let mut out = vec![];
        for (i, e) in self.embeddings.iter().enumerate() {
            out.push((format!("embedding.{i}"), e));
        }
        for (i, l) in self.layers.iter().enumerate() {
            out.push((format!("dense.{i}.weight"), &l.w));
            out.push((format!("dense.{i}.bias"), &l.b));
        }
        out
    }

    /// The parameters as a safetensors document.
    pub(crate) fn to_safetensors(&self) -> ModelResult<Vec<u8>> {
        safetensors::serialize(self.named(), None)
            .map_err(|e| ModelError::Network(format!("writing the weights: {e}")))
    }

    /// Read a safetensors document written by [`Network::to_safetensors`], checking every
    /// tensor's shape against the model's layout.
    pub(crate) fn from_safetensors(
        bytes: &[u8],
        layout: &[InputColumn],
        hidden: &[usize],
        outputs: usize,
        device: &Device,
    ) -> ModelResult<Network> {
        let mut tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load_buffer(bytes, device)
                .map_err(|e| ModelError::Corrupt(format!("network weights: {e}")))?;
        let mut take = |name: String, shape: &[usize]| -> ModelResult<Tensor> {
            let t = tensors.remove(&name).ok_or_else(|| {
                ModelError::Corrupt(format!("network weights: tensor {name} is missing"))
            })?;
            if t.dims() != shape || t.dtype() != DType::F32 {
                return Err(ModelError::Corrupt(format!(
                    "network weights: tensor {name} is {:?} {:?}, expected f32 {shape:?}",
                    t.dtype(),
                    t.dims()
                )));
            }
            Ok(t)
        };
        let mut embeddings = vec![];
        for col in layout {
            if let InputColumn::Category { n, dim } = col {
                let name = format!("embedding.{}", embeddings.len());
                embeddings.push(take(name, &[n + 1, *dim])?);
            }
        }
        let mut layers = vec![];
        let mut fan_in = input_width(layout);
        for (i, &out) in hidden.iter().chain(std::iter::once(&outputs)).enumerate() {
            let w = take(format!("dense.{i}.weight"), &[out, fan_in])?;
            let b = take(format!("dense.{i}.bias"), &[out])?;
            layers.push(Dense { w, b });
            fan_in = out;
        }
        Ok(Network { embeddings, layers })
    }

    /// The input vectors of encoded rows: `[rows, input_width]`.
    pub(crate) fn input(&self, e: &EncodedTensors) -> candle_core::Result<Tensor> {
        let mut parts: Vec<Tensor> = e.numbers.iter().cloned().collect();
        for (table, codes) in self.embeddings.iter().zip(&e.codes) {
            parts.push(table.index_select(codes, 0)?);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        Tensor::cat(&parts, 1)
    }

    /// The output layer's values on input vectors: `[rows, outputs]`. `mask(layer, shape)`
    /// may give a dropout mask to multiply each hidden activation by (training only).
    pub(crate) fn head(
        &self,
        v: &Tensor,
        mut mask: impl FnMut(usize, &[usize]) -> candle_core::Result<Option<Tensor>>,
    ) -> candle_core::Result<Tensor> {
        let mut h = v.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = h.matmul(&l.w.t()?)?.broadcast_add(&l.b)?;
            if i < last {
                h = h.relu()?;
                if let Some(m) = mask(i, h.dims())? {
                    h = (h * m)?;
                }
            }
        }
        Ok(h)
    }

    /// Output values of encoded rows, row-major `rows × outputs`, with no dropout.
    pub(crate) fn outputs(&self, e: &EncodedTensors) -> ModelResult<Vec<f32>> {
        let v = self.input(e).map_err(candle_error)?;
        let out = self.head(&v, |_, _| Ok(None)).map_err(candle_error)?;
        out.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle_error)
    }

    /// Copies of the parameters that no longer follow the training variables.
    pub(crate) fn detached_copy(&self) -> ModelResult<Network> {
        let copy = |t: &Tensor| t.copy().map(|c| c.detach());
        Ok(Network {
            embeddings: self
                .embeddings
                .iter()
                .map(copy)
                .collect::<candle_core::Result<_>>()
                .map_err(candle_error)?,
            layers: self
                .layers
                .iter()
                .map(|l| {
                    Ok(Dense {
                        w: copy(&l.w)?,
                        b: copy(&l.b)?,
                    })
                })
                .collect::<candle_core::Result<_>>()
                .map_err(candle_error)?,
        })
    }
}
