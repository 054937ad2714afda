//! Training a perceptron: AdamW over shuffled mini-batches, the learning rate halved when the
//! validation loss stalls, early stopping with the best epoch's weights kept.
//!
//! Everything random (initial weights, batch order, dropout masks) comes from one ChaCha
//! stream seeded by `seed`, so a retrain on the same rows gives the same network.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{D, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::adamw::AdamW;
use super::network::{Dense, EncodedTensors, Network, candle_error, encode, number_width};
use super::{Head, InputColumn, MlpModel};
use crate::error::{ModelError, ModelResult};
use crate::features::{DerivedColumn, Matrix};
use crate::gbdt::Objective;
use crate::onnx::device::DeviceRequest;
use crate::train::num;

/// `WITH (...)` options of `USING mlp`.
pub const OPTIONS: &[&str] = &[
    "hidden_layers",
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "patience",
    "early_stopping_rounds",
    "dropout",
    "class_weights",
    "embedding_dim",
    "device",
];

/// Fewest training rows a network is fitted on.
pub const MIN_ROWS: usize = 20;

/// Settings of one fit.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpParams {
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Most passes over the training rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// AdamW's initial learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Epochs without improvement before training stops (the learning rate halves after a
    /// third of them).
    pub patience: usize,
    /// Probability of dropping a hidden unit in training.
    pub dropout: f64,
    /// Weigh classes inversely to their frequency.
    pub balanced: bool,
    /// Width of every embedding (otherwise chosen from the number of categories).
    pub embedding_dim: Option<usize>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Where the network trains and runs.
    pub device: DeviceRequest,
}

impl Default for MlpParams {
    fn default() -> Self {
        Self {
            hidden: vec![64, 32],
            epochs: 200,
            batch_size: 128,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            patience: 12,
            dropout: 0.0,
            balanced: false,
            embedding_dim: None,
            seed: 42,
            device: DeviceRequest::Auto,
        }
    }
}

fn integer(
    options: &BTreeMap<String, String>,
    key: &str,
    lo: f64,
    hi: f64,
) -> ModelResult<Option<usize>> {
    match num(options, key)? {
        Some(v) if v.fract() == 0.0 && (lo..=hi).contains(&v) => Ok(Some(v as usize)),
        Some(v) => Err(ModelError::InvalidParameter(format!(
            "{key} must be an integer in [{lo}, {hi}], got {v}"
        ))),
        None => Ok(None),
    }
}

impl MlpParams {
    /// Read the `WITH (...)` options (unknown ones are rejected earlier).
    pub fn from_options(options: &BTreeMap<String, String>, seed: u64) -> ModelResult<Self> {
        let mut p = MlpParams {
            seed,
            ..Default::default()
        };
        if let Some(text) = options.get("hidden_layers") {
            let widths: Result<Vec<usize>, _> = text
                .split(',')
                .map(|w| w.trim())
                .filter(|w| !w.is_empty())
                .map(|w| w.parse::<usize>())
                .collect();
            match widths {
                Ok(w) if w.len() <= 8 && w.iter().all(|&n| (1..=4096).contains(&n)) => p.hidden = w,
                _ => {
                    return Err(ModelError::InvalidParameter(format!(
                        "hidden_layers must list up to 8 layer widths in [1, 4096], such as \
                         '64,32', got '{text}'"
                    )));
                }
            }
        }
        if let Some(v) = integer(options, "epochs", 1.0, 100_000.0)? {
            p.epochs = v;
        }
        if let Some(v) = integer(options, "batch_size", 1.0, 1_048_576.0)? {
            p.batch_size = v;
        }
        for key in ["patience", "early_stopping_rounds"] {
            if let Some(v) = integer(options, key, 1.0, 100_000.0)? {
                p.patience = v;
            }
        }
        if let Some(v) = integer(options, "embedding_dim", 1.0, 512.0)? {
            p.embedding_dim = Some(v);
        }
        if let Some(v) = num(options, "learning_rate")? {
            if !(v > 0.0 && v <= 10.0) {
                return Err(ModelError::InvalidParameter(format!(
                    "learning_rate must be in (0, 10], got {v}"
                )));
            }
            p.learning_rate = v;
        }
        if let Some(v) = num(options, "weight_decay")? {
            if !(0.0..=1.0).contains(&v) {
                return Err(ModelError::InvalidParameter(format!(
                    "weight_decay must be in [0, 1], got {v}"
                )));
            }
            p.weight_decay = v;
        }
        if let Some(v) = num(options, "dropout")? {
            if !(0.0..0.95).contains(&v) {
                return Err(ModelError::InvalidParameter(format!(
                    "dropout must be in [0, 0.95), got {v}"
                )));
            }
            p.dropout = v;
        }
        if let Some(v) = options.get("device") {
            p.device = DeviceRequest::parse(v)?;
        }
        if let Some(v) = options.get("class_weights") {
            p.balanced = match v.trim().to_ascii_lowercase().as_str() {
                "balanced" => true,
                "none" => false,
                _ => {
                    return Err(ModelError::InvalidParameter(format!(
                        "class_weights must be 'balanced' or 'none', got '{v}'"
                    )));
                }
            };
        }
        Ok(p)
    }

