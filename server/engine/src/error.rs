//! Errors of the engine, each classified once into a [`StatusCode`]. The engine knows no wire
//! protocol: the frontends map a status code to a SQLSTATE (pgwire) or a gRPC status (Flight
//! SQL), each with its own pinned table.

use datafusion::error::DataFusionError;
use thiserror::Error;

/// Classes of failure that clients can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// The SQL text does not parse.
    SyntaxError,
    /// A table or view is unknown.
    UndefinedTable,
    /// A column is unknown.
    UndefinedColumn,
    /// A function is unknown or has no overload for the arguments.
    UndefinedFunction,
    /// A schema is unknown.
    UndefinedSchema,
    /// A relation already exists.
    DuplicateTable,
    /// A parameter or option value is invalid.
    InvalidParameterValue,
    /// A value has the wrong type for its use.
    DatatypeMismatch,
    /// A text value could not be converted to the required type.
    InvalidTextRepresentation,
    /// Division by zero.
    DivisionByZero,
    /// Arithmetic overflow / value out of range.
    NumericOutOfRange,
    /// A scalar subquery returned more than one row.
    CardinalityViolation,
    /// Wrong number of bind parameters.
    ProtocolViolation,
    /// The statement is valid SQL but not supported.
    FeatureNotSupported,
    /// The query was cancelled by the client.
    QueryCanceled,
    /// The statement is nested too deeply to process safely.
    StatementTooComplex,
    /// Memory or another resource ran out.
    OutOfMemory,
    /// Something is larger than a configured limit allows (e.g. an imported model file).
    ProgramLimitExceeded,
    /// Files or object stores failed.
    IoError,
    /// The object at a location does not exist (file, bucket, key).
    UndefinedFile,
    /// Configuration problem (bad setting name, unreachable store …).
    ConfigFileError,
    /// Other semantic problems in a statement.
    InvalidStatement,
    /// A model (or other non-relation object) is unknown.
    UndefinedObject,
    /// A model of that name already exists.
    DuplicateObject,
    /// The data cannot be used as asked (e.g. a training set with one class).
    DataException,
    /// A stored object is damaged (e.g. a model artifact).
    DataCorrupted,
    /// A statement other than ROLLBACK in a transaction block that has failed.
    InFailedTransaction,
    /// A statement that needs a transaction block ran outside one (`SAVEPOINT`).
    NoActiveTransaction,
    /// `ROLLBACK TO` / `RELEASE` name a savepoint that does not exist.
    InvalidSavepoint,
    /// A transaction's commit conflicts with a concurrent commit; retry the transaction.
    SerializationFailure,
    /// The password did not match (or the role has none to match).
    InvalidPassword,
    /// The role cannot log in: unknown, `NOLOGIN`, or no way to authenticate it.
    InvalidAuthorization,
    /// The session's role lacks a privilege the statement needs.
    InsufficientPrivilege,
    /// The object is in use (the session's own role, the bootstrap superuser).
    ObjectInUse,
    /// The object is not in the state the statement needs (a rejected model version deployed,
    /// a deployed one retired).
    ObjectNotInPrerequisiteState,
    /// A GRANT that cannot be made (a privilege the object does not have, a membership loop).
    InvalidGrantOperation,
    /// Other objects depend on this one (a role that still owns tables or models).
    DependentObjects,
    /// The name is reserved (role names starting with `pg_`).
    ReservedName,
    /// A run-time parameter that `SET` cannot change (`is_superuser`).
    ReadOnlyParameter,
    /// The server serves `max_connections` connections already.
    TooManyConnections,
    /// An internal error; a bug.
    Internal,
}

/// Errors raised while serving a statement.
#[derive(Debug, Error)]
pub enum EngineError {
    /// DataFusion failed to parse, plan or run the statement.
    #[error("{}", df_message(.0))]
    DataFusion(#[from] DataFusionError),
    /// Arrow failed (casts, batch assembly).
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// The catalog refused a change.
    #[error(transparent)]
    Catalog(#[from] prognos_catalog::CatalogError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] prognos_storage::StorageError),
    /// A statement we recognise but reject, with its class.
    #[error("{message}")]
    Statement {
        /// Error class.
        code: StatusCode,
        /// Message for the client.
        message: String,
    },
    /// The client cancelled the statement, or its `statement_timeout` ran out.
    #[error("{}", .0.message())]
    Cancelled(crate::streams::CancelReason),
}

/// Result alias for engine operations.
pub type EngineResult<T> = Result<T, EngineError>;

impl EngineError {
    /// A statement error of a given class.
    pub fn statement(code: StatusCode, message: impl Into<String>) -> Self {
        EngineError::Statement {
            code,
            message: message.into(),
        }
    }

    /// The class of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            EngineError::DataFusion(e) => classify_datafusion(e),
            EngineError::Arrow(a) => classify_arrow(a),
            EngineError::Catalog(e) => classify_catalog(e),
            EngineError::Storage(s) => classify_storage(s),
            EngineError::Statement { code, .. } => *code,
            EngineError::Cancelled(_) => StatusCode::QueryCanceled,
        }
    }
}

