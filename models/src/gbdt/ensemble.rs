//! Tree ensembles: gradient boosting and random forests, trained on binned data and scored
//! on raw values a block of rows at a time.

use std::sync::{Arc, OnceLock};

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::binning::BinnedMatrix;
use super::grow::{GrowParams, grow};
use super::quickscorer::QuickScorer;
use super::scorer::ScoringTree;
use super::tree::Tree;
use crate::error::{ModelError, ModelResult};
use crate::features::{DerivedColumn, Matrix};
use crate::metrics::{sigmoid, softmax_in_place};

/// The loss a boosted ensemble minimises (and how raw scores become outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Log loss; output = sigmoid(score) = P(class 1).
    Binary,
    /// Softmax cross-entropy; outputs = softmax(scores).
    Multiclass,
    /// Squared error; output = score.
    Regression,
}

impl Objective {
    /// Raw scores per row: the number of classes for multiclass, else 1.
    pub fn outputs(self, n_classes: usize) -> usize {
        if self == Objective::Multiclass {
            n_classes
        } else {
            1
        }
    }
}

/// How trees combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Boosting: init + sum of trees, then the objective's link.
    Sum,
    /// Forest: mean of trees (already probabilities or values).
    Mean,
}

/// A trained ensemble. Tree `i` contributes to output `i % n_outputs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ensemble {
    /// Loss / link.
    pub objective: Objective,
    /// Sum (boosting) or mean (forest).
    pub combine: Combine,
    /// 1, or the number of classes of a multiclass model.
    pub n_outputs: usize,
    /// Starting raw score per output (boosting).
    pub init: Vec<f32>,
    /// The trees. Not to be edited once the ensemble has scored rows: the scoring form built
    /// from them is kept (and rebuilt only when the number of trees changes).
    pub trees: Vec<Tree>,
    /// Scoring form of `trees`, built on first use.
    #[serde(skip)]
    pub(crate) scorer: ScorerCache,
}

/// Boosting and forest settings (see `WITH (...)` options in the README).
#[derive(Debug, Clone)]
pub struct TreeParams {
    pub(crate) num_trees: usize,
    pub(crate) learning_rate: f64,
    pub(crate) grow: GrowParams,
    pub(crate) max_bin: usize,
    pub(crate) early_stopping_rounds: usize,
    pub(crate) feature_fraction: f64,
    pub(crate) bagging_fraction: f64,
    pub(crate) seed: u64,
}

impl TreeParams {
    /// LightGBM's defaults for boosting.
    pub fn gbdt_defaults() -> TreeParams {
        TreeParams {
            num_trees: 100,
            learning_rate: 0.1,
            grow: GrowParams {
                num_leaves: 31,
                max_depth: 0,
                min_data_in_leaf: 20,
                min_sum_hessian: 1e-3,
                lambda_l2: 0.0,
                min_gain: 0.0,
                cat_smooth: 10.0,
                cat_l2: 10.0,
                max_cat_threshold: 32,
                min_data_per_group: 100,
                max_cat_to_onehot: 4,
                features_per_node: None,
            },
            max_bin: 255,
            early_stopping_rounds: 20,
            feature_fraction: 1.0,
            bagging_fraction: 1.0,
            seed: 42,
        }
    }

    /// Random-forest defaults (deep trees, bootstrap rows, sqrt(columns) per node).
    pub fn forest_defaults() -> TreeParams {
        let mut p = Self::gbdt_defaults();
        p.num_trees = 100;
        p.learning_rate = 1.0;
        p.grow.num_leaves = 4096;
        p.grow.min_data_in_leaf = 2;
        p.grow.min_data_per_group = 10;
        p.early_stopping_rounds = 0;
        p
    }

