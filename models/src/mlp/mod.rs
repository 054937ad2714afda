//! Multilayer perceptrons trained in SQL (`USING mlp`), on candle.
//!
//! The model's preprocessing is part of it ([`InputColumn`]): numbers standardised with the
//! training mean and deviation (NULL becomes the mean, plus a missing indicator where training
//! saw NULLs), categories as learned embeddings with one extra row for NULL and unseen values.
//! Hidden layers are dense + ReLU; the head is one logit (binary classification), one logit per
//! class (multiclass) or one standardised value (regression). The structure is in the artifact
//! document; the weights are a safetensors payload beside it ([`WEIGHTS_FILE`]), opened on
//! first use. Explanations are integrated gradients ([`MlpModel::contributions`]).

pub(crate) mod adamw;
pub mod device;
pub mod fit;
pub(crate) mod network;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::ModelResult;
use crate::features::Matrix;
use crate::metrics::{sigmoid, softmax_in_place};
use crate::onnx::device::{Device as RunsOn, DeviceRequest, DeviceViews};
use network::{EncodedTensors, Network, candle_error, encode, input_owners, number_width};

/// Name of the weights payload in a version's directory.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// How one matrix column enters the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "enc", rename_all = "snake_case")]
pub enum InputColumn {
    /// `(x - mean) / std`; NULL (and ±∞) is 0, flagged by a missing indicator when `missing`.
    Number {
        /// Training mean.
        mean: f64,
        /// Training standard deviation (1 when constant).
        std: f64,
        /// Training saw NULLs: an indicator input follows the value.
        missing: bool,
    },
    /// A learned `dim`-wide embedding per category code `< n`; NULL and unseen codes share
    /// row `n`.
    Category {
        /// Categories.
        n: usize,
        /// Embedding width.
        dim: usize,
    },
}

/// What the output layer's values mean.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "head", rename_all = "snake_case")]
pub enum Head {
    /// One logit: P(second class) = sigmoid.
    Logit,
    /// One logit per class: probabilities = softmax.
    Softmax,
    /// A standardised value: prediction = value · std + mean.
    Value {
        /// Training mean of the target.
        mean: f64,
        /// Training standard deviation of the target.
        std: f64,
    },
}

/// A network's parameters as plain arrays.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Per category column: rows (categories + 1) and the row-major `rows × dim` table.
    pub embeddings: Vec<(usize, Vec<f32>)>,
    /// Per dense layer: outputs, inputs, the row-major `outputs × inputs` matrix, the biases.
    pub layers: Vec<(usize, usize, Vec<f32>, Vec<f32>)>,
}

/// A trained perceptron.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlpModel {
    /// One entry per matrix column.
    pub inputs: Vec<InputColumn>,
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Output layer width.
    pub outputs: usize,
    /// Meaning of the outputs.
    pub head: Head,
    /// Epochs until the kept weights (the best validation loss).
    pub epochs: usize,
    /// The weights payload's name.
    pub file: String,
    /// The device the network asks for (`WITH (device = …)`).
    #[serde(default)]
    pub device: DeviceRequest,
    #[serde(skip)]
    location: OnceLock<PathBuf>,
    #[serde(skip)]
    network: OnceLock<Arc<Network>>,
    /// The serialised weights of a network trained in this process (not yet stored).
    #[serde(skip)]
    held: Option<Arc<Vec<u8>>>,
    /// The same model run on other devices (sessions asking for another device).
    #[serde(skip)]
    views: DeviceViews,
}

impl PartialEq for MlpModel {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs
            && self.hidden == other.hidden
            && self.outputs == other.outputs
            && self.head == other.head
            && self.epochs == other.epochs
            && self.file == other.file
            && self.device == other.device
    }
}

impl MlpModel {
    fn new(
        inputs: Vec<InputColumn>,
        hidden: Vec<usize>,
        outputs: usize,
        head: Head,
        epochs: usize,
        device: DeviceRequest,
        network: Network,
    ) -> ModelResult<MlpModel> {
        let held = Some(Arc::new(network.to_safetensors()?));
        let model = MlpModel {
            inputs,
            hidden,
            outputs,
            head,
            epochs,
            file: WEIGHTS_FILE.to_string(),
            device,
            location: OnceLock::new(),
            network: OnceLock::new(),
            held,
            views: DeviceViews::default(),
        };
        let _ = model.network.set(Arc::new(network));
        Ok(model)
    }

