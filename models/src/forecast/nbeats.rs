//! `nbeats`: one N-BEATS network (Oreshkin et al., 2020, the generic architecture) trained
//! across every series of a model, on candle.
//!
//! The network reads a window of the last `input_size` values of a series and gives the next
//! `horizon` values at once (no recursion). It is a stack of blocks; each block is a few dense
//! ReLU layers ending in a linear layer whose output is split into a backcast (what the block
//! explains of its input, subtracted before the next block) and a forecast (summed over the
//! blocks).
//!
//! Scale: each window is standardised by its own mean and deviation (the deviation floored at
//! a thousandth of its mean absolute value, so a flat window does not divide by zero); the
//! targets by the same numbers, clamped to ±[`TARGET_CLAMP`]. The loss is the mean absolute
//! error of the standardised forecast, so one network serves series of any scale.
//!
//! Training draws batches of windows: a series uniformly, then a forecast origin uniformly
//! among its positions that leave `horizon` values after it (windows reaching before the
//! first value repeat it). Memory is the series, the parameters (value, gradient, two
//! moments) and one batch's activations, never the set of all windows. A fixed number of
//! Adam steps, the learning rate halved at 50 % and 75 % of them; the cancel flag is read
//! before every step.
//!
//! Why own code: no Rust crate offers N-BEATS; candle provides the tensors and autograd and
//! [`crate::mlp`]'s AdamW the update.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use crate::mlp::adamw::AdamW;
use crate::mlp::network::{Dense, candle_error};

/// Name of the weights payload in a version's directory.
pub const WEIGHTS_FILE: &str = "nbeats.safetensors";

/// Standardised targets are clamped to this (a jump out of a flat window would dominate).
const TARGET_CLAMP: f32 = 50.0;

/// Windows scored per forward pass when forecasting.
const FORECAST_BLOCK: usize = 4096;

/// Training settings (`WITH (...)` of `USING nbeats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NbeatsParams {
    /// Values the network reads; `None`: chosen from the horizon and season ([`NbeatsParams::input_size_for`]).
    pub input_size: Option<usize>,
    /// Blocks.
    pub blocks: usize,
    /// Dense ReLU layers per block.
    pub layers: usize,
    /// Units per layer.
    pub width: usize,
    /// Adam steps.
    pub steps: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Adam's initial learning rate.
    pub learning_rate: f64,
    /// Seed of the initial weights and the windows drawn.
    pub seed: u64,
}

impl Default for NbeatsParams {
    fn default() -> Self {
        NbeatsParams {
            input_size: None,
            blocks: 3,
            layers: 2,
            width: 256,
            steps: 1000,
            batch_size: 256,
            learning_rate: 1e-3,
            seed: 0,
        }
    }
}

impl NbeatsParams {
    /// The options `USING nbeats` reads, besides the forecasting ones.
    pub const OPTIONS: [&str; 8] = [
        "input_size",
        "blocks",
        "layers",
        "width",
        "steps",
        "batch_size",
        "learning_rate",
        "seed",
    ];

