//! `CREATE MODEL`'s training pipeline: read the target, learn the features, hold out a
//! validation split, fit one algorithm or let `auto` try several, and measure the result.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::Task;
use crate::error::{ModelError, ModelResult};
use crate::features::{FeatureSet, Matrix};
use crate::gbdt::{Objective, TreeParams, train_boosted, train_forest};
use crate::linear::{fit_kmeans, fit_logistic, fit_ridge, silhouette};
use crate::metrics::{self, Metrics};
use crate::mlp::fit::MlpParams;
use crate::model::{Algorithm, Estimator, FORMAT_VERSION, Importance, ModelArtifact, Trial};
use crate::target::{Target, TargetKind};

/// Options every algorithm understands.
const COMMON_OPTIONS: &[&str] = &[
    "task",
    "validation_fraction",
    "seed",
    "time_budget",
    "max_trials",
];
/// Tree options (see [`TreeParams::set`]).
const TREE_OPTIONS: &[&str] = &[
    "num_trees",
    "num_iterations",
    "n_estimators",
    "learning_rate",
    "num_leaves",
    "max_depth",
    "min_data_in_leaf",
    "min_rows_in_leaf",
    "lambda_l2",
    "l2",
    "min_gain",
    "max_bin",
    "early_stopping_rounds",
    "feature_fraction",
    "colsample",
    "bagging_fraction",
    "subsample",
];
/// Linear-model and k-means options.
const OTHER_OPTIONS: &[&str] = &[
    "lambda",
    "max_iter",
    "k",
    "num_clusters",
    "sample_size",
    "labels",
];

/// What `CREATE MODEL` asked for.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// `PREDICT <column>`; `None` for clustering.
    pub target: Option<String>,
    /// `USING ...`.
    pub algorithm: Algorithm,
    /// `WITH (...)`, keys lower-cased, values as text.
    pub options: BTreeMap<String, String>,
}

impl TrainRequest {
    /// Bytes training holds besides the training rows and their feature matrix, about, for
    /// `rows` rows of `columns` columns: a network's parameters and batches (also when `auto`
    /// would try one); nothing for the other algorithms, whose working sets scale with the
    /// matrix. Options that do not parse count as their defaults (training rejects them).
    pub fn working_memory(&self, rows: usize, columns: usize) -> usize {
        let network = matches!(self.algorithm, Algorithm::Mlp)
            || (matches!(self.algorithm, Algorithm::Auto) && rows >= AUTO_MLP_ROWS);
        if !network {
            return 0;
        }
        let params = MlpParams::from_options(&self.options, 0).unwrap_or_default();
        crate::mlp::fit::working_memory(&params, rows, columns)
    }
}

/// Progress reports and cancellation.
pub struct TrainContext<'a> {
    /// Receives human-readable progress lines (sent as NOTICE messages).
    pub progress: &'a mut (dyn FnMut(String) + Send),
    /// Set when the client cancels.
    pub cancel: &'a AtomicBool,
}

impl std::fmt::Debug for TrainContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainContext").finish_non_exhaustive()
    }
}

impl TrainContext<'_> {
    /// Run `f` with a context that is never cancelled; returns its result and the progress
    /// lines it reported (for tests).
    #[cfg(test)]
    pub(crate) fn collecting<T>(f: impl FnOnce(&mut TrainContext) -> T) -> (T, Vec<String>) {
        let mut lines = vec![];
        let cancel = AtomicBool::new(false);
        let mut progress = |m: String| lines.push(m);
        let mut ctx = TrainContext {
            progress: &mut progress,
            cancel: &cancel,
        };
        let out = f(&mut ctx);
        (out, lines)
    }
}

/// A numeric `WITH (...)` option, when given.
pub(crate) fn num(options: &BTreeMap<String, String>, key: &str) -> ModelResult<Option<f64>> {
    options
        .get(key)
        .map(|v| {
            v.trim().parse::<f64>().map_err(|_| {
                ModelError::InvalidParameter(format!("option {key} must be a number, got '{v}'"))
            })
        })
        .transpose()
}

/// The position of the training query's column `name` (exact, then ignoring case); `role`
/// names it in the error (`the labels column "x" is not in the training query`).
pub(crate) fn column_position(names: &[String], name: &str, role: &str) -> ModelResult<usize> {
    names
        .iter()
        .position(|n| n == name)
        .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))
        .ok_or_else(|| {
            ModelError::UnknownColumn(format!(
                "the {role} column \"{name}\" is not in the training query (it has: {})",
                names.join(", ")
            ))
        })
}

