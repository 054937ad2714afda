//! The target column: which task it implies and how its values become numbers.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

use crate::Task;
use crate::error::{ModelError, ModelResult};

/// Integer targets with at most this many distinct values are read as classes.
const MAX_INTEGER_CLASSES: usize = 20;

/// What the model predicts for the target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetKind {
    /// Class labels (as text, sorted; for booleans `false`, `true`). The positive class of a
    /// binary model is the second one.
    Classes {
        /// Labels in code order.
        labels: Vec<String>,
    },
    /// A real number.
    Real,
}

/// The target column of a supervised model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Column name.
    pub name: String,
    /// Arrow type of the training column (predictions of a classifier come back in it).
    pub data_type: String,
    /// Classes or real.
    #[serde(flatten)]
    pub kind: TargetKind,
}

/// The task a target column implies when the user does not say.
pub fn infer_task(dt: &DataType, distinct: usize) -> Task {
    match dt {
        DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Task::Classification
        }
        DataType::Dictionary(..) => Task::Classification,
        dt if dt.is_integer() && distinct <= MAX_INTEGER_CLASSES => Task::Classification,
        _ => Task::Regression,
    }
}

impl Target {
    /// Number of classes (0 for a real target).
    pub fn n_classes(&self) -> usize {
        match &self.kind {
            TargetKind::Classes { labels } => labels.len(),
            TargetKind::Real => 0,
        }
    }

    /// Read the target column. Rows whose target is NULL get `None` (the caller drops them).
    /// `task` is the user's override; otherwise it is inferred from the column.
    pub fn fit(
        name: &str,
        col: &ArrayRef,
        task: Option<Task>,
    ) -> ModelResult<(Target, Task, Vec<Option<f32>>)> {
        if col.null_count() == col.len() {
            return Err(ModelError::BadTrainingData(format!(
                "the target column \"{name}\" is NULL in every row"
            )));
        }
        let text = cast(col, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let distinct: BTreeSet<&str> = text.iter().flatten().collect();
        let task = task.unwrap_or_else(|| infer_task(col.data_type(), distinct.len()));
        let kind = match task {
            Task::Classification => {
                let mut labels: Vec<String> = distinct.iter().map(|s| s.to_string()).collect();
                if col.data_type().is_integer() {
                    labels.sort_by_key(|s| s.parse::<i64>().unwrap_or(i64::MAX));
                }
                if labels.len() < 2 {
                    return Err(ModelError::BadTrainingData(format!(
                        "the target column \"{name}\" has a single class ({}); a classifier \
                         needs at least two",
                        labels.first().map(String::as_str).unwrap_or("")
                    )));
                }
                TargetKind::Classes { labels }
            }
            Task::Regression => {
                if !col.data_type().is_numeric() {
                    return Err(ModelError::InvalidInput(format!(
                        "regression needs a numeric target, but \"{name}\" has type {}",
                        col.data_type()
                    )));
                }
                TargetKind::Real
            }
            other => {
                return Err(ModelError::InvalidParameter(format!(
                    "task {other:?} does not take a PREDICT target"
                )));
            }
        };
        let target = Target {
            name: name.to_string(),
            data_type: col.data_type().to_string(),
            kind,
        };
        let y = target.encode(col)?;
        Ok((target, task, y))
    }

    /// Class codes (classifiers) or values (regressors) of a column holding the target, e.g.
    /// in evaluation data; NULLs and labels unknown to the model are `None`.
    pub fn encode(&self, col: &ArrayRef) -> ModelResult<Vec<Option<f32>>> {
        match &self.kind {
            TargetKind::Classes { labels } => {
                let text = cast(col, &DataType::Utf8)?;
                let text = text.as_string::<i32>();
                Ok(text
                    .iter()
                    .map(|v| v.and_then(|v| labels.iter().position(|l| l == v).map(|p| p as f32)))
                    .collect())
            }
            TargetKind::Real => {
                let v = cast(col, &DataType::Float64)?;
                let v = v.as_primitive::<Float64Type>();
                Ok((0..v.len())
                    .map(|i| (!v.is_null(i)).then(|| v.value(i) as f32))
                    .collect())
            }
        }
    }

    /// Arrow type that `PREDICT` returns.
    pub fn output_type(&self) -> DataType {
        match &self.kind {
            TargetKind::Real => DataType::Float64,
            TargetKind::Classes { .. } => {
                DataType::from_str(&self.data_type).unwrap_or(DataType::Utf8)
            }
        }
    }

    /// Class labels for class codes (`None` = NULL), in the target's type.
    pub fn labels_array(&self, codes: &[Option<usize>]) -> ModelResult<ArrayRef> {
        let TargetKind::Classes { labels } = &self.kind else {
            return Err(ModelError::InvalidInput("not a classifier".into()));
        };
        let text: StringArray = codes
            .iter()
            .map(|c| c.and_then(|c| labels.get(c)).map(String::as_str))
            .collect();
        let text: ArrayRef = Arc::new(text);
        Ok(cast(&text, &self.output_type())?)
    }
}