    /// Set option `key` to `v`; `Ok(false)` when `key` is not an nbeats option.
    pub fn set(&mut self, key: &str, v: f64) -> ModelResult<bool> {
        let int = |lo: f64, hi: f64| -> ModelResult<usize> {
            if v.fract() == 0.0 && (lo..=hi).contains(&v) {
                Ok(v as usize)
            } else {
                Err(ModelError::InvalidParameter(format!(
                    "{key} must be an integer in [{lo}, {hi}], got {v}"
                )))
            }
        };
        match key {
            "input_size" => self.input_size = Some(int(1.0, 100_000.0)?),
            "blocks" => self.blocks = int(1.0, 64.0)?,
            "layers" => self.layers = int(1.0, 16.0)?,
            "width" => self.width = int(1.0, 8192.0)?,
            "steps" => self.steps = int(1.0, 10_000_000.0)?,
            "batch_size" => self.batch_size = int(1.0, 1_000_000.0)?,
            "seed" => self.seed = int(0.0, u32::MAX as f64)? as u64,
            "learning_rate" => {
                if !(v > 0.0 && v <= 1.0) {
                    return Err(ModelError::InvalidParameter(format!(
                        "learning_rate must be in (0, 1], got {v}"
                    )));
                }
                self.learning_rate = v;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The window the network reads for horizon `h` and season `m`: `input_size` when given,
    /// else the larger of two horizons and seven seasons (N-BEATS read 2–7 horizons; on M4
    /// Hourly a week of hours, 168, beat two horizons, 96: OWA 0.540 against 0.595 on the
    /// series the defaults were chosen on, see benches/README.md).
    pub fn input_size_for(&self, h: usize, m: usize) -> usize {
        self.input_size.unwrap_or((2 * h).max(7 * m.max(1)))
    }

    /// Bytes a fit holds at its peak beside the series: parameters (value, gradient, two
    /// moments, a forward copy) and one batch's activations (forward and backward).
    pub fn working_memory(&self, input: usize, h: usize) -> usize {
        let params = self.parameters(input, h);
        let activations =
            self.batch_size * self.blocks * (self.layers * self.width + 2 * (input + h));
        4 * (5 * params + 3 * activations)
    }

    fn parameters(&self, input: usize, h: usize) -> usize {
        let per_block = (input + 1) * self.width
            + (self.layers - 1) * (self.width + 1) * self.width
            + (self.width + 1) * (input + h);
        self.blocks * per_block
    }
}

/// One series as the network sees it: regular values, oldest first.
pub type SeriesValues<'a> = &'a [f64];

/// The network's layers.
#[derive(Debug, Clone)]
struct Net {
    /// Per block: its hidden layers, then the layer giving backcast + forecast.
    blocks: Vec<Vec<Dense>>,
    input: usize,
    horizon: usize,
}

impl Net {
    fn init(p: &NbeatsParams, input: usize, horizon: usize, device: &Device) -> ModelResult<Net> {
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut dense = |fan_in: usize, out: usize| -> ModelResult<Dense> {
            // PyTorch's default: uniform in ±1/√fan-in.
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
            };
            let w = Tensor::from_vec(draw(out * fan_in), (out, fan_in), device)
                .map_err(candle_error)?;
            let b = Tensor::from_vec(draw(out), (out,), device).map_err(candle_error)?;
            Ok(Dense { w, b })
        };
        let mut blocks = vec![];
        for _ in 0..p.blocks {
            let mut layers = vec![dense(input, p.width)?];
            for _ in 1..p.layers {
                layers.push(dense(p.width, p.width)?);
            }
            layers.push(dense(p.width, input + horizon)?);
            blocks.push(layers);
        }
        Ok(Net {
            blocks,
            input,
            horizon,
        })
    }

    fn named(&self) -> Vec<(String, &Tensor)> {
        let mut out = vec![];
        for (i, block) in self.blocks.iter().enumerate() {
            for (j, l) in block.iter().enumerate() {
                out.push((format!("block.{i}.{j}.weight"), &l.w));
                out.push((format!("block.{i}.{j}.bias"), &l.b));
            }
        }
        out
    }

    /// A network reading the same shapes whose tensors are `tensors` (in [`Net::named`]'s
    /// order).
    fn with_tensors(&self, mut tensors: impl Iterator<Item = Tensor>) -> Net {
        let blocks = self
            .blocks
            .iter()
            .map(|block| {
                block
                    .iter()
                    .map(|_| Dense {
                        w: tensors.next().expect("one weight per layer"),
                        b: tensors.next().expect("one bias per layer"),
                    })
                    .collect()
            })
            .collect();
        Net {
            blocks,
            input: self.input,
            horizon: self.horizon,
        }
    }

    /// Standardised forecasts `[rows, horizon]` of standardised windows `[rows, input]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut residual = x.clone();
        let mut forecast: Option<Tensor> = None;
        for block in &self.blocks {
            let last = block.len() - 1;
            let mut h = residual.clone();
            for (i, l) in block.iter().enumerate() {
                h = h.matmul(&l.w.t()?)?.broadcast_add(&l.b)?;
                if i < last {
                    h = h.relu()?;
                }
            }
            let back = h.narrow(1, 0, self.input)?;
            let fore = h.narrow(1, self.input, self.horizon)?;
            residual = (residual - back)?;
            forecast = Some(match forecast {
                None => fore,
                Some(f) => (f + fore)?,
            });
        }
        forecast.ok_or_else(|| candle_core::Error::Msg("a network without blocks".into()))
    }

    fn to_safetensors(&self) -> ModelResult<Vec<u8>> {
        safetensors::serialize(self.named(), None)
            .map_err(|e| ModelError::Network(format!("writing the weights: {e}")))
    }

    fn from_safetensors(bytes: &[u8], shape: &Net, device: &Device) -> ModelResult<Net> {
        let mut tensors = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| ModelError::Corrupt(format!("nbeats weights: {e}")))?;
        let mut out = vec![];
        for (name, t) in shape.named() {
            let got = tensors.remove(&name).ok_or_else(|| {
                ModelError::Corrupt(format!("nbeats weights: tensor {name} is missing"))
            })?;
            if got.dims() != t.dims() || got.dtype() != DType::F32 {
                return Err(ModelError::Corrupt(format!(
                    "nbeats weights: tensor {name} is {:?} {:?}, expected f32 {:?}",
                    got.dtype(),
                    got.dims(),
                    t.dims()
                )));
            }
            out.push(got);
        }
        Ok(shape.with_tensors(out.into_iter()))
    }
}