/// `'60s'`, `'2m'`, `'1h'` or a number of seconds.
fn seconds(text: &str) -> ModelResult<f64> {
    let t = text.trim().to_ascii_lowercase();
    let (n, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t.as_str(), 1.0)
    };
    match n.trim().parse::<f64>() {
        Ok(v) if v > 0.0 => Ok(v * mult),
        _ => Err(ModelError::InvalidParameter(format!(
            "time_budget must be a positive duration such as '60s', got '{text}'"
        ))),
    }
}

fn check_options(options: &BTreeMap<String, String>) -> ModelResult<()> {
    for k in options.keys() {
        if !COMMON_OPTIONS.contains(&k.as_str())
            && !TREE_OPTIONS.contains(&k.as_str())
            && !OTHER_OPTIONS.contains(&k.as_str())
            && !crate::mlp::fit::OPTIONS.contains(&k.as_str())
        {
            let mut known: Vec<&str> = COMMON_OPTIONS
                .iter()
                .chain(TREE_OPTIONS)
                .chain(OTHER_OPTIONS)
                .chain(crate::mlp::fit::OPTIONS)
                .copied()
                .collect();
            known.sort_unstable();
            known.dedup();
            return Err(ModelError::InvalidParameter(format!(
                "unknown model option \"{k}\" (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn tree_params(
    defaults: TreeParams,
    options: &BTreeMap<String, String>,
) -> ModelResult<TreeParams> {
    let mut p = defaults;
    for key in TREE_OPTIONS.iter().chain(["seed"].iter()) {
        if let Some(v) = num(options, key)? {
            p.set(key, v)?;
        }
    }
    Ok(p)
}

fn parse_task(s: &str) -> ModelResult<Task> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "classification" | "classifier" | "binary" | "multiclass" => Task::Classification,
        "regression" | "regressor" => Task::Regression,
        "clustering" => Task::Clustering,
        other => {
            return Err(ModelError::InvalidParameter(format!(
                "unknown task \"{other}\" (use classification, regression or clustering)"
            )));
        }
    })
}

/// Row indices of a seeded, class-stratified split: (train, validation).
fn split(y: &[f32], classes: usize, fraction: f64, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups: Vec<Vec<u32>> = if classes >= 2 {
        let mut g = vec![vec![]; classes];
        for (i, &c) in y.iter().enumerate() {
            g[c as usize].push(i as u32);
        }
        g
    } else {
        vec![(0..y.len() as u32).collect()]
    };
    let (mut train, mut valid) = (vec![], vec![]);
    for mut g in groups {
        g.shuffle(&mut rng);
        let nv = (g.len() as f64 * fraction).round() as usize;
        valid.extend_from_slice(&g[..nv]);
        train.extend_from_slice(&g[nv..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    (train, valid)
}

struct Fitted {
    estimator: Estimator,
    metrics: Metrics,
    selection: (String, f64),
    /// The settings as the trials table shows them, where they say more than the overrides.
    params: Option<String>,
}

fn selection_metric(task: Task, classes: usize, m: &Metrics) -> (String, f64) {
    let pick = |k: &str| (k.to_string(), m.values.get(k).copied().unwrap_or(f64::NAN));
    match task {
        Task::Classification if classes == 2 => pick("auc"),
        Task::Classification => pick("log_loss"),
        _ => pick("rmse"),
    }
}

fn higher_is_better(metric: &str) -> bool {
    metric == "auc"
}

/// Metrics of outputs (`k` per row, as [`Estimator::outputs`] gives them) against `y`.
fn evaluate(task: Task, classes: usize, (out, k): (Vec<f32>, usize), y: &[f32]) -> Metrics {
    match task {
        Task::Classification => {
            let probs = if k == 1 {
                metrics::both_classes(&out)
            } else {
                out
            };
            let labels: Vec<usize> = y.iter().map(|&v| v as usize).collect();
            metrics::classification(&probs, classes, &labels)
        }
        _ => metrics::regression(&out, y),
    }
}

#[allow(clippy::too_many_arguments)]
fn fit_one(
    algorithm: Algorithm,
    task: Task,
    classes: usize,
    options: &BTreeMap<String, String>,
    overrides: &[(&str, f64)],
    data: &Data<'_>,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<Fitted> {
    let objective = match (task, classes) {
        (Task::Classification, 2) => Objective::Binary,
        (Task::Classification, _) => Objective::Multiclass,
        _ => Objective::Regression,
    };
    let valid = data.valid.as_ref().map(|(x, y)| (x, y.as_slice()));
    let cancel = ctx.cancel;
    let mut train_outputs = None;
    let mut params_text = None;
    let estimator = match algorithm {
        Algorithm::Gbdt | Algorithm::RandomForest => {
            let defaults = if algorithm == Algorithm::Gbdt {
                TreeParams::gbdt_defaults()
            } else {
                TreeParams::forest_defaults()
            };
            let mut params = tree_params(defaults, options)?;
            for (k, v) in overrides {
                params.set(k, *v)?;
            }
            let progress = &mut *ctx.progress;
            let mut last_report = Instant::now();
            let metric_name = match objective {
                Objective::Regression => "rmse",
                _ => "log_loss",
            };
            let mut hook = |iter: usize, metric: Option<f64>| -> ModelResult<()> {
                if cancel.load(Ordering::Relaxed) {
                    return Err(ModelError::Cancelled);
                }
                if iter == 0 || last_report.elapsed().as_secs_f64() >= 1.0 {
                    last_report = Instant::now();
                    progress(match metric {
                        Some(m) => format!(
                            "{}: iteration {}, validation {metric_name} {m:.5}",
                            algorithm.name(),
                            iter + 1
                        ),
                        None => format!("{}: tree {}", algorithm.name(), iter + 1),
                    });
                }
                Ok(())
            };
            if algorithm == Algorithm::Gbdt {
                let (e, raw) = train_boosted(
                    data.x,
                    data.derived,
                    data.y,
                    objective,
                    classes,
                    valid,
                    &params,
                    &mut hook,
                )?;
                // Without a validation split the metrics are the training set's, whose
                // scores boosting already holds.
                train_outputs = Some((e.link(raw), e.n_outputs));
                Estimator::Trees(e)
            } else {
                Estimator::Trees(train_forest(
                    data.x,
                    data.derived,
                    data.y,
                    objective,
                    classes,
                    &params,
                    &mut hook,
                )?)
            }
        }
        Algorithm::Linear | Algorithm::Logistic => {
            let lambda = num(options, "lambda")?.unwrap_or(1.0).max(0.0);
            let max_iter = num(options, "max_iter")?
                .unwrap_or(50.0)
                .clamp(1.0, 10_000.0) as usize;
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            let est = if task == Task::Classification {
                fit_logistic(data.x, data.derived, data.y, classes, lambda, max_iter)?
            } else {
                fit_ridge(data.x, data.derived, data.y, lambda)?
            };
            Estimator::Linear(est)
        }
        Algorithm::Mlp => {
            let seed = num(options, "seed")?.unwrap_or(42.0).max(0.0) as u64;
            let params = MlpParams::from_options(options, seed)?;
            let progress = &mut *ctx.progress;
            if let Some(why) = crate::mlp::device::fallback_reason(params.device) {
                progress(why);
            }
            let mut last_report = Instant::now();
            let monitored = if valid.is_some() {
                "validation"
            } else {
                "training"
            };
            let mut hook = |epoch: usize, loss: f64| -> ModelResult<()> {
                if epoch == 0 || last_report.elapsed().as_secs_f64() >= 1.0 {
                    last_report = Instant::now();
                    progress(format!(
                        "mlp: epoch {}, {monitored} loss {loss:.5}",
                        epoch + 1
                    ));
                }
                Ok(())
            };
            let rows = crate::mlp::fit::Rows {
                x: data.x,
                derived: data.derived,
                y: data.y,
                valid,
            };
            let model = crate::mlp::fit::fit(rows, objective, classes, &params, cancel, &mut hook)?;
            params_text = Some(format!("mlp {} epochs={}", params.describe(), model.epochs));
            Estimator::Mlp(model)
        }
        Algorithm::Kmeans
        | Algorithm::Auto
        | Algorithm::Forecast
        | Algorithm::IsolationForest
        | Algorithm::SeriesDetector
        | Algorithm::Onnx => {
            return Err(ModelError::InvalidParameter(format!(
                "{} cannot be fitted as a supervised candidate",
                algorithm.name()
            )));
        }
    };
    let metrics = match (&data.valid, train_outputs) {
        (Some((x, y)), _) => evaluate(task, classes, estimator.outputs(x)?, y),
        (None, Some(outputs)) => evaluate(task, classes, outputs, data.y),
        (None, None) => evaluate(task, classes, estimator.outputs(data.x)?, data.y),
    };
    let selection = selection_metric(task, classes, &metrics);
    Ok(Fitted {
        estimator,
        metrics,
        selection,
        params: params_text,
    })
}

/// Fewest training rows at which `auto` tries a perceptron: below that a network rarely beats
/// boosted trees on tabular data and its epochs are time the other candidates could use.
const AUTO_MLP_ROWS: usize = 10_000;

/// What `auto` tries, in order: LightGBM's defaults, the linear model, two more GBDT settings
/// and a random forest, a perceptron when there are at least [`AUTO_MLP_ROWS`] training rows,
/// then GBDT settings drawn at random (seeded) from a grid around LightGBM's usual search
/// space, until `max_trials` or the time budget.
fn auto_candidates(
    linear: Algorithm,
    max_trials: usize,
    seed: u64,
    train_rows: usize,
) -> Vec<(Algorithm, Vec<(&'static str, f64)>)> {
    use rand::{Rng, SeedableRng};
    let mut out: Vec<(Algorithm, Vec<(&'static str, f64)>)> = vec![
        (Algorithm::Gbdt, vec![]),
        (linear, vec![]),
        (
            Algorithm::Gbdt,
            vec![
                ("learning_rate", 0.05),
                ("num_trees", 1000.0),
                ("num_leaves", 15.0),
                ("feature_fraction", 0.8),
                ("early_stopping_rounds", 50.0),
            ],
        ),
        (
            Algorithm::Gbdt,
            vec![
                ("learning_rate", 0.05),
                ("num_trees", 1000.0),
                ("num_leaves", 63.0),
                ("min_data_in_leaf", 40.0),
                ("feature_fraction", 0.7),
                ("early_stopping_rounds", 50.0),
            ],
        ),
        (Algorithm::RandomForest, vec![]),
    ];
    if train_rows >= AUTO_MLP_ROWS {
        out.push((Algorithm::Mlp, vec![]));
    }
    out.truncate(max_trials);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_a070);
    let mut seen = std::collections::HashSet::new();
    let mut attempts = 0;
    while out.len() < max_trials && attempts < 100 * max_trials {
        attempts += 1;
        let mut pick = |xs: &[f64]| xs[rng.random_range(0..xs.len())];
        let overrides = vec![
            ("num_leaves", pick(&[7.0, 15.0, 31.0, 63.0, 127.0])),
            ("learning_rate", pick(&[0.02, 0.05, 0.1])),
            ("min_data_in_leaf", pick(&[5.0, 10.0, 20.0, 50.0, 100.0])),
            ("feature_fraction", pick(&[0.5, 0.7, 0.85, 1.0])),
            ("bagging_fraction", pick(&[0.7, 0.85, 1.0])),
            ("lambda_l2", pick(&[0.0, 0.1, 1.0, 10.0])),
            ("num_trees", 2000.0),
            ("early_stopping_rounds", 50.0),
        ];
        if seen.insert(describe_params(Algorithm::Gbdt, &overrides)) {
            out.push((Algorithm::Gbdt, overrides));
        }
    }
    out
}

struct Data<'a> {
    x: &'a Matrix,
    derived: &'a [crate::features::DerivedColumn],
    y: &'a [f32],
    valid: Option<(Matrix, Vec<f32>)>,
}

fn importance(est: &Estimator, features: &FeatureSet, x: &Matrix) -> Vec<Importance> {
    let derived = features.derived();
    let mut per_feature = vec![0.0; features.features.len()];
    match est {
        Estimator::Trees(e) => {
            for (c, g) in e.gain_per_column(derived.len()).iter().enumerate() {
                per_feature[derived[c].feature] += g;
            }
        }
        Estimator::Linear(l) => {
            let n = x.n_rows.max(1);
            let contrib = l.contributions(x, l.weights.len() - 1);
            let w = derived.len() + 1;
            for r in 0..x.n_rows {
                for (c, d) in derived.iter().enumerate() {
                    per_feature[d.feature] += contrib[r * w + c].abs() / n as f64;
                }
            }
        }
        Estimator::Mlp(m) => {
            // Mean |integrated gradient| over the first rows (explaining each row's
            // predicted class).
            let sample = x.take(&(0..x.n_rows.min(200) as u32).collect::<Vec<_>>());
            let explained: Vec<usize> = match m.predict(&sample) {
                Ok((p, k)) if k > 1 => p.chunks(k).map(metrics::argmax).collect(),
                _ => vec![0; sample.n_rows],
            };
            if let Ok(c) = m.contributions(&sample, &explained) {
                let w = derived.len() + 1;
                for row in c.chunks(w) {
                    for (d, v) in derived.iter().zip(row) {
                        per_feature[d.feature] += v.abs();
                    }
                }
            }
        }
        Estimator::Kmeans(_)
        | Estimator::Forecast(_)
        | Estimator::IsolationForest(_)
        | Estimator::SeriesDetector(_)
        | Estimator::Onnx(_) => {}
    }
    let total: f64 = per_feature.iter().sum();
    let mut out: Vec<Importance> = features
        .features
        .iter()
        .zip(per_feature)
        .map(|(f, v)| Importance {
            feature: f.name.clone(),
            importance: if total > 0.0 { v / total } else { 0.0 },
        })
        .collect();
    out.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    out
}

fn describe_params(algorithm: Algorithm, overrides: &[(&str, f64)]) -> String {
    let mut s = algorithm.name().to_string();
    for (k, v) in overrides {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// Train a model from the training query's columns (`names[i]` ↔ `columns[i]`).
pub fn train(
    names: &[String],
    columns: &[ArrayRef],
    req: &TrainRequest,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<ModelArtifact> {
    train_with_holdout(names, columns, req, ctx).map(|(artifact, _)| artifact)
}

/// [`train`], also returning which rows of `columns` were held out for validation (the rows
/// the stored metrics were measured on; empty when none were, as for clustering), so a
/// validation gate can score another version on the same rows.
pub fn train_with_holdout(
    names: &[String],
    columns: &[ArrayRef],
    req: &TrainRequest,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<(ModelArtifact, Vec<u32>)> {
    let started = Instant::now();
    check_options(&req.options)?;
    let seed = num(&req.options, "seed")?.unwrap_or(42.0).max(0.0) as u64;
    let n_total = columns.first().map(|c| c.len()).unwrap_or(0);
    if n_total == 0 {
        return Err(ModelError::BadTrainingData(
            "the training query returned no rows".into(),
        ));
    }
    if req.algorithm == Algorithm::IsolationForest {
        if let Some(t) = &req.target {
            return Err(ModelError::InvalidInput(format!(
                "anomaly detection takes no PREDICT target (got \"{t}\")"
            )));
        }
        return train_isolation_forest(names, columns, req, seed, started, ctx)
            .map(|a| (a, vec![]));
    }
    if req.options.contains_key("labels") {
        return Err(ModelError::InvalidParameter(
            "labels names the column that marks anomalies in CREATE MODEL ... DETECT ANOMALIES; \
             a PREDICT model learns from its target"
                .into(),
        ));
    }
    let task_override = req.options.get("task").map(|t| parse_task(t)).transpose()?;
    let wants_clusters =
        req.algorithm == Algorithm::Kmeans || task_override == Some(Task::Clustering);
    if wants_clusters {
        if let Some(t) = &req.target {
            return Err(ModelError::InvalidInput(format!(
                "clustering takes no PREDICT target (got \"{t}\")"
            )));
        }
        return train_clusters(names, columns, req, seed, started, ctx).map(|a| (a, vec![]));
    }
    let Some(target_name) = &req.target else {
        return Err(ModelError::InvalidInput(
            "CREATE MODEL needs PREDICT <target column> (or USING kmeans for clustering)".into(),
        ));
    };
    let Some(t_idx) = names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(target_name))
    else {
        return Err(ModelError::UnknownColumn(format!(
            "target column \"{target_name}\" is not among the training query's columns ({})",
            names.join(", ")
        )));
    };
    let (target, task, y_opt) = Target::fit(&names[t_idx], &columns[t_idx], task_override)?;
    if task == Task::Classification && req.algorithm == Algorithm::Linear {
        return Err(ModelError::InvalidParameter(
            "USING linear fits a regression; use logistic for a classification target".into(),
        ));
    }
    if task == Task::Regression && req.algorithm == Algorithm::Logistic {
        return Err(ModelError::InvalidParameter(
            "USING logistic needs a classification target; use linear for a numeric one".into(),
        ));
    }
    let keep: Vec<u32> = y_opt
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|_| i as u32))
        .collect();
    if keep.len() < n_total {
        (ctx.progress)(format!(
            "{} row(s) with a NULL target were left out",
            n_total - keep.len()
        ));
    }
    let y: Vec<f32> = y_opt.iter().flatten().copied().collect();
    let feature_names: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != t_idx)
        .map(|(_, n)| n.clone())
        .collect();
    if feature_names.is_empty() {
        return Err(ModelError::InvalidInput(
            "the training query has no feature columns besides the target".into(),
        ));
    }
    let keep_arr = UInt32Array::from(keep.clone());
    let feature_cols: Vec<ArrayRef> = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != t_idx)
        .map(|(_, c)| {
            if keep.len() == n_total {
                Ok(c.clone())
            } else {
                take(c.as_ref(), &keep_arr, None)
            }
        })
        .collect::<Result<_, _>>()?;
    let features = FeatureSet::fit(&feature_names, &feature_cols)?;
    let x_all = features.encode(&feature_cols)?;
    let derived = features.derived();
    let classes = target.n_classes();
    (ctx.progress)(format!(
        "read {} rows, {} feature(s); task {}{}",
        y.len(),
        features.features.len(),
        match task {
            Task::Classification => "classification",
            _ => "regression",
        },
        if classes > 0 {
            format!(" ({classes} classes)")
        } else {
            String::new()
        }
    ));
    let fraction = num(&req.options, "validation_fraction")?.unwrap_or(0.2);
    if !(0.0..0.9).contains(&fraction) {
        return Err(ModelError::InvalidParameter(format!(
            "validation_fraction must be in [0, 0.9), got {fraction}"
        )));
    }
    let (train_idx, valid_idx) = if fraction > 0.0 {
        split(&y, classes, fraction, seed)
    } else {
        ((0..y.len() as u32).collect(), vec![])
    };
    if train_idx.is_empty() {
        return Err(ModelError::BadTrainingData(
            "no rows left for training after the validation split".into(),
        ));
    }
    if classes >= 2 {
        let mut seen = vec![false; classes];
        for &i in &train_idx {
            seen[y[i as usize] as usize] = true;
        }
        if seen.iter().filter(|&&s| s).count() < 2 {
            return Err(ModelError::BadTrainingData(
                "the training split holds a single class; add rows or lower \
                 validation_fraction"
                    .into(),
            ));
        }
    }
    let (x, ty, valid) = if valid_idx.is_empty() {
        (x_all, y.clone(), None)
    } else {
        let vx = x_all.take(&valid_idx);
        let vy: Vec<f32> = valid_idx.iter().map(|&i| y[i as usize]).collect();
        let tx = x_all.take(&train_idx);
        let ty: Vec<f32> = train_idx.iter().map(|&i| y[i as usize]).collect();
        (tx, ty, Some((vx, vy)))
    };
    let data = Data {
        x: &x,
        derived: &derived,
        y: &ty,
        valid,
    };
    let budget = req
        .options
        .get("time_budget")
        .map(|t| seconds(t))
        .transpose()?
        .unwrap_or(60.0);
    let linear = if task == Task::Classification {
        Algorithm::Logistic
    } else {
        Algorithm::Linear
    };
    let candidates: Vec<(Algorithm, Vec<(&str, f64)>)> = match req.algorithm {
        Algorithm::Auto => {
            let max_trials = num(&req.options, "max_trials")?.unwrap_or(10.0);
            if !((1.0..=1000.0).contains(&max_trials) && max_trials.fract() == 0.0) {
                return Err(ModelError::InvalidParameter(format!(
                    "max_trials must be an integer in [1, 1000], got {max_trials}"
                )));
            }
            auto_candidates(linear, max_trials as usize, seed, x.n_rows)
        }
        a => vec![(a, vec![])],
    };
    let mut trials: Vec<Trial> = vec![];
    let mut best: Option<(usize, Fitted)> = None;
    for (i, (algorithm, overrides)) in candidates.iter().enumerate() {
        if i > 0 && started.elapsed().as_secs_f64() > budget {
            (ctx.progress)(format!(
                "time budget of {budget:.0}s spent; {} candidate(s) not tried",
                candidates.len() - i
            ));
            break;
        }
        let t0 = Instant::now();
        let fitted = fit_one(
            *algorithm,
            task,
            classes,
            &req.options,
            overrides,
            &data,
            ctx,
        )?;
        let (metric, value) = fitted.selection.clone();
        let params = fitted
            .params
            .clone()
            .unwrap_or_else(|| describe_params(*algorithm, overrides));
        (ctx.progress)(format!(
            "{params}: {metric} {value:.5} in {:.1}s",
            t0.elapsed().as_secs_f64()
        ));
        trials.push(Trial {
            algorithm: *algorithm,
            params,
            metric: metric.clone(),
            value,
            seconds: t0.elapsed().as_secs_f64(),
            chosen: false,
        });
        let better = match &best {
            None => true,
            Some((_, b)) => {
                let bv = b.selection.1;
                if higher_is_better(&metric) {
                    value > bv
                } else {
                    value < bv
                }
            }
        };
        if better {
            best = Some((i, fitted));
        }
    }
    let Some((chosen, fitted)) = best else {
        return Err(ModelError::BadTrainingData(
            "no candidate could be fitted".into(),
        ));
    };
    if let Some(t) = trials.get_mut(chosen) {
        t.chosen = true;
    }
    let algorithm = candidates[chosen].0;
    let importance = importance(&fitted.estimator, &features, &x);
    let mut metrics = fitted.metrics;
    let mut calibration = None;
    // Platt scaling of binary probabilities, kept only where it lowers the validation log
    // loss (it is fitted on that same split: two parameters, so the optimism is small).
    // Forests average probabilities, so their contributions are not in log-odds space and a
    // calibration could not be carried into them: they are left uncalibrated.
    let log_odds_model = !matches!(
        &fitted.estimator,
        Estimator::Trees(e) if e.combine == crate::gbdt::Combine::Mean
    );
    if classes == 2
        && log_odds_model
        && let Some((vx, vy)) = &data.valid
    {
        let (raw, _) = fitted.estimator.outputs(vx)?;
        if let Some(platt) = crate::model::Platt::fit(&raw, vy) {
            let calibrated: Vec<f32> = raw.iter().map(|&p| platt.apply(p)).collect();
            let labels: Vec<usize> = vy.iter().map(|&v| v as usize).collect();
            let after = metrics::classification(&metrics::both_classes(&calibrated), 2, &labels);
            let before = metrics
                .values
                .get("log_loss")
                .copied()
                .unwrap_or(f64::INFINITY);
            let now = after
                .values
                .get("log_loss")
                .copied()
                .unwrap_or(f64::INFINITY);
            if now < before - 1e-4 && platt.a > 0.0 {
                (ctx.progress)(format!(
                    "Platt calibration: validation log_loss {before:.5} -> {now:.5}"
                ));
                metrics = after;
                calibration = Some(platt);
            }
        }
    }
    let held_out = valid_idx.iter().map(|&i| keep[i as usize]).collect();
    let mut artifact = ModelArtifact {
        format_version: FORMAT_VERSION,
        task,
        algorithm,
        features,
        target: Some(target),
        estimator: fitted.estimator,
        metrics,
        metrics_on_validation: data.valid.is_some(),
        importance,
        trials,
        options: req.options.clone(),
        train_rows: train_idx.len(),
        validation_rows: valid_idx.len(),
        train_seconds: started.elapsed().as_secs_f64(),
        calibration,
        profile: None,
    };
    // What drift is measured against: the features over every training row, and the
    // prediction (one number per row: a value or P(second class)) over the training split.
    let (predicted, k) = artifact.outputs(&x)?;
    artifact.profile = Some(crate::drift::Profile::of(
        &feature_names,
        &feature_cols,
        (k == 1).then_some(predicted.as_slice()),
    ));
    Ok((artifact, held_out))
}

/// `CREATE MODEL ... DETECT ANOMALIES`: an isolation forest over every column.
fn train_isolation_forest(
    names: &[String],
    columns: &[ArrayRef],
    req: &TrainRequest,
    seed: u64,
    started: Instant,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<ModelArtifact> {
    let num_trees = num(&req.options, "num_trees")?.unwrap_or(100.0);
    if !(1.0..=10_000.0).contains(&num_trees) || num_trees.fract() != 0.0 {
        return Err(ModelError::InvalidParameter(format!(
            "num_trees must be an integer between 1 and 10000, got {num_trees}"
        )));
    }
    let sample_size = num(&req.options, "sample_size")?.unwrap_or(256.0);
    if !(2.0..=1_000_000.0).contains(&sample_size) || sample_size.fract() != 0.0 {
        return Err(ModelError::InvalidParameter(format!(
            "sample_size must be an integer between 2 and 1000000, got {sample_size}"
        )));
    }
    // `labels = 'col'`: that column marks anomalies; it is not a feature.
    let (names, columns, labels) = match req.options.get("labels") {
        None => (names.to_vec(), columns.to_vec(), None),
        Some(label) => {
            let i = column_position(names, label, "labels")?;
            let labels = crate::labelled::read_labels(&columns[i], label)?;
            let mut names = names.to_vec();
            let mut columns = columns.to_vec();
            names.remove(i);
            columns.remove(i);
            (names, columns, Some((label.clone(), labels)))
        }
    };
    if names.is_empty() {
        return Err(ModelError::BadTrainingData(
            "the training query has no feature columns besides the labels".into(),
        ));
    }
    let features = FeatureSet::fit(&names, &columns)?;
    let x = features.encode(&columns)?;
    (ctx.progress)(format!(
        "read {} rows, {} feature(s); isolation forest with {num_trees} trees of {} rows",
        x.n_rows,
        features.features.len(),
        (sample_size as usize).min(x.n_rows)
    ));
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err(ModelError::Cancelled);
    }
    let mut forest = crate::isolation::fit(
        &x,
        crate::isolation::IsolationSettings {
            num_trees: num_trees as usize,
            sample_size: sample_size as usize,
            seed,
        },
    )?;
    let mut scores = forest.score(&x);
    let mut metrics = Metrics::default();
    if let Some((label, labels)) = &labels {
        let t = crate::labelled::best_threshold(&scores, labels, label)?;
        (ctx.progress)(format!(
            "labels: {} labelled row(s), {} of them anomalies; score threshold {:.4}: F1 {:.3} \
             (precision {:.3}, recall {:.3}) on them",
            t.labelled, t.anomalies, t.threshold, t.f1, t.precision, t.recall
        ));
        forest.threshold = Some(t.threshold);
        for (k, v) in [
            ("threshold", t.threshold as f64),
            ("f1", t.f1),
            ("precision", t.precision),
            ("recall", t.recall),
        ] {
            metrics.values.insert(k.into(), v);
        }
    }
    scores.sort_by(f32::total_cmp);
    let q = |p: f64| scores[((scores.len() - 1) as f64 * p).round() as usize] as f64;
    for (k, p) in [("score_p50", 0.5), ("score_p99", 0.99), ("score_max", 1.0)] {
        metrics.values.insert(k.into(), q(p));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ModelArtifact {
        format_version: FORMAT_VERSION,
        task: Task::AnomalyDetection,
        algorithm: Algorithm::IsolationForest,
        features,
        target: None,
        estimator: Estimator::IsolationForest(forest),
        metrics,
        metrics_on_validation: false,
        importance: vec![],
        trials: vec![Trial {
            algorithm: Algorithm::IsolationForest,
            params: format!("num_trees={num_trees} sample_size={sample_size}"),
            metric: "score_p99".into(),
            value: q(0.99),
            seconds,
            chosen: true,
        }],
        options: req.options.clone(),
        train_rows: x.n_rows,
        validation_rows: 0,
        train_seconds: seconds,
        calibration: None,
        profile: None,
    })
}

fn train_clusters(
    names: &[String],
    columns: &[ArrayRef],
    req: &TrainRequest,
    seed: u64,
    started: Instant,
    ctx: &mut TrainContext<'_>,
) -> ModelResult<ModelArtifact> {
    let k = num(&req.options, "k")?
        .or(num(&req.options, "num_clusters")?)
        .unwrap_or(3.0);
    if !(2.0..=1000.0).contains(&k) || k.fract() != 0.0 {
        return Err(ModelError::InvalidParameter(format!(
            "k must be an integer between 2 and 1000, got {k}"
        )));
    }
    let k = k as usize;
    let max_iter = num(&req.options, "max_iter")?
        .unwrap_or(100.0)
        .clamp(1.0, 10_000.0) as usize;
    let features = FeatureSet::fit(names, columns)?;
    let x = features.encode(columns)?;
    let derived = features.derived();
    (ctx.progress)(format!(
        "read {} rows, {} feature(s); k-means with k = {k}",
        x.n_rows,
        features.features.len()
    ));
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err(ModelError::Cancelled);
    }
    let model = fit_kmeans(&x, &derived, k, max_iter, seed)?;
    let assign = model.assign(&x);
    let mut metrics = Metrics::default();
    metrics
        .values
        .insert("inertia".into(), assign.iter().map(|a| a.1).sum());
    metrics
        .values
        .insert("silhouette".into(), silhouette(&model, &x, &assign, 2000));
    let seconds = started.elapsed().as_secs_f64();
    Ok(ModelArtifact {
        format_version: FORMAT_VERSION,
        task: Task::Clustering,
        algorithm: Algorithm::Kmeans,
        features,
        target: None,
        estimator: Estimator::Kmeans(model),
        metrics,
        metrics_on_validation: false,
        importance: vec![],
        trials: vec![Trial {
            algorithm: Algorithm::Kmeans,
            params: format!("kmeans k={k}"),
            metric: "inertia".into(),
            value: assign.iter().map(|a| a.1).sum(),
            seconds,
            chosen: true,
        }],
        options: req.options.clone(),
        train_rows: x.n_rows,
        validation_rows: 0,
        train_seconds: seconds,
        calibration: None,
        profile: None,
    })
}

/// Labels of a classifier target (for callers that print classes).
pub fn class_labels(t: &Target) -> Vec<String> {
    match &t.kind {
        TargetKind::Classes { labels } => labels.clone(),
        TargetKind::Real => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tries_a_perceptron_only_on_enough_rows() {
        let algorithms = |rows| -> Vec<Algorithm> {
            auto_candidates(Algorithm::Logistic, 10, 1, rows)
                .into_iter()
                .map(|(a, _)| a)
                .collect()
        };
        assert!(!algorithms(AUTO_MLP_ROWS - 1).contains(&Algorithm::Mlp));
        let many = algorithms(AUTO_MLP_ROWS);
        assert_eq!(many.len(), 10);
        assert_eq!(many[5], Algorithm::Mlp);
        assert_eq!(many.iter().filter(|a| **a == Algorithm::Mlp).count(), 1);
    }
}
