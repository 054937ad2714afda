//! AdamW (decoupled weight decay), the same update as `candle_nn::AdamW`.
//!
//! On the CPU each parameter is read once, updated in a plain loop and written back once:
//! candle_nn's step is a dozen tensor operations per parameter (each a fresh allocation and a
//! pass over the values), and on the small networks `USING mlp` trains, with a parameter
//! tensor per embedding, those operations were most of a training step. On a GPU the moments
//! stay on the device and the update is those tensor operations, so nothing is copied to the
//! host.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// First and second moments of one parameter.
#[derive(Debug)]
enum Moments {
    /// In host memory, updated by [`update_on_host`].
    Host(Vec<f32>, Vec<f32>),
    /// On the parameter's device, updated by [`update_on_device`].
    Device(Tensor, Tensor),
}

/// The optimiser's state: first and second moments per parameter.
#[derive(Debug)]
pub(crate) struct AdamW {
    vars: Vec<Var>,
    moments: Vec<Moments>,
    step: i32,
    /// Learning rate.
    pub(crate) learning_rate: f64,
    weight_decay: f64,
}

/// This step's constants: `decay` multiplies the parameter, `lr_c1` the bias-corrected
/// first moment, `c2` corrects the second.
#[derive(Debug, Clone, Copy)]
struct Step {
    decay: f64,
    lr_c1: f64,
    c2: f64,
}

impl AdamW {
    /// An optimiser of `vars` (f32 parameters): moments in host memory for parameters on the
    /// CPU, on the device otherwise.
    pub(crate) fn new(vars: Vec<Var>, learning_rate: f64, weight_decay: f64) -> Result<AdamW> {
        let moments = vars
            .iter()
            .map(|v| {
                Ok(if v.device().is_cpu() {
                    Moments::Host(vec![0.0; v.elem_count()], vec![0.0; v.elem_count()])
                } else {
                    Moments::Device(v.zeros_like()?, v.zeros_like()?)
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW {
            vars,
            moments,
            step: 0,
            learning_rate,
            weight_decay,
        })
    }

    /// Backpropagate `loss` and update every parameter it reaches.
    pub(crate) fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.apply(&grads)
    }

    fn apply(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let lr = self.learning_rate;
        let step = Step {
            decay: 1.0 - lr * self.weight_decay,
            lr_c1: lr / (1.0 - BETA1.powi(self.step)),
            c2: 1.0 / (1.0 - BETA2.powi(self.step)),
        };
        for (var, moments) in self.vars.iter().zip(&mut self.moments) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            match moments {
                Moments::Host(m, v) => update_on_host(var, g, m, v, step)?,
                Moments::Device(m, v) => update_on_device(var, g, m, v, step)?,
            }
        }
        Ok(())
    }
}

/// One AdamW update of `var` from gradient `g`, in a loop over host copies.
fn update_on_host(var: &Var, g: &Tensor, m: &mut [f32], v: &mut [f32], s: Step) -> Result<()> {
    let (b1, b2) = (BETA1 as f32, BETA2 as f32);
    let (decay, lr_c1, c2, eps) = (s.decay as f32, s.lr_c1 as f32, s.c2 as f32, EPS as f32);
    let g = g.flatten_all()?.to_vec1::<f32>()?;
    let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    for (((t, &g), m), v) in theta.iter_mut().zip(&g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *t = *t * decay - lr_c1 * *m / ((*v * c2).sqrt() + eps);
    }
    var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)
}

/// One AdamW update of `var` from gradient `g` in tensor operations on its device.
fn update_on_device(var: &Var, g: &Tensor, m: &mut Tensor, v: &mut Tensor, s: Step) -> Result<()> {
    *m = ((&*m * BETA1)? + (g * (1.0 - BETA1))?)?;
    *v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
    let denom = ((&*v * s.c2)?.sqrt()? + EPS)?;
    let theta = ((var.as_tensor() * s.decay)? - ((&*m * s.lr_c1)? / denom)?)?;
    var.set(&theta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The device path (tensor operations), run on the CPU, matches the host loop.
    #[test]
    fn host_loop_and_tensor_operations_agree() -> Result<()> {
        let start: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) * 0.3).collect();
        let a = Var::from_vec(start.clone(), (3, 4), &Device::Cpu)?;
        let b = Var::from_vec(start.clone(), (3, 4), &Device::Cpu)?;
        let mut host = AdamW::new(vec![a.clone()], 0.05, 0.01)?;
        let mut device = AdamW::new(vec![b.clone()], 0.05, 0.01)?;
        device.moments = vec![Moments::Device(b.zeros_like()?, b.zeros_like()?)];
        for _ in 0..5 {
            host.backward_step(&(a.as_tensor().sqr()?.sum_all()? + a.as_tensor().sum_all()?)?)?;
            device.backward_step(&(b.as_tensor().sqr()?.sum_all()? + b.as_tensor().sum_all()?)?)?;
        }
        let (x, y) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() < 1e-5, "{x:?} vs {y:?}");
        }
        // The steps moved every parameter.
        assert!(
            x.iter().zip(&start).all(|(p, s)| (p - s).abs() > 0.1),
            "{x:?}"
        );
        Ok(())
    }
}
