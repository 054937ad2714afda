//! Errors of the catalog.

use thiserror::Error;

/// Result alias for catalog operations.
pub type CatalogResult<T> = Result<T, CatalogError>;

/// What can go wrong while reading or changing the catalog.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// A table of that name already exists.
    #[error("relation \"{0}\" already exists")]
    TableExists(String),
    /// No table of that name exists.
    #[error("relation \"{0}\" does not exist")]
    TableNotFound(String),
    /// The catalog file is unreadable.
    #[error("catalog file '{path}' is corrupt: {reason}")]
    Corrupt {
        /// Path of the catalog file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A role of that name already exists.
    #[error("role \"{0}\" already exists")]
    RoleExists(String),
    /// No role of that name exists.
    #[error("role \"{0}\" does not exist")]
    RoleNotFound(String),
    /// A role cannot be dropped while it owns objects.
    #[error(
        "role \"{role}\" cannot be dropped because it owns {}: drop them first",
        objects.join(", ")
    )]
    RoleOwnsObjects {
        /// The role.
        role: String,
        /// What it owns.
        objects: Vec<String>,
    },
    /// The role lacks a privilege.
    #[error("permission denied for {object}")]
    PermissionDenied {
        /// What was denied (`model churn`).
        object: String,
    },
    /// No model of that name exists.
    #[error("model \"{0}\" does not exist")]
    ModelNotFound(String),
    /// The model has no version of that number.
    #[error("model \"{name}\" has no version {version}")]
    ModelVersionNotFound {
        /// Model name.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// A version cannot go where a lifecycle statement sends it (deploying a rejected
    /// version, retiring the deployed one, rolling back with nothing to return to).
    #[error("model \"{name}\": {reason}")]
    ModelVersionState {
        /// Model name.
        name: String,
        /// The version concerned, if one is.
        version: Option<u32>,
        /// What stands in the way.
        reason: String,
    },
    /// A model of that name already exists.
    #[error("model \"{0}\" already exists (use CREATE OR REPLACE MODEL to add a version)")]
    ModelExists(String),
    /// A model name that cannot be stored.
    #[error(
        "invalid model name \"{0}\": use letters, digits and underscores, starting with a letter or underscore"
    )]
    InvalidModelName(String),
    /// The model's stored artifact could not be loaded.
    #[error("model \"{name}\" cannot be used: {reason}")]
    ModelUnavailable {
        /// Model name.
        name: String,
        /// Why it failed to load.
        reason: String,
    },
    /// A model version's artifact is larger than `models.max_artifact_mb` allows.
    #[error(
        "model \"{name}\" would be stored as {} MiB, more than models.max_artifact_mb ({limit_mb} MiB) allows",
        bytes.div_ceil(1024 * 1024)
    )]
    ArtifactTooLarge {
        /// Model name.
        name: String,
        /// Size of the artifact and its payloads.
        bytes: u64,
        /// The limit in MiB.
        limit_mb: u64,
    },
    /// An artifact could not be written to (or found in) its object store.
    #[error("model artifact store: {reason}")]
    ArtifactStore {
        /// What failed, with the artifact's URL.
        reason: String,
    },
    /// Training or inference failed.
    #[error(transparent)]
    Model(#[from] prognos_models::ModelError),
    /// Storage failed underneath.
    #[error(transparent)]
    Storage(#[from] prognos_storage::StorageError),
    /// Local file-system error.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// JSON encoding failed.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
}
