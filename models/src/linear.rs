//! Ridge linear regression, L2 logistic regression and k-means, over a standardised design
//! matrix (numbers scaled, NULLs at the mean, categories one-hot).
//!
//! These are small dense problems (columns in the tens or hundreds), solved exactly: normal
//! equations and Newton steps with a Cholesky factorisation, so no solver crate is needed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use crate::features::{DerivedColumn, Matrix};

/// Most one-hot columns a categorical feature gets (rarer categories are all-zero).
const MAX_ONE_HOT: usize = 64;

/// How one matrix column enters the design.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "enc", rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// `(x - mean) / std`; missing = 0.
    Scaled {
        /// Training mean.
        mean: f64,
        /// Training standard deviation (1 when constant).
        std: f64,
    },
    /// One indicator per category code `< n`.
    OneHot {
        /// Indicators.
        n: usize,
    },
}

/// The design: one encoding per matrix column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Design {
    /// Encodings, in matrix-column order.
    pub cols: Vec<ColumnEncoding>,
    /// Design names (for explanations): `col` or `col=category-code`.
    pub names: Vec<String>,
    /// Matrix column of each design column.
    pub source: Vec<usize>,
}

impl Design {
    /// Fit scaling and one-hot widths on training data.
    pub fn fit(x: &Matrix, derived: &[DerivedColumn]) -> Design {
        let mut d = Design::default();
        for (c, (col, dc)) in x.cols.iter().zip(derived).enumerate() {
            if let Some(n_cat) = dc.categories {
                let n = n_cat.min(MAX_ONE_HOT);
                d.cols.push(ColumnEncoding::OneHot { n });
                for k in 0..n {
                    d.names.push(format!("{}={k}", dc.name));
                    d.source.push(c);
                }
            } else {
                let vals: Vec<f64> = col
                    .iter()
                    .filter(|v| !v.is_nan())
                    .map(|&v| v as f64)
                    .collect();
                let n = vals.len().max(1) as f64;
                let mean = vals.iter().sum::<f64>() / n;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                let std = if var > 1e-24 { var.sqrt() } else { 1.0 };
                d.cols.push(ColumnEncoding::Scaled { mean, std });
                d.names.push(dc.name.clone());
                d.source.push(c);
            }
        }
        d
    }

    /// Number of design columns (without the intercept).
    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// Fill `out` (length `width()`) with row `r`.
    pub fn row(&self, x: &Matrix, r: usize, out: &mut [f64]) {
        let mut j = 0;
        for (c, enc) in self.cols.iter().enumerate() {
            let v = x.cols[c][r];
            match enc {
                ColumnEncoding::Scaled { mean, std } => {
                    out[j] = if v.is_nan() {
                        0.0
                    } else {
                        (v as f64 - mean) / std
                    };
                    j += 1;
                }
                ColumnEncoding::OneHot { n } => {
                    out[j..j + n].iter_mut().for_each(|o| *o = 0.0);
                    if !v.is_nan() && (v as usize) < *n {
                        out[j + v as usize] = 1.0;
                    }
                    j += n;
                }
            }
        }
    }
}

/// Solve `a x = b` for a symmetric positive-definite `a` (row-major `n × n`), adding a little
/// to the diagonal if the factorisation meets a non-positive pivot.
fn solve_spd(a: &[f64], b: &[f64], n: usize) -> ModelResult<Vec<f64>> {
    for jitter in [0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2] {
        let mut l = vec![0.0; n * n];
        let mut ok = true;
        'outer: for i in 0..n {
            for j in 0..=i {
                let mut s = a[i * n + j];
                if i == j {
                    s += jitter * (1.0 + a[i * n + i].abs());
                }
                for k in 0..j {
                    s -= l[i * n + k] * l[j * n + k];
                }
                if i == j {
                    if s <= 0.0 || !s.is_finite() {
                        ok = false;
                        break 'outer;
                    }
                    l[i * n + i] = s.sqrt();
                } else {
                    l[i * n + j] = s / l[j * n + j];
                }
            }
        }
        if !ok {
            continue;
        }
        let mut z = vec![0.0; n];
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[i * n + k] * z[k]).sum();
            z[i] = (b[i] - s) / l[i * n + i];
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
            x[i] = (z[i] - s) / l[i * n + i];
        }
        return Ok(x);
    }
    Err(ModelError::BadTrainingData(
        "the linear system is singular even with regularisation".into(),
    ))
}