fn classify_catalog(e: &prognos_catalog::CatalogError) -> StatusCode {
    use prognos_catalog::CatalogError as C;
    match e {
        C::TableExists(_) => StatusCode::DuplicateTable,
        C::TableNotFound(_) => StatusCode::UndefinedTable,
        C::ModelNotFound(_) => StatusCode::UndefinedObject,
        C::ModelExists(_) | C::RoleExists(_) => StatusCode::DuplicateObject,
        C::RoleNotFound(_) => StatusCode::UndefinedObject,
        C::RoleOwnsObjects { .. } => StatusCode::DependentObjects,
        C::PermissionDenied { .. } => StatusCode::InsufficientPrivilege,
        C::ArtifactTooLarge { .. } => StatusCode::ProgramLimitExceeded,
        C::InvalidModelName(_) => StatusCode::InvalidParameterValue,
        C::ModelUnavailable { .. } => StatusCode::DataCorrupted,
        C::ModelVersionNotFound { .. } => StatusCode::UndefinedObject,
        C::ModelVersionState { .. } => StatusCode::ObjectNotInPrerequisiteState,
        C::Model(m) => classify_model(m),
        C::Storage(s) => classify_storage(s),
        _ => StatusCode::IoError,
    }
}

/// SQLSTATE class of a training / inference error.
pub fn classify_model(e: &prognos_models::ModelError) -> StatusCode {
    use prognos_models::ModelError as M;
    match e {
        M::InvalidInput(_) | M::InvalidParameter(_) => StatusCode::InvalidParameterValue,
        M::UnknownColumn(_) => StatusCode::UndefinedColumn,
        M::WrongType(_) => StatusCode::DatatypeMismatch,
        M::BadTrainingData(_) => StatusCode::DataException,
        M::Corrupt(_) => StatusCode::DataCorrupted,
        M::RuntimeUnavailable(_) => StatusCode::UndefinedFile,
        M::Runtime(_) => StatusCode::DataException,
        M::Network(_) => StatusCode::Internal,
        M::Cancelled => StatusCode::QueryCanceled,
        M::Arrow(a) => classify_arrow(a),
    }
}

fn classify_storage(e: &prognos_storage::StorageError) -> StatusCode {
    use prognos_storage::StorageError as S;
    match e {
        S::ObjectStore(o) => classify_object_store(o),
        S::DataFusion(d) => classify_datafusion(d),
        S::InvalidLocation { .. } => StatusCode::InvalidParameterValue,
        S::CommitConflict { .. } => StatusCode::SerializationFailure,
        _ => StatusCode::IoError,
    }
}

fn classify_object_store(e: &object_store_error::Error) -> StatusCode {
    match e {
        object_store_error::Error::NotFound { .. } => StatusCode::UndefinedFile,
        object_store_error::Error::NotSupported { .. }
        | object_store_error::Error::NotImplemented { .. } => StatusCode::FeatureNotSupported,
        _ => StatusCode::IoError,
    }
}

use object_store as object_store_error;

/// The innermost DataFusion error, looking through context and shared wrappers.
fn root(e: &DataFusionError) -> &DataFusionError {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => root(inner),
        DataFusionError::Shared(inner) => root(inner),
        DataFusionError::Collection(v) if !v.is_empty() => root(&v[0]),
        other => other,
    }
}

fn df_message(e: &DataFusionError) -> String {
    let r = root(e);
    let text = match r {
        DataFusionError::SQL(p, _) => p.to_string(),
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m)
        | DataFusionError::Configuration(m)
        | DataFusionError::ResourcesExhausted(m)
        | DataFusionError::Internal(m) => m.clone(),
        DataFusionError::SchemaError(s, _) => s.to_string(),
        DataFusionError::ArrowError(a, _) => a.to_string(),
        DataFusionError::ObjectStore(o) => o.to_string(),
        DataFusionError::External(x) => x.to_string(),
        other => other.to_string(),
    };
    text.trim().to_string()
}

