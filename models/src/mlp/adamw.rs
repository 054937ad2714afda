//! AdamW (decoupled weight decay) with one pass over each parameter's values.
//!
//! Same update as `candle_nn::AdamW`, whose step is a dozen tensor operations per parameter
//! (each a fresh allocation and a pass over the values). On the small networks `USING mlp`
//! trains, with a parameter tensor per embedding, those operations were most of a training
//! step; here each parameter is read once, updated in a plain loop and written back once.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The optimiser's state: first and second moments per parameter.
#[derive(Debug)]
pub(crate) struct AdamW {
    vars: Vec<Var>,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
    step: i32,
    /// Learning rate.
    pub(crate) learning_rate: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimiser of `vars` (f32 parameters).
    pub(crate) fn new(vars: Vec<Var>, learning_rate: f64, weight_decay: f64) -> AdamW {
        let first = vars.iter().map(|v| vec![0.0; v.elem_count()]).collect();
        let second = vars.iter().map(|v| vec![0.0; v.elem_count()]).collect();
        AdamW {
            vars,
            first,
            second,
            step: 0,
            learning_rate,
            weight_decay,
        }
    }

    /// Backpropagate `loss` and update every parameter it reaches.
    pub(crate) fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.apply(&grads)
    }

    fn apply(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let lr = self.learning_rate;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let c1 = 1.0 / (1.0 - BETA1.powi(self.step));
        let c2 = 1.0 / (1.0 - BETA2.powi(self.step));
        let (b1, b2) = (BETA1 as f32, BETA2 as f32);
        let (lr_c1, c2, eps) = ((lr * c1) as f32, c2 as f32, EPS as f32);
        for ((var, m), v) in self.vars.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for (((t, &g), m), v) in theta.iter_mut().zip(&g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *t = *t * decay - lr_c1 * *m / ((*v * c2).sqrt() + eps);
            }
            var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}
