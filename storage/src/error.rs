//! Errors of the storage layer.

use thiserror::Error;

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// What can go wrong while reading or writing table data, manifests or artifacts.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The object store refused or failed an operation.
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A location string could not be understood.
    #[error("invalid location '{location}': {reason}")]
    InvalidLocation {
        /// The location as written by the user.
        location: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A manifest or catalog file could not be decoded.
    #[error("corrupt metadata file '{path}': {reason}")]
    CorruptMetadata {
        /// Path of the file inside its store.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Another writer committed the same manifest version first.
    #[error("concurrent commit to '{path}': another writer committed version {version} first")]
    CommitConflict {
        /// Manifest directory.
        path: String,
        /// The version both writers tried to create.
        version: u64,
    },
    /// Encoding or decoding Parquet failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// An error raised by DataFusion while producing the data to write.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// JSON (de)serialisation failed.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
    /// Local file-system error.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StorageError> for datafusion::error::DataFusionError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::DataFusion(e) => e,
            StorageError::ObjectStore(e) => {
                datafusion::error::DataFusionError::ObjectStore(Box::new(e))
            }
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
