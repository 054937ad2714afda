//! Errors of training and inference.

use datafusion::arrow::error::ArrowError;

/// What went wrong while training, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A feature or target column is missing, has the wrong type, or arrives in the wrong number.
    #[error("{0}")]
    InvalidInput(String),
    /// A column the model needs is not there.
    #[error("{0}")]
    UnknownColumn(String),
    /// An argument has a type the model cannot use.
    #[error("{0}")]
    WrongType(String),
    /// A `WITH (...)` option is unknown or out of range.
    #[error("{0}")]
    InvalidParameter(String),
    /// The training data cannot train this model (no rows, one class, all-NULL target, ...).
    #[error("{0}")]
    BadTrainingData(String),
    /// A stored artifact could not be read back.
    #[error("model artifact is corrupted or unreadable: {0}")]
    Corrupt(String),
    /// The ONNX Runtime library is missing or cannot be loaded; the message names what to
    /// install.
    #[error("{0}")]
    RuntimeUnavailable(String),
    /// ONNX Runtime refused a model or failed while running it.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The neural-network library failed while training or running a network.
    #[error("neural network: {0}")]
    Network(String),
    /// Training was cancelled by the client.
    #[error("training cancelled")]
    Cancelled,
    /// Arrow compute failed on the input.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// Result with [`ModelError`].
pub type ModelResult<T> = Result<T, ModelError>;