    /// Weights held in memory that the registry must store as payload `file`.
    pub fn held_payload(&self) -> Option<Arc<Vec<u8>>> {
        self.held.clone()
    }

    /// The device the network runs on here.
    pub fn effective_device(&self) -> RunsOn {
        device::effective(self.device)
    }

    /// `whole` (the artifact holding this model) as it runs on the device `request` gets:
    /// itself when that is where it runs already, else a copy that loads the weights there
    /// (kept, so each device loads them once).
    pub(crate) fn view_on(
        &self,
        whole: &Arc<crate::ModelArtifact>,
        request: DeviceRequest,
    ) -> Arc<crate::ModelArtifact> {
        let (current, wanted) = (self.effective_device(), device::effective(request));
        self.views.view(whole, current, wanted, || {
            crate::model::Estimator::Mlp(MlpModel {
                device: request,
                network: OnceLock::new(),
                ..self.clone()
            })
        })
    }

    /// Where the weights payload is on local disk.
    pub fn set_location(&self, path: PathBuf) {
        let _ = self.location.set(path);
    }

    /// The network, read from the payload on first use.
    fn network(&self) -> ModelResult<Arc<Network>> {
        if let Some(n) = self.network.get() {
            return Ok(Arc::clone(n));
        }
        // A network trained in this process is set from the start: only a stored one is read.
        let bytes = crate::model::read_payload(self.location.get(), &self.file, "network weights")?;
        let net = Network::from_safetensors(
            &bytes,
            &self.inputs,
            &self.hidden,
            self.outputs,
            &device::candle_device(self.device),
        )?;
        Ok(Arc::clone(self.network.get_or_init(|| Arc::new(net))))
    }

    /// The parameters as plain arrays (for export).
    pub fn weights(&self) -> ModelResult<Weights> {
        let net = self.network()?;
        let flat = |t: &Tensor| t.flatten_all().and_then(|f| f.to_vec1::<f32>());
        let embeddings = net
            .embeddings
            .iter()
            .map(|t| Ok((t.dims()[0], flat(t)?)))
            .collect::<candle_core::Result<_>>()
            .map_err(candle_error)?;
        let layers = net
            .layers
            .iter()
            .map(|l| {
                let (out, fan_in) = l.w.dims2()?;
                Ok((out, fan_in, flat(&l.w)?, flat(&l.b)?))
            })
            .collect::<candle_core::Result<_>>()
            .map_err(candle_error)?;
        Ok(Weights { embeddings, layers })
    }

    /// Output-layer values (logits or the standardised value), row-major `rows × outputs`.
    pub fn raw(&self, x: &Matrix) -> ModelResult<Vec<f32>> {
        let net = self.network()?;
        fit::outputs_in_blocks(&net, &self.inputs, x, &net.device())
    }

    /// Predictions, `k` per row: binary → P(second class); multiclass → probabilities;
    /// regression → values.
    pub fn predict(&self, x: &Matrix) -> ModelResult<(Vec<f32>, usize)> {
        let mut out = self.raw(x)?;
        match &self.head {
            Head::Logit => out.iter_mut().for_each(|z| *z = sigmoid(*z)),
            Head::Softmax => out.chunks_mut(self.outputs).for_each(softmax_in_place),
            Head::Value { mean, std } => out
                .iter_mut()
                .for_each(|v| *v = (*v as f64 * std + mean) as f32),
        }
        Ok((out, self.outputs))
    }