/// `Σ w_i x̃_i x̃_iᵀ` and `Σ x̃_i t_i` over the rows (x̃ = design row + intercept 1).
fn normal_equations(
    design: &Design,
    x: &Matrix,
    weight: &(dyn Fn(usize) -> f64 + Sync),
    target: &(dyn Fn(usize) -> f64 + Sync),
) -> (Vec<f64>, Vec<f64>) {
    let d = design.width() + 1;
    let (mut a, b) = (0..x.n_rows)
        .into_par_iter()
        .fold(
            || (vec![0.0; d * d], vec![0.0; d], vec![0.0; d]),
            |(mut a, mut b, mut row), r| {
                design.row(x, r, &mut row[..d - 1]);
                row[d - 1] = 1.0;
                let w = weight(r);
                let t = target(r);
                for i in 0..d {
                    let wi = w * row[i];
                    if wi != 0.0 {
                        for j in 0..=i {
                            a[i * d + j] += wi * row[j];
                        }
                    }
                    b[i] += row[i] * t;
                }
                (a, b, row)
            },
        )
        .map(|(a, b, _)| (a, b))
        .reduce(
            || (vec![0.0; d * d], vec![0.0; d]),
            |(mut a1, mut b1), (a2, b2)| {
                a1.iter_mut().zip(a2).for_each(|(x, y)| *x += y);
                b1.iter_mut().zip(b2).for_each(|(x, y)| *x += y);
                (a1, b1)
            },
        );
    for i in 0..d {
        for j in 0..i {
            a[j * d + i] = a[i * d + j];
        }
    }
    (a, b)
}

/// A fitted linear model: one weight vector (design columns, then intercept) per output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinearModel {
    /// Encoding of the inputs.
    pub design: Design,
    /// Weights per output; the last entry is the intercept.
    pub weights: Vec<Vec<f64>>,
    /// Logistic (sigmoid outputs) or plain linear.
    pub logistic: bool,
}

