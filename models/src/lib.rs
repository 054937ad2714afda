//! Trainers and inference of prognos models.
//!
//! This crate is where native Rust algorithms (GBDT, forests, linear models, k-means), time-series
//! methods and ONNX/candle runtimes live, behind one small interface: a trained model turns a
//! batch of feature columns into a column of predictions. It knows nothing of SQL sessions or
//! wire protocols. The algorithms themselves arrive with the model issues; today it only defines
//! the task vocabulary shared with the catalog.

use serde::{Deserialize, Serialize};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Two or more classes.
    Classification,
    /// A real number.
    Regression,
    /// Group membership without a target.
    Clustering,
    /// Future values of a time series.
    Forecasting,
    /// Outlier scores.
    AnomalyDetection,
}
