//! Quality metrics stored with each model version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Named metric values (and a confusion matrix for classifiers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// `auc`, `log_loss`, `accuracy`, `precision`, `recall`, `f1`; `rmse`, `mae`, `r2`, `mape`;
    /// `inertia`, `silhouette`.
    pub values: BTreeMap<String, f64>,
    /// Rows = actual class, columns = predicted class (classifiers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<u64>>>,
}

/// ROC AUC of scores against 0/1 labels (ties averaged). `None` with one class only.
pub fn auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    // Sum of ranks of positives, average rank within ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// `[P(class 0), P(class 1)]` per row from P(class 1) per row.
pub fn both_classes(p1: &[f32]) -> Vec<f32> {
    p1.iter().flat_map(|&p| [1.0 - p, p]).collect()
}

/// Metrics of a classifier: `probs` is row-major `n × k` (`k` = classes; for binary models
/// pass both columns), `y` the true class codes.
pub fn classification(probs: &[f32], k: usize, y: &[usize]) -> Metrics {
    let n = y.len();
    let mut m = Metrics::default();
    if n == 0 || k < 2 {
        return m;
    }
    let mut confusion = vec![vec![0u64; k]; k];
    let mut log_loss = 0.0;
    let mut correct = 0usize;
    for (i, &t) in y.iter().enumerate() {
        let row = &probs[i * k..(i + 1) * k];
        let pred = argmax(row);
        confusion[t][pred] += 1;
        correct += usize::from(pred == t);
        log_loss -= (row[t] as f64).clamp(1e-15, 1.0).ln();
    }
    let v = &mut m.values;
    v.insert("accuracy".into(), correct as f64 / n as f64);
    v.insert("log_loss".into(), log_loss / n as f64);
    let prf = |c: usize| {
        let tp = confusion[c][c] as f64;
        let predicted: f64 = (0..k).map(|r| confusion[r][c] as f64).sum();
        let actual: f64 = confusion[c].iter().map(|&x| x as f64).sum();
        let p = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let r = if actual > 0.0 { tp / actual } else { 0.0 };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        (p, r, f)
    };
    let aucs: Vec<f64> = (0..k)
        .filter_map(|c| {
            let s: Vec<f32> = (0..n).map(|i| probs[i * k + c]).collect();
            let pos: Vec<bool> = y.iter().map(|&t| t == c).collect();
            auc(&s, &pos)
        })
        .collect();
    if k == 2 {
        let (p, r, f) = prf(1);
        v.insert("precision".into(), p);
        v.insert("recall".into(), r);
        v.insert("f1".into(), f);
        if let Some(a) = aucs.get(1).or(aucs.first()) {
            v.insert("auc".into(), *a);
        }
    } else {
        let all: Vec<(f64, f64, f64)> = (0..k).map(prf).collect();
        let mean = |f: fn(&(f64, f64, f64)) -> f64| all.iter().map(f).sum::<f64>() / k as f64;
        v.insert("precision".into(), mean(|t| t.0));
        v.insert("recall".into(), mean(|t| t.1));
        v.insert("f1".into(), mean(|t| t.2));
        if !aucs.is_empty() {
            v.insert("auc".into(), aucs.iter().sum::<f64>() / aucs.len() as f64);
        }
    }
    m.confusion = Some(confusion);
    m
}

/// Metrics of a supervised model's outputs, `k` per row (a binary classifier's P(second
/// class), a multiclass one's probabilities, a regression's values), against the true values
/// (class codes for a classifier of `classes` classes, `None` for a regression).
pub fn of_outputs(classes: Option<usize>, outputs: &[f32], k: usize, truth: &[f32]) -> Metrics {
    match classes {
        Some(classes) => {
            let probs = if k == 1 {
                both_classes(outputs)
            } else {
                outputs.to_vec()
            };
            let y: Vec<usize> = truth.iter().map(|&t| t as usize).collect();
            classification(&probs, classes, &y)
        }
        None => regression(outputs, truth),
    }
}

/// Metrics of a regressor.
pub fn regression(pred: &[f32], y: &[f32]) -> Metrics {
    let n = y.len();
    let mut m = Metrics::default();
    if n == 0 {
        return m;
    }
    let nf = n as f64;
    let mean = y.iter().map(|&v| v as f64).sum::<f64>() / nf;
    let (mut se, mut ae, mut tot, mut ape, mut n_ape) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for (&p, &t) in pred.iter().zip(y) {
        let (p, t) = (p as f64, t as f64);
        se += (p - t).powi(2);
        ae += (p - t).abs();
        tot += (t - mean).powi(2);
        if t != 0.0 {
            ape += ((p - t) / t).abs();
            n_ape += 1;
        }
    }
    let v = &mut m.values;
    v.insert("rmse".into(), (se / nf).sqrt());
    v.insert("mae".into(), ae / nf);
    v.insert("r2".into(), if tot > 0.0 { 1.0 - se / tot } else { 0.0 });
    if n_ape > 0 {
        v.insert("mape".into(), 100.0 * ape / n_ape as f64);
    }
    m
}

/// The logistic function.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Turn one row of scores into probabilities, in place (shifted by the maximum for stability).
pub(crate) fn softmax_in_place(v: &mut [f32]) {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in v.iter_mut() {
        *x /= s;
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        assert!((auc(&s, &y).expect("two classes") - 0.75).abs() < 1e-12);
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auc(&[0.5], &[true]), None);
    }

    #[test]
    fn classification_metrics() {
        // probs for class 0/1; truth 1,0,1,1
        let probs = [0.2, 0.8, 0.7, 0.3, 0.6, 0.4, 0.1, 0.9];
        let m = classification(&probs, 2, &[1, 0, 1, 1]);
        assert_eq!(m.values["accuracy"], 0.75);
        assert_eq!(m.values["precision"], 1.0);
        assert!((m.values["recall"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.confusion, Some(vec![vec![1, 0], vec![1, 2]]));
    }

    #[test]
    fn regression_metrics() {
        let m = regression(&[1.0, 2.0, 4.0], &[1.0, 2.0, 3.0]);
        assert!((m.values["rmse"] - (1.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert!((m.values["r2"] - 0.5).abs() < 1e-9);
    }
}
