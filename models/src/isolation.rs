//! Isolation forest (Liu, Ting & Zhou, 2008) for row-wise anomaly scores:
//! `CREATE MODEL m DETECT ANOMALIES [USING isolation_forest] AS SELECT ...` and
//! `ANOMALY('m', f1, f2, ...)`.
//!
//! Written here rather than taken from a crate: the Rust isolation-forest crates take dense
//! `f64` rows and know nothing of the feature encoding every prognos model shares (categories
//! as codes, timestamps as parts, NULLs as `NaN`); this one runs on that encoded, column-major
//! [`Matrix`], so `ANOMALY` reads its arguments exactly like `PREDICT`.
//!
//! Each tree isolates a random subsample of `sample_size` rows (default 256) by random splits:
//! a random column among those that still vary, a split drawn uniformly between its minimum
//! and maximum, down to depth ⌈log₂ sample_size⌉. A row's score is `2^(−E[h(x)] / c(ψ))`,
//! where `h` is its path length (plus `c(leaf size)` at a leaf that holds several rows) and
//! `c(ψ)` the mean path length of an unsuccessful binary-search-tree search over ψ rows:
//! about 0.5 for ordinary rows, towards 1 for rows that isolate quickly. A missing value
//! (`NaN`) follows the branch that held more of the tree's rows.
//!
//! One change from the paper, for rows scored after training: a value outside the range
//! `[low, high]` that a node's rows spanned in its split column would, had it been among
//! them, be cut off by that node's split with probability `(v − high) / (v − low)` (or the
//! mirror below `low`); the path is the expectation over that. Without it a value far beyond
//! anything in a tree's subsample just follows the outermost branch and can look ordinary.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use crate::features::Matrix;

/// A split node or a leaf of an isolation tree.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct IsolationNode {
    /// Matrix column of the split; `u32::MAX` at a leaf.
    pub column: u32,
    /// Rows with `value < threshold` go left.
    pub threshold: f32,
    /// Smallest value of the split column among the node's rows.
    pub low: f32,
    /// Largest value of the split column among the node's rows.
    pub high: f32,
    /// Index of the left child.
    pub left: u32,
    /// Index of the right child.
    pub right: u32,
    /// Training rows that reached the node.
    pub size: u32,
}

/// One isolation tree, nodes in a flat array (root first).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IsolationTree {
    /// The nodes.
    pub nodes: Vec<IsolationNode>,
}

/// The fitted forest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IsolationForest {
    /// The trees.
    pub trees: Vec<IsolationTree>,
    /// Rows each tree was grown on (ψ).
    pub sample_size: usize,
    /// Rows scoring at least this are anomalies: chosen on labelled training rows
    /// (`WITH (labels = 'col')`, see [`crate::labelled`]); absent without labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