/// Classify a DataFusion error by its kind and, for plan errors, by DataFusion's message text.
pub fn classify_datafusion(e: &DataFusionError) -> StatusCode {
    let r = root(e);
    match r {
        DataFusionError::SQL(_, _) => StatusCode::SyntaxError,
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => StatusCode::UndefinedColumn,
            _ => StatusCode::InvalidStatement,
        },
        DataFusionError::NotImplemented(_) => StatusCode::FeatureNotSupported,
        DataFusionError::ResourcesExhausted(_) => StatusCode::OutOfMemory,
        DataFusionError::ObjectStore(o) => classify_object_store(o),
        DataFusionError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => {
            StatusCode::UndefinedFile
        }
        DataFusionError::IoError(_) | DataFusionError::ParquetError(_) => StatusCode::IoError,
        DataFusionError::Configuration(_) => StatusCode::ConfigFileError,
        DataFusionError::ArrowError(a, _) => classify_arrow(a),
        DataFusionError::External(x) => {
            if x.downcast_ref::<crate::streams::Cancelled>().is_some() {
                StatusCode::QueryCanceled
            } else if let Some(s) = x.downcast_ref::<prognos_storage::StorageError>() {
                classify_storage(s)
            } else if let Some(c) = x.downcast_ref::<prognos_catalog::CatalogError>() {
                classify_catalog(c)
            } else if let Some(m) = x.downcast_ref::<prognos_models::ModelError>() {
                classify_model(m)
            } else if x
                .downcast_ref::<prognos_udfs::value_limits::ValueTooLarge>()
                .is_some()
                || x.downcast_ref::<crate::streams::ResultTooLarge>().is_some()
            {
                StatusCode::ProgramLimitExceeded
            } else if let Some(a) = x.downcast_ref::<datafusion::arrow::error::ArrowError>() {
                classify_arrow(a)
            } else if let Some(o) = x.downcast_ref::<object_store_error::Error>() {
                classify_object_store(o)
            } else {
                StatusCode::Internal
            }
        }
        DataFusionError::Plan(m) | DataFusionError::Execution(m) => classify_message(m),
        // DataFusion 55 reports a call that fits none of a function's signatures as an
        // internal error; PostgreSQL's `function f(types) does not exist` is 42883.
        DataFusionError::Internal(m) if m.contains("failed to match any signature") => {
            StatusCode::UndefinedFunction
        }
        _ => StatusCode::Internal,
    }
}

fn classify_arrow(a: &datafusion::arrow::error::ArrowError) -> StatusCode {
    use datafusion::arrow::error::ArrowError as A;
    match a {
        A::DivideByZero => StatusCode::DivisionByZero,
        A::ArithmeticOverflow(_) => StatusCode::NumericOutOfRange,
        A::CastError(_) | A::ParseError(_) => StatusCode::InvalidTextRepresentation,
        A::MemoryError(_) => StatusCode::OutOfMemory,
        A::IoError(_, _) => StatusCode::IoError,
        A::NotYetImplemented(_) => StatusCode::FeatureNotSupported,
        // Reading or writing CSV / JSON: a value or type the format cannot carry.
        A::CsvError(_) | A::JsonError(_) => StatusCode::DataException,
        A::InvalidArgumentError(_) | A::ComputeError(_) => StatusCode::InvalidParameterValue,
        A::SchemaError(_) => StatusCode::DatatypeMismatch,
        A::DictionaryKeyOverflowError | A::RunEndIndexOverflowError | A::OffsetOverflowError(_) => {
            StatusCode::ProgramLimitExceeded
        }
        A::ParquetError(_) | A::IpcError(_) | A::AvroError(_) => StatusCode::DataCorrupted,
        _ => StatusCode::Internal,
    }
}

fn classify_message(m: &str) -> StatusCode {
    let l = m.to_ascii_lowercase();
    if l.starts_with("table '") && l.contains("not found")
        || l.contains("does not exist") && l.contains("table")
    {
        StatusCode::UndefinedTable
    } else if l.contains("table function") && l.contains("not found")
        || l.starts_with("invalid function")
        || l.contains("no function matches")
        || l.contains("function") && l.contains("does not support")
    {
        StatusCode::UndefinedFunction
    } else if l.contains("schema") && l.contains("not found")
        || l.contains("schema") && l.contains("doesn't exist")
    {
        StatusCode::UndefinedSchema
    } else if l.contains("already exists") {
        StatusCode::DuplicateTable
    } else if l.contains("column") && l.contains("not found") || l.contains("no field named") {
        StatusCode::UndefinedColumn
    } else if l.contains("returned more than one row")
        || l.contains("more than one row returned by a subquery")
    {
        StatusCode::CardinalityViolation
    } else if l.contains("divide by zero") || l.contains("division by zero") {
        StatusCode::DivisionByZero
    } else if l.contains("cannot cast")
        || l.contains("cannot be cast")
        || l.contains("cannot coerce")
        || l.contains("failed to coerce")
    {
        StatusCode::DatatypeMismatch
    } else if l.contains("placeholder") || l.contains("expected") && l.contains("parameter") {
        StatusCode::InvalidParameterValue
    } else if l.contains("no such file") || l.contains("not found") && l.contains("object") {
        StatusCode::UndefinedFile
    } else {
        StatusCode::InvalidStatement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_messages_are_classified() {
        let cases = [
            (
                DataFusionError::Plan("table 'prognos.public.nope' not found".into()),
                StatusCode::UndefinedTable,
            ),
            (
                DataFusionError::Plan("Invalid function 'nope'.\nDid you mean 'now'?".into()),
                StatusCode::UndefinedFunction,
            ),
            (
                DataFusionError::Execution("Scalar subquery returned more than one row".into()),
                StatusCode::CardinalityViolation,
            ),
            (
                DataFusionError::NotImplemented("x".into()),
                StatusCode::FeatureNotSupported,
            ),
            (
                DataFusionError::ResourcesExhausted("x".into()),
                StatusCode::OutOfMemory,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(classify_datafusion(&e), want, "{e}");
        }
    }
}