/// A window's standardisation: `(v - mean) / scale`.
#[derive(Debug, Clone, Copy)]
struct Norm {
    mean: f64,
    scale: f64,
}

/// The `input` values before position `t` of `y` (the first value repeated before the start),
/// standardised, and their standardisation.
fn window(y: &[f64], t: usize, input: usize, out: &mut Vec<f32>) -> Norm {
    let first = y[0];
    let value = |k: usize| -> f64 {
        // Position t - input + k, before the start: the first value.
        (t + k).checked_sub(input).map_or(first, |i| y[i])
    };
    let mean = (0..input).map(value).sum::<f64>() / input as f64;
    let sd = ((0..input).map(|k| (value(k) - mean).powi(2)).sum::<f64>() / input as f64).sqrt();
    let mean_abs = (0..input).map(|k| value(k).abs()).sum::<f64>() / input as f64;
    let scale = sd.max(1e-3 * mean_abs).max(1e-9);
    out.extend((0..input).map(|k| ((value(k) - mean) / scale) as f32));
    Norm { mean, scale }
}

/// A trained network and its shape. The weights are a payload beside the artifact document
/// ([`WEIGHTS_FILE`]), read on first use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NbeatsModel {
    /// Values read.
    pub input_size: usize,
    /// Values forecast at once.
    pub horizon: usize,
    /// Blocks.
    pub blocks: usize,
    /// Dense ReLU layers per block.
    pub layers: usize,
    /// Units per layer.
    pub width: usize,
    /// Steps trained.
    pub steps: usize,
    /// The weights payload's name.
    pub file: String,
    #[serde(skip)]
    location: OnceLock<PathBuf>,
    #[serde(skip)]
    network: OnceLock<Arc<Net>>,
    /// The serialised weights of a network trained in this process (not yet stored).
    #[serde(skip)]
    held: Option<Arc<Vec<u8>>>,
}

impl PartialEq for NbeatsModel {
    fn eq(&self, o: &Self) -> bool {
        (
            self.input_size,
            self.horizon,
            self.blocks,
            self.layers,
            self.width,
            self.steps,
            &self.file,
        ) == (
            o.input_size,
            o.horizon,
            o.blocks,
            o.layers,
            o.width,
            o.steps,
            &o.file,
        )
    }
}

/// Progress of a fit: called with (step, mean training loss since the last call).
pub type Progress<'a> = dyn FnMut(usize, f64) + 'a;