    /// Set a named option; `Ok(false)` when the name is not a tree option.
    pub fn set(&mut self, key: &str, value: f64) -> ModelResult<bool> {
        let pos = |v: f64, k: &str| -> ModelResult<f64> {
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(ModelError::InvalidParameter(format!(
                    "{k} must be positive, got {v}"
                )))
            }
        };
        let frac = |v: f64, k: &str| -> ModelResult<f64> {
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(ModelError::InvalidParameter(format!(
                    "{k} must be in (0, 1], got {v}"
                )))
            }
        };
        let count = |v: f64, k: &str, min: f64| -> ModelResult<usize> {
            if v >= min && v.fract() == 0.0 && v <= 1e7 {
                Ok(v as usize)
            } else {
                Err(ModelError::InvalidParameter(format!(
                    "{k} must be an integer >= {min}, got {v}"
                )))
            }
        };
        match key {
            "num_trees" | "num_iterations" | "n_estimators" => {
                self.num_trees = count(value, key, 1.0)?
            }
            "learning_rate" => self.learning_rate = pos(value, key)?,
            "num_leaves" => self.grow.num_leaves = count(value, key, 2.0)?,
            "max_depth" => self.grow.max_depth = count(value, key, 0.0)?,
            "min_data_in_leaf" | "min_rows_in_leaf" => {
                self.grow.min_data_in_leaf = count(value, key, 1.0)?
            }
            "lambda_l2" | "l2" => self.grow.lambda_l2 = value.max(0.0),
            "min_gain" => self.grow.min_gain = value.max(0.0),
            "max_bin" => self.max_bin = count(value, key, 2.0)?.min(255),
            "early_stopping_rounds" => self.early_stopping_rounds = count(value, key, 0.0)?,
            "feature_fraction" | "colsample" => self.feature_fraction = frac(value, key)?,
            "bagging_fraction" | "subsample" => self.bagging_fraction = frac(value, key)?,
            "seed" => self.seed = count(value, key, 0.0)? as u64,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Called after every boosting iteration with (iteration, validation metric). Returning an
/// error (e.g. cancellation) stops training.
pub type IterationHook<'a> = dyn FnMut(usize, Option<f64>) -> ModelResult<()> + 'a;

/// Rows scored per block (and per parallel task): the tree stays in cache while it walks
/// the block.
const BLOCK_ROWS: usize = 512;

/// How an ensemble scores rows: in QuickScorer form when every tree fits it (up to 64
/// leaves, as boosted trees have), else by walking each tree in its scoring layout (forests'
/// deep trees).
#[derive(Debug)]
enum Scorer {
    Quick(QuickScorer),
    Walk(Vec<Option<ScoringTree>>),
}

impl Scorer {
    fn new(trees: &[Tree], width: usize) -> Scorer {
        match QuickScorer::new(trees, width) {
            Some(qs) => Scorer::Quick(qs),
            None => Scorer::Walk(trees.iter().map(ScoringTree::new).collect()),
        }
    }
}

/// An ensemble's [`Scorer`], built on its first batch and kept for the next ones (a query
/// scores thousands of batches; building it sorts every node). Never serialised; equal for
/// any two ensembles, and empty again in a clone.
#[derive(Debug, Default)]
pub(crate) struct ScorerCache(OnceLock<(usize, usize, Arc<Scorer>)>);

impl ScorerCache {
    /// The scorer for `trees` over matrices of `width` columns: the kept one when it was
    /// built for that many trees and columns, else a new one (kept if none is yet).
    fn get(&self, trees: &[Tree], width: usize) -> Arc<Scorer> {
        let (kept_trees, kept_width, scorer) = self
            .0
            .get_or_init(|| (trees.len(), width, Arc::new(Scorer::new(trees, width))));
        if *kept_trees == trees.len() && *kept_width == width {
            Arc::clone(scorer)
        } else {
            Arc::new(Scorer::new(trees, width))
        }
    }
}

impl Clone for ScorerCache {
    fn clone(&self) -> Self {
        ScorerCache::default()
    }
}

impl PartialEq for ScorerCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Ensemble {
    /// Raw scores, row-major `n_rows × n_outputs` (init + sum, or the mean of the trees).
    pub fn predict_raw(&self, x: &Matrix) -> Vec<f32> {
        let k = self.n_outputs;
        let mut out = vec![0f32; x.n_rows * k];
        let per_output = (self.trees.len() / k).max(1) as f32;
        let scale = match self.combine {
            Combine::Sum => 1.0,
            Combine::Mean => 1.0 / per_output,
        };
        let width = x.cols.len();
        let scorer = self.scorer.get(&self.trees, width);
        let score_block = |(b, chunk): (usize, &mut [f32])| {
            let start = b * BLOCK_ROWS;
            let rows = start..start + chunk.len() / k;
            if self.combine == Combine::Sum {
                for c in chunk.chunks_mut(k) {
                    c.copy_from_slice(&self.init);
                }
            }
            match scorer.as_ref() {
                Scorer::Quick(qs) => qs.add_to(&x.cols, rows, chunk, k, scale),
                Scorer::Walk(walkers) => {
                    // The block's rows laid out row by row once, for every tree's walk.
                    let mut block = vec![0f32; rows.len() * width];
                    for (c, col) in x.cols.iter().enumerate() {
                        for (r, v) in col[rows.clone()].iter().enumerate() {
                            block[r * width + c] = *v;
                        }
                    }
                    for (i, (t, walker)) in self.trees.iter().zip(walkers).enumerate() {
                        match walker {
                            Some(w) => w.add_rows_to(t, &block, width, chunk, k, i % k, scale),
                            None => t.add_to(&x.cols, rows.clone(), chunk, k, i % k, scale),
                        }
                    }
                }
            }
        };
        if x.n_rows > BLOCK_ROWS {
            out.par_chunks_mut(BLOCK_ROWS * k)
                .enumerate()
                .for_each(score_block);
        } else {
            out.chunks_mut(BLOCK_ROWS * k)
                .enumerate()
                .for_each(score_block);
        }
        out
    }

    /// Outputs: P(class 1) for binary, class probabilities for multiclass, values for
    /// regression; row-major `n_rows × n_outputs`.
    pub fn predict(&self, x: &Matrix) -> Vec<f32> {
        let mut raw = self.predict_raw(x);
        self.link_in_place(&mut raw);
        raw
    }

    /// Turn raw scores (as [`Ensemble::predict_raw`] gives them) into outputs.
    pub fn link(&self, mut raw: Vec<f32>) -> Vec<f32> {
        self.link_in_place(&mut raw);
        raw
    }

    fn link_in_place(&self, raw: &mut [f32]) {
        match (self.combine, self.objective) {
            (Combine::Sum, Objective::Binary) => raw.iter_mut().for_each(|v| *v = sigmoid(*v)),
            (Combine::Sum, Objective::Multiclass) => {
                raw.chunks_mut(self.n_outputs).for_each(softmax_in_place)
            }
            (Combine::Mean, Objective::Multiclass) => {
                raw.chunks_mut(self.n_outputs).for_each(|c| {
                    let s: f32 = c.iter().sum();
                    if s > 0.0 {
                        c.iter_mut().for_each(|v| *v /= s);
                    }
                })
            }
            (Combine::Mean, Objective::Binary) => {
                raw.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0))
            }
            _ => {}
        }
    }

    /// Total split gain per matrix column.
    pub fn gain_per_column(&self, n_columns: usize) -> Vec<f64> {
        let mut g = vec![0.0; n_columns];
        for t in &self.trees {
            for n in &t.nodes {
                if let Some(slot) = g.get_mut(n.feature as usize) {
                    *slot += n.gain as f64;
                }
            }
        }
        g
    }
}