    /// `key=value` text of the settings, for the trials table.
    pub fn describe(&self) -> String {
        let hidden: Vec<String> = self.hidden.iter().map(|h| h.to_string()).collect();
        format!(
            "hidden_layers={} learning_rate={} batch_size={} weight_decay={}{}{}",
            hidden.join(","),
            self.learning_rate,
            self.batch_size,
            self.weight_decay,
            if self.dropout > 0.0 {
                format!(" dropout={}", self.dropout)
            } else {
                String::new()
            },
            if self.balanced {
                " class_weights=balanced"
            } else {
                ""
            }
        )
    }
}

/// Bytes a fit of `rows` rows of `columns` matrix columns holds besides the matrix, about:
/// the encoded rows (two f32 inputs per column, the most a number takes), and per parameter
/// its value, gradient, two moments and the best epoch's copy, and one batch's activations
/// with their gradients. Categories are counted as numbers: their embedding tables are
/// small next to the layers.
pub fn working_memory(params: &MlpParams, rows: usize, columns: usize) -> usize {
    let inputs = columns.saturating_mul(2);
    let widths: Vec<usize> = std::iter::once(inputs)
        .chain(params.hidden.iter().copied())
        .chain(std::iter::once(1))
        .collect();
    let parameters: usize = widths
        .windows(2)
        .map(|w| w[0].saturating_mul(w[1]).saturating_add(w[1]))
        .fold(0, usize::saturating_add);
    let batch = params.batch_size.min(rows.max(1));
    let units = widths.iter().copied().fold(0, usize::saturating_add);
    rows.saturating_mul(inputs)
        .saturating_add(parameters.saturating_mul(5))
        .saturating_add(batch.saturating_mul(units).saturating_mul(3))
        .saturating_mul(4)
}

/// Embedding width for a column of `n` categories (fast.ai's rule of thumb, at most 16).
fn embedding_width(n: usize) -> usize {
    ((1.6 * (n.max(1) as f64).powf(0.56)).round() as usize).clamp(2, 16)
}

/// Standardise numbers, embed categories.
fn fit_layout(x: &Matrix, derived: &[DerivedColumn], params: &MlpParams) -> Vec<InputColumn> {
    x.cols
        .iter()
        .zip(derived)
        .map(|(col, d)| match d.categories {
            Some(n) => InputColumn::Category {
                n,
                dim: params.embedding_dim.unwrap_or_else(|| embedding_width(n)),
            },
            None => {
                let (mut sum, mut count, mut missing) = (0f64, 0usize, false);
                for &v in col {
                    if !v.is_finite() {
                        missing = true;
                    } else {
                        sum += v as f64;
                        count += 1;
                    }
                }
                let mean = if count > 0 { sum / count as f64 } else { 0.0 };
                let var = col
                    .iter()
                    .filter(|v| v.is_finite())
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / count.max(1) as f64;
                let std = if var > 1e-24 { var.sqrt() } else { 1.0 };
                InputColumn::Number { mean, std, missing }
            }
        })
        .collect()
}

