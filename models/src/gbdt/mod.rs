//! Histogram gradient-boosted trees and random forests, written here.
//!
//! Why not a crate: measured on this kind of machine, no maintained stable-Rust crate covers categorical features + missing values + multiclass +
//! regression with LightGBM-level accuracy: forust-ml has no categoricals or multiclass,
//! perpetual needs nightly or is slow, smartcore/linfa/gbdt score 0.69–0.76 AUC where LightGBM
//! scores 0.84, and the LightGBM bindings need a 9-minute C++ build. The design follows
//! LightGBM: 255 quantile bins per column, leaf-wise growth, histogram subtraction, missing
//! values sent to the better side, categorical splits over gradient-sorted categories.

pub(crate) mod binning;
pub mod ensemble;
pub(crate) mod grow;
pub(crate) mod quickscorer;
pub(crate) mod scorer;
pub(crate) mod shap;
pub mod tree;

pub use ensemble::{Combine, Ensemble, Objective, TreeParams, train_boosted, train_forest};