/// Train one network on `series` (each at least 2 values) to forecast `h` values from the
/// last `input` ones. `cancel` is read before every step; `progress` gets ten reports.
pub fn fit(
    series: &[SeriesValues<'_>],
    h: usize,
    input: usize,
    p: &NbeatsParams,
    cancel: &AtomicBool,
    progress: &mut Progress<'_>,
) -> ModelResult<NbeatsModel> {
    // Series that hold at least one value before a horizon.
    let usable: Vec<&[f64]> = series.iter().copied().filter(|y| y.len() > h).collect();
    if usable.is_empty() {
        let longest = series.iter().map(|y| y.len()).max().unwrap_or(0);
        return Err(ModelError::BadTrainingData(format!(
            "nbeats needs a series of at least {} values (horizon {h} + 1) to learn from; the \
             longest has {longest}",
            h + 1
        )));
    }
    let device = Device::Cpu;
    let init = Net::init(p, input, h, &device)?;
    let vars: Vec<Var> = init
        .named()
        .iter()
        .map(|(_, t)| Var::from_tensor(t))
        .collect::<candle_core::Result<_>>()
        .map_err(candle_error)?;
    let net = init.with_tensors(vars.iter().map(|v| v.as_tensor().clone()));
    let mut opt = AdamW::new(vars, p.learning_rate, 0.0).map_err(candle_error)?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed.wrapping_add(1));
    let batch = p.batch_size;
    let report_every = p.steps.div_ceil(10).max(1);
    let mut loss_sum = 0f64;
    let mut loss_steps = 0usize;
    let mut x = Vec::with_capacity(batch * input);
    let mut t = Vec::with_capacity(batch * h);
    for step in 0..p.steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(ModelError::Cancelled);
        }
        if step == p.steps / 2 || step == 3 * p.steps / 4 {
            opt.learning_rate *= 0.5;
        }
        x.clear();
        t.clear();
        for _ in 0..batch {
            let y = usable[rng.random_range(0..usable.len())];
            // An origin with at least one value before it and `h` after.
            let origin = rng.random_range(1..=y.len() - h);
            let norm = window(y, origin, input, &mut x);
            t.extend(y[origin..origin + h].iter().map(|v| {
                (((v - norm.mean) / norm.scale) as f32).clamp(-TARGET_CLAMP, TARGET_CLAMP)
            }));
        }
        let value = (|| {
            let xs = Tensor::from_slice(&x, (batch, input), &device)?;
            let ts = Tensor::from_slice(&t, (batch, h), &device)?;
            let loss = (net.forward(&xs)? - ts)?.abs()?.mean_all()?;
            let value = loss.to_scalar::<f32>()?;
            opt.backward_step(&loss)?;
            Ok::<f32, candle_core::Error>(value)
        })()
        .map_err(candle_error)?;
        if !value.is_finite() {
            return Err(ModelError::BadTrainingData(format!(
                "the network's loss diverged at step {} (learning_rate {} may be too high)",
                step + 1,
                p.learning_rate
            )));
        }
        loss_sum += value as f64;
        loss_steps += 1;
        if (step + 1) % report_every == 0 || step + 1 == p.steps {
            progress(step + 1, loss_sum / loss_steps as f64);
            loss_sum = 0.0;
            loss_steps = 0;
        }
    }
    let trained = net.with_tensors(net.named().into_iter().map(|(_, t)| t.detach()));
    NbeatsModel::new(p, input, h, trained)
}

impl NbeatsModel {
    fn new(p: &NbeatsParams, input: usize, h: usize, net: Net) -> ModelResult<NbeatsModel> {
        let held = Some(Arc::new(net.to_safetensors()?));
        let model = NbeatsModel {
            input_size: input,
            horizon: h,
            blocks: p.blocks,
            layers: p.layers,
            width: p.width,
            steps: p.steps,
            file: WEIGHTS_FILE.to_string(),
            location: OnceLock::new(),
            network: OnceLock::new(),
            held,
        };
        let _ = model.network.set(Arc::new(net));
        Ok(model)
    }

    /// Weights held in memory that the registry must store as payload `file`.
    pub fn held_payload(&self) -> Option<Arc<Vec<u8>>> {
        self.held.clone()
    }

    /// Where the weights payload is on local disk.
    pub fn set_location(&self, path: PathBuf) {
        let _ = self.location.set(path);
    }

    /// The network, read from the payload on first use.
    fn network(&self) -> ModelResult<Arc<Net>> {
        if let Some(n) = self.network.get() {
            return Ok(Arc::clone(n));
        }
        let bytes = crate::model::read_payload(self.location.get(), &self.file, "nbeats weights")?;
        let p = NbeatsParams {
            blocks: self.blocks,
            layers: self.layers,
            width: self.width,
            ..NbeatsParams::default()
        };
        let shape = Net::init(&p, self.input_size, self.horizon, &Device::Cpu)?;
        let net = Arc::new(Net::from_safetensors(&bytes, &shape, &Device::Cpu)?);
        Ok(Arc::clone(self.network.get_or_init(|| net)))
    }