    /// Per-row contributions of each matrix column to the raw score (the logit of the
    /// explained class, or the predicted value), row-major `rows × (columns + 1)`, the last
    /// slot the baseline's score: integrated gradients from the all-zero input vector (every
    /// number at its training mean, no missing flags, zero embeddings). Each row adds up to
    /// its raw score within 1e-3: rows whose sum is further off are integrated again with
    /// more steps.
    pub fn contributions(&self, x: &Matrix, explained: &[usize]) -> ModelResult<Vec<f64>> {
        let net = self.network()?;
        let owners = input_owners(&self.inputs);
        let w = self.inputs.len() + 1;
        let (scale, shift) = match &self.head {
            Head::Value { mean, std } => (*std, *mean),
            _ => (1.0, 0.0),
        };
        let width = number_width(&self.inputs);
        let device = net.device();
        let mut result = vec![0f64; x.n_rows * w];
        let zero = {
            let d = owners.len();
            let v =
                Tensor::zeros((1, d), candle_core::DType::F32, &device).map_err(candle_error)?;
            net.head(&v, |_, _| Ok(None))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle_error)?
        };
        for start in (0..x.n_rows).step_by(256) {
            let end = (start + 256).min(x.n_rows);
            let e = EncodedTensors::new(&encode(&self.inputs, x, start..end), width, &device)?;
            let v = net.input(&e).map_err(candle_error)?;
            let raw = net
                .head(&v, |_, _| Ok(None))
                .and_then(|t| t.to_vec2::<f32>())
                .map_err(candle_error)?;
            let vrows = v.to_vec2::<f32>().map_err(candle_error)?;
            for (i, row) in vrows.iter().enumerate() {
                let r = start + i;
                let class = if self.outputs > 1 { explained[r] } else { 0 };
                let target = (raw[i][class] - zero[class]) as f64;
                let mut steps = 64;
                loop {
                    let attr = integrated_gradients(&net, row, class, steps)?;
                    let total: f64 = attr.iter().sum();
                    if (total - target).abs() * scale <= 1e-3 || steps >= 4096 {
                        let out = &mut result[r * w..(r + 1) * w];
                        for (a, &o) in attr.iter().zip(&owners) {
                            out[o] += a * scale;
                        }
                        out[w - 1] = zero[class] as f64 * scale + shift;
                        break;
                    }
                    steps *= 4;
                }
            }
        }
        Ok(result)
    }
}

