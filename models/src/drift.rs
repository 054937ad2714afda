//! Drift: how far new rows have moved from the rows a model was trained on.
//!
//! Training stores a [`Profile`] with the version: per feature, the training deciles (numeric
//! columns) or category shares (the 100 most frequent categories of a text column), the share
//! of NULLs, and the same for the model's prediction. [`Tally`] counts new rows into the same
//! bins, and [`Tally::report`] gives per column the population stability index
//! `PSI = Σ (actual − expected) · ln(actual / expected)` over the bins (NULLs and unseen
//! categories are bins of their own; shares are floored at 0.0001 so an empty bin stays
//! finite), the NULL share then and now, and the share of categories training never saw.
//! By the usual reading a PSI under 0.1 is stable, 0.1–0.25 a moderate shift and over 0.25 a
//! large one.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

use crate::error::ModelResult;

/// Quantile bins of a numeric column.
const BINS: usize = 10;
/// Categories kept per text column (the rest count as unseen).
const MAX_CATEGORIES: usize = 100;
/// Smallest share a bin is taken to have.
const FLOOR: f64 = 1e-4;
/// The name of the prediction's profile.
pub const PREDICTION: &str = "prediction";

/// The training distribution of a model's features and prediction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// One per feature, in feature order, then the prediction's when there is one.
    pub columns: Vec<ColumnProfile>,
}

/// The training distribution of one column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Share of NULLs.
    pub null_share: f64,
    /// How values fall into bins.
    pub bins: Bins,
}

/// The bins of a column and the share of non-NULL training values in each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Bins {
    /// Numbers (and dates, as numbers): bin `i` holds values up to `edges[i]`, the last bin
    /// the rest.
    Numeric {
        /// Upper edges of all bins but the last.
        edges: Vec<f64>,
        /// Share per bin (`edges.len() + 1` of them).
        shares: Vec<f64>,
    },
    /// Text: the share of each kept category.
    Categories {
        /// Share per category.
        shares: BTreeMap<String, f64>,
    },
}

/// A column's values as numbers, or `None` when it is not numeric (nor a date / time).
fn numbers(array: &ArrayRef) -> Option<Vec<Option<f64>>> {
    let dt = array.data_type();
    let as_f64 = if dt.is_numeric() {
        cast(array, &DataType::Float64).ok()?
    } else if dt.is_temporal() {
        cast(&cast(array, &DataType::Int64).ok()?, &DataType::Float64).ok()?
    } else {
        return None;
    };
    Some(as_f64.as_primitive::<Float64Type>().iter().collect())
}

/// A column's values as text.
fn texts(array: &ArrayRef) -> Vec<Option<String>> {
    match cast(array, &DataType::Utf8) {
        Ok(t) => t
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        Err(_) => vec![None; array.len()],
    }
}

impl ColumnProfile {
    fn of_numbers(name: &str, values: &[Option<f64>]) -> ColumnProfile {
        let mut present: Vec<f64> = values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        present.sort_by(f64::total_cmp);
        let n = values.len().max(1) as f64;
        let mut edges: Vec<f64> = (1..BINS)
            .filter_map(|i| present.get(i * present.len() / BINS).copied())
            .collect();
        edges.dedup();
        let mut counts = vec![0.0; edges.len() + 1];
        for v in &present {
            counts[edges.partition_point(|e| e < v)] += 1.0;
        }
        let total = present.len().max(1) as f64;
        ColumnProfile {
            name: name.to_string(),
            null_share: (values.len() - present.len()) as f64 / n,
            bins: Bins::Numeric {
                edges,
                shares: counts.iter().map(|c| c / total).collect(),
            },
        }
    }