fn dot(w: &[f64], row: &[f64]) -> f64 {
    let d = w.len() - 1;
    w[..d].iter().zip(row).map(|(a, b)| a * b).sum::<f64>() + w[d]
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Ridge regression: minimise `Σ (y - w·x)² + lambda |w|²` (intercept not penalised).
pub fn fit_ridge(
    x: &Matrix,
    derived: &[DerivedColumn],
    y: &[f32],
    lambda: f64,
) -> ModelResult<LinearModel> {
    let design = Design::fit(x, derived);
    let d = design.width() + 1;
    let (mut a, b) = normal_equations(&design, x, &|_| 1.0, &|r| y[r] as f64);
    for i in 0..d - 1 {
        a[i * d + i] += lambda;
    }
    let w = solve_spd(&a, &b, d)?;
    Ok(LinearModel {
        design,
        weights: vec![w],
        logistic: false,
    })
}

/// L2-regularised logistic regression by Newton's method; one-vs-rest for more than two
/// classes. `y` holds class codes.
pub fn fit_logistic(
    x: &Matrix,
    derived: &[DerivedColumn],
    y: &[f32],
    n_classes: usize,
    lambda: f64,
    max_iter: usize,
) -> ModelResult<LinearModel> {
    let design = Design::fit(x, derived);
    let d = design.width() + 1;
    let outputs = if n_classes <= 2 { 1 } else { n_classes };
    let mut weights = Vec::with_capacity(outputs);
    for class in 0..outputs {
        let positive = if outputs == 1 { 1 } else { class };
        let t: Vec<f64> = y
            .iter()
            .map(|&v| f64::from(u8::from(v as usize == positive)))
            .collect();
        let mut w = vec![0.0; d];
        let mut row = vec![0.0; d - 1];
        for _ in 0..max_iter {
            let p: Vec<f64> = (0..x.n_rows)
                .map(|r| {
                    design.row(x, r, &mut row);
                    sigmoid(dot(&w, &row))
                })
                .collect();
            let (mut h, g) =
                normal_equations(&design, x, &|r| (p[r] * (1.0 - p[r])).max(1e-10), &|r| {
                    p[r] - t[r]
                });
            let mut g = g;
            for i in 0..d - 1 {
                h[i * d + i] += lambda;
                g[i] += lambda * w[i];
            }
            let step = solve_spd(&h, &g, d)?;
            let mut max_step: f64 = 0.0;
            for (wi, s) in w.iter_mut().zip(&step) {
                *wi -= s;
                max_step = max_step.max(s.abs());
            }
            if max_step < 1e-7 {
                break;
            }
        }
        weights.push(w);
    }
    Ok(LinearModel {
        design,
        weights,
        logistic: true,
    })
}

impl LinearModel {
    /// Outputs row-major: values (ridge), P(class 1) (binary) or class probabilities.
    pub fn predict(&self, x: &Matrix) -> Vec<f32> {
        let k = self.weights.len();
        let width = self.design.width();
        let mut out = vec![0f32; x.n_rows * k];
        out.par_chunks_mut(k * 256)
            .enumerate()
            .for_each(|(b, chunk)| {
                let mut row = vec![0.0; width];
                for (i, o) in chunk.chunks_mut(k).enumerate() {
                    self.design.row(x, b * 256 + i, &mut row);
                    for (c, w) in self.weights.iter().enumerate() {
                        let z = dot(w, &row);
                        o[c] = if self.logistic { sigmoid(z) } else { z } as f32;
                    }
                    if self.logistic && k > 1 {
                        let s: f32 = o.iter().sum();
                        if s > 0.0 {
                            o.iter_mut().for_each(|v| *v /= s);
                        }
                    }
                }
            });
        out
    }

    /// Per-row contributions `w_j · x_j` summed per matrix column, row-major
    /// `n × (columns + 1)`, last = intercept, for output `output`.
    pub fn contributions(&self, x: &Matrix, output: usize) -> Vec<f64> {
        let n_cols = self.design.cols.len();
        let w = &self.weights[output.min(self.weights.len() - 1)];
        let mut out = vec![0.0; x.n_rows * (n_cols + 1)];
        let mut row = vec![0.0; self.design.width()];
        for r in 0..x.n_rows {
            self.design.row(x, r, &mut row);
            let o = &mut out[r * (n_cols + 1)..(r + 1) * (n_cols + 1)];
            for (j, v) in row.iter().enumerate() {
                o[self.design.source[j]] += w[j] * v;
            }
            o[n_cols] = w[w.len() - 1];
        }
        out
    }
}

/// k-means clusters in design space.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KMeans {
    /// Encoding of the inputs.
    pub design: Design,
    /// `k` centroids of `design.width()` values.
    pub centroids: Vec<Vec<f64>>,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

impl KMeans {
    /// Nearest centroid and its squared distance for each row.
    pub fn assign(&self, x: &Matrix) -> Vec<(u32, f64)> {
        let width = self.design.width();
        (0..x.n_rows)
            .into_par_iter()
            .map_init(
                || vec![0.0; width],
                |row, r| {
                    self.design.row(x, r, row);
                    self.centroids
                        .iter()
                        .enumerate()
                        .map(|(c, m)| (c as u32, dist2(row, m)))
                        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
                },
            )
            .collect()
    }
}

/// k-means with k-means++ seeding and Lloyd iterations.
pub fn fit_kmeans(
    x: &Matrix,
    derived: &[DerivedColumn],
    k: usize,
    max_iter: usize,
    seed: u64,
) -> ModelResult<KMeans> {
    if x.n_rows < k {
        return Err(ModelError::BadTrainingData(format!(
            "k-means with k = {k} needs at least {k} rows, got {}",
            x.n_rows
        )));
    }
    let design = Design::fit(x, derived);
    let width = design.width();
    let rows: Vec<Vec<f64>> = (0..x.n_rows)
        .map(|r| {
            let mut v = vec![0.0; width];
            design.row(x, r, &mut v);
            v
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centroids = vec![rows[rng.random_range(0..rows.len())].clone()];
    let mut d2: Vec<f64> = rows.iter().map(|r| dist2(r, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = d2.iter().sum();
        let next = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut pick = rows.len() - 1;
            for (i, &d) in d2.iter().enumerate() {
                if target < d {
                    pick = i;
                    break;
                }
                target -= d;
            }
            pick
        } else {
            rng.random_range(0..rows.len())
        };
        centroids.push(rows[next].clone());
        let c = centroids.len() - 1;
        for (i, r) in rows.iter().enumerate() {
            d2[i] = d2[i].min(dist2(r, &centroids[c]));
        }
    }
    let mut assign = vec![usize::MAX; rows.len()];
    for _ in 0..max_iter {
        let new: Vec<usize> = rows
            .par_iter()
            .map(|r| {
                centroids
                    .iter()
                    .enumerate()
                    .map(|(c, m)| (c, dist2(r, m)))
                    .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
                    .0
            })
            .collect();
        let changed = new.iter().zip(&assign).any(|(a, b)| a != b);
        assign = new;
        let mut sums = vec![vec![0.0; width]; k];
        let mut counts = vec![0usize; k];
        for (r, &c) in rows.iter().zip(&assign) {
            counts[c] += 1;
            sums[c].iter_mut().zip(r).for_each(|(s, v)| *s += v);
        }
        for c in 0..k {
            if counts[c] > 0 {
                centroids[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
            }
        }
        if !changed {
            break;
        }
    }
    Ok(KMeans { design, centroids })
}

/// Mean silhouette of an assignment on at most `max_rows` rows (evenly spaced).
pub fn silhouette(model: &KMeans, x: &Matrix, assign: &[(u32, f64)], max_rows: usize) -> f64 {
    let k = model.centroids.len();
    let step = (x.n_rows / max_rows.max(1)).max(1);
    let picked: Vec<usize> = (0..x.n_rows).step_by(step).collect();
    let width = model.design.width();
    let rows: Vec<Vec<f64>> = picked
        .iter()
        .map(|&r| {
            let mut v = vec![0.0; width];
            model.design.row(x, r, &mut v);
            v
        })
        .collect();
    let labels: Vec<usize> = picked.iter().map(|&r| assign[r].0 as usize).collect();
    let scores: Vec<f64> = (0..rows.len())
        .into_par_iter()
        .map(|i| {
            let mut sum = vec![0.0; k];
            let mut cnt = vec![0usize; k];
            for j in 0..rows.len() {
                if i != j {
                    sum[labels[j]] += dist2(&rows[i], &rows[j]).sqrt();
                    cnt[labels[j]] += 1;
                }
            }
            let own = labels[i];
            if cnt[own] == 0 {
                return 0.0;
            }
            let a = sum[own] / cnt[own] as f64;
            let b = (0..k)
                .filter(|&c| c != own && cnt[c] > 0)
                .map(|c| sum[c] / cnt[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if !b.is_finite() || a.max(b) == 0.0 {
                0.0
            } else {
                (b - a) / a.max(b)
            }
        })
        .collect();
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}
