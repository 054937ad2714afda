//! The feature schema a model keeps, and the encoding of Arrow columns into the numeric matrix
//! the algorithms read.
//!
//! Preprocessing lives inside the model: each feature remembers its kind (and, for text, the
//! categories seen in training), so `PREDICT` encodes new rows exactly as training did. NULLs
//! become `NaN` (every algorithm has a missing-value rule), unseen categories become `NaN` too,
//! and dates / timestamps expand into calendar parts.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{Datelike, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};

/// Most categories a text feature keeps; rarer ones are treated like unseen values.
pub const MAX_CATEGORIES: usize = 10_000;

/// Calendar parts a temporal feature expands into.
const TEMPORAL_PARTS: [&str; 5] = ["year", "month", "day", "dow", "hour"];

/// How a feature is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// Integers, floats and decimals, used as they are.
    Numeric,
    /// `true` = 1, `false` = 0.
    Boolean,
    /// Text; each value is a category, most frequent first.
    Categorical {
        /// Categories seen in training, most frequent first (their code is the position).
        categories: Vec<String>,
    },
    /// Dates and timestamps, expanded into year, month, day, day of week and hour.
    Temporal,
}

/// One input column of a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feature {
    /// Column name in the training query.
    pub name: String,
    /// Arrow type of the training column (as Arrow prints it).
    pub data_type: String,
    /// How the column is encoded.
    #[serde(flatten)]
    pub kind: FeatureKind,
    #[serde(skip)]
    lookup: OnceLock<HashMap<String, u32>>,
}

impl Feature {
    /// A feature of `name`, read from columns of `data_type` as `kind`.
    pub fn new(name: &str, data_type: &DataType, kind: FeatureKind) -> Self {
        Self {
            name: name.to_string(),
            data_type: data_type.to_string(),
            kind,
            lookup: OnceLock::new(),
        }
    }

    /// Number of matrix columns this feature becomes.
    pub fn width(&self) -> usize {
        match self.kind {
            FeatureKind::Temporal => TEMPORAL_PARTS.len(),
            _ => 1,
        }
    }

    fn category_codes(&self) -> &HashMap<String, u32> {
        self.lookup.get_or_init(|| match &self.kind {
            FeatureKind::Categorical { categories } => categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as u32))
                .collect(),
            _ => HashMap::new(),
        })
    }
}

/// A matrix column derived from a feature.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedColumn {
    /// Index of the feature it comes from.
    pub feature: usize,
    /// Display name (`ts.month` for temporal parts).
    pub name: String,
    /// Number of categories when the column holds category codes.
    pub categories: Option<usize>,
}

/// Column-major `f32` matrix; `NaN` marks a missing value.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    /// Number of rows.
    pub n_rows: usize,
    /// One vector of `n_rows` values per derived column.
    pub cols: Vec<Vec<f32>>,
}

impl Matrix {
    /// The rows at `idx`, in that order.
    pub fn take(&self, idx: &[u32]) -> Matrix {
        Matrix {
            n_rows: idx.len(),
            cols: self
                .cols
                .iter()
                .map(|c| idx.iter().map(|&i| c[i as usize]).collect())
                .collect(),
        }
    }
}

/// The ordered input columns of a model.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FeatureSet {
    /// Features in the order `PREDICT` takes its arguments.
    pub features: Vec<Feature>,
}

fn kind_of(name: &str, dt: &DataType) -> ModelResult<Option<FeatureKind>> {
    Ok(Some(match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => FeatureKind::Numeric,
        DataType::Boolean => FeatureKind::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            FeatureKind::Categorical { categories: vec![] }
        }
        DataType::Dictionary(_, v) if v.is_string() => {
            FeatureKind::Categorical { categories: vec![] }
        }
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => FeatureKind::Temporal,
        DataType::Null => return Ok(None),
        other => {
            return Err(ModelError::WrongType(format!(
                "column \"{name}\" has type {other}, which a model cannot use as a feature \
                 (numbers, booleans, text, dates and timestamps can be)"
            )));
        }
    }))
}

fn as_strings(a: &ArrayRef) -> ModelResult<ArrayRef> {
    Ok(cast(a, &DataType::Utf8)?)
}

impl FeatureSet {
    /// Infer the features from training columns, learning the categories of text columns.
    /// Columns that are entirely NULL (type `Null`) are rejected: they carry no information.
    pub fn fit(names: &[String], columns: &[ArrayRef]) -> ModelResult<FeatureSet> {
        let mut features = Vec::with_capacity(names.len());
        for (name, col) in names.iter().zip(columns) {
            let Some(mut kind) = kind_of(name, col.data_type())? else {
                return Err(ModelError::InvalidInput(format!(
                    "feature column \"{name}\" is entirely NULL"
                )));
            };
            if let FeatureKind::Categorical { categories } = &mut kind {
                let strings = as_strings(col)?;
                let strings = strings.as_string::<i32>();
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for v in strings.iter().flatten() {
                    *counts.entry(v).or_default() += 1;
                }
                let mut by_freq: Vec<(&str, usize)> = counts.into_iter().collect();
                by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                *categories = by_freq
                    .into_iter()
                    .take(MAX_CATEGORIES)
                    .map(|(s, _)| s.to_string())
                    .collect();
            }
            features.push(Feature::new(name, col.data_type(), kind));
        }
        Ok(FeatureSet { features })
    }