    fn of_texts(name: &str, values: &[Option<String>]) -> ColumnProfile {
        let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
        for v in values.iter().flatten() {
            *counts.entry(v.as_str()).or_default() += 1.0;
        }
        let present: f64 = counts.values().sum();
        let mut ranked: Vec<(&str, f64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        ranked.truncate(MAX_CATEGORIES);
        ColumnProfile {
            name: name.to_string(),
            null_share: (values.len() as f64 - present) / values.len().max(1) as f64,
            bins: Bins::Categories {
                shares: ranked
                    .into_iter()
                    .map(|(k, c)| (k.to_string(), c / present.max(1.0)))
                    .collect(),
            },
        }
    }

    fn of_array(name: &str, array: &ArrayRef) -> ColumnProfile {
        match numbers(array) {
            Some(v) => ColumnProfile::of_numbers(name, &v),
            None => ColumnProfile::of_texts(name, &texts(array)),
        }
    }

    /// Bins of this column: value bins, then NULL, then unseen.
    fn width(&self) -> usize {
        match &self.bins {
            Bins::Numeric { shares, .. } => shares.len() + 2,
            Bins::Categories { shares } => shares.len() + 2,
        }
    }

    /// Count `array`'s values into `counts` (of [`Self::width`]).
    fn count(&self, array: &ArrayRef, counts: &mut [f64]) {
        let null = self.width() - 2;
        let unseen = self.width() - 1;
        match &self.bins {
            Bins::Numeric { edges, .. } => match numbers(array) {
                Some(values) => {
                    for v in values {
                        match v {
                            Some(v) if v.is_finite() => {
                                counts[edges.partition_point(|e| *e < v)] += 1.0
                            }
                            _ => counts[null] += 1.0,
                        }
                    }
                }
                None => counts[unseen] += array.len() as f64,
            },
            Bins::Categories { shares } => {
                for v in texts(array) {
                    match v {
                        Some(v) => match shares.keys().position(|k| *k == v) {
                            Some(i) => counts[i] += 1.0,
                            None => counts[unseen] += 1.0,
                        },
                        None => counts[null] += 1.0,
                    }
                }
            }
        }
    }

    /// Expected shares over [`Self::width`] bins.
    fn expected(&self) -> Vec<f64> {
        let present = 1.0 - self.null_share;
        let mut e: Vec<f64> = match &self.bins {
            Bins::Numeric { shares, .. } => shares.iter().map(|s| s * present).collect(),
            Bins::Categories { shares } => shares.values().map(|s| s * present).collect(),
        };
        e.push(self.null_share);
        e.push(0.0);
        e
    }
}

impl Profile {
    /// The profile of training columns (`names[i]` ↔ `columns[i]`) and, when given, the
    /// model's prediction on the same rows.
    pub fn of(names: &[String], columns: &[ArrayRef], prediction: Option<&[f32]>) -> Profile {
        let mut out: Vec<ColumnProfile> = names
            .iter()
            .zip(columns)
            .map(|(n, c)| ColumnProfile::of_array(n, c))
            .collect();
        if let Some(p) = prediction {
            let values: Vec<Option<f64>> = p.iter().map(|v| Some(*v as f64)).collect();
            out.push(ColumnProfile::of_numbers(PREDICTION, &values));
        }
        Profile { columns: out }
    }

    /// Bins over all columns (the length of a [`Tally`]'s counts).
    pub fn width(&self) -> usize {
        self.columns.iter().map(ColumnProfile::width).sum()
    }
}

/// New rows counted into a profile's bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// Counts over every column's bins, column after column.
    pub counts: Vec<f64>,
    /// Rows counted.
    pub rows: f64,
}

/// One column's drift.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Column (or [`PREDICTION`]).
    pub column: String,
    /// Population stability index against training.
    pub psi: f64,
    /// NULL share in training.
    pub training_null_share: f64,
    /// NULL share now.
    pub null_share: f64,
    /// Share of values training never saw (text categories beyond the kept ones).
    pub unseen_share: f64,
}

impl Tally {
    /// An empty tally for `profile`.
    pub fn new(profile: &Profile) -> Tally {
        Tally {
            counts: vec![0.0; profile.width()],
            rows: 0.0,
        }
    }