/// What is fitted, and the per-row targets and weights the loss reads.
struct Targets {
    head: Head,
    outputs: usize,
    /// Binary: 0/1; multiclass: class index; regression: standardised value.
    values: Vec<f32>,
    /// Per-class weight (1 without `class_weights = 'balanced'`).
    class_weight: Vec<f32>,
}

fn targets(objective: Objective, classes: usize, y: &[f32], balanced: bool) -> Targets {
    match objective {
        Objective::Regression => {
            let n = y.len().max(1) as f64;
            let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let std = if var > 1e-24 { var.sqrt() } else { 1.0 };
            Targets {
                head: Head::Value { mean, std },
                outputs: 1,
                values: y
                    .iter()
                    .map(|&v| ((v as f64 - mean) / std) as f32)
                    .collect(),
                class_weight: vec![1.0],
            }
        }
        _ => {
            let k = classes.max(2);
            let mut counts = vec![0usize; k];
            for &v in y {
                counts[v as usize] += 1;
            }
            let class_weight = counts
                .iter()
                .map(|&c| {
                    if balanced && c > 0 {
                        (y.len() as f64 / (k as f64 * c as f64)) as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            let (head, outputs) = if k == 2 {
                (Head::Logit, 1)
            } else {
                (Head::Softmax, k)
            };
            Targets {
                head,
                outputs,
                values: y.to_vec(),
                class_weight,
            }
        }
    }
}

/// Mean weighted loss of outputs `z` (`[rows, outputs]`) against targets `t` (`[rows]`), with
/// per-row weights `w` (`[rows]`).
fn loss(head: &Head, z: &Tensor, t: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let per_row = match head {
        Head::Logit => {
            // log(1 + e^z) - t·z, written stably as max(z, 0) - t·z + log(1 + e^-|z|).
            let z = z.squeeze(1)?;
            let soft = z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            ((z.relu()? - (&z * t)?)? + soft)?
        }
        Head::Softmax => {
            let logp = candle_nn::ops::log_softmax(z, D::Minus1)?;
            let idx = t.to_dtype(candle_core::DType::U32)?.unsqueeze(1)?;
            logp.gather(&idx, 1)?.squeeze(1)?.neg()?
        }
        Head::Value { .. } => (z.squeeze(1)? - t)?.sqr()?,
    };
    (per_row * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

/// Unweighted loss of row-major outputs against targets, in f64 (the early-stopping monitor).
fn monitor_loss(head: &Head, out: &[f32], k: usize, t: &[f32]) -> f64 {
    let n = t.len().max(1) as f64;
    let total: f64 = match head {
        Head::Logit => out
            .iter()
            .zip(t)
            .map(|(&z, &y)| {
                let z = z as f64;
                z.max(0.0) - y as f64 * z + (-z.abs()).exp().ln_1p()
            })
            .sum(),
        Head::Softmax => out
            .chunks(k)
            .zip(t)
            .map(|(row, &y)| {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                lse - row[y as usize] as f64
            })
            .sum(),
        Head::Value { .. } => out
            .iter()
            .zip(t)
            .map(|(&z, &y)| (z as f64 - y as f64).powi(2))
            .sum(),
    };
    total / n
}

/// Outputs of `net` on every row of `x`, row-major, in blocks.
pub(crate) fn outputs_in_blocks(
    net: &Network,
    layout: &[InputColumn],
    x: &Matrix,
    device: &Device,
) -> ModelResult<Vec<f32>> {
    const BLOCK: usize = 8192;
    let width = number_width(layout);
    let mut out = vec![];
    let mut start = 0;
    while start < x.n_rows {
        let end = (start + BLOCK).min(x.n_rows);
        let e = EncodedTensors::new(&encode(layout, x, start..end), width, device)?;
        out.extend(net.outputs(&e)?);
        start = end;
    }
    Ok(out)
}

/// Called after each epoch with the epoch (from 0) and the monitored loss; an error stops
/// training.
pub type EpochHook<'a> = dyn FnMut(usize, f64) -> ModelResult<()> + 'a;

/// The rows a network is fitted on.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// Training features.
    pub x: &'a Matrix,
    /// What each matrix column is.
    pub derived: &'a [DerivedColumn],
    /// Training targets: class codes or values.
    pub y: &'a [f32],
    /// Validation features and targets, when held out.
    pub valid: Option<(&'a Matrix, &'a [f32])>,
}

/// Fit a perceptron on `x` (matrix columns as `derived` describes them) to `y` (class codes
/// or values), stopping early on `valid` when given (else on the training loss). `cancel` is
/// checked before every step.
pub fn fit(
    rows: Rows<'_>,
    objective: Objective,
    classes: usize,
    params: &MlpParams,
    cancel: &AtomicBool,
    hook: &mut EpochHook<'_>,
) -> ModelResult<MlpModel> {
    let Rows {
        x,
        derived,
        y,
        valid,
    } = rows;
    if x.n_rows < MIN_ROWS {
        return Err(ModelError::BadTrainingData(format!(
            "USING mlp needs at least {MIN_ROWS} training rows, got {}",
            x.n_rows
        )));
    }
    let device = super::device::candle_device(params.device);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let layout = fit_layout(x, derived, params);
    let targets = targets(objective, classes, y, params.balanced);
    let init = Network::init(&layout, &params.hidden, targets.outputs, &mut rng, &device)?;
    // The variables the optimiser updates, and a network reading them.
    let vars: Vec<Var> = init
        .named()
        .iter()
        .map(|(_, t)| Var::from_tensor(t))
        .collect::<candle_core::Result<_>>()
        .map_err(candle_error)?;
    let n_emb = init.embeddings.len();
    let net = Network {
        embeddings: vars[..n_emb]
            .iter()
            .map(|v| v.as_tensor().clone())
            .collect(),
        layers: vars[n_emb..]
            .chunks(2)
            .map(|p| Dense {
                w: p[0].as_tensor().clone(),
                b: p[1].as_tensor().clone(),
            })
            .collect(),
    };
    let mut opt = AdamW::new(vars.clone(), params.learning_rate, params.weight_decay)
        .map_err(candle_error)?;

    let width = number_width(&layout);
    let train = EncodedTensors::new(&encode(&layout, x, 0..x.n_rows), width, &device)?;
    let t_all = Tensor::from_slice(&targets.values, (x.n_rows,), &device).map_err(candle_error)?;
    let row_weights: Vec<f32> = match targets.head {
        Head::Value { .. } => vec![1.0; x.n_rows],
        _ => y
            .iter()
            .map(|&c| targets.class_weight[c as usize])
            .collect(),
    };
    let w_all = Tensor::from_slice(&row_weights, (x.n_rows,), &device).map_err(candle_error)?;
    let valid_targets: Option<(&Matrix, Vec<f32>)> = valid.map(|(vx, vy)| {
        let t = match targets.head {
            Head::Value { mean, std } => vy
                .iter()
                .map(|&v| ((v as f64 - mean) / std) as f32)
                .collect(),
            _ => vy.to_vec(),
        };
        (vx, t)
    });

    let batch = params.batch_size.min(x.n_rows).max(1);
    let mut order: Vec<u32> = (0..x.n_rows as u32).collect();
    let mut best = (f64::INFINITY, 0usize, net.detached_copy()?);
    let mut since_best = 0usize;
    let mut since_cut = 0usize;
    let cut_after = (params.patience / 3).max(2);
    let dropout = params.dropout as f32;
    for epoch in 0..params.epochs {
        order.shuffle(&mut rng);
        let mut train_loss = 0f64;
        for chunk in order.chunks(batch) {
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            let idx = Tensor::from_slice(chunk, (chunk.len(),), &device).map_err(candle_error)?;
            let step = (|| {
                let rows = train.rows(&idx)?;
                let v = net.input(&rows)?;
                let z = net.head(&v, |_, dims| {
                    if dropout <= 0.0 {
                        return Ok(None);
                    }
                    let n: usize = dims.iter().product();
                    let keep = 1.0 / (1.0 - dropout);
                    let mask: Vec<f32> = (0..n)
                        .map(|_| {
                            if rng.random::<f32>() < dropout {
                                0.0
                            } else {
                                keep
                            }
                        })
                        .collect();
                    Tensor::from_vec(mask, dims, &device).map(Some)
                })?;
                let t = t_all.index_select(&idx, 0)?;
                let w = w_all.index_select(&idx, 0)?;
                let l = loss(&targets.head, &z, &t, &w)?;
                let value = l.to_scalar::<f32>()?;
                opt.backward_step(&l)?;
                Ok::<f32, candle_core::Error>(value)
            })()
            .map_err(candle_error)?;
            if !step.is_finite() {
                return Err(ModelError::BadTrainingData(format!(
                    "the network's loss diverged in epoch {} (learning_rate {} may be too \
                     high)",
                    epoch + 1,
                    opt.learning_rate
                )));
            }
            train_loss += step as f64 * chunk.len() as f64;
        }
        let monitored = match &valid_targets {
            Some((vx, vt)) => {
                let out = outputs_in_blocks(&net, &layout, vx, &device)?;
                monitor_loss(&targets.head, &out, targets.outputs, vt)
            }
            None => train_loss / x.n_rows as f64,
        };
        hook(epoch, monitored)?;
        // An improvement is a relative drop of at least 1e-4 (any finite loss beats none).
        if !best.0.is_finite() || monitored < best.0 - 1e-4 * best.0.abs() {
            best = (monitored, epoch, net.detached_copy()?);
            since_best = 0;
            since_cut = 0;
        } else {
            since_best += 1;
            since_cut += 1;
            if since_best >= params.patience {
                break;
            }
            if since_cut >= cut_after {
                opt.learning_rate = (opt.learning_rate * 0.5).max(1e-6);
                since_cut = 0;
            }
        }
    }
    let (_, best_epoch, network) = best;
    MlpModel::new(
        layout,
        params.hidden.clone(),
        targets.outputs,
        targets.head,
        best_epoch + 1,
        params.device,
        network,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_and_checked() {
        let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let p = MlpParams::from_options(
            &opts(&[
                ("hidden_layers", "32, 16,8"),
                ("class_weights", "Balanced"),
                ("epochs", "5"),
            ]),
            7,
        )
        .expect("valid options");
        assert_eq!(p.hidden, vec![32, 16, 8]);
        assert!(p.balanced);
        assert_eq!((p.epochs, p.seed), (5, 7));
        for bad in [
            ("hidden_layers", "64,x"),
            ("hidden_layers", "0"),
            ("epochs", "1.5"),
            ("dropout", "1"),
            ("class_weights", "auto"),
            ("learning_rate", "0"),
        ] {
            let err = MlpParams::from_options(&opts(&[bad]), 1).expect_err("rejected");
            assert!(err.to_string().contains(bad.0), "{bad:?}: {err}");
        }
    }

    #[test]
    fn embedding_widths_grow_slowly() {
        assert_eq!(embedding_width(2), 2);
        assert_eq!(embedding_width(10), 6);
        assert_eq!(embedding_width(10_000), 16);
    }
}