    /// The matrix columns the features become.
    pub fn derived(&self) -> Vec<DerivedColumn> {
        let mut out = vec![];
        for (i, f) in self.features.iter().enumerate() {
            match &f.kind {
                FeatureKind::Temporal => {
                    for p in TEMPORAL_PARTS {
                        out.push(DerivedColumn {
                            feature: i,
                            name: format!("{}.{p}", f.name),
                            categories: None,
                        })
                    }
                }
                FeatureKind::Categorical { categories } => out.push(DerivedColumn {
                    feature: i,
                    name: f.name.clone(),
                    categories: Some(categories.len()),
                }),
                _ => out.push(DerivedColumn {
                    feature: i,
                    name: f.name.clone(),
                    categories: None,
                }),
            }
        }
        out
    }

    /// Feature names in order.
    pub fn names(&self) -> Vec<String> {
        self.features.iter().map(|f| f.name.clone()).collect()
    }

    /// Check that arguments of these types can feed the features (plan-time check).
    pub fn check_argument_types(&self, types: &[DataType]) -> ModelResult<()> {
        if types.len() != self.features.len() {
            return Err(ModelError::InvalidInput(format!(
                "the model takes {} feature argument(s) ({}), got {}",
                self.features.len(),
                self.names().join(", "),
                types.len()
            )));
        }
        for (f, t) in self.features.iter().zip(types) {
            let ok = match f.kind {
                FeatureKind::Numeric | FeatureKind::Boolean => {
                    t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null)
                }
                FeatureKind::Categorical { .. } => true,
                FeatureKind::Temporal => matches!(
                    t,
                    DataType::Date32
                        | DataType::Date64
                        | DataType::Timestamp(..)
                        | DataType::Utf8
                        | DataType::Utf8View
                        | DataType::LargeUtf8
                        | DataType::Null
                ),
            };
            if !ok {
                return Err(ModelError::WrongType(format!(
                    "feature \"{}\" was trained on {} values; the argument has type {t}",
                    f.name, f.data_type
                )));
            }
        }
        Ok(())
    }

    /// Encode one array per feature (same order) into the model's matrix.
    pub fn encode(&self, columns: &[ArrayRef]) -> ModelResult<Matrix> {
        if columns.len() != self.features.len() {
            return Err(ModelError::InvalidInput(format!(
                "the model takes {} feature(s) ({}), got {}",
                self.features.len(),
                self.names().join(", "),
                columns.len()
            )));
        }
        let n_rows = columns.first().map(|c| c.len()).unwrap_or(0);
        let mut cols = Vec::new();
        for (f, col) in self.features.iter().zip(columns) {
            encode_feature(f, col, &mut cols)
                .map_err(|e| ModelError::InvalidInput(format!("feature \"{}\": {e}", f.name)))?;
        }
        Ok(Matrix { n_rows, cols })
    }
}

fn encode_feature(f: &Feature, col: &ArrayRef, out: &mut Vec<Vec<f32>>) -> ModelResult<()> {
    match &f.kind {
        FeatureKind::Numeric | FeatureKind::Boolean => {
            let v = cast(col, &DataType::Float64)?;
            let v = v.as_primitive::<Float64Type>();
            out.push(
                (0..v.len())
                    .map(|i| {
                        if v.is_null(i) {
                            f32::NAN
                        } else {
                            v.value(i) as f32
                        }
                    })
                    .collect(),
            );
        }
        FeatureKind::Categorical { .. } => {
            let codes = f.category_codes();
            let s = as_strings(col)?;
            let s = s.as_string::<i32>();
            out.push(
                s.iter()
                    .map(|v| {
                        v.and_then(|v| codes.get(v))
                            .map(|&c| c as f32)
                            .unwrap_or(f32::NAN)
                    })
                    .collect(),
            );
        }
        FeatureKind::Temporal => {
            let ts = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            let mut parts: Vec<Vec<f32>> = (0..TEMPORAL_PARTS.len())
                .map(|_| Vec::with_capacity(ts.len()))
                .collect();
            for i in 0..ts.len() {
                let dt = if ts.is_null(i) {
                    None
                } else {
                    chrono::DateTime::from_timestamp_micros(ts.value(i))
                };
                let vals = match dt {
                    Some(d) => [
                        d.year() as f32,
                        d.month() as f32,
                        d.day() as f32,
                        d.weekday().num_days_from_monday() as f32,
                        d.hour() as f32,
                    ],
                    None => [f32::NAN; 5],
                };
                for (p, v) in parts.iter_mut().zip(vals) {
                    p.push(v);
                }
            }
            out.extend(parts);
        }
    }
    Ok(())
}