/// Integrated gradients of output `class` along the straight path from the zero vector to
/// `v`, by the midpoint rule with `steps` points: one attribution per input dimension.
fn integrated_gradients(
    net: &Network,
    v: &[f32],
    class: usize,
    steps: usize,
) -> ModelResult<Vec<f64>> {
    let d = v.len();
    let device = net.device();
    let mut path = Vec::with_capacity(steps * d);
    for s in 0..steps {
        let alpha = (s as f32 + 0.5) / steps as f32;
        path.extend(v.iter().map(|&x| x * alpha));
    }
    let grads = (|| {
        let p = Var::from_vec(path, (steps, d), &device)?;
        let z = net.head(p.as_tensor(), |_, _| Ok(None))?;
        let picked = z.narrow(1, class, 1)?.sum_all()?;
        let g = picked.backward()?;
        match g.get(p.as_tensor()) {
            Some(t) => t.sum(0)?.to_vec1::<f32>(),
            None => Ok(vec![0.0; d]),
        }
    })()
    .map_err(candle_error)?;
    Ok(grads
        .iter()
        .zip(v)
        .map(|(&g, &x)| g as f64 * x as f64 / steps as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::fit::{MlpParams, Rows, fit};
    use super::*;
    use crate::error::ModelError;
    use crate::features::DerivedColumn;
    use crate::gbdt::Objective;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Two numbers (one with NULLs) and a category; the class depends on all three.
    fn data(n: usize, seed: u64) -> (Matrix, Vec<DerivedColumn>, Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut a, mut b, mut c, mut y, mut v) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let x0: f32 = rng.random_range(-2.0..2.0);
            let x1: f32 = rng.random_range(-2.0..2.0);
            let cat = rng.random_range(0..4) as f32;
            let value = x0 * x0 - x1 + if cat == 2.0 { 1.5 } else { -0.5 };
            a.push(x0);
            b.push(if rng.random::<f32>() < 0.1 {
                f32::NAN
            } else {
                x1 * 10.0 + 100.0
            });
            c.push(cat);
            y.push(if value > 0.5 { 1.0 } else { 0.0 });
            v.push(value);
        }
        let derived = vec![
            DerivedColumn {
                feature: 0,
                name: "a".into(),
                categories: None,
            },
            DerivedColumn {
                feature: 1,
                name: "b".into(),
                categories: None,
            },
            DerivedColumn {
                feature: 2,
                name: "c".into(),
                categories: Some(4),
            },
        ];
        (
            Matrix {
                n_rows: n,
                cols: vec![a, b, c],
            },
            derived,
            y,
            v,
        )
    }

    static NOT_CANCELLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn quiet(_: usize, _: f64) -> ModelResult<()> {
        Ok(())
    }

    /// Fit with `params`, never cancelled, no progress.
    fn train(
        x: &Matrix,
        derived: &[DerivedColumn],
        y: &[f32],
        valid: Option<(&Matrix, &[f32])>,
        objective: Objective,
        classes: usize,
        params: &MlpParams,
    ) -> ModelResult<MlpModel> {
        let rows = Rows {
            x,
            derived,
            y,
            valid,
        };
        fit(rows, objective, classes, params, &NOT_CANCELLED, &mut quiet)
    }

    #[test]
    fn learns_a_binary_target_and_retrains_identically() {
        let (x, d, y, _) = data(3000, 1);
        let (vx, _, vy, _) = data(1000, 2);
        let params = MlpParams {
            epochs: 60,
            ..Default::default()
        };
        let m = train(&x, &d, &y, Some((&vx, &vy)), Objective::Binary, 2, &params).expect("fits");
        let (p, k) = m.predict(&vx).expect("predicts");
        assert_eq!(k, 1);
        let right = p
            .iter()
            .zip(&vy)
            .filter(|(p, y)| (**p > 0.5) == (**y > 0.5))
            .count();
        assert!(
            right as f64 / vy.len() as f64 > 0.9,
            "accuracy {right}/1000"
        );
        let again =
            train(&x, &d, &y, Some((&vx, &vy)), Objective::Binary, 2, &params).expect("fits");
        assert_eq!(again.predict(&vx).expect("predicts").0, p);
    }

    #[test]
    fn weights_round_trip_through_the_payload() {
        let (x, d, _, v) = data(500, 3);
        let params = MlpParams {
            epochs: 5,
            ..Default::default()
        };
        let m = train(&x, &d, &v, None, Objective::Regression, 0, &params).expect("fits");
        let bytes = m.held_payload().expect("held weights");
        let doc = serde_json::to_string(&m).expect("serialises");
        let back: MlpModel = serde_json::from_str(&doc).expect("reads back");
        assert_eq!(back, m);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(WEIGHTS_FILE);
        std::fs::write(&path, bytes.as_slice()).expect("write");
        back.set_location(path.clone());
        assert_eq!(
            back.predict(&x).expect("predicts"),
            m.predict(&x).expect("predicts")
        );

        // A damaged or missing payload is a corrupted artifact, not a panic.
        let truncated: MlpModel = serde_json::from_str(&doc).expect("reads back");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
        truncated.set_location(path);
        let err = truncated.predict(&x).expect_err("truncated weights");
        assert!(matches!(err, ModelError::Corrupt(_)), "{err}");
        let nowhere: MlpModel = serde_json::from_str(&doc).expect("reads back");
        assert!(matches!(nowhere.predict(&x), Err(ModelError::Corrupt(_))));
    }

    #[test]
    fn learns_multiclass_and_regression() {
        let (x, d, _, v) = data(3000, 4);
        let (vx, _, _, vv) = data(800, 5);
        let class = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&v| {
                    if v < 0.0 {
                        0.0
                    } else if v < 1.5 {
                        1.0
                    } else {
                        2.0
                    }
                })
                .collect()
        };
        let params = MlpParams {
            epochs: 80,
            ..Default::default()
        };
        let (y3, vy3) = (class(&v), class(&vv));
        let m = train(
            &x,
            &d,
            &y3,
            Some((&vx, &vy3)),
            Objective::Multiclass,
            3,
            &params,
        )
        .expect("fits");
        let (p, k) = m.predict(&vx).expect("predicts");
        assert_eq!(k, 3);
        assert!(
            p.chunks(3)
                .all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5)
        );
        let right = p
            .chunks(3)
            .zip(&vy3)
            .filter(|(r, y)| crate::metrics::argmax(r) == **y as usize)
            .count();
        assert!(
            right as f64 / vy3.len() as f64 > 0.8,
            "accuracy {right}/800"
        );

        let r = train(
            &x,
            &d,
            &v,
            Some((&vx, &vv)),
            Objective::Regression,
            0,
            &params,
        )
        .expect("fits");
        let (pred, _) = r.predict(&vx).expect("predicts");
        let mse: f64 = pred
            .iter()
            .zip(&vv)
            .map(|(p, t)| ((p - t) as f64).powi(2))
            .sum::<f64>()
            / vv.len() as f64;
        let var: f64 = {
            let m = vv.iter().map(|&t| t as f64).sum::<f64>() / vv.len() as f64;
            vv.iter().map(|&t| (t as f64 - m).powi(2)).sum::<f64>() / vv.len() as f64
        };
        assert!(mse < 0.1 * var, "mse {mse}, variance {var}");
    }

    #[test]
    fn contributions_add_up_to_the_raw_score() {
        let (x, d, y, _) = data(600, 6);
        let params = MlpParams {
            epochs: 20,
            ..Default::default()
        };
        let m = train(&x, &d, &y, None, Objective::Binary, 2, &params).expect("fits");
        let some = x.take(&[0, 1, 2, 3, 4, 5, 6, 7]);
        let c = m.contributions(&some, &[0; 8]).expect("explains");
        let raw = m.raw(&some).expect("scores");
        for (row, z) in c.chunks(4).zip(&raw) {
            let sum: f64 = row.iter().sum();
            assert!((sum - *z as f64).abs() <= 1e-3, "{row:?} vs {z}");
        }
    }

    #[test]
    fn infinite_values_are_missing_values() {
        let (mut x, d, y, _) = data(400, 8);
        for r in (0..400).step_by(7) {
            x.cols[0][r] = if r % 2 == 0 {
                f32::INFINITY
            } else {
                f32::NEG_INFINITY
            };
        }
        let params = MlpParams {
            epochs: 5,
            ..Default::default()
        };
        let m = train(&x, &d, &y, None, Objective::Binary, 2, &params).expect("fits");
        // The column's statistics ignore the infinities, which are flagged as missing.
        assert!(
            matches!(m.inputs[0], InputColumn::Number { mean, std, missing: true }
                if mean.is_finite() && std.is_finite()),
            "{:?}",
            m.inputs[0]
        );
        let (p, _) = m.predict(&x).expect("predicts");
        assert!(p.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn too_few_rows_name_the_minimum() {
        let (x, d, y, _) = data(10, 7);
        let err = train(
            &x,
            &d,
            &y,
            None,
            Objective::Binary,
            2,
            &MlpParams::default(),
        )
        .expect_err("too small");
        assert!(err.to_string().contains("at least 20"), "{err}");
    }

    /// A cancel that arrives inside an epoch stops the fit before that epoch ends.
    #[test]
    fn cancellation_stops_a_fit_mid_epoch() {
        let (x, d, y, _) = data(4000, 5);
        // One epoch of 4000 single-row steps through 512-wide layers takes seconds.
        let params = MlpParams {
            epochs: 1,
            batch_size: 1,
            hidden: vec![512, 512],
            ..Default::default()
        };
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&cancel);
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut epochs_ended = 0;
        let mut hook = |_: usize, _: f64| -> ModelResult<()> {
            epochs_ended += 1;
            Ok(())
        };
        let rows = Rows {
            x: &x,
            derived: &d,
            y: &y,
            valid: None,
        };
        let err =
            fit(rows, Objective::Binary, 2, &params, &cancel, &mut hook).expect_err("cancelled");
        canceller.join().expect("canceller");
        assert!(matches!(err, ModelError::Cancelled), "{err}");
        assert_eq!(epochs_ended, 0);
    }

    #[test]
    fn the_device_option_is_read_and_kept() {
        let (x, d, y, _) = data(200, 6);
        let options: std::collections::BTreeMap<String, String> =
            [("device".to_string(), "cuda:1".to_string())].into();
        let params = MlpParams {
            epochs: 2,
            ..MlpParams::from_options(&options, 1).expect("options")
        };
        assert_eq!(params.device, DeviceRequest::Cuda(1));
        let m = train(&x, &d, &y, None, Objective::Binary, 2, &params).expect("fits");
        assert_eq!(m.device, DeviceRequest::Cuda(1));
        if !candle_core::utils::cuda_is_available() {
            assert_eq!(m.effective_device(), RunsOn::Cpu);
        }
        let bad: std::collections::BTreeMap<String, String> =
            [("device".to_string(), "tpu".to_string())].into();
        let err = MlpParams::from_options(&bad, 1).expect_err("tpu");
        assert!(err.to_string().contains("tpu"), "{err}");
    }
}
