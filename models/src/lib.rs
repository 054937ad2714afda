//! Trainers and inference of prognos models.
//!
//! A trained model ([`ModelArtifact`]) turns a batch of feature columns (Arrow arrays) into a
//! column of predictions; it knows nothing of SQL sessions or wire protocols. Training
//! ([`train::train`]) takes the training query's columns. Algorithms: histogram
//! gradient-boosted trees and random forests ([`gbdt`]), ridge / logistic regression and
//! k-means ([`linear`]), perceptrons on candle ([`mlp`]), isolation forests for row-wise anomaly scores ([`isolation`]);
//! series anomaly scores: [`anomaly`]. Time series: [`forecast`] (regularisation, seasonal naive, Naive2,
//! Theta, ETS / MSTL via augurs, backtest selection, conformal intervals).

pub mod anomaly;
pub mod drift;
pub mod error;
pub mod features;
pub mod forecast;
pub mod gbdt;
pub mod isolation;
pub mod labelled;
pub mod linear;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod onnx;
pub mod target;
pub mod train;

pub use error::{ModelError, ModelResult};
pub use model::{Algorithm, FORMAT_VERSION, ModelArtifact};
pub use train::{TrainContext, TrainRequest, train, train_with_holdout};

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
    /// A vector per row (an imported encoder's embedding).
    Embedding,
}