    /// Count rows: `columns[i]` is the profile's column `i` (its prediction last, if it has
    /// one and `columns` holds it).
    pub fn add(&mut self, profile: &Profile, columns: &[ArrayRef]) -> ModelResult<()> {
        let mut at = 0;
        for (p, c) in profile.columns.iter().zip(columns) {
            let w = p.width();
            p.count(c, &mut self.counts[at..at + w]);
            at += w;
        }
        self.rows += columns.first().map(|c| c.len()).unwrap_or(0) as f64;
        Ok(())
    }

    /// Add another tally of the same profile (a partial aggregate).
    pub fn merge(&mut self, other: &Tally) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.rows += other.rows;
    }

    /// Drift per column (columns with no rows counted are left out).
    pub fn report(&self, profile: &Profile) -> Vec<Drift> {
        let mut out = vec![];
        let mut at = 0;
        for p in &profile.columns {
            let w = p.width();
            let counts = &self.counts[at..at + w];
            at += w;
            let n: f64 = counts.iter().sum();
            if n == 0.0 {
                continue;
            }
            let psi = p
                .expected()
                .iter()
                .zip(counts)
                .map(|(e, c)| {
                    let (e, a) = (e.max(FLOOR), (c / n).max(FLOOR));
                    (a - e) * (a / e).ln()
                })
                .sum();
            out.push(Drift {
                column: p.name.clone(),
                psi,
                training_null_share: p.null_share,
                null_share: counts[w - 2] / n,
                unseen_share: counts[w - 1] / n,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use std::sync::Arc;

    fn numbers(v: impl Iterator<Item = f64>) -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(v))
    }

    #[test]
    fn a_resample_barely_drifts_and_a_shift_drifts_a_lot() {
        let names = vec!["x".to_string(), "plan".to_string()];
        let plans = |n: usize, premium_every: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                if i % premium_every == 0 {
                    "premium"
                } else {
                    "basic"
                }
            })))
        };
        let train = vec![
            numbers((0..10_000).map(|i| (i % 1000) as f64)),
            plans(10_000, 4),
        ];
        let profile = Profile::of(&names, &train, None);
        let psi = |columns: Vec<ArrayRef>| {
            let mut t = Tally::new(&profile);
            t.add(&profile, &columns).expect("add");
            t.report(&profile)
        };
        let same = psi(vec![
            numbers((0..2_000).map(|i| ((i * 7) % 1000) as f64)),
            plans(2_000, 4),
        ]);
        assert!(same.iter().all(|d| d.psi < 0.02), "{same:?}");
        let shifted = psi(vec![
            numbers((0..2_000).map(|i| (i % 1000) as f64 + 400.0)),
            plans(2_000, 2),
        ]);
        assert!(shifted[0].psi > 0.5, "{shifted:?}");
        assert!(shifted[1].psi > 0.1, "{shifted:?}");
        let unseen: ArrayRef = Arc::new(StringArray::from(vec![
            Some("gold"),
            None,
            Some("basic"),
            Some("gold"),
        ]));
        let odd = psi(vec![numbers([1.0, 2.0, 3.0, 4.0].into_iter()), unseen]);
        assert_eq!(odd[1].unseen_share, 0.5);
        assert_eq!(odd[1].null_share, 0.25);
    }

    #[test]
    fn tallies_merge_like_one_pass() {
        let names = vec!["x".to_string()];
        let profile = Profile::of(
            &names,
            &[numbers((0..100).map(f64::from))],
            Some(&[0.5; 100]),
        );
        assert_eq!(profile.columns.len(), 2);
        let mut whole = Tally::new(&profile);
        let cols = |r: std::ops::Range<i32>| -> Vec<ArrayRef> {
            vec![numbers(r.clone().map(f64::from)), numbers(r.map(|_| 0.5))]
        };
        whole.add(&profile, &cols(0..50)).expect("add");
        let mut a = Tally::new(&profile);
        a.add(&profile, &cols(0..20)).expect("add");
        let mut b = Tally::new(&profile);
        b.add(&profile, &cols(20..50)).expect("add");
        a.merge(&b);
        assert_eq!(a, whole);
    }
}