/// Settings of [`fit`].
#[derive(Debug, Clone, Copy)]
pub struct IsolationSettings {
    /// Trees (default 100).
    pub num_trees: usize,
    /// Rows per tree (default 256, capped at the number of rows).
    pub sample_size: usize,
    /// Random seed.
    pub seed: u64,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` nodes.
fn c(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n < 3.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

const LEAF: u32 = u32::MAX;

fn grow(
    x: &Matrix,
    rows: &mut [u32],
    depth: usize,
    limit: usize,
    rng: &mut ChaCha8Rng,
    nodes: &mut Vec<IsolationNode>,
) -> u32 {
    let id = nodes.len() as u32;
    nodes.push(IsolationNode {
        column: LEAF,
        threshold: 0.0,
        low: 0.0,
        high: 0.0,
        left: 0,
        right: 0,
        size: rows.len() as u32,
    });
    if depth >= limit || rows.len() <= 1 {
        return id;
    }
    // Columns that still vary among these rows, with their ranges.
    let ranges: Vec<(usize, f32, f32)> = x
        .cols
        .iter()
        .enumerate()
        .filter_map(|(j, col)| {
            let (lo, hi) = rows
                .iter()
                .map(|&r| col[r as usize])
                .filter(|v| !v.is_nan())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            (lo < hi).then_some((j, lo, hi))
        })
        .collect();
    if ranges.is_empty() {
        return id;
    }
    let (column, lo, hi) = ranges[rng.random_range(0..ranges.len())];
    let mut threshold = lo + rng.random::<f32>() * (hi - lo);
    if threshold <= lo {
        threshold = (lo + hi) / 2.0;
    }
    let col = &x.cols[column];
    // Partition: `value < threshold` left; NaN goes with the larger side (decided after).
    let mut left: Vec<u32> = vec![];
    let mut right: Vec<u32> = vec![];
    let mut missing: Vec<u32> = vec![];
    for &r in rows.iter() {
        let v = col[r as usize];
        if v.is_nan() {
            missing.push(r);
        } else if v < threshold {
            left.push(r);
        } else {
            right.push(r);
        }
    }
    if left.len() >= right.len() {
        left.extend(missing);
    } else {
        right.extend(missing);
    }
    let l = grow(x, &mut left, depth + 1, limit, rng, nodes);
    let r = grow(x, &mut right, depth + 1, limit, rng, nodes);
    nodes[id as usize] = IsolationNode {
        column: column as u32,
        threshold,
        low: lo,
        high: hi,
        left: l,
        right: r,
        size: rows.len() as u32,
    };
    id
}

/// Grow a forest on the encoded training rows.
pub fn fit(x: &Matrix, settings: IsolationSettings) -> ModelResult<IsolationForest> {
    if x.n_rows < 2 {
        return Err(ModelError::BadTrainingData(format!(
            "an isolation forest needs at least 2 rows, the training query returned {}",
            x.n_rows
        )));
    }
    if x.cols.is_empty() {
        return Err(ModelError::InvalidInput(
            "an isolation forest needs at least one feature column".into(),
        ));
    }
    let psi = settings.sample_size.clamp(2, x.n_rows);
    let limit = (psi as f64).log2().ceil() as usize;
    let trees = (0..settings.num_trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = ChaCha8Rng::seed_from_u64(settings.seed.wrapping_add(t as u64 * 7919));
            let mut rows: Vec<u32> = sample(&mut rng, x.n_rows, psi)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            let mut nodes = Vec::with_capacity(2 * psi);
            grow(x, &mut rows, 0, limit, &mut rng, &mut nodes);
            IsolationTree { nodes }
        })
        .collect();
    Ok(IsolationForest {
        trees,
        sample_size: psi,
        threshold: None,
    })
}

impl IsolationForest {
    /// Anomaly score of every row, in (0, 1].
    pub fn score(&self, x: &Matrix) -> Vec<f32> {
        let norm = c(self.sample_size as f64).max(f64::MIN_POSITIVE);
        (0..x.n_rows)
            .into_par_iter()
            .with_min_len(1024)
            .map(|r| {
                let mut total = 0.0;
                for t in &self.trees {
                    let mut i = 0usize;
                    let mut depth = 0.0;
                    // Probability of not being isolated yet by an out-of-range split.
                    let mut reach = 1.0;
                    loop {
                        let n = t.nodes[i];
                        if n.column == LEAF {
                            total += reach * (depth + c(n.size as f64));
                            break;
                        }
                        let v = x.cols[n.column as usize][r];
                        let outside = if v > n.high {
                            (v - n.high) as f64 / (v - n.low) as f64
                        } else if v < n.low {
                            (n.low - v) as f64 / (n.high - v) as f64
                        } else {
                            0.0
                        };
                        if outside > 0.0 {
                            total += reach * outside * (depth + 1.0);
                            reach *= 1.0 - outside;
                        }
                        let go_left = if v.is_nan() {
                            t.nodes[n.left as usize].size >= t.nodes[n.right as usize].size
                        } else {
                            v < n.threshold
                        };
                        i = if go_left { n.left } else { n.right } as usize;
                        depth += 1.0;
                    }
                }
                let mean = total / self.trees.len().max(1) as f64;
                2f64.powf(-mean / norm) as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_score_higher_than_the_bulk() {
        // 1 000 points around the origin, plus two far away.
        let n = 1002;
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for i in 0..1000 {
            a.push(((i as f32 * 12.9898).sin() * 43_758.547).fract());
            b.push(((i as f32 * 78.233).sin() * 12_345.679).fract());
        }
        a.extend([8.0, -6.0]);
        b.extend([8.0, f32::NAN]);
        let x = Matrix {
            n_rows: n,
            cols: vec![a, b],
        };
        let f = fit(
            &x,
            IsolationSettings {
                num_trees: 100,
                sample_size: 256,
                seed: 1,
            },
        )
        .expect("fit");
        let s = f.score(&x);
        let bulk = s[..1000].iter().copied().fold(0.0f32, f32::max);
        assert!(s[1000] > bulk, "{} vs bulk max {bulk}", s[1000]);
        assert!(s[1001] > 0.6, "{}", s[1001]);
        let mean = s[..1000].iter().sum::<f32>() / 1000.0;
        assert!((0.3..0.55).contains(&mean), "{mean}");
        assert!(s.iter().all(|v| *v > 0.0 && *v <= 1.0));
    }

    #[test]
    fn too_few_rows_are_an_error() {
        let x = Matrix {
            n_rows: 1,
            cols: vec![vec![1.0]],
        };
        let s = IsolationSettings {
            num_trees: 10,
            sample_size: 256,
            seed: 1,
        };
        assert!(matches!(fit(&x, s), Err(ModelError::BadTrainingData(_))));
    }
}