fn validation_loss(objective: Objective, k: usize, raw: &[f32], y: &[f32]) -> f64 {
    let n = y.len().max(1) as f64;
    match objective {
        Objective::Binary => {
            y.iter()
                .zip(raw)
                .map(|(&y, &s)| {
                    let p = (sigmoid(s) as f64).clamp(1e-15, 1.0 - 1e-15);
                    -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
                })
                .sum::<f64>()
                / n
        }
        Objective::Multiclass => {
            let mut total = 0.0;
            for (i, &y) in y.iter().enumerate() {
                let mut p = raw[i * k..(i + 1) * k].to_vec();
                softmax_in_place(&mut p);
                total -= (p[y as usize] as f64).clamp(1e-15, 1.0).ln();
            }
            total / n
        }
        Objective::Regression => (y
            .iter()
            .zip(raw)
            .map(|(&y, &s)| ((y - s) as f64).powi(2))
            .sum::<f64>()
            / n)
            .sqrt(),
    }
}

fn allowed_columns(n: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<bool> {
    if fraction >= 1.0 {
        return vec![true; n];
    }
    let k = ((n as f64 * fraction).ceil() as usize).clamp(1, n);
    let mut allowed = vec![false; n];
    for i in sample(rng, n, k) {
        allowed[i] = true;
    }
    allowed
}

/// Train a gradient-boosted ensemble. `y` holds class codes (classification) or values.
/// With `valid`, training stops early when the validation loss has not improved for
/// `early_stopping_rounds` iterations, and the ensemble is cut back to its best iteration.
///
/// Also returns the raw scores of the training rows after the last tree (row-major, as
/// [`Ensemble::predict_raw`] would give them for the returned ensemble when training was not
/// cut back), so training-set metrics need no second pass over the rows.
#[allow(clippy::too_many_arguments)]
pub fn train_boosted(
    x: &Matrix,
    derived: &[DerivedColumn],
    y: &[f32],
    objective: Objective,
    n_classes: usize,
    valid: Option<(&Matrix, &[f32])>,
    params: &TreeParams,
    hook: &mut IterationHook<'_>,
) -> ModelResult<(Ensemble, Vec<f32>)> {
    let n = x.n_rows;
    let k = objective.outputs(n_classes);
    let binned = BinnedMatrix::build(x, derived, params.max_bin);
    let init: Vec<f32> = match objective {
        Objective::Binary => {
            let p = (y.iter().map(|&v| v as f64).sum::<f64>() / n as f64).clamp(1e-6, 1.0 - 1e-6);
            vec![(p / (1.0 - p)).ln() as f32]
        }
        Objective::Regression => vec![(y.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32],
        Objective::Multiclass => {
            let mut counts = vec![0.0f64; k];
            for &v in y {
                counts[v as usize] += 1.0;
            }
            counts
                .iter()
                .map(|c| ((c / n as f64).max(1e-6)).ln() as f32)
                .collect()
        }
    };
    let mut ens = Ensemble {
        objective,
        combine: Combine::Sum,
        n_outputs: k,
        init: init.clone(),
        trees: vec![],
        scorer: ScorerCache::default(),
    };
    let mut score: Vec<f32> = (0..n).flat_map(|_| init.iter().copied()).collect();
    let mut valid_score: Option<Vec<f32>> =
        valid.map(|(vx, _)| (0..vx.n_rows).flat_map(|_| init.iter().copied()).collect());
    let mut grad = vec![0f32; n];
    let mut hess = vec![0f32; n];
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let lr = params.learning_rate as f32;
    let mut best: Option<(usize, f64)> = None;
    for iter in 0..params.num_trees {
        let bagged: Option<Vec<u32>> = (params.bagging_fraction < 1.0).then(|| {
            let m = ((n as f64 * params.bagging_fraction) as usize).max(1);
            let mut v: Vec<u32> = sample(&mut rng, n, m)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            v.sort_unstable();
            v
        });
        let allowed = allowed_columns(x.cols.len(), params.feature_fraction, &mut rng);
        let mut new_trees = Vec::with_capacity(k);
        for class in 0..k {
            // Gradients in parallel chunks (the loop is O(rows) per tree).
            const CHUNK: usize = 16_384;
            let score_ref = &score;
            grad.par_chunks_mut(CHUNK)
                .zip(hess.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(ci, (g, h))| {
                    let base = ci * CHUNK;
                    let mut probs = vec![0f32; k];
                    for j in 0..g.len() {
                        let i = base + j;
                        match objective {
                            Objective::Binary => {
                                let p = sigmoid(score_ref[i]);
                                g[j] = p - y[i];
                                h[j] = (p * (1.0 - p)).max(1e-16);
                            }
                            Objective::Regression => {
                                g[j] = score_ref[i] - y[i];
                                h[j] = 1.0;
                            }
                            Objective::Multiclass => {
                                let factor = k as f32 / (k as f32 - 1.0);
                                probs.copy_from_slice(&score_ref[i * k..(i + 1) * k]);
                                softmax_in_place(&mut probs);
                                let p = probs[class];
                                let t = if y[i] as usize == class { 1.0 } else { 0.0 };
                                g[j] = p - t;
                                h[j] = (factor * p * (1.0 - p)).max(1e-16);
                            }
                        }
                    }
                });
            let mut indices: Vec<u32> = match &bagged {
                Some(b) => b.clone(),
                None => (0..n as u32).collect(),
            };
            let mut grown = grow(
                &binned,
                &grad,
                &hess,
                &mut indices,
                &allowed,
                &params.grow,
                &mut rng,
            );
            grown.tree.leaves.iter_mut().for_each(|v| *v *= lr);
            if bagged.is_some() {
                for i in 0..n {
                    score[i * k + class] += grown.tree.leaves[grown.tree.leaf_of(&x.cols, i)];
                }
            } else {
                for (leaf, range) in grown.ranges.iter().enumerate() {
                    let v = grown.tree.leaves[leaf];
                    for &r in &indices[range.clone()] {
                        score[r as usize * k + class] += v;
                    }
                }
            }
            new_trees.push(grown.tree);
        }
        let mut metric = None;
        if let (Some((vx, vy)), Some(vs)) = (valid, valid_score.as_mut()) {
            for (class, t) in new_trees.iter().enumerate() {
                match ScoringTree::new(t) {
                    Some(s) => s.add_to(t, &vx.cols, 0..vx.n_rows, vs, k, class, 1.0),
                    None => t.add_to(&vx.cols, 0..vx.n_rows, vs, k, class, 1.0),
                }
            }
            let loss = validation_loss(objective, k, vs, vy);
            metric = Some(loss);
            if best.is_none_or(|(_, b)| loss < b - 1e-12) {
                best = Some((iter, loss));
            }
        }
        ens.trees.extend(new_trees);
        hook(iter, metric)?;
        if let Some((best_iter, _)) = best
            && params.early_stopping_rounds > 0
            && iter >= best_iter + params.early_stopping_rounds
        {
            break;
        }
    }
    if let Some((best_iter, _)) = best
        && params.early_stopping_rounds > 0
    {
        ens.trees.truncate((best_iter + 1) * k);
    }
    Ok((ens, score))
}

/// Train a random forest: bootstrap rows, `sqrt(columns)` per node (unless
/// `feature_fraction` says otherwise), leaves hold class frequencies or means.
pub fn train_forest(
    x: &Matrix,
    derived: &[DerivedColumn],
    y: &[f32],
    objective: Objective,
    n_classes: usize,
    params: &TreeParams,
    hook: &mut IterationHook<'_>,
) -> ModelResult<Ensemble> {
    let n = x.n_rows;
    let k = objective.outputs(n_classes);
    let binned = BinnedMatrix::build(x, derived, params.max_bin);
    let mut grow_params = params.grow.clone();
    let n_cols = x.cols.len();
    grow_params.features_per_node = Some(if params.feature_fraction < 1.0 {
        ((n_cols as f64 * params.feature_fraction).ceil() as usize).clamp(1, n_cols)
    } else {
        ((n_cols as f64).sqrt().ceil() as usize).clamp(1, n_cols)
    });
    grow_params.lambda_l2 = 0.0;
    let targets: Vec<Vec<f32>> = (0..k)
        .map(|class| match objective {
            Objective::Multiclass => y
                .iter()
                .map(|&v| if v as usize == class { -1.0 } else { 0.0 })
                .collect(),
            _ => y.iter().map(|&v| -v).collect(),
        })
        .collect();
    let hess = vec![1f32; n];
    let bag = ((n as f64 * params.bagging_fraction) as usize).max(1);
    let mut trees = Vec::with_capacity(params.num_trees * k);
    // Trees in chunks: each chunk grows in parallel, the hook runs between chunks.
    let chunk = rayon::current_num_threads().max(1) * 2;
    let mut done = 0;
    while done < params.num_trees {
        let upto = (done + chunk).min(params.num_trees);
        let grown: Vec<Vec<Tree>> = (done..upto)
            .into_par_iter()
            .map(|t| {
                let mut rng = ChaCha8Rng::seed_from_u64(params.seed.wrapping_add(t as u64 * 7919));
                let mut rows: Vec<u32> = (0..bag).map(|_| rng.random_range(0..n as u32)).collect();
                rows.sort_unstable();
                let allowed = vec![true; n_cols];
                targets
                    .iter()
                    .map(|g| {
                        let mut idx = rows.clone();
                        grow(
                            &binned,
                            g,
                            &hess,
                            &mut idx,
                            &allowed,
                            &grow_params,
                            &mut rng,
                        )
                        .tree
                    })
                    .collect()
            })
            .collect();
        for ts in grown {
            trees.extend(ts);
        }
        done = upto;
        hook(done - 1, None)?;
    }
    Ok(Ensemble {
        objective,
        combine: Combine::Mean,
        n_outputs: k,
        init: vec![0.0; k],
        trees,
        scorer: ScorerCache::default(),
    })
}

impl Ensemble {
    /// Per-row TreeSHAP contributions in raw-score space for output `output` of each row
    /// (`outputs[r]`): row-major `n × (columns + 1)`, the last slot being the base value.
    /// Each row's slots sum to its raw score for that output.
    pub fn contributions(&self, x: &Matrix, outputs: &[usize]) -> Vec<f64> {
        let k = self.n_outputs;
        let w = x.cols.len() + 1;
        let scale = match self.combine {
            Combine::Sum => 1.0,
            Combine::Mean => 1.0 / (self.trees.len() / k).max(1) as f64,
        };
        let mut base = vec![0.0; k];
        for (i, t) in self.trees.iter().enumerate() {
            base[i % k] += scale * super::shap::expected_value(t);
        }
        if self.combine == Combine::Sum {
            for (b, init) in base.iter_mut().zip(&self.init) {
                *b += *init as f64;
            }
        }
        let mut out = vec![0.0; x.n_rows * w];
        out.par_chunks_mut(w).enumerate().for_each(|(r, phi)| {
            let o = outputs.get(r).copied().unwrap_or(0).min(k - 1);
            for (i, t) in self.trees.iter().enumerate() {
                if i % k == o {
                    super::shap::add_tree_shap(t, &x.cols, r, scale, &mut phi[..w - 1]);
                }
            }
            phi[w - 1] = base[o];
        });
        out
    }
}