    /// The next `h` (at most the trained horizon) values of every series.
    pub fn forecast(&self, series: &[SeriesValues<'_>], h: usize) -> ModelResult<Vec<Vec<f64>>> {
        let net = self.network()?;
        let h = h.min(self.horizon);
        let mut out = Vec::with_capacity(series.len());
        for chunk in series.chunks(FORECAST_BLOCK) {
            let mut x = Vec::with_capacity(chunk.len() * self.input_size);
            let mut norms = Vec::with_capacity(chunk.len());
            for y in chunk {
                if y.is_empty() {
                    return Err(ModelError::BadTrainingData(
                        "nbeats cannot forecast a series with no values".into(),
                    ));
                }
                norms.push(window(y, y.len(), self.input_size, &mut x));
            }
            let z = (|| {
                let xs = Tensor::from_slice(&x, (chunk.len(), self.input_size), &Device::Cpu)?;
                net.forward(&xs)?.flatten_all()?.to_vec1::<f32>()
            })()
            .map_err(candle_error)?;
            for (row, norm) in z.chunks(self.horizon).zip(norms) {
                out.push(
                    row[..h]
                        .iter()
                        .map(|&v| norm.mean + norm.scale * v as f64)
                        .collect(),
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> NbeatsParams {
        NbeatsParams {
            width: 64,
            steps: 300,
            batch_size: 64,
            ..NbeatsParams::default()
        }
    }

    #[test]
    fn one_network_forecasts_series_of_different_scales() {
        let data = crate::forecast::lag_gbdt::tests::daily_shapes();
        let train: Vec<&[f64]> = data.iter().map(|y| &y[..24 * 28]).collect();
        let mut reports = vec![];
        let model = fit(
            &train,
            48,
            96,
            &small(),
            &AtomicBool::new(false),
            &mut |s, l| reports.push((s, l)),
        )
        .expect("fit");
        assert_eq!(reports.len(), 10, "{reports:?}");
        assert!(reports[9].1 < reports[0].1, "{reports:?}");
        let f = model.forecast(&train, 48).expect("forecast");
        crate::forecast::lag_gbdt::tests::assert_the_last_two_days_within_5_percent(&data, &f);
    }

    #[test]
    fn a_seeded_fit_repeats_and_the_weights_read_back() {
        let data = crate::forecast::lag_gbdt::tests::daily_shapes();
        let train: Vec<&[f64]> = data.iter().map(|y| &y[..200]).collect();
        let p = NbeatsParams {
            steps: 20,
            ..small()
        };
        let fit_once = || fit(&train, 24, 48, &p, &AtomicBool::new(false), &mut |_, _| {});
        let (a, b) = (fit_once().expect("fit"), fit_once().expect("fit"));
        let (fa, fb) = (
            a.forecast(&train, 24).expect("ok"),
            b.forecast(&train, 24).expect("ok"),
        );
        assert_eq!(fa, fb);
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join(WEIGHTS_FILE);
        std::fs::write(&path, a.held_payload().expect("ok").as_slice()).expect("ok");
        let doc = serde_json::to_string(&a).expect("ok");
        let back: NbeatsModel = serde_json::from_str(&doc).expect("ok");
        back.set_location(path.clone());
        assert_eq!(back.forecast(&train, 24).expect("ok"), fa);
        // A truncated payload is a clear error.
        std::fs::write(&path, &a.held_payload().expect("ok")[..100]).expect("ok");
        let cut: NbeatsModel = serde_json::from_str(&doc).expect("ok");
        cut.set_location(path);
        let err = cut.forecast(&train, 24).expect_err("fails");
        assert!(matches!(err, ModelError::Corrupt(_)), "{err}");
    }

    #[test]
    fn too_short_series_and_cancellation_are_errors() {
        let short = [1.0, 2.0, 3.0];
        let err = fit(
            &[&short[..]],
            5,
            10,
            &small(),
            &AtomicBool::new(false),
            &mut |_, _| {},
        )
        .expect_err("fails");
        assert!(err.to_string().contains("at least 6 values"), "{err}");
        let data = crate::forecast::lag_gbdt::tests::daily_shapes();
        let train: Vec<&[f64]> = data.iter().map(|y| &y[..]).collect();
        let err = fit(
            &train,
            24,
            48,
            &small(),
            &AtomicBool::new(true),
            &mut |_, _| {},
        )
        .expect_err("fails");
        assert!(matches!(err, ModelError::Cancelled), "{err}");
    }

    #[test]
    fn options_are_checked() {
        let mut p = NbeatsParams::default();
        assert!(p.set("width", 32.0).expect("ok"));
        assert_eq!(p.width, 32);
        assert!(!p.set("num_trees", 3.0).expect("ok"));
        assert!(p.set("blocks", 0.0).is_err());
        assert!(p.set("learning_rate", 2.0).is_err());
        assert_eq!(p.input_size_for(48, 24), 168);
        assert_eq!(p.input_size_for(24, 1), 48);
    }
}
